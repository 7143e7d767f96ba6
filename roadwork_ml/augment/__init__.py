"""Augmentation: the StreetVision validator emulation and training policies built on it."""
