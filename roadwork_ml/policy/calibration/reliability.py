"""The reliability diagram the ``calibrator`` asset attaches as metadata."""

from __future__ import annotations

import os

import numpy as np

from roadwork_ml.contracts import ContractError
from roadwork_ml.policy.calibration._fitting import _as_labels
from roadwork_ml.policy.calibration.selection import _ece, _ece_bins

# --- reliability diagram ------------------------------------------------------------------


def reliability_diagram(
    probs: np.ndarray, labels: np.ndarray, path: str | os.PathLike, n_bins: int = 15, title: str = "Reliability diagram"
) -> dict:
    """Write a top-label reliability diagram PNG to ``path`` (atomically) and return its numbers.

    ``probs`` is ``[N, C]`` probabilities or ``[N]`` class-1 probabilities of a binary model.
    Top panel: accuracy per confidence bin (bars, the same ``n_bins`` equal-width bins as the
    ECE), the gap to the mean confidence of each bin, and the diagonal. Bottom panel: rows per
    bin. Returns a JSON-safe dict: path, n, ece and per-bin edges / count / confidence / accuracy.
    """
    from roadwork_ml.evaluation.figures import new_figure, save_figure

    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or not np.isfinite(p).all():
        raise ContractError(
            f"reliability_diagram: probs must be finite [N] or [N, C], got shape {list(np.shape(probs))}"
        )
    y = _as_labels(labels, len(p), p.shape[1], "reliability_diagram")
    count, conf, acc = _ece_bins(p, y, n_bins)
    ece = _ece(p, y, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / n_bins
    nonempty = count > 0

    fig = new_figure((5.0, 6.0))
    ax, axc = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(centers[nonempty], acc[nonempty], width=width, edgecolor="black", color="#4c72b0", label="accuracy")
    ax.bar(
        centers[nonempty],
        conf[nonempty] - acc[nonempty],
        bottom=acc[nonempty],
        width=width,
        color="#dd8452",
        alpha=0.5,
        edgecolor="#dd8452",
        hatch="//",
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nN={len(y)}, ECE={ece:.4f} ({n_bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    axc.bar(centers, count, width=width, edgecolor="black", color="#8c8c8c")
    for x, c in zip(centers[nonempty], count[nonempty], strict=False):
        axc.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=6, rotation=90)
    axc.set_xlabel("confidence (top-label probability)")
    axc.set_ylabel("count")
    axc.set_ylim(0, max(1.0, count.max()) * 1.35)
    path = save_figure(fig, path)
    nan_to_none = lambda a: [None if not np.isfinite(v) else float(v) for v in a]  # noqa: E731
    return {
        "path": str(path),
        "n": int(len(y)),
        "n_bins": int(n_bins),
        "ece": ece,
        "bin_edges": edges.tolist(),
        "bin_count": [int(c) for c in count],
        "bin_confidence": nan_to_none(conf),
        "bin_accuracy": nan_to_none(acc),
    }
