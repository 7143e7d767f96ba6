"""Phase 1 end to end as one pure function: build the classifier, initialise it (weights,
the deployed champion's state or the merged ExPLoRA backbone), set up ``train.finetune``
(full / linear probe / LoRA / DoRA), measure what a training step costs, train, and merge the
adapters so the caller gets a plain :class:`~roadwork_ml.models.classifier.RoadworkClassifier`
that every exporter and runtime understands.

Used by the ``phase1_checkpoint`` asset, the hard-negative folds and each HPO trial.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roadwork_ml.config import LoaderConfig, ModelConfig, TrainConfig
from roadwork_ml.data.transforms import to_float
from roadwork_ml.models.classifier import RoadworkClassifier, build_classifier
from roadwork_ml.models.device import require_initialisation
from roadwork_ml.models.peft_adapters import apply_finetune, measure_train_step, merge_adapters, parameter_counts
from roadwork_ml.training.dataset import ImageDataset
from roadwork_ml.training.explora import init_from_explora
from roadwork_ml.training.trainer import EpochStats, TensorSplit, TrainResult, as_dataset, train_classifier

__all__ = ["Phase1Run", "train_phase1"]


@dataclass
class Phase1Run:
    """``model``: the trained, merged classifier (eval mode); ``params``: trainable / total
    parameter counts and share of the model as trained (adapters + head for LoRA);
    ``step``: :func:`~roadwork_ml.models.peft_adapters.measure_train_step` on one TRAIN batch
    (step seconds, peak memory), empty when not measured."""

    model: RoadworkClassifier
    result: TrainResult
    params: dict[str, float]
    step: dict[str, Any] = field(default_factory=dict)


def _first_batch(data: ImageDataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    items = [data[i] for i in range(min(n, len(data)))]
    images = torch.stack([x for x, _, _ in items])
    return to_float(images), torch.tensor([y for _, y, _ in items], dtype=torch.int64)


def train_phase1(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    train: TensorSplit | ImageDataset,
    val: TensorSplit | ImageDataset,
    *,
    loader: LoaderConfig | None = None,
    sample_weights: np.ndarray | None = None,
    styles: Sequence = (),
    object_boxes: torch.Tensor | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    explora_dir: str | Path | None = None,
    measure_steps: int = 0,
    on_epoch: Callable[[EpochStats], None] | None = None,
    select_score: Callable[[torch.nn.Module], float] | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Phase1Run:
    """Train one phase-1 model and return it merged.

    Args:
        init_state: a full classifier state (e.g. the deployed champion's) loaded strictly.
        explora_dir: the ``explora_checkpoint`` artifact; required when
            ``model_cfg.init_from == "explora_checkpoint"`` and ignored otherwise.
        measure_steps: > 1 runs that many optimizer steps on a copy of the set-up model and
            one TRAIN batch first, for step time and peak memory (0 = skip).
        select_score: the checkpoint's selection score when ``train.selection.metric`` is not
            ``val_mcc`` (:meth:`~roadwork_ml.training.selection.StreetVisionViews.scorer`).
    Random initialisation is refused unless the profile allows it
    (:func:`~roadwork_ml.models.device.require_initialisation`).
    """
    if init_state is None:
        require_initialisation(model_cfg)
    torch.manual_seed(train_cfg.seed)
    model = build_classifier(model_cfg)
    if init_state is not None:
        model.load_state_dict(init_state, strict=True)
    elif model_cfg.init_from == "explora_checkpoint":
        if explora_dir is None:
            raise ValueError(
                "model.init_from is explora_checkpoint but no explora_checkpoint artifact was given: "
                "materialize explora_checkpoint first"
            )
        init_from_explora(model, explora_dir)
    model = apply_finetune(model, train_cfg)
    params = parameter_counts(model)
    step: dict[str, Any] = {}
    if measure_steps > 1:
        x, y = _first_batch(as_dataset(train), train_cfg.batch_size)
        step = measure_train_step(copy.deepcopy(model), x, y, steps=measure_steps, lr=train_cfg.lr, amp=train_cfg.amp)
    result = train_classifier(
        model,
        train,
        val,
        train_cfg,
        on_epoch=on_epoch,
        progress=progress,
        log=log,
        loader=loader,
        sample_weights=sample_weights,
        styles=styles,
        object_boxes=object_boxes,
        select_score=select_score,
    )
    merged = merge_adapters(model).eval()
    return Phase1Run(merged, result, params, step)
