"""Evaluation: metrics (classification, calibration, selective, prediction sets), bootstrap
intervals and paired comparisons, slices, fairness, the StreetVision emulation, and plots.

Metrics are pure numpy functions in :mod:`roadwork_ml.evaluation.metrics`.
"""
