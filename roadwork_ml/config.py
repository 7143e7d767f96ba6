"""Profiles: every parameter of the platform in one validated YAML tree.

A profile is a YAML file under ``roadwork_ml/profiles`` (or any path). A profile may
``extends:`` another one; the child is deep-merged over the parent. The models below have
no defaults on purpose: the YAML is the single source of truth, and ``extra="forbid"``
turns a typo into an error instead of a silently ignored key.

``ROADWORK_PROFILE`` picks the profile (a name or a path); ``apply_overrides`` applies
``dotted.key=value`` strings, which is how the Dagster launchpad overrides a run.

Longer than ~600 lines on purpose: it is the schema of every profile section (one small model
each) plus the error explanation that walks that schema; splitting it would scatter the one
tree a profile is validated against.
"""

from __future__ import annotations

import copy
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from roadwork_ml.strict_model import StrictModel as _Strict

PROFILE_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "demo"
SOURCE_NAMES = ("natix", "roadwork", "mapillary")


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
    roadwork_annotation_files: list[str] = Field(
        default_factory=lambda: ["instances_train_gps_split.json", "instances_val_gps_split.json"]
    )


class DecodeConfig(_Strict):
    max_pixels: int = Field(gt=0, description="decompression-bomb limit (width*height)")
    min_side: int = Field(ge=1, description="images with a smaller side are quarantined")
    store_max_side: int = Field(gt=0, description="images are re-encoded so the long side is at most this")
    store_jpeg_quality: int = Field(ge=50, le=100)


class LoaderConfig(_Strict):
    """DataLoader workers that decode stored images while the model trains or predicts."""

    num_workers: int = Field(default=0, ge=0, description="decode processes; 0 = decode in the main process")
    pin_memory: bool = Field(default=False, description="page-locked batches (only with CUDA)")
    persistent_workers: bool = Field(default=False, description="keep workers between epochs (only with workers)")
    prefetch_factor: int = Field(default=2, ge=1, description="batches each worker decodes ahead (only with workers)")
    in_memory_max_gb: float = Field(
        default=1.0,
        ge=0,
        description="a split whose decoded uint8 tensor is at most this is decoded once (through the same workers) and kept; larger ones stream every epoch",
    )


class DataConfig(_Strict):
    seed: int
    image_size: int = Field(gt=0, description="side of rendered synthetic scenes, pixels")
    sources: dict[str, SourceConfig]
    decode: DecodeConfig
    loader: LoaderConfig = Field(default_factory=LoaderConfig)

    @model_validator(mode="after")
    def _known_sources(self) -> DataConfig:
        unknown = set(self.sources) - set(SOURCE_NAMES)
        if unknown:
            hints = "".join(_did_you_mean(u, SOURCE_NAMES) for u in sorted(unknown))
            raise ValueError(f"unknown sources {sorted(unknown)}; expected a subset of {SOURCE_NAMES}{hints}")
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
    def _ratios(self) -> SplitConfig:
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
    attention: Literal["sdpa", "math", "flash"] = Field(
        description="ViT attention kernel: sdpa = torch SDPA (any device), math = explicit softmax(QK^T)V, flash = SDPA's flash kernel or flash-attn (CUDA only)"
    )
    init_from: Literal["weights", "explora_checkpoint"] = Field(
        description="weights = weights_path (or random init); explora_checkpoint = the merged backbone of the ExPLoRA phase"
    )
    allow_random_init: bool = Field(
        description="false: training without weights_path / init_from is refused (a random-init ViT-L trains an input-blind model)"
    )
    input_norm: Literal["none", "chroma", "chroma_luma"] = Field(
        default="none",
        description="per-image photometric normalization inside the model (roadwork_ml.models.photometric): "
        "none, chroma (chroma gain undone), chroma_luma (luma gain too)",
    )
    input_norm_chroma_floor: float = Field(
        default=0.005, gt=0, description="input_norm: chroma RMS below this is amplified as if it were this"
    )
    input_norm_luma_floor: float = Field(
        default=0.02,
        gt=0,
        description="input_norm chroma_luma: a mean luma below this is brightened as if it were this "
        "(the luma gain is at most 0.45 / floor)",
    )
    input_norm_luma_power: float = Field(
        default=1.0,
        ge=1,
        description="input_norm chroma_luma: the luma statistic is the power mean mean(Y^p)^(1/p) "
        "(1: the mean); p > 1 weights bright pixels, and stays a gain the contrast step cannot change",
    )
    input_norm_min_luma: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="input_norm: darker pixels (a rotation's black fill) stay out of the statistics",
    )


