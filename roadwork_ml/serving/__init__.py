"""Serving: the bundle predictor and the ``roadwork`` command line."""
