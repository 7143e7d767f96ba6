"""The code location: ``dagster dev -w workspace.yaml`` or ``-m roadwork_assets.definitions``."""


import dagster as dg

from roadwork_assets import aggregation, bundle, data, deployment, evaluation, monitoring, policies, predictions, training
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource
from roadwork_assets.run_tags import TRAINING_RUN_TAGS

# The build after the source partitions: everything unpartitioned from the splits on. It trains,
# so it carries the training run class that the production instance runs one at a time.
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("splits").downstream() - dg.AssetSelection.assets(monitoring.production_traffic, monitoring.drift_report),
    tags=TRAINING_RUN_TAGS,
    description="splits, phase-1 training, policies, bundle, evaluation and deployment (the unpartitioned graph)",
)

defs = dg.Definitions(
    assets=[
        data.source_images,
        data.splits,
        training.phase1_checkpoint,
        aggregation.view_aggregator,
        predictions.split_logits,
        policies.thresholds,
        policies.calibrator,
        policies.gate,
        policies.scrc_params,
        bundle.bundle,
        bundle.tensorrt_engine,
        bundle.triton_repository,
        evaluation.evaluation_report,
        deployment.deployed_model,
        monitoring.reference_profile,
        monitoring.production_traffic,
        monitoring.drift_report,
    ],
    asset_checks=[
        data.manifest_valid,
        data.splits_checks,
        training.reloads_identically,
        training.weights_finite,
        training.val_select_mcc_at_floor,
        aggregation.aggregator_choice_reproduces,
        *predictions.prediction_checks,
        policies.thresholds_meet_targets,
        policies.calibrator_not_worse,
        policies.gate_beats_max_prob,
        policies.conformal_within_guarantee,
        bundle.bundle_hashes_verify,
        bundle.bundle_exactly_one_policy,
        bundle.bundle_onnx_matches_pytorch,
        bundle.bundle_predicts,
        bundle.engine_agrees_with_onnx,
        bundle.triton_configs_parse,
        evaluation.report_complete,
        deployment.deployed_is_champion,
        monitoring.reference_reloads,
        monitoring.traffic_log_valid,
        monitoring.drift_statistics_valid,
    ],
    jobs=[training_job, monitoring.daily_drift_job, monitoring.retrain_job, monitoring.rollback_job],
    schedules=[monitoring.daily_drift_schedule],
    sensors=[monitoring.drift_action_sensor],
    resources={"settings": ProfileResource(), "store": ArtifactStore(), "mlflow": MlflowTracking()},
    # One process per run: every step imports torch (~10 s), and on 2 cores a subprocess per
    # step only adds that start-up cost; the assets parallelize inside (threads, torch).
    executor=dg.in_process_executor,
)