class LoraSettings(_Strict):
    """Low-rank adapters (peft). ``target_modules`` names timm ViT Linear layers: ``qkv`` (the
    fused Q/K/V projection), ``qv`` (Q and V slices of the fused qkv only, a custom peft layer),
    ``proj``, ``fc1``, ``fc2``."""

    rank: int = Field(ge=1)
    alpha: float = Field(gt=0, description="LoRA scaling is alpha / rank")
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[Literal["qkv", "qv", "proj", "fc1", "fc2"]] = Field(min_length=1)

    @model_validator(mode="after")
    def _qkv_or_qv(self) -> LoraSettings:
        if "qkv" in self.target_modules and "qv" in self.target_modules:
            raise ValueError(
                "lora.target_modules: 'qkv' (all of Q, K, V) and 'qv' (Q and V only) target the same fused layer; pick one"
            )
        return self


class AugmentConfig(_Strict):
    """Training augmentation. ``legacy``: batch-wise affine zoom/shift, flip, brightness/contrast
    jitter on the device (the original recipe). ``validator``: per sample in the loader workers,
    the StreetVision validator's levels (roadwork_ml.augment.streetvision) mixed with photo styles."""

    policy: Literal["legacy", "validator"] = "legacy"
    max_shift: float = Field(default=0.1, ge=0, lt=1, description="legacy: max translation, fraction of half the side")
    jitter: float = Field(default=0.2, ge=0, lt=1, description="legacy: brightness/contrast factor range 1 ± jitter")
    flip_prob: float = Field(default=0.5, ge=0, le=1, description="legacy: horizontal flip probability")
    saturation_prob: float = Field(
        default=0.0, ge=0, le=1, description="legacy: P(scale the chroma by a factor from saturation_range)"
    )
    saturation_range: tuple[float, float] = Field(
        default=(0.3, 1.0), description="legacy: chroma factor range (the validator's levels 2-3 use 0.4 and 0.3)"
    )
    geometry_prob: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="legacy: P(the validator's geometry instead of zoom/shift: rotation, then a square crop of 20-100 % of the area)",
    )
    rotation: float = Field(
        default=20.0, ge=0, le=180, description="legacy: max rotation of the geometry step, degrees"
    )
    noise_prob: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="legacy: P(the validator's Gaussian colour noise, drawn at validator_size and resized with the "
        "batch as the validator's images are)",
    )
    jpeg_prob: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="legacy: P(the validator's closing step on a sample: 8 bits and a Pillow JPEG at quality 75 at "
        "validator_size; the codec's error, resized as a served image is, is added at the input)",
    )
    noise_variances: list[float] = Field(
        default_factory=lambda: [0.001, 0.002],
        min_length=1,
        description="legacy: the noise variances drawn with equal probability, YCbCr/255 units (the validator's "
        "severities 1 and 2)",
    )
    served_side: int | Literal["input_size"] | None = Field(
        default=None,
        description="legacy: resize the batch to the model's input, and the noise from validator_size, as a served "
        "image is resized (antialiased to this side, then bilinear without antialias to the input); input_size = "
        "the profile's inference.input_size (resolved at load), None = one antialiased resize",
    )

    @field_validator("served_side")
    @classmethod
    def _positive_side(cls, v):
        if isinstance(v, int) and v <= 0:
            raise ValueError(f"must be a positive side in px, 'input_size' or null, got {v}")
        return v

    lost_object_weight: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="legacy: loss weight of a positive whose every roadwork box the zoom or the validator's crop "
        "left out of the frame (rows whose records carry boxes: tags.roadwork_boxes); 1 = no change",
    )
    zoomed_negative_weight: float = Field(
        default=1.0,
        ge=0,
        description="legacy: loss weight of a negative whose frame (zoom or the validator's crop) shows at most "
        "zoomed_area_max of the image; 1 = no change",
    )
    zoomed_positive_weight: float = Field(
        default=1.0,
        ge=0,
        description="legacy: loss weight of a positive whose frame shows at most zoomed_area_max of the image "
        "(multiplied into lost_object_weight, so a lost positive stays at its own weight); 1 = no change",
    )
    zoomed_area_max: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="legacy: the frame area, as a share of the image, up to which a sample counts as zoomed",
    )
    level_probs: list[float] = Field(
        default_factory=lambda: [0.25, 0.25, 0.25, 0.25],
        min_length=4,
        max_length=4,
        description="validator: P(level 0..3); the validator draws 1/4 each",
    )
    source_prob: float = Field(
        default=0.0, ge=0, le=1, description="validator: P(stored photo as is, its own source style, only resized)"
    )
    style_prob: float = Field(
        default=0.0, ge=0, le=1, description="validator: P(another source's photo style before the level)"
    )
    validator_size: int = Field(default=224, gt=0, description="validator: the side the level is applied at, px")
    validator_jpeg: bool = Field(default=True, description="validator: end with Pillow JPEG q75 as the validator does")
    legacy_on_top: bool = Field(
        default=False,
        description="validator: also apply the legacy batch augmentation (zoom/shift, flip, jitter) to every sample",
    )
    source_side: int = Field(
        default=0,
        ge=0,
        description="legacy: TRAIN images are kept at this side (px) and the batch zoom / crop samples them before "
        "bringing the batch to model.img_size (antialiased), so zoomed crops keep real detail as the validator's "
        "crops of a larger photo do; validator: the side its crops are taken from; 0 = model.img_size",
    )

    @model_validator(mode="after")
    def _saturation_range(self) -> AugmentConfig:
        lo, hi = self.saturation_range
        if not 0 <= lo <= hi:
            raise ValueError(f"saturation_range must satisfy 0 <= low <= high, got {self.saturation_range}")
        if any(v < 0 for v in self.noise_variances):
            raise ValueError(f"noise_variances must be >= 0, got {self.noise_variances}")
        return self


