"""Evaluation: metrics (classification, calibration, selective, prediction sets), plots.

Metrics are pure numpy functions in :mod:`roadwork_ml.evaluation.metrics`.
"""
