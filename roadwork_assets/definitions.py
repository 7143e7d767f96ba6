"""The code location: ``dagster dev -w workspace.yaml`` or ``-m roadwork_assets.definitions``.

Nothing is read from the environment at import: :func:`defs` (Dagster's lazily loaded
definitions) resolves ``$ROADWORK_PROFILE`` when the code location loads and hands it to
:func:`build_definitions`, which takes the daily partitions' start and the schedule's cron from
that profile and configures the run-level ``settings`` resource with it.
"""

import dagster as dg

from roadwork_assets import (
    aggregation,
    bundle,
    data,
    deployment,
    evaluation,
    explora,
    monitoring,
    policies,
    predictions,
    recipe,
    training,
)
from roadwork_assets.drift_actions import drift_action_sensor
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource, profile_source, resolve_profile
from roadwork_assets.run_tags import TRAINING_RUN_TAGS
from roadwork_assets.selection import excluded_from_build
from roadwork_ml.config import Profile, load_profile_or_explain


def training_job(profile: Profile):  # an unresolved asset job (resolved with the Definitions)
    """The build after the source partitions: what ``make demo`` materializes from the splits on
    (the daily partitions and the unused recipe search left out, :mod:`roadwork_assets.selection`).
    It trains, so it carries the training run class the production instance runs one at a time."""
    return dg.define_asset_job(
        "training_job",
        selection=dg.AssetSelection.assets("splits").downstream()
        - dg.AssetSelection.assets(*excluded_from_build(profile)),
        tags=TRAINING_RUN_TAGS,
        description="splits, phase-1 training, policies, bundle, evaluation and deployment (the unpartitioned graph)",
    )


ASSETS = [
    data.source_images,
    data.splits,
    explora.explora_checkpoint,
    recipe.hard_negatives,
    recipe.hpo_study,
    training.phase1_checkpoint,
    aggregation.view_aggregator,
    predictions.val_calib_logits,
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
]
CHECKS = [
    data.manifest_valid,
    data.splits_checks,
    explora.explora_checkpoint_checks,
    recipe.hard_negative_weights_valid,
    recipe.best_params_match_study,
    training.reloads_identically,
    training.weights_finite,
    training.val_select_mcc_at_floor,
    aggregation.aggregator_choice_reproduces,
    predictions.predictions_valid,
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
    deployment.bundle_model_in_service,
    deployment.evaluation_model_in_service,
    deployment.calibrator_model_in_service,
    monitoring.reference_reloads,
    monitoring.traffic_log_valid,
    monitoring.drift_statistics_valid,
    monitoring.reference_matches_served_model,
]


def build_definitions(
    profile: str | None = None, *, store: ArtifactStore | None = None, mlflow: MlflowTracking | None = None
) -> dg.Definitions:
    """Every asset, check, job, schedule and sensor for ``profile`` (a name or YAML path;
    None = $ROADWORK_PROFILE at call time, else demo). Runs see that profile through the
    ``settings`` resource; a launch can override it (``resources.settings.config``)."""
    source = profile_source(profile)
    load_profile_or_explain(source)  # a bad profile's one clear message heads the load error
    resolved = resolve_profile(source, ())
    mon = monitoring.build_monitoring(resolved.profile)
    return dg.Definitions(
        assets=[*ASSETS, *mon.assets],
        asset_checks=CHECKS,
        jobs=[training_job(resolved.profile), *mon.jobs, monitoring.retrain_job, monitoring.rollback_job],
        schedules=mon.schedules,
        sensors=[
            drift_action_sensor,
            dg.AutomationConditionSensorDefinition(
                "reference_follows_champion",
                target=dg.AssetSelection.assets(monitoring.REFERENCE_PROFILE),
                # switched on with drift_action_sensor (like Dagster's own automation sensor); until
                # it runs, production_traffic / drift_report refuse a reference of another model
                default_status=dg.DefaultSensorStatus.STOPPED,
                description="rebuilds reference_profile after every change of champion (its eager automation condition)",
            ),
        ],
        resources={
            "settings": ProfileResource.bound(source),
            "store": store or ArtifactStore(),
            "mlflow": mlflow or MlflowTracking(),
        },
        # One process per run: every step imports torch (~10 s), and on 2 cores a subprocess per
        # step only adds that start-up cost; the assets parallelize inside (threads, torch).
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location, built when Dagster loads it (profile from $ROADWORK_PROFILE then)."""
    return build_definitions()