class OptimizerConfig(_Strict):
    """timm.optim.create_optimizer_v2 and what the trainer does around it."""

    name: str = Field(default="adamw", description="any timm optimizer name: adamw, sgd, lamb, lion, adan, ...")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="for optimizers that take one (sgd, ...)")
    filter_bias_and_bn: bool = Field(
        default=False, description="no weight decay on biases and norm weights (1-d params)"
    )
    layer_decay: float | None = Field(
        default=None, gt=0, le=1, description="ViT layer-wise LR decay per block (timm); None = off"
    )
    sam: bool = Field(
        default=False, description="sharpness-aware minimisation around the optimizer (two passes per step)"
    )
    sam_rho: float = Field(default=0.05, gt=0, description="SAM neighbourhood radius")
    grad_clip_norm: float | None = Field(default=1.0, gt=0, description="max global gradient norm; None = no clipping")
    min_lr_ratio: float = Field(default=0.01, ge=0, le=1, description="cosine floor, fraction of the peak LR")
    fused: bool = Field(
        default=True,
        description="torch's fused kernel for the optimizers that have one (torch.optim Adam, AdamW, SGD: "
        "timm's adam, adamw, sgd, nesterov, momentum): one kernel per step instead of a loop over tensors; "
        "the others ignore it",
    )


class EmaConfig(_Strict):
    """Exponential moving average of the weights (timm ModelEmaV3), evaluated each epoch."""

    enabled: bool = False
    decay: float = Field(default=0.999, gt=0, lt=1)
    warmup: bool = Field(default=True, description="timm's decay warmup (short runs)")
    select: bool = Field(
        default=True, description="checkpoint the EMA weights when their VAL_SELECT MCC is the better one"
    )


class LossConfig(_Strict):
    name: Literal["ce", "focal"] = Field(
        default="ce", description="cross-entropy (train.label_smoothing applies) or focal"
    )
    focal_gamma: float = Field(default=2.0, ge=0, description="focal: (1 - p_t)^gamma; 0 = cross-entropy")
    class_weights: Literal["none", "balanced"] | list[float] = Field(
        default="none", description="balanced = n / (C * count_c), as scikit-learn"
    )


