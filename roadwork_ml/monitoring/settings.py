"""Settings of the production monitor: drift rules, the simulated drift scenario, the schedule.

Same style as :mod:`roadwork_ml.config`: strict pydantic models with no defaults, so the
profile YAML (``monitoring:``) is the single source of truth and a typo is an error.

Units: PSI is unitless (nats-like, ``Σ (r - c) ln(r / c)``), alphas and rates are
fractions in (0, 1), accuracies are fractions in [0, 1], days are integer offsets from
``DriftScenario.start_date``.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, model_validator

from roadwork_ml.data.records import WEATHERS
from roadwork_ml.strict_model import StrictModel as _Strict

__all__ = ["DriftRules", "NewCamera", "ScenarioPhase", "DriftScenario", "MonitoringConfig"]


class DriftRules(_Strict):
    """Thresholds that turn a day's statistics into ``ok`` / ``alert`` / ``retrain`` / ``rollback``."""

    psi_alert: float = Field(
        gt=0, description="PSI of any monitored column above this -> alert (0.2 = 'moderate shift')"
    )
    psi_retrain: float = Field(
        gt=0, description="PSI of a model column (prob / uncertainty feature) above this -> retrain"
    )
    family_alpha: float = Field(
        gt=0,
        lt=1,
        description="family-wise error rate of the day's decision: Holm over all its group-permutation tests",
    )
    permutations: int = Field(
        ge=99,
        description="group permutations per day shared by every test (p resolution 1/(B+1); Holm needs B+1 >= tests/alpha)",
    )
    group_window_minutes: float = Field(
        gt=0, description="grouping key without sequence_id: camera_id + this time window"
    )
    ece_increase_retrain: float = Field(
        gt=0, lt=1, description="labelled ECE above the reference's by more than this (and significant) -> retrain"
    )
    accuracy_drop_alert: float = Field(
        gt=0, lt=1, description="relative labelled-accuracy drop vs the reference above this (and significant) -> alert"
    )
    reference_mode: Literal["fixed", "rolling"] = Field(
        description="fixed: VAL_CALIB of the champion; rolling: the last rolling_days of accepted traffic"
    )
    rolling_days: int = Field(ge=1, description="days of accepted traffic in a rolling reference")
    accuracy_retrain: float = Field(gt=0, le=1, description="labelled accuracy below this -> retrain")
    accuracy_rollback: float = Field(gt=0, le=1, description="labelled accuracy below this -> rollback")
    min_labels_for_accuracy: int = Field(ge=1, description="labelled rows needed before accuracy rules apply")
    min_slice_rows: int = Field(ge=2, description="slices with fewer current rows are skipped")
    psi_bins: int = Field(ge=2, description="quantile bins of PSI (10 = deciles)")
    psi_mode: Literal["quantile", "evidently"] = Field(
        description="quantile: reference deciles; evidently: evidently 0.7 binning"
    )

    @model_validator(mode="after")
    def _ordered(self) -> DriftRules:
        if self.psi_retrain < self.psi_alert:
            raise ValueError(f"psi_retrain ({self.psi_retrain}) must be >= psi_alert ({self.psi_alert})")
        if self.accuracy_rollback > self.accuracy_retrain:
            raise ValueError(
                f"accuracy_rollback ({self.accuracy_rollback}) must be <= accuracy_retrain ({self.accuracy_retrain})"
            )
        return self


def _check_weather_probs(probs: dict[str, float] | None, where: str) -> None:
    if probs is None:
        return
    unknown = set(probs) - set(WEATHERS)
    if unknown:
        raise ValueError(f"{where}: unknown weathers {sorted(unknown)}; use {WEATHERS}")
    if any(v < 0 for v in probs.values()) or sum(probs.values()) <= 0:
        raise ValueError(f"{where}: weather_probs must be >= 0 with a positive sum, got {probs}")


