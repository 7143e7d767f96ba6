"""The phase-1 trainer: streamed batches, timm optimizer (AdamW by default; layer decay, SAM),
warmup + cosine, gradient accumulation and clipping, EMA, class-balanced sampling, CE / focal
losses with per-sample weights, bf16 autocast on CUDA, early stopping on VAL_SELECT MCC, a
progress bar, and a per-epoch callback. Every knob is in ``TrainConfig``."""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from roadwork_ml.config import LoaderConfig, TrainConfig
from roadwork_ml.contracts import Purpose, Split, require_split
from roadwork_ml.data.transforms import augment_batch_frames, objects_visible, to_float
from roadwork_ml.evaluation.metrics import auroc, mcc
from roadwork_ml.models.classifier import RoadworkClassifier
from roadwork_ml.training.dataset import ImageDataset, TensorImageDataset, build_loader, iterate_batches
from roadwork_ml.training.losses import build_loss, js_consistency
from roadwork_ml.training.mixup import MixedBatch, mix_batch
from roadwork_ml.training.optim import SAM, build_ema, build_optimizer, clip_gradients
from roadwork_ml.training.samplers import build_sampler
from roadwork_ml.training.schedule import warmup_cosine


@dataclass
class TensorSplit:
    """Images ``[N, 3, S, S]`` uint8, labels ``[N]`` int64, and the split they come from."""

    images: torch.Tensor
    labels: torch.Tensor
    split: Split

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.split.value}: {self.images.shape[0]} images but {self.labels.shape[0]} labels")


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_accuracy: float
    val_mcc: float
    val_auroc: float
    lr: float
    seconds: float
    val_mcc_ema: float | None = None  # the EMA weights' VAL_SELECT MCC, when EMA is on
    select_score: float | None = None  # train.selection's score, when it is not val_mcc
    select_score_ema: float | None = None  # the same for the EMA weights


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_mcc: float = -1.0  # VAL_SELECT MCC of the kept epoch (of its EMA weights when best_is_ema)
    best_score: float = -1.0  # the selection score it was kept on (= best_mcc for val_mcc)
    best_is_ema: bool = False
    stopped_early: bool = False
    ema_state: dict | None = None  # the EMA weights after the last epoch (CPU), when EMA is on

    @property
    def best(self) -> EpochStats:
        return next(h for h in self.history if h.epoch == self.best_epoch)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_logits(
    model: RoadworkClassifier,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """Logits ``[N, C]`` float32 of the single (global) view for uint8 or float images, in eval mode."""
    device = device or next(model.parameters()).device
    model.eval()
    logits = []
    for start in range(0, images.shape[0], batch_size):
        x = to_float(images[start : start + batch_size].to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits.append(model(x).float().cpu())
    return torch.cat(logits) if logits else torch.empty(0, 2)


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module, data: ImageDataset, batch_size: int, loader: LoaderConfig | None = None, amp: bool = False
) -> torch.Tensor:
    """Logits ``[N, C]`` float32 in dataset order, streaming the images through a DataLoader."""
    device = next(model.parameters()).device
    model.eval()
    out = torch.empty(len(data), 2)
    dl = build_loader(data, loader or LoaderConfig(), batch_size, shuffle=False)
    for batch in iterate_batches(dl):
        x = to_float(batch.images.to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = model(x).float().cpu()
        if out.shape[1] != logits.shape[1]:
            out = torch.empty(len(data), logits.shape[1])
        out[batch.indices] = logits
    return out


def as_dataset(data: TensorSplit | ImageDataset) -> ImageDataset:
    """A TensorSplit (in memory) behind the streaming interface; datasets pass through."""
    if isinstance(data, TensorSplit):
        return TensorImageDataset(data.images, data.labels, data.split)
    return data


def evaluate(
    model: torch.nn.Module,
    data: TensorSplit | ImageDataset,
    batch_size: int,
    amp: bool = False,
    loader: LoaderConfig | None = None,
) -> dict[str, float]:
    """VAL_SELECT accuracy / MCC / AUROC at the argmax decision."""
    require_split(Purpose.MODEL_SELECTION, data.split)
    if isinstance(data, TensorSplit):
        logits = predict_logits(model, data.images, batch_size, amp=amp)
        labels = data.labels.numpy()
    else:
        logits = predict_dataset(model, data, batch_size, loader, amp=amp)
        labels = data.labels
    probs = torch.softmax(logits, dim=1)[:, 1].numpy()
    preds = (logits.argmax(1).numpy()).astype(int)
    return {
        "accuracy": float((preds == labels).mean()) if len(labels) else float("nan"),
        "mcc": mcc(labels, preds),
        "auroc": auroc(labels, probs),
    }


class _EpochPermutation(torch.utils.data.Sampler[int]):
    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


class _FirstOf(torch.utils.data.Sampler[int]):
    """The first ``k`` indices of each pass over ``sampler``: with ``views`` augmented copies of
    each image an epoch draws ``n / views`` images, so it costs what one view of ``n`` did."""

    def __init__(self, sampler: torch.utils.data.Sampler[int], k: int):
        self.sampler, self.k = sampler, k

    def __len__(self) -> int:
        return self.k

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.k)


def _train_transform(cfg: TrainConfig, size: int, styles: Sequence = ()):
    if not cfg.augment or cfg.augmentation.policy != "validator":
        return None
    from roadwork_ml.augment.policy import ValidatorPolicy

    a = cfg.augmentation
    return ValidatorPolicy(
        size,
        a.level_probs,
        a.source_prob,
        a.style_prob,
        styles if a.style_prob > 0 else (),
        a.validator_size,
        a.validator_jpeg,
    )


def train_cache_side(model_cfg, cfg: TrainConfig) -> int | None:
    """The side TRAIN images should be kept at (``train.augmentation.source_side``) when it is
    larger than the model's input, else None (kept at the input size)."""
    side = cfg.augmentation.source_side
    return side if cfg.augment and side > model_cfg.img_size else None


def legacy_augment(
    x: torch.Tensor, gen: torch.Generator, cfg: TrainConfig, out_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The profile's batch-wise augmentation (``train.augmentation``'s legacy knobs) on float
    ``[B, 3, H, W]``; returns ``[B, 3, out_size, out_size]`` (default: the input's size) and each
    sample's frame ``[B, 2, 3]`` (:func:`~roadwork_ml.data.transforms.augment_batch_frames`)."""
    a = cfg.augmentation
    if isinstance(a.served_side, str):
        raise ValueError(
            f"train.augmentation.served_side {a.served_side!r} is resolved to inference.input_size when the profile "
            "loads; a TrainConfig built on its own needs a number of pixels (or null)"
        )
    return augment_batch_frames(
        x,
        gen,
        scale=(cfg.crop_scale_min, 1.0),
        max_shift=a.max_shift,
        jitter=a.jitter,
        flip_prob=a.flip_prob,
        saturation=tuple(a.saturation_range),
        saturation_prob=a.saturation_prob,
        geometry_prob=a.geometry_prob,
        rotation=a.rotation,
        noise_prob=a.noise_prob,
        noise_variances=tuple(a.noise_variances),
        noise_size=a.validator_size,
        out_size=out_size,
        served_side=a.served_side,
        jpeg_prob=a.jpeg_prob,
    )


def _forward_backward(
    model,
    loss_fn,
    x,
    y,
    w,
    amp: bool,
    accum: int,
    views: int = 1,
    consistency: float = 0.0,
    mixed: MixedBatch | None = None,
) -> torch.Tensor:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x).float()
    loss = mixed.loss(loss_fn, logits, y, w) if mixed is not None else loss_fn(logits, y, w)
    if views > 1 and consistency > 0:
        loss = loss + consistency * js_consistency(logits, views)
    (loss / accum).backward()
    return loss


def train_classifier(
    model: RoadworkClassifier,
    train: TensorSplit | ImageDataset,
    val: TensorSplit | ImageDataset,
    cfg: TrainConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    loader: LoaderConfig | None = None,
    sample_weights: np.ndarray | None = None,
    styles: Sequence = (),
    object_boxes: torch.Tensor | None = None,
    select_score: Callable[[torch.nn.Module], float] | None = None,
) -> TrainResult:
    """Train in place; on return the model holds the weights of the epoch with the best
    selection score (the EMA weights when ``cfg.ema.select`` and they scored higher): VAL_SELECT
    MCC, or ``select_score(model)`` when ``cfg.selection.metric`` is not ``val_mcc``.

    Args:
        train, val: in-memory TensorSplits or streaming datasets (:mod:`roadwork_ml.training.dataset`).
        loader: DataLoader workers (the profile's ``data.loader``); default: main process.
        sample_weights: per-TRAIN-row loss weights ``[N]`` (hard negatives), 1 when None.
        styles: :class:`~roadwork_ml.augment.policy.PhotoStyle` per source for the validator policy.
        object_boxes: float ``[N, K, 4]`` roadwork boxes of each TRAIN row (image fractions, NaN
            rows pad; :func:`~roadwork_ml.training.object_boxes.boxes_from_tags`). With
            ``train.augmentation.lost_object_weight`` < 1, a positive whose every box the batch
            step's zoom or crop left out of the frame gets that loss weight: its label is one
            no model can learn from the pixels it sees. Rows without boxes keep weight 1.
        select_score: ``model -> float``, higher is better, e.g.
            :meth:`~roadwork_ml.training.selection.StreetVisionViews.scorer`; required unless
            ``cfg.selection.metric`` is ``val_mcc``.
        on_epoch: called after each epoch; raising there (e.g. an Optuna prune) stops training.
    """
    if cfg.selection.metric != "val_mcc" and select_score is None:
        raise ValueError(
            f"train.selection.metric is {cfg.selection.metric!r}: pass its select_score "
            "(roadwork_ml.training.selection.streetvision_views(...).scorer(...))"
        )
    if cfg.selection.metric == "val_mcc":
        select_score = None
    require_split(Purpose.FIT_MODEL, train.split)
    require_split(Purpose.MODEL_SELECTION, val.split)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = _device()
    model.to(device)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=layout)  # 4-D (conv) weights only; a ViT's linear layers are untouched
    amp = cfg.amp and device.type == "cuda"
    loader = loader or LoaderConfig()

    train_ds = as_dataset(train)
    transform = _train_transform(cfg, train_ds.size, styles)
    if transform is not None:
        train_ds = copy.copy(train_ds)  # shares the decoded data / paths, not the transform
        train_ds.transform, train_ds.seed = transform, cfg.seed
    legacy_aug = cfg.augment and (cfg.augmentation.policy == "legacy" or cfg.augmentation.legacy_on_top)
    input_size = train_ds.size  # the model's input side
    if legacy_aug and transform is None and cfg.augmentation.source_side > input_size:
        train_ds = train_ds.with_size(cfg.augmentation.source_side)  # the batch step samples, then resizes
    n = len(train_ds)
    weights = None
    if sample_weights is not None:
        weights = torch.as_tensor(np.asarray(sample_weights, dtype=np.float32))
        if weights.shape != (n,):
            raise ValueError(f"sample_weights has {weights.shape[0]} rows for {n} TRAIN images")
    # Plain shuffling draws each epoch's permutation from ``gen`` (as the in-memory loop always did,
    # before the legacy augmentation's draws), so a profile without new knobs trains as before.
    sampler = build_sampler(cfg.sampler, train_ds.labels, train_ds.sources, cfg.seed) or _EpochPermutation(n, gen)
    boxes, known = _object_boxes(object_boxes, n, cfg, legacy_aug)
    views, consistency = cfg.consistency.views, cfg.consistency.weight
    if views > 1:
        sampler = _FirstOf(sampler, math.ceil(n / views))
    train_loader = build_loader(train_ds, loader, cfg.batch_size // views, sampler=sampler, seed=cfg.seed)
    loss_fn = build_loss(cfg.loss, cfg.label_smoothing, train_ds.labels)

    optimizer = build_optimizer(model, cfg)
    sam = optimizer if isinstance(optimizer, SAM) else None
    if sam is not None and cfg.grad_accum_steps != 1:
        raise ValueError("SAM takes two passes per step; set train.grad_accum_steps to 1")
    base_opt = sam.base if sam is not None else optimizer
    batches_per_epoch = len(train_loader)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = warmup_cosine(base_opt, total_steps, int(cfg.warmup_fraction * total_steps), cfg.optimizer.min_lr_ratio)
    ema = build_ema(model, cfg)

    result = TrainResult()
    best_state = _contiguous_state(model.state_dict())
    stale = 0
    step = 0
    eval_bs = max(64, cfg.batch_size)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        train_ds.set_epoch(epoch)
        losses = []
        bar = tqdm(
            iterate_batches(train_loader),
            total=batches_per_epoch,
            desc=f"epoch {epoch}/{cfg.epochs}",
            disable=not progress,
            leave=False,
        )
        optimizer.zero_grad(set_to_none=True)
        for b, batch in enumerate(bar):
            x = to_float(batch.images.to(device, non_blocking=True))
            y = batch.labels.to(device, non_blocking=True)
            w = weights[batch.indices].to(device) if weights is not None else None
            if views > 1:  # row i * B + j is view i of image j; the augmentation draws each row apart
                x, y = x.repeat(views, 1, 1, 1), y.repeat(views)
                w = w.repeat(views) if w is not None else None
            if legacy_aug:
                x, frames = legacy_augment(x, gen, cfg, out_size=input_size)
                if boxes is not None:
                    w = _lost_object_weights(frames, y, batch.indices.repeat(views), boxes, known, w, cfg)
                if cfg.augmentation.zoomed_negative_weight != 1 or cfg.augmentation.zoomed_positive_weight != 1:
                    w = _zoomed_weights(frames, y, w, cfg)
            mixed = None
            if cfg.mixup.alpha > 0:
                mixed = mix_batch(x, cfg.mixup, gen)
                x = mixed.x
            x = x.contiguous(memory_format=layout)

            loss = _forward_backward(model, loss_fn, x, y, w, amp, cfg.grad_accum_steps, views, consistency, mixed)
            last = b == batches_per_epoch - 1
            if (b + 1) % cfg.grad_accum_steps == 0 or last:
                if sam is not None:
                    sam.first_step()
                    sam.zero_grad(set_to_none=True)
                    _forward_backward(model, loss_fn, x, y, w, amp, cfg.grad_accum_steps, views, consistency, mixed)
                    clip_gradients(model, cfg.optimizer.grad_clip_norm)
                    sam.second_step()
                else:
                    clip_gradients(model, cfg.optimizer.grad_clip_norm)
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                if ema is not None:
                    ema.update(model, step=step)
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        result.step_losses.extend(losses)
        metrics = evaluate(model, val, batch_size=eval_bs, amp=amp, loader=loader)
        ema_mcc = (
            evaluate(ema.module, val, batch_size=eval_bs, amp=amp, loader=loader)["mcc"] if ema is not None else None
        )
        score = select_score(model) if select_score is not None else None
        ema_score = select_score(ema.module) if select_score is not None and ema is not None else None
        stats = EpochStats(
            epoch,
            float(np.mean(losses)),
            metrics["accuracy"],
            metrics["mcc"],
            metrics["auroc"],
            float(scheduler.get_last_lr()[0]),
            time.perf_counter() - t0,
            ema_mcc,
            score,
            ema_score,
        )
        result.history.append(stats)
        ema_txt = f" ema mcc {ema_mcc:.4f}" if ema_mcc is not None else ""
        if score is not None:
            ema_txt += f"  {cfg.selection.metric} {score:.4f}" + (
                f" ema {ema_score:.4f}" if ema_score is not None else ""
            )
        log(
            f"epoch {epoch}: loss {stats.train_loss:.4f}  VAL_SELECT acc {stats.val_accuracy:.4f} mcc {stats.val_mcc:.4f} auroc {stats.val_auroc:.4f}{ema_txt}  ({stats.seconds:.1f}s)"
        )
        if on_epoch:
            on_epoch(stats)
        model_score = score if score is not None else stats.val_mcc
        ema_sel = ema_score if score is not None else ema_mcc
        use_ema = ema is not None and cfg.ema.select and ema_sel is not None and ema_sel > model_score
        epoch_score = ema_sel if use_ema else model_score
        if epoch_score > result.best_score:
            result.best_score, result.best_epoch, result.best_is_ema, stale = epoch_score, epoch, use_ema, 0
            result.best_mcc = ema_mcc if use_ema else stats.val_mcc
            best_state = _contiguous_state((ema.module if use_ema else model).state_dict())
        else:
            stale += 1
            if stale >= cfg.early_stopping_patience:
                result.stopped_early = True
                log(f"early stop after epoch {epoch}: no VAL_SELECT {cfg.selection.metric} gain for {stale} epochs")
                break
    if ema is not None:
        result.ema_state = {
            k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in ema.module.state_dict().items()
        }
    model.to(memory_format=torch.contiguous_format)
    model.load_state_dict(best_state)
    model.eval()
    return result


def _object_boxes(
    object_boxes: torch.Tensor | None, n: int, cfg: TrainConfig, legacy_aug: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(boxes ``[N, K, 4]``, rows with a box ``[N]``) when lost-object weighting applies, else (None, None)."""
    if object_boxes is None or cfg.augmentation.lost_object_weight >= 1 or not legacy_aug:
        return None, None
    boxes = torch.as_tensor(object_boxes, dtype=torch.float32)
    if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[2] != 4:
        raise ValueError(f"object_boxes has shape {tuple(boxes.shape)}, expected [{n}, K, 4]")
    return boxes, (~torch.isnan(boxes).any(dim=-1)).any(dim=-1)


def _lost_object_weights(frames, y, indices, boxes, known, w, cfg: TrainConfig) -> torch.Tensor:
    """Loss weights ``[B]``: ``w`` (1 when None) times ``lost_object_weight`` where a positive with
    known boxes shows none of them."""
    idx = indices.cpu()
    lost = (y.cpu() == 1) & known[idx] & ~objects_visible(frames.cpu(), boxes[idx])
    return _scaled_where(w, lost, cfg.augmentation.lost_object_weight, y)


def _zoomed_weights(frames, y, w, cfg: TrainConfig) -> torch.Tensor:
    """Loss weights ``[B]``: ``w`` (1 when None) times ``zoomed_negative_weight`` for a negative, and
    ``zoomed_positive_weight`` for a positive, whose frame shows at most ``zoomed_area_max`` of the
    image. A frame ``[2, 3]`` maps the output square into the input's, so the share of the image it
    shows is ``|det|`` of its 2 x 2 part."""
    a = cfg.augmentation
    zoomed = torch.linalg.det(frames[:, :, :2].double()).abs().cpu() <= a.zoomed_area_max
    positive = y.cpu() == 1
    w = _scaled_where(w, zoomed & ~positive, a.zoomed_negative_weight, y)
    return _scaled_where(w, zoomed & positive, a.zoomed_positive_weight, y)


def _scaled_where(w: torch.Tensor | None, mask: torch.Tensor, value: float, y: torch.Tensor) -> torch.Tensor:
    """``w`` (1 when None) times ``value`` where ``mask`` (a CPU bool ``[B]``), on ``w``'s (else
    ``y``'s) device: the batch step's per-sample weights multiply, none replaces another."""
    base = w if w is not None else torch.ones(len(y), device=y.device)
    return base * torch.where(mask, value, 1.0).to(base.device, base.dtype)


def _contiguous_state(state: dict) -> dict:
    """A detached copy of a state dict in the default memory layout (safetensors and ONNX export
    expect it; channels-last weights are not contiguous), its ``_metadata`` kept."""
    out = OrderedDict(
        (
            k,
            v.detach().clone(memory_format=torch.contiguous_format)
            if isinstance(v, torch.Tensor)
            else copy.deepcopy(v),
        )
        for k, v in state.items()
    )
    if hasattr(state, "_metadata"):
        out._metadata = copy.deepcopy(state._metadata)
    return out