class ConsistencyConfig(_Strict):
    """Repeated augmentation with a consistency loss (AugMix's Jensen-Shannon term, Hendrycks et
    al. 2020): each batch holds ``batch_size / views`` images, each augmented ``views`` times
    independently, so a step and an epoch cost what they did with one view."""

    views: int = Field(default=1, ge=1, le=8, description="augmented views of each image in a batch; 1 = off")
    weight: float = Field(
        default=0.0, ge=0, description="weight of the Jensen-Shannon divergence between the views' class probabilities"
    )


class MixupConfig(_Strict):
    """Mixup (Zhang et al. 2018): a batch becomes ``lam * x + (1 - lam) * x[perm]`` with ``lam ~
    Beta(alpha, alpha)`` and the loss ``lam * L(y) + (1 - lam) * L(y[perm])``, each term with its
    rows' loss weights. CutMix is not offered: a pasted patch changes a presence label by whether
    it holds the object, not by its area."""

    alpha: float = Field(default=0.0, ge=0, description="Beta(alpha, alpha) of the mixing weight; 0 = off")
    prob: float = Field(default=1.0, ge=0, le=1, description="probability that a batch is mixed")


class SamplerConfig(_Strict):
    kind: Literal["shuffle", "class_source"] = Field(
        default="shuffle", description="class_source: WeightedRandomSampler by class x source"
    )
    positive_share: float = Field(
        default=0.5, gt=0, lt=1, description="class_source: expected share of positives drawn (the validator: 0.5)"
    )
    source_mode: Literal["equal", "proportional"] = Field(
        default="proportional", description="within a class: each source equal, or as present"
    )


