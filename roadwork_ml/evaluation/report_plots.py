"""Evaluation-report plots as PNG files (matplotlib Agg, written atomically).

Each function draws on its own ``Figure`` (no pyplot state, safe in threads), writes
the PNG to a temporary file next to ``path`` and renames it, and returns ``path``.
The reliability diagram lives in :func:`roadwork_ml.policy.calibration.reliability_diagram`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from roadwork_ml.evaluation import metrics as M
from roadwork_ml.evaluation.figures import new_figure, save_figure

__all__ = ["confidence_histogram", "risk_coverage_plot", "slice_heatmap"]


def _figure(figsize: tuple[float, float]) -> Figure:
    return new_figure(figsize)


def _save(fig: Figure, path: str | Path) -> Path:
    return save_figure(fig, path, dpi=90)


def _pair(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct).reshape(-1)
    if c.shape[0] != ok.shape[0] or c.shape[0] == 0:
        raise ValueError(f"confidence ({c.shape[0]}) and correct ({ok.shape[0]}) must be non-empty and equally long")
    if not np.all(np.isfinite(c)):
        raise ValueError("confidence contains nan/inf")
    if not np.all(np.isin(ok, (0, 1))):
        raise ValueError("correct must be bool or 0/1")
    return c, ok.astype(bool)


def confidence_histogram(
    confidence: Any,
    correct: Any,
    path: str | Path,
    bins: int = 20,
    title: str = "Confidence of correct and wrong predictions",
) -> Path:
    """Overlaid histograms of ``confidence [N]`` for correct vs wrong predictions (``correct [N]`` bool)."""
    c, ok = _pair(confidence, correct)
    lo, hi = min(0.5, float(c.min())), max(1.0, float(c.max()))
    edges = np.linspace(lo, hi, int(bins) + 1)
    fig = _figure((6.0, 3.6))
    ax = fig.subplots()
    ax.hist(c[ok], bins=edges, alpha=0.6, color="#4c72b0", label=f"correct (n={int(ok.sum())})")
    ax.hist(c[~ok], bins=edges, alpha=0.6, color="#c44e52", label=f"wrong (n={int((~ok).sum())})")
    ax.set(xlabel="confidence", ylabel="count", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def risk_coverage_plot(
    confidence: Any,
    correct: Any,
    path: str | Path,
    operating_points: Mapping[str, tuple[float, float]] | None = None,
    title: str = "Risk-coverage",
) -> Path:
    """Selective risk vs coverage (:func:`metrics.risk_coverage_curve`), AURC/AUGRC in the title.

    ``operating_points``: ``{name: (coverage, risk)}`` markers (fractions in [0, 1]).
    """
    c, ok = _pair(confidence, correct)
    cov, risk = M.risk_coverage_curve(c, ok)
    fig = _figure((6.0, 4.0))
    ax = fig.subplots()
    ax.plot(cov, risk, lw=1.5, color="#4c72b0", label="selective risk")
    ax.plot(cov, risk * cov, lw=1.0, ls="--", color="#8c8c8c", label="generalized risk")
    for i, (name, (pc, pr)) in enumerate((operating_points or {}).items()):
        ax.plot([pc], [pr], "o", color=f"C{(i + 1) % 10}", label=f"{name}: cov {pc:.2f}, risk {pr:.3f}")
    ax.set(
        xlabel="coverage",
        ylabel="risk",
        xlim=(0, 1.02),
        ylim=(0, max(0.05, float(risk.max()) * 1.1)),
        title=f"{title}\nN={c.shape[0]}, AURC={M.aurc(c, ok):.4f}, AUGRC={M.augrc(c, ok):.4f}",
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def slice_heatmap(
    acc_df: pd.DataFrame, count_df: pd.DataFrame, path: str | Path, title: str = "Accuracy by time of day x weather"
) -> Path:
    """Heatmap of ``acc_df`` (rows x cols, accuracy in [0, 1]); cells show accuracy and n, nan cells grey."""
    if acc_df.shape != count_df.shape or acc_df.size == 0:
        raise ValueError(f"acc_df {acc_df.shape} and count_df {count_df.shape} must be non-empty with the same shape")
    acc = acc_df.to_numpy(dtype=np.float64)
    cnt = count_df.to_numpy()
    fig = _figure((1.3 * acc.shape[1] + 2.0, 0.8 * acc.shape[0] + 1.6))
    ax = fig.subplots()
    ax.set_facecolor("#bdbdbd")  # shows through the masked (nan) cells
    im = ax.imshow(np.ma.masked_invalid(acc), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            txt = f"n={int(cnt[i, j])}" if math.isnan(acc[i, j]) else f"{acc[i, j]:.3f}\nn={int(cnt[i, j])}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(acc.shape[1]), [str(c) for c in acc_df.columns])
    ax.set_yticks(range(acc.shape[0]), [str(r) for r in acc_df.index])
    ax.set(xlabel=acc_df.columns.name or "", ylabel=acc_df.index.name or "", title=title)
    fig.colorbar(im, ax=ax, label="accuracy")
    return _save(fig, path)
