"""The one way a PNG figure is written: a pyplot-free ``Figure`` and an atomic save.

Every plot in roadwork_ml (training curves, threshold sweeps, report plots, the reliability
diagram) draws on :func:`new_figure` and ends in :func:`save_figure`, which writes the PNG to a
temporary file next to ``path`` and renames it, so a reader never sees half a PNG.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from roadwork_ml.artifacts import atomic_path

__all__ = ["new_figure", "save_figure"]


def new_figure(figsize: tuple[float, float], dpi: int = 100) -> Figure:
    """A ``Figure`` with an Agg canvas and no pyplot state (safe in threads); ``figsize`` in inches."""
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: float | None = None, tight: bool = True) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (``dpi`` None: the figure's own); returns ``path``."""
    path = Path(path)
    if tight:
        fig.tight_layout()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi if dpi is not None else "figure")
    return path