class SelectionConfig(_Strict):
    """What the trainer keeps and early-stops on (:mod:`roadwork_ml.training.selection`)."""

    metric: Literal["val_mcc", "streetvision_reward"] = Field(
        default="val_mcc",
        description="val_mcc: VAL_SELECT MCC as stored; streetvision_reward: the pooled reward of VAL_SELECT "
        "as the validator sends it (every level, the 0.5 cut, the served global view)",
    )
    levels: list[int] = Field(default_factory=lambda: [0, 1, 2, 3], min_length=1)
    seed: int = Field(default=1, description="the views' draw; apart from evaluation.streetvision.seed")
    max_images: int | None = Field(
        default=None,
        ge=1,
        description="VAL_SELECT images drawn, a seeded sample (memory: 3 x levels x N x min(input_size, 224)^2 bytes)",
    )

    @model_validator(mode="after")
    def _levels(self) -> SelectionConfig:
        if any(v not in (0, 1, 2, 3) for v in self.levels):
            raise ValueError(f"train.selection.levels must be among 0..3, got {self.levels}")
        return self


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
    crop_scale_min: float = Field(
        gt=0,
        le=1,
        description="smallest random-resized-crop zoom (side fraction); small values teach the model tile-sized views",
    )
    mcc_floor: float = Field(ge=-1, le=1, description="VAL_SELECT MCC the checkpoint must reach")
    max_train_images: int | None = None
    augmentation: AugmentConfig = Field(default_factory=AugmentConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    mixup: MixupConfig = Field(default_factory=MixupConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    channels_last: bool = Field(
        default=True,
        description="train convolutions in channels-last memory layout (faster on CPU oneDNN and CUDA; "
        "the returned model and its state dict are in the default layout again)",
    )
    finetune: Literal["full", "linear_probe", "lora", "dora"] = Field(
        description="full = every weight; linear_probe = head only; lora / dora = peft adapters on the backbone + the head in full"
    )
    lora: LoraSettings

    @model_validator(mode="after")
    def _consistency_views(self) -> TrainConfig:
        if self.batch_size % self.consistency.views:
            raise ValueError(
                f"train.batch_size {self.batch_size} is not a multiple of train.consistency.views {self.consistency.views}"
            )
        if (
            self.consistency.views > 1
            and self.augmentation.policy == "validator"
            and not self.augmentation.legacy_on_top
        ):
            raise ValueError(
                "train.consistency.views > 1 needs the batch augmentation (augmentation.policy legacy, or "
                "legacy_on_top): the validator policy draws one augmentation per image and epoch, so its views would be copies"
            )
        if self.mixup.alpha > 0 and self.consistency.views > 1:
            raise ValueError(
                "train.mixup needs train.consistency.views 1: mixing rows with a permutation breaks the "
                "views of one image that the consistency term compares"
            )
        zoomed = {
            "negative": self.augmentation.zoomed_negative_weight,
            "positive": self.augmentation.zoomed_positive_weight,
        }
        for cls, weight in zoomed.items():
            if weight != 1 and self.augmentation.policy != "legacy":
                raise ValueError(
                    f"train.augmentation.zoomed_{cls}_weight needs augmentation.policy legacy: the validator policy "
                    "crops per sample in the loader, where the batch step cannot see the frame"
                )
        if self.augmentation.lost_object_weight < 1 and self.augmentation.policy != "legacy":
            raise ValueError(
                "train.augmentation.lost_object_weight < 1 needs augmentation.policy legacy: the validator policy "
                "crops per sample in the loader, where the batch step cannot see which boxes it kept"
            )
        return self


class HpoParam(_Strict):
    """One searched knob: ``key`` is a dotted path under ``train`` (e.g. ``lr``, ``optimizer.name``)."""

    key: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range(self) -> HpoParam:
        if self.kind == "categorical" and not self.choices:
            raise ValueError(f"hpo param {self.key}: categorical needs choices")
        if self.kind != "categorical" and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError(f"hpo param {self.key}: {self.kind} needs low <= high")
        return self


class HpoConfig(_Strict):
    """Optuna study over the phase-1 recipe; objective = best per-epoch VAL_SELECT MCC."""

    study_name: str = "phase1"
    n_trials: int = Field(default=20, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    seed: int = 0
    pruner: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(default=5, ge=0, description="TPE random trials; median pruner waits for as many")
    n_warmup_epochs: int = Field(default=1, ge=0, description="median pruner: epochs before pruning")
    heartbeat_s: int = Field(
        default=30, ge=1, description="RDB heartbeat; a trial silent for 2x this is failed and retried"
    )
    storage_url: str | None = Field(
        default=None,
        description="Optuna RDB URL (postgresql://... for a deployed instance); None = sqlite:///$DAGSTER_HOME/hpo.db; $ROADWORK_HPO_STORAGE_URL wins (secrets stay in the environment)",
    )
    apply_best: bool = Field(
        default=False, description="phase1_checkpoint trains with the hpo_study asset's best parameters"
    )
    search_space: list[HpoParam] = Field(
        default_factory=lambda: [
            HpoParam(key="lr", kind="float", low=1e-4, high=3e-3, log=True),
            HpoParam(key="weight_decay", kind="float", low=1e-3, high=0.2, log=True),
            HpoParam(key="label_smoothing", kind="float", low=0.0, high=0.2),
        ]
    )


class HardNegativesConfig(_Strict):
    """Hard-negative mining (the ``hard_negatives`` asset): out-of-fold TRAIN scores, confident
    false positives up-weighted in the next phase-1 training."""

    use_in_training: bool = Field(
        default=False, description="phase1_checkpoint weights TRAIN rows by the hard_negatives artifact"
    )
    n_folds: int = Field(default=3, ge=2, description="out-of-fold folds (grouped, label-stratified)")
    epochs: int | None = Field(default=None, ge=1, description="epochs of each fold model; None = train.epochs")
    min_score: float = Field(
        default=0.5, ge=0, le=1, description="a negative scored at or above this is a false positive"
    )
    max_fraction: float = Field(
        default=0.2, gt=0, le=1, description="at most this share of the TRAIN negatives is mined"
    )
    weight: float = Field(default=3.0, ge=1, description="loss weight of a mined row (others 1)")


class ExploraConfig(_Strict):
    """ExPLoRA (arXiv 2406.10973): continued DINOv2 self-supervised pre-training on unlabeled
    target-domain images, last ``unfrozen_blocks`` ViT blocks trained in full, Q/V LoRA of rank
    ``lora.rank`` on the others; the merged backbone initialises phase 1."""

    steps: int = Field(ge=1, description="optimizer steps")
    batch_size: int = Field(ge=2, description="images per step (each gives 2 global + local_crops views)")
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_fraction: float = Field(ge=0, lt=1)
    seed: int
    unfrozen_blocks: int = Field(ge=0, description="last N blocks trained in full")
    lora: LoraSettings
    unfreeze_norms: bool = Field(description="also train every LayerNorm (the paper's ExPLoRA unfreezes them)")
    global_crops_scale: tuple[float, float] = Field(description="random-resized-crop area range of the 2 global crops")
    local_crops: int = Field(ge=0, description="local crops per image")
    local_crops_scale: tuple[float, float]
    local_crop_size: int = Field(gt=0, description="side of a local crop, px (a multiple of the patch size)")
    out_dim: int = Field(ge=2, description="prototypes of the re-initialised DINO head")
    head_hidden: int = Field(ge=1)
    head_bottleneck: int = Field(ge=1)
    student_temp: float = Field(gt=0)
    teacher_temp: float = Field(gt=0)
    center_momentum: float = Field(ge=0, lt=1)
    ema_momentum: tuple[float, float] = Field(description="teacher EMA momentum, cosine from start to end")
    ibot_weight: float = Field(ge=0, description="weight of iBOT's masked-patch loss; 0 = off")
    ibot_mask_ratio: float = Field(ge=0, lt=1)
    min_teacher_entropy: float = Field(ge=0, le=1, description="floor of H(mean teacher distribution) / log(out_dim)")
    min_embedding_std: float = Field(
        ge=0, description="floor of the per-dim std of L2-normalised teacher embeddings times sqrt(D)"
    )
    include_production_traffic: bool = Field(description="also use logged production images (unlabeled) when present")
    max_images: int | None = Field(default=None, ge=1)


class InferenceConfig(_Strict):
    batch_size: int = Field(ge=1, description="images per forward pass (each expands to n_views views)")
    input_size: int = Field(gt=0, description="side the stored image is resized to before views are cut, px")
    multi_view: bool = Field(description="global view + grid x grid tiles; false = the global view only")
    grid: int = Field(ge=1)
    overlap: float = Field(ge=0, lt=1, description="tile overlap, fraction of a tile side")
    flip_tta: bool
    view_chunk: int = Field(
        ge=0,
        description="views per backbone pass (0 = all views in one pass); bench/bench_inference.py measures the fastest",
    )
    aggregator: Literal["mean", "topk", "global", "attention", "auto"] = Field(
        description="auto = best VAL_SELECT MCC among the candidates the view setting allows"
    )
    top_k_candidates: list[int] = Field(
        min_length=1, description="K values tried for topk; the best on VAL_SELECT is kept"
    )
    attention: AttentionConfig
    aggregator_train_images: int = Field(
        ge=1, description="TRAIN images whose cached view outputs train the attention aggregator"
    )
    compare_multi_view: bool = Field(
        default=True,
        description="view_aggregator also scores the multi-view candidates when multi_view is false "
        "(the tiles' outputs: 10x the views of a single-view pass); false = the single-view candidates only",
    )
    channels_last: bool = Field(
        default=True,
        description="run convolution weights in channels-last memory layout during batch inference "
        "(faster on CPU oneDNN and CUDA; the model is in the default layout again afterwards)",
    )


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
    decision_cut: Literal["clean_mcc", "validator_reward", "half"] = Field(
        default="validator_reward",
        description="the StreetVision cut: MCC-optimal on VAL_CALIB as stored, reward-optimal on VAL_CALIB "
        "through the validator emulation (levels pooled, classes weighted 50/50), or half: the model's own 0.5, "
        "untuned",
    )


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
    train_images: int = Field(
        default=20000, ge=20, description="TRAIN images (seeded sample) whose embeddings the distance features use"
    )
    bootstrap_resamples: int = Field(
        default=1000, ge=100, description="paired-bootstrap resamples of AUROC(gate) - AUROC(max-prob)"
    )


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
    def _one_active(self) -> PolicyConfig:
        from roadwork_ml.policy.selection import validate_active_policy

        validate_active_policy(self.active)
        return self

    @property
    def active_kind(self) -> str:
        return next(k for k, v in self.active.items() if v)


# imported here, not at the top: the monitoring settings module imports the data package, whose
# readers import this module's earlier sections
from roadwork_ml.monitoring.settings import MonitoringConfig  # noqa: E402


class TrackingConfig(_Strict):
    experiment: str


class TensorRTConfig(_Strict):
    fp16: bool
    min_batch: int = Field(ge=1)
    opt_batch: int = Field(ge=1)
    max_batch: int = Field(ge=1)
    workspace_gb: float = Field(gt=0)
    min_decision_agreement: float = Field(
        gt=0, le=1, description="share of images whose decision must match ONNX, else the engine is refused"
    )
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
    generated_dir: str | None = Field(
        default=None, description="folder <class>/*.jpg of generated (diffusion) images, scored as a separate slice"
    )
    generated_max_images: int | None = Field(default=None, ge=1, description="cap on images read from generated_dir")


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

    intra_op_threads: int = Field(
        ge=0,
        description="ONNX Runtime intra-op threads per model instance (torch threads for the torch backend); 0 = library default",
    )
    instances: int = Field(
        ge=1, description="model instances executing batches concurrently (Triton's instance_group count)"
    )
    decode_threads: int = Field(ge=1, description="threads decoding images off the event loop")
    request_timeout_s: float = Field(gt=0, description="a request not answered within this many seconds gets 504")
    max_request_bytes: int = Field(gt=0, description="larger request bodies get 413")
    log_flush_rows: int = Field(ge=1, description="the inference log is written when this many rows are buffered ...")
    log_flush_seconds: float = Field(gt=0, description="... or when the oldest buffered row is this old")
    log_compact_seconds: float = Field(
        gt=0, description="the current day's parts are merged into its log.parquet this often (past days at rotation)"
    )
    champion_poll_seconds: float = Field(
        gt=0, description="how often the registry alias (or a watched bundle) is checked for a new champion"
    )


class Profile(_Strict):
    name: str
    data: DataConfig
    splits: SplitConfig
    model: ModelConfig
    train: TrainConfig
    explora: ExploraConfig
    inference: InferenceConfig
    thresholds: ThresholdConfig
    policy: PolicyConfig
    tracking: TrackingConfig
    export: ExportConfig
    evaluation: EvaluationConfig
    deploy: DeployConfig
    monitoring: MonitoringConfig
    hpo: HpoConfig = Field(default_factory=HpoConfig)
    serving: ServingConfig
    hard_negatives: HardNegativesConfig = Field(default_factory=HardNegativesConfig)

    @model_validator(mode="after")
    def _one_freeze_switch(self) -> Profile:
        if self.model.freeze_backbone and self.train.finetune != "linear_probe":
            raise ValueError(
                f"model.freeze_backbone is true but train.finetune is {self.train.finetune!r}: set train.finetune: linear_probe"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _served_side_is_the_served_input(cls, data: Any) -> Any:
        # "input_size": the batch step resizes through the side the served path resizes to
        try:
            aug = data["train"]["augmentation"]
            if aug.get("served_side") == "input_size":
                side = data["inference"]["input_size"]
                data = {**data, "train": {**data["train"], "augmentation": {**aug, "served_side": side}}}
        except (KeyError, TypeError, AttributeError):
            pass  # a missing section is reported by the field validation
        return data


class ProfileError(ValueError):
    """A profile that does not load or validate. The message starts with the profile and then
    gives one line per problem: the dotted key, what is wrong, what is allowed and, for a typo,
    the closest valid key (``train.epohcs: unknown key; did you mean 'epochs'?``)."""

    def __init__(self, profile: str, problems: list[str]):
        self.profile = profile
        self.problems = problems
        super().__init__(
            f"profile {profile} is invalid ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → X; ``"AttentionConfig"`` forward refs are resolved by pydantic already."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _node_at(loc: tuple) -> Any:
    """The pydantic model (or other annotation) that the YAML node at ``loc`` is validated as."""
    node: Any = Profile
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return None
            node = field.annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return None
    return _unwrap(node)


def _explain(err: dict) -> str:
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind, msg, given = err.get("type", ""), err.get("msg", ""), err.get("input")
    if kind == "extra_forbidden":
        parent = _node_at(loc[:-1])
        allowed = sorted(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        where = ".".join(str(p) for p in loc[:-1]) or "the top level"
        return f"{key}: unknown key {str(loc[-1])!r}{_did_you_mean(loc[-1], allowed)} (allowed in {where}: {', '.join(allowed)})"
    if kind == "missing":
        if loc[:2] == ("data", "sources") and len(loc) > 2 and loc[2] not in SOURCE_NAMES:
            return f"data.sources.{loc[2]}: unknown source {str(loc[2])!r}{_did_you_mean(loc[2], SOURCE_NAMES)} (allowed: {', '.join(SOURCE_NAMES)})"
        return f"{key}: required key is missing"
    if kind == "literal_error":
        node = _node_at(loc)
        choices = [str(c) for c in typing.get_args(node)] if typing.get_origin(node) is Literal else []
        return f"{key}: {given!r} is not allowed; allowed: {', '.join(choices) or err.get('ctx', {}).get('expected', '?')}{_did_you_mean(given, choices)}"
    if kind in ("value_error", "assertion_error"):
        return f"{key}: {msg.removeprefix('Value error, ').removeprefix('Assertion failed, ')}"
    parent = _node_at(loc[:-1]) if loc else None
    field = (
        parent.model_fields.get(str(loc[-1])) if isinstance(parent, type) and issubclass(parent, BaseModel) else None
    )
    about = f" ({field.description})" if field is not None and field.description else ""
    return f"{key}: {msg}, got {given!r}{about}"


def _profile_label(name_or_path: str) -> str:
    try:
        path = str(_resolve(name_or_path))
    except FileNotFoundError:
        return repr(name_or_path)
    return repr(path) if path == name_or_path else f"{name_or_path!r} ({path})"


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
    raise FileNotFoundError(
        f"profile {name_or_path!r} not found: give a YAML path or one of {known}{_did_you_mean(name_or_path, known)}"
    )


def load_profile_dict(name_or_path: str | None = None) -> dict:
    """Raw merged YAML of a profile (``extends`` resolved). Default: $ROADWORK_PROFILE or 'demo'."""
    name_or_path = name_or_path or os.environ.get("ROADWORK_PROFILE") or DEFAULT_PROFILE
    path = _resolve(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{name_or_path!r} ({path})", [f"not valid YAML: {' '.join(str(exc).split())}"]) from None
    if not isinstance(raw, dict):
        raise ProfileError(
            f"{name_or_path!r} ({path})", [f"the file must hold a mapping of sections, got {type(raw).__name__}"]
        )
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
    """Load, merge, override and validate a profile; a bad one raises :class:`ProfileError`
    (one line per problem; the pydantic error is kept as ``validation_error``)."""
    name_or_path = name_or_path or os.environ.get("ROADWORK_PROFILE") or DEFAULT_PROFILE
    raw = _deep_merge(load_profile_dict(name_or_path), parse_overrides(overrides))
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        label = _profile_label(name_or_path) + (f" with overrides {overrides}" if overrides else "")
        err = ProfileError(label, [_explain(e) for e in exc.errors(include_url=False)])
        err.validation_error = exc
        raise err from None


def load_profile_or_explain(name_or_path: str | None = None) -> Profile:
    """:func:`load_profile` for import-time callers (the Dagster code location): a bad profile's
    message is written to stderr *before* the exception propagates, so it heads the output
    instead of closing an ~80-line import traceback; the exception is re-raised unchanged."""
    import sys

    try:
        return load_profile(name_or_path)
    except (ProfileError, FileNotFoundError) as exc:
        print(
            f"roadwork: configuration error: {exc}\n  (check it with: roadwork check-profile NAME|PATH)",
            file=sys.stderr,
            flush=True,
        )
        raise


def describe_profile(name_or_path: str, profile: Profile) -> str:
    """One paragraph saying what a valid profile is (for ``roadwork check-profile``)."""
    chain, current = [], name_or_path
    while current and len(chain) < 20:
        path = _resolve(current)
        chain.append(str(path))
        current = (yaml.safe_load(path.read_text()) or {}).get("extends")
    return (
        f"profile {profile.name!r} is valid: {' extends '.join(chain)}\n"
        f"  model {profile.model.backbone} at {profile.model.img_size} px, {profile.train.epochs} epoch(s); active policy {profile.policy.active_kind}; "
        f"sources {', '.join(sorted(profile.data.sources))}; registered model {profile.deploy.registered_model!r}"
    )
