"""Models: backbone factory, classification head, the classifier that joins them."""

from roadwork_ml.models.backbone import create_backbone, load_backbone_weights, resolve_weights_file
from roadwork_ml.models.classifier import RoadworkClassifier, build_classifier

__all__ = ["create_backbone", "load_backbone_weights", "resolve_weights_file", "RoadworkClassifier", "build_classifier"]