class NewCamera(_Strict):
    """A camera never seen by the reference that starts sending images (its own style)."""

    source: str = Field(description="source whose traffic the camera joins (its record.source)")
    share: float = Field(gt=0, lt=1, description="fraction of that source's daily images taken by the new camera")
    jpeg_quality: tuple[int, int] = Field(description="inclusive JPEG quality range of the new camera")
    blur_max: float = Field(ge=0, description="max Gaussian blur radius, px at 224 px")
    noise_std: float = Field(ge=0, description="max additive Gaussian noise, uint8 units")


class ScenarioPhase(_Strict):
    """What changes from ``start_day`` on (until the next phase). ``None`` keeps the source's base style."""

    name: str
    start_day: int = Field(ge=0, description="first day (0 = start_date) the phase is active")
    night_rate: float | None = Field(ge=0, le=1)
    weather_probs: dict[str, float] | None
    positive_rate: float | None = Field(ge=0, le=1)
    new_camera: NewCamera | None

    @model_validator(mode="after")
    def _weathers(self) -> ScenarioPhase:
        _check_weather_probs(self.weather_probs, f"phase {self.name!r}")
        return self


class DriftScenario(_Strict):
    """A simulated production stream: synthetic images per day whose style changes by phase."""

    seed: int
    start_date: str = Field(description="ISO date of day 0, e.g. 2026-01-01")
    n_days: int = Field(ge=1)
    images_per_day: int = Field(ge=1)
    label_fraction: float = Field(ge=0, le=1, description="share of a day's images whose label arrives")
    source_shares: dict[str, float] = Field(description="share of daily traffic per source (normalised)")
    phases: list[ScenarioPhase] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> DriftScenario:
        date.fromisoformat(self.start_date)  # raises ValueError naming the bad string
        if (
            not self.source_shares
            or any(v < 0 for v in self.source_shares.values())
            or sum(self.source_shares.values()) <= 0
        ):
            raise ValueError(f"source_shares must be >= 0 with a positive sum, got {self.source_shares}")
        starts = [p.start_day for p in self.phases]
        if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
            raise ValueError(f"phases must start at day 0 and have strictly increasing start_day, got {starts}")
        for p in self.phases:
            if p.new_camera is not None and p.new_camera.source not in self.source_shares:
                raise ValueError(f"phase {p.name!r}: new camera joins unknown source {p.new_camera.source!r}")
        return self

    @property
    def start(self) -> date:
        return date.fromisoformat(self.start_date)


class MonitoringConfig(_Strict):
    rules: DriftRules
    scenario: DriftScenario
    embedding_dim: int = Field(ge=1, description="PCA dimension of the embeddings stored in the inference log")
    reference_max_samples: int = Field(ge=10, description="reference rows kept for KS / evidently PSI / slices")
    mmd_reference_size: int = Field(ge=10, description="reference embeddings kept for the MMD test (cost ~ N^2)")
    webhook_url: str | None = Field(description="POSTed the drift decision when it is not 'ok'; None = log only")
    serving_log_dir: str | None = Field(
        description="root of the serving side's daily logs (day=YYYY-MM-DD/log.parquet); None = simulate traffic with `scenario`"
    )
    schedule_cron: str = Field(description="cron of the daily drift job, e.g. '0 2 * * *' (02:00 UTC)")
    retrain_cooldown_days: int = Field(
        ge=0,
        description="no second drift retrain within this many days of the last one: the reference stays VAL_CALIB, so a persistent shift would otherwise retrain daily",
    )
    retrain_overrides: list[str] = Field(
        description="profile overrides of a drift-triggered retrain, e.g. ['train.epochs=3'] to fine-tune the champion briefly"
    )
    catchup_days: int = Field(
        ge=0,
        le=31,
        description="the daily schedule also requests the days missed since the last drift report, at most this many (0 = yesterday only)",
    )
    escalation_scrc_alpha: float = Field(
        gt=0,
        lt=1,
        description="when the rules ask for an action that is impossible (no earlier champion, retrain in cooldown), "
        "serving defers more: SCRC at this stricter selective risk until a new champion or a human clears it",
    )

    @model_validator(mode="after")
    def _cron(self) -> MonitoringConfig:
        if len(self.schedule_cron.split()) != 5:
            raise ValueError(f"schedule_cron must have 5 fields, got {self.schedule_cron!r}")
        return self
