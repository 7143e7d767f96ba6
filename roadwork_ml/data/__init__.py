"""Data: record schema, sources, safe decoding, dedup, splits, fusion, transforms."""
