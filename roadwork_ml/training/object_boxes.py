"""Roadwork boxes of TRAIN rows, for the batch step's lost-object weighting.

A record's ``tags`` JSON may carry ``roadwork_boxes``: ``[[u0, v0, u1, v1], ...]`` in fractions of
the image's width and height (synthetic scenes know their objects; a COCO-annotated source such
as ROADWork has them). The trainer (``train.augmentation.lost_object_weight``) uses them to see
when its zoom or crop left every roadwork object of a positive out of the frame.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import torch

TAG = "roadwork_boxes"

__all__ = ["TAG", "boxes_from_tags", "boxes_tensor"]


def _checked(row: Sequence[Sequence[float]] | None, i: int) -> list[np.ndarray]:
    """The row's boxes as float64 ``[4]`` arrays; ValueError naming row ``i`` for a bad box."""
    out = []
    for box in row or ():
        b = np.asarray(box, dtype=np.float64)
        if b.shape != (4,) or not np.isfinite(b).all() or (b < 0).any() or (b > 1).any():
            raise ValueError(f"row {i}: roadwork box {box!r} is not four fractions in [0, 1]")
        if not (b[0] < b[2] and b[1] < b[3]):
            raise ValueError(f"row {i}: roadwork box {box!r} is empty (needs u0 < u1 and v0 < v1)")
        out.append(b)
    return out


def _padded(rows: list[list[np.ndarray]]) -> torch.Tensor:
    k = max([len(r) for r in rows] + [1])
    out = np.full((len(rows), k, 4), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, b in enumerate(row):
            out[i, j] = b
    return torch.from_numpy(out)


def boxes_tensor(boxes_per_row: Sequence[Sequence[Sequence[float]] | None]) -> torch.Tensor:
    """float32 ``[N, K, 4]`` (K = the most boxes of any row, at least 1), NaN rows as padding;
    a row with ``None`` (boxes unknown) or no boxes is all NaN. A box that is not four numbers
    with ``u0 < u1`` and ``v0 < v1`` in [0, 1] raises ValueError naming its row."""
    return _padded([_checked(row, i) for i, row in enumerate(boxes_per_row)])


def boxes_from_tags(tags: Sequence[str]) -> tuple[torch.Tensor | None, list[int]]:
    """``([N, K, 4] boxes, rows whose boxes are malformed)`` from each row's ``tags`` JSON
    (:data:`TAG`); the tensor is None when no row has the tag (the source does not know its
    objects). A row without the tag, or with a malformed box, is all NaN: unknown, so its loss
    weight stays as it was, and nothing fails for it."""
    per_row: list = [json.loads(t or "{}").get(TAG) for t in tags]
    if all(b is None for b in per_row):
        return None, []
    rows, bad = [], []
    for i, row in enumerate(per_row):
        try:
            rows.append(_checked(row, i))
        except (TypeError, ValueError):
            bad.append(i)
            rows.append([])
    return _padded(rows), bad
