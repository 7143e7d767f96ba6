"""Plots as PNG files (matplotlib Agg, no pyplot state, written atomically): training curves, threshold sweeps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from roadwork_ml.evaluation.figures import new_figure, save_figure


def _save(fig, path: str | Path) -> Path:
    return save_figure(fig, path, dpi=90)


def training_curves(
    step_losses: Sequence[float],
    epochs: Sequence[int],
    val_mcc: Sequence[float],
    val_auroc: Sequence[float],
    path: str | Path,
) -> Path:
    """Left: train loss per step (with a moving average). Right: VAL_SELECT MCC / AUROC per epoch."""
    fig = new_figure((9, 3.2))
    a, b = fig.subplots(1, 2)
    losses = np.asarray(step_losses, dtype=float)
    a.plot(losses, lw=0.6, alpha=0.4, label="step")
    if len(losses) >= 10:
        k = max(5, len(losses) // 30)
        a.plot(
            np.arange(k - 1, len(losses)),
            np.convolve(losses, np.ones(k) / k, mode="valid"),
            lw=1.5,
            label=f"mean of {k}",
        )
    a.set(xlabel="optimizer step", ylabel="train loss", title="training loss")
    a.legend()
    b.plot(epochs, val_mcc, "o-", label="MCC")
    b.plot(epochs, val_auroc, "s-", label="AUROC")
    b.set(xlabel="epoch", ylim=(-0.05, 1.05), title="VAL_SELECT")
    b.legend()
    return _save(fig, path)


def threshold_sweep(
    taus: Sequence[float],
    coverage: Sequence[float],
    fnr: Sequence[float],
    chosen_tau: float,
    target_fnr: float,
    min_coverage: float,
    path: str | Path,
) -> Path:
    """Coverage and FNR-among-exited against the exit threshold τ, with targets and the choice."""
    fig = new_figure((6, 3.4))
    ax = fig.subplots()
    ax.plot(taus, coverage, label="coverage (exited share)")
    ax.plot(taus, fnr, label="FNR among exited")
    ax.axhline(target_fnr, ls=":", c="C1", label=f"target FNR {target_fnr:g}")
    ax.axhline(min_coverage, ls=":", c="C0", label=f"min coverage {min_coverage:g}")
    ax.axvline(chosen_tau, ls="--", c="k", label=f"τ = {chosen_tau:.3f}")
    ax.set(xlabel="exit threshold τ on max probability", ylim=(-0.02, 1.02), title="VAL_CALIB exit sweep")
    ax.legend(fontsize=7)
    return _save(fig, path)


def thumbnail_grid(images: Sequence[np.ndarray], captions: Sequence[str], path: str | Path, cols: int = 8) -> Path:
    """A grid of ``[H, W, 3]`` uint8 images with captions."""
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig = new_figure((cols * 1.3, rows * 1.45))
    axes = fig.subplots(rows, cols)
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, img, cap in zip(np.atleast_1d(axes).ravel(), images, captions, strict=False):
        ax.imshow(img)
        ax.set_title(cap, fontsize=6)
    return _save(fig, path)
