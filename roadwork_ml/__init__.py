"""roadwork_ml: the ML library behind roadwork. Pure Python + torch/numpy; never imports dagster."""

__version__ = "0.1.0"
