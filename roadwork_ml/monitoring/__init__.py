"""Production monitoring: inference log, reference profile, drift statistics, decisions.

Import submodules directly (``from roadwork_ml.monitoring.decisions import drift_report``);
this package imports nothing heavy on its own.
"""
