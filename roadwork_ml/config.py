"""Profiles: every parameter of the platform in one validated YAML tree.

A profile is a YAML file under ``roadwork_ml/profiles`` (or any path). A profile may
``extends:`` another one; the child is deep-merged over the parent. The models below have
no defaults on purpose: the YAML is the single source of truth, and ``extra="forbid"``
turns a typo into an error instead of a silently ignored key.

``ROADWORK_PROFILE`` picks the profile (a name or a path); ``apply_overrides`` applies
``dotted.key=value`` strings, which is how the Dagster launchpad overrides a run.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

PROFILE_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "demo"
SOURCE_NAMES = ("natix", "roadwork", "mapillary")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SourceKind = Literal["synthetic", "image_folder", "manifest", "natix_parquet", "roadwork_coco", "mapillary_vistas"]


class SyntheticStyle(_Strict):
    """How synthetic scenes imitate one source. Rates are fractions in [0, 1]."""

    n_images: int = Field(ge=0)
    positive_rate: float = Field(ge=0, le=1)
    label_noise: float = Field(ge=0, le=0.5)
    hard_negative_rate: float = Field(ge=0, le=1, description="share of negatives with orange non-roadwork objects")
    jpeg_quality: tuple[int, int] = Field(description="inclusive range of JPEG quality")
    blur_max: float = Field(ge=0, description="max Gaussian blur radius in pixels at 224 px")
    noise_std: float = Field(ge=0, description="max additive Gaussian noise, uint8 units")
    n_cameras: int = Field(ge=1)
    frames_per_sequence: tuple[int, int]
    night_rate: float = Field(ge=0, le=1)
    weather_probs: dict[str, float]


class SourceConfig(_Strict):
    """One data source. Without ``path`` the synthetic generator stands in for it."""

    kind: SourceKind
    path: str | None = None
    synthetic: SyntheticStyle
    max_images: int | None = Field(default=None, description="cap on images read from a real source")
    mapillary_min_pixels: int = Field(default=400, description="roadwork pixels needed for a Vistas positive")
    natix_consistency_filter: bool = True
    roadwork_annotation_files: list[str] = Field(default_factory=lambda: ["instances_train_gps_split.json", "instances_val_gps_split.json"])


class DecodeConfig(_Strict):
    max_pixels: int = Field(gt=0, description="decompression-bomb limit (width*height)")
    min_side: int = Field(ge=1, description="images with a smaller side are quarantined")
    store_max_side: int = Field(gt=0, description="images are re-encoded so the long side is at most this")
    store_jpeg_quality: int = Field(ge=50, le=100)


class DataConfig(_Strict):
    seed: int
    image_size: int = Field(gt=0, description="side of rendered synthetic scenes, pixels")
    sources: dict[str, SourceConfig]
    decode: DecodeConfig

    @model_validator(mode="after")
    def _known_sources(self) -> "DataConfig":
        unknown = set(self.sources) - set(SOURCE_NAMES)
        if unknown:
            raise ValueError(f"unknown sources {sorted(unknown)}; expected a subset of {SOURCE_NAMES}")
        return self


FusionStrategy = Literal["naive", "balanced", "weighted", "domain_stratified", "mixing"]


class SplitConfig(_Strict):
    seed: int
    ratios: dict[str, float]
    fusion: FusionStrategy
    source_weights: dict[str, float] = Field(description="used by 'weighted': relative sampling weight per source")
    mixing_ratios: dict[str, float] = Field(description="used by 'mixing': target share of the pool per source")
    near_duplicate_hamming: int = Field(ge=0, le=64, description="max pHash Hamming distance of a near duplicate")
    class_share_tolerance: float = Field(gt=0, lt=1, description="allowed |share - pool share| per split")
    gps_cell_deg: float = Field(gt=0, description="GPS cell size in degrees for group keys")

    @model_validator(mode="after")
    def _ratios(self) -> "SplitConfig":
        expected = {"train", "val_select", "val_calib", "val_test"}
        if set(self.ratios) != expected:
            raise ValueError(f"split ratios must name exactly {sorted(expected)}")
        if abs(sum(self.ratios.values()) - 1.0) > 1e-6:
            raise ValueError(f"split ratios must sum to 1, got {sum(self.ratios.values())}")
        return self


class ModelConfig(_Strict):
    backbone: str = Field(description="timm model name, e.g. vit_large_patch14_dinov2")
    weights_path: str | None = Field(description="local safetensors / timm / HF checkpoint; None = random init")
    img_size: int = Field(gt=0, description="input side in pixels")
    patch_size: int | None = Field(description="override the backbone's patch size (random init only)")
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    timm_kwargs: dict[str, Any] = Field(description="further timm.create_model keyword arguments")
    drop_path_rate: float = Field(ge=0, lt=1)
    head_hidden: int = Field(ge=0, description="0 = linear head")
    head_dropout: float = Field(ge=0, lt=1)
    num_classes: int = Field(ge=2)
    freeze_backbone: bool


class TrainConfig(_Strict):
    seed: int
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    grad_accum_steps: int = Field(ge=1)
    lr: float = Field(gt=0)
    backbone_lr_mult: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_fraction: float = Field(ge=0, lt=1)
    label_smoothing: float = Field(ge=0, lt=1)
    early_stopping_patience: int = Field(ge=1, description="epochs without VAL_SELECT MCC improvement")
    amp: bool = Field(description="bf16 autocast when CUDA is present")
    num_threads: int = Field(ge=0, description="torch CPU threads; 0 = torch default")
    augment: bool
    crop_scale_min: float = Field(gt=0, le=1, description="smallest random-resized-crop zoom (side fraction); small values teach the model tile-sized views")
    mcc_floor: float = Field(ge=-1, le=1, description="VAL_SELECT MCC the checkpoint must reach")
    max_train_images: int | None = None


class InferenceConfig(_Strict):
    batch_size: int = Field(ge=1, description="images per forward pass (each expands to n_views views)")
    input_size: int = Field(gt=0, description="side the stored image is resized to before views are cut, px")
    multi_view: bool = Field(description="global view + grid x grid tiles; false = the global view only")
    grid: int = Field(ge=1)
    overlap: float = Field(ge=0, lt=1, description="tile overlap, fraction of a tile side")
    flip_tta: bool
    aggregator: Literal["mean", "topk", "global", "attention", "auto"] = Field(description="auto = best VAL_SELECT MCC among the candidates the view setting allows")
    top_k_candidates: list[int] = Field(min_length=1, description="K values tried for topk; the best on VAL_SELECT is kept")
    attention: "AttentionConfig"
    aggregator_train_images: int = Field(ge=1, description="TRAIN images whose cached view outputs train the attention aggregator")


class AttentionConfig(_Strict):
    """The attention aggregator, trained on cached TRAIN view outputs with the backbone frozen."""

    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    batch_size: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    seed: int


class ThresholdConfig(_Strict):
    target_fnr_exit: float = Field(gt=0, lt=1)
    min_coverage: float = Field(gt=0, le=1)
    grid_size: int = Field(ge=10)


class CalibrationConfig(_Strict):
    methods: list[str] = Field(min_length=1, description="calibrators compared by out-of-fold NLL")
    n_folds: int = Field(ge=2)
    seed: int
    slice_key: str = Field(description="slice column for slice_temperature (time_of_day, weather, source, ...)")
    min_samples_per_slice: int = Field(ge=1)
    n_bins: int = Field(ge=2, description="equal-width bins of ECE")


class GatePolicyConfig(_Strict):
    """The failure-predictor MLP (7 → 128 → 64 → 32 → 1) and its cross-fitting."""

    n_folds: int = Field(ge=2)
    hidden_sizes: list[int]
    dropouts: list[float]
    pos_weight: float = Field(gt=0)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    seed: int
    target_risk: float = Field(gt=0, lt=1, description="gate policy: error rate among accepted predictions it aims for")


class ConformalConfig(_Strict):
    alpha: float = Field(gt=0, lt=1, description="miscoverage of LAC / APS / RAPS sets")
    randomized: bool = Field(description="randomized APS / RAPS (exact coverage, may return empty sets)")
    k_reg: int = Field(ge=0)
    lambda_reg: float = Field(ge=0)
    crc_alpha: float = Field(gt=0, lt=1, description="false-negative rate bound of conformal risk control")
    scrc_alpha: float = Field(gt=0, lt=1, description="selective risk bound of SCRC (error among accepted)")
    scrc_delta: float = Field(gt=0, lt=1, description="SCRC: P(selective risk > alpha) <= delta")
    scrc_grid: int = Field(ge=2)
    contamination_eps: float = Field(ge=0, lt=1, description="assumed calibration label-noise rate")
    eval_folds: int = Field(ge=2, description="held-out folds of the check")
    seed: int


class PolicyConfig(_Strict):
    active: dict[str, bool] = Field(description="exactly one of thresholds / gate / scrc is true")
    calibration: CalibrationConfig
    gate: GatePolicyConfig
    conformal: ConformalConfig

    @model_validator(mode="after")
    def _one_active(self) -> "PolicyConfig":
        from roadwork_ml.policy.selection import validate_active_policy

        validate_active_policy(self.active)
        return self

    @property
    def active_kind(self) -> str:
        return next(k for k, v in self.active.items() if v)


from roadwork_ml.monitoring.settings import MonitoringConfig  # noqa: E402  (strict model, no dagster)


class TrackingConfig(_Strict):
    experiment: str


class TensorRTConfig(_Strict):
    fp16: bool
    min_batch: int = Field(ge=1)
    opt_batch: int = Field(ge=1)
    max_batch: int = Field(ge=1)
    workspace_gb: float = Field(gt=0)
    min_decision_agreement: float = Field(gt=0, le=1, description="share of images whose decision must match ONNX, else the engine is refused")
    max_prob_diff: float = Field(gt=0, description="largest |P(roadwork)| difference to ONNX tolerated")


class TritonConfig(_Strict):
    model_name: str
    max_batch_size: int = Field(ge=1)
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int = Field(ge=0)
    instance_kind: Literal["KIND_CPU", "KIND_GPU"]


class ExportConfig(_Strict):
    onnx_opset: int = Field(ge=13)
    parity_tolerance: float = Field(gt=0, description="max |ONNX − PyTorch| probability difference")
    parity_images: int = Field(ge=1, description="VAL_CALIB images the parity check runs on (all when fewer)")
    tensorrt: TensorRTConfig
    triton: TritonConfig


class PromotionConfig(_Strict):
    """Statistical promotion gate: a new bundle replaces the champion unless its VAL_TEST MCC
    is significantly worse (paired bootstrap, one-sided) by more than ``margin``."""

    metric: Literal["mcc", "accuracy", "f1", "auroc"]
    margin: float = Field(ge=0)
    alpha: float = Field(gt=0, lt=1)
    n_resamples: int = Field(ge=100)
    seed: int


class FairnessConfig(_Strict):
    column: str = Field(description="slice column the two groups come from")
    group_a: str
    group_b: str
    threshold: float = Field(gt=0, lt=1, description="largest tolerated gap")


class StreetVisionConfig(_Strict):
    size: int = Field(gt=0, description="validator image side, px")
    levels: list[int] = Field(min_length=1)
    seed: int


class EvaluationConfig(_Strict):
    n_resamples: int = Field(ge=100)
    level: float = Field(gt=0, lt=1)
    seed: int
    n_jobs: int = Field(description="bootstrap worker processes; -1 = all cores")
    n_bins: int = Field(ge=2)
    cascade_costs: list[float] = Field(min_length=2, description="relative cost per image of each cascade stage")
    min_slice_count: int = Field(ge=1)
    fairness: FairnessConfig
    streetvision: StreetVisionConfig


class DeployConfig(_Strict):
    registered_model: str = Field(description="MLflow registered model name")
    promotion: PromotionConfig


class ServingConfig(_Strict):
    """The online model server (``roadwork serve``). Its dynamic batching reads
    ``export.triton`` (max_batch_size, preferred_batch_sizes, max_queue_delay_us), so this
    server and a Triton serving the generated model repository batch alike."""

    intra_op_threads: int = Field(ge=0, description="ONNX Runtime intra-op threads per model instance (torch threads for the torch backend); 0 = library default")
    instances: int = Field(ge=1, description="model instances executing batches concurrently (Triton's instance_group count)")
    decode_threads: int = Field(ge=1, description="threads decoding images off the event loop")
    request_timeout_s: float = Field(gt=0, description="a request not answered within this many seconds gets 504")
    max_request_bytes: int = Field(gt=0, description="larger request bodies get 413")
    log_flush_rows: int = Field(ge=1, description="the inference log is written when this many rows are buffered ...")
    log_flush_seconds: float = Field(gt=0, description="... or when the oldest buffered row is this old")
    log_compact_seconds: float = Field(gt=0, description="the current day's parts are merged into its log.parquet this often (past days at rotation)")
    champion_poll_seconds: float = Field(gt=0, description="how often the registry alias (or a watched bundle) is checked for a new champion")


class Profile(_Strict):
    name: str
    data: DataConfig
    splits: SplitConfig
    model: ModelConfig
    train: TrainConfig
    inference: InferenceConfig
    thresholds: ThresholdConfig
    policy: PolicyConfig
    tracking: TrackingConfig
    export: ExportConfig
    evaluation: EvaluationConfig
    deploy: DeployConfig
    monitoring: MonitoringConfig
    serving: ServingConfig


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and value and isinstance(out.get(key), dict):  # {} clears
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = PROFILE_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"profile {name_or_path!r} not found: give a YAML path or one of {known}")


def load_profile_dict(name_or_path: str | None = None) -> dict:
    """Raw merged YAML of a profile (``extends`` resolved). Default: $ROADWORK_PROFILE or 'demo'."""
    name_or_path = name_or_path or os.environ.get("ROADWORK_PROFILE") or DEFAULT_PROFILE
    path = _resolve(name_or_path)
    raw = yaml.safe_load(path.read_text()) or {}
    parent = raw.pop("extends", None)
    if parent:
        if parent == name_or_path or Path(parent).stem == path.stem:
            raise ValueError(f"profile {path} extends itself")
        raw = _deep_merge(load_profile_dict(parent), raw)
    return raw


def parse_overrides(overrides: list[str] | None) -> dict:
    """Turn ``["train.epochs=3", "splits.fusion=balanced"]`` into a nested dict (values parsed as YAML)."""
    nested: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like 'section.key=value'")
        dotted, value = item.split("=", 1)
        keys = dotted.strip().split(".")
        cursor = nested
        for key in keys[:-1]:
            cursor = cursor.setdefault(key, {})
        cursor[keys[-1]] = yaml.safe_load(value)
    return nested


def load_profile(name_or_path: str | None = None, overrides: list[str] | None = None) -> Profile:
    """Load, merge, override and validate a profile."""
    raw = _deep_merge(load_profile_dict(name_or_path), parse_overrides(overrides))
    return Profile.model_validate(raw)
