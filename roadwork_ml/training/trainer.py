"""The phase-1 trainer: AdamW, warmup + cosine, gradient accumulation, bf16 autocast on
CUDA, early stopping on VAL_SELECT MCC, a progress bar, and a per-epoch callback."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from roadwork_ml.config import TrainConfig
from roadwork_ml.contracts import Purpose, Split, require_split
from roadwork_ml.data.transforms import augment_batch, to_float
from roadwork_ml.evaluation.metrics import auroc, mcc
from roadwork_ml.models.classifier import RoadworkClassifier
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


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_mcc: float = -1.0
    stopped_early: bool = False

    @property
    def best(self) -> EpochStats:
        return next(h for h in self.history if h.epoch == self.best_epoch)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_logits(model: RoadworkClassifier, images: torch.Tensor, batch_size: int, device: torch.device | None = None, amp: bool = False) -> torch.Tensor:
    """Logits ``[N, C]`` float32 of the single (global) view for uint8 or float images, in eval mode."""
    device = device or next(model.parameters()).device
    model.eval()
    logits = []
    for start in range(0, images.shape[0], batch_size):
        x = to_float(images[start : start + batch_size].to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits.append(model(x).float().cpu())
    return torch.cat(logits) if logits else torch.empty(0, 2)


def evaluate(model: RoadworkClassifier, data: TensorSplit, batch_size: int, amp: bool = False) -> dict[str, float]:
    """VAL_SELECT accuracy / MCC / AUROC at the argmax decision."""
    require_split(Purpose.MODEL_SELECTION, data.split)
    logits = predict_logits(model, data.images, batch_size, amp=amp)
    probs = torch.softmax(logits, dim=1)[:, 1].numpy()
    labels = data.labels.numpy()
    preds = (logits.argmax(1).numpy()).astype(int)
    return {
        "accuracy": float((preds == labels).mean()) if len(labels) else float("nan"),
        "mcc": mcc(labels, preds),
        "auroc": auroc(labels, probs),
    }


def train_classifier(
    model: RoadworkClassifier,
    train: TensorSplit,
    val: TensorSplit,
    cfg: TrainConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train in place; on return the model holds the weights of the best VAL_SELECT MCC epoch."""
    require_split(Purpose.FIT_MODEL, train.split)
    require_split(Purpose.MODEL_SELECTION, val.split)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = _device()
    model.to(device)
    amp = cfg.amp and device.type == "cuda"

    head_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    backbone_params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    groups = [{"params": head_params, "lr": cfg.lr}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": cfg.lr * cfg.backbone_lr_mult})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    n = train.images.shape[0]
    batches_per_epoch = math.ceil(n / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = warmup_cosine(optimizer, total_steps, int(cfg.warmup_fraction * total_steps))

    result = TrainResult()
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        losses = []
        bar = tqdm(range(batches_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
        optimizer.zero_grad(set_to_none=True)
        for b in bar:
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = to_float(train.images[idx].to(device))
            y = train.labels[idx].to(device)
            if cfg.augment:
                x = augment_batch(x, gen, scale=(cfg.crop_scale_min, 1.0))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            (loss / cfg.grad_accum_steps).backward()
            last = b == batches_per_epoch - 1
            if (b + 1) % cfg.grad_accum_steps == 0 or last:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        result.step_losses.extend(losses)
        metrics = evaluate(model, val, batch_size=max(64, cfg.batch_size), amp=amp)
        stats = EpochStats(epoch, float(np.mean(losses)), metrics["accuracy"], metrics["mcc"], metrics["auroc"], float(scheduler.get_last_lr()[0]), time.perf_counter() - t0)
        result.history.append(stats)
        log(f"epoch {epoch}: loss {stats.train_loss:.4f}  VAL_SELECT acc {stats.val_accuracy:.4f} mcc {stats.val_mcc:.4f} auroc {stats.val_auroc:.4f}  ({stats.seconds:.1f}s)")
        if on_epoch:
            on_epoch(stats)
        if stats.val_mcc > result.best_mcc:
            result.best_mcc, result.best_epoch, stale = stats.val_mcc, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.early_stopping_patience:
                result.stopped_early = True
                log(f"early stop after epoch {epoch}: no VAL_SELECT MCC gain for {stale} epochs")
                break
    model.load_state_dict(best_state)
    model.eval()
    return result
