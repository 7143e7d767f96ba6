"""The code location: ``dagster dev -w workspace.yaml`` or ``-m roadwork_assets.definitions``."""


import dagster as dg

from roadwork_assets import data, policies, predictions, training
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource

defs = dg.Definitions(
    assets=[data.source_images, data.splits, training.phase1_checkpoint, predictions.split_logits, policies.thresholds, policies.calibrator, policies.gate, policies.scrc_params],
    asset_checks=[
        data.manifest_valid,
        data.splits_checks,
        training.reloads_identically,
        training.weights_finite,
        training.val_select_mcc_at_floor,
        *predictions.prediction_checks,
        policies.thresholds_meet_targets,
        policies.calibrator_not_worse,
        policies.gate_beats_max_prob,
        policies.conformal_within_guarantee,
    ],
    resources={"settings": ProfileResource(), "store": ArtifactStore(), "mlflow": MlflowTracking()},
    # One process per run: every step imports torch (~10 s), and on 2 cores a subprocess per
    # step only adds that start-up cost; the assets parallelize inside (threads, torch).
    executor=dg.in_process_executor,
)
