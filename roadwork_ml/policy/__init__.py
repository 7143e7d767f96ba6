"""Policies fitted on VAL_CALIB: calibrators, exit thresholds, uncertainty features, gate, conformal."""
