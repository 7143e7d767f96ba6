"""Shared by the calibrators and the selection: input checks, JSON scalars, the LBFGS driver."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from roadwork_ml.contracts import ContractError, validate_logits

_PROB_FLOOR = 1e-15  # NLL of a probability 0 is capped at -ln(1e-15) ≈ 34.5 nats per sample


# --- input checks ------------------------------------------------------------------------


def _as_logits(logits: Any, where: str, num_classes: int | None = None) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ContractError(f"{where}: logits must be [N, C] with C >= 2, got shape {list(z.shape)}")
    if num_classes is not None and z.shape[1] != num_classes:
        raise ContractError(
            f"{where}: this calibrator was fitted on {num_classes} classes, got logits with {z.shape[1]}"
        )
    validate_logits(z, num_classes=z.shape[1])
    return z


def _as_labels(labels: Any, n: int, num_classes: int, where: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ContractError(f"{where}: labels must be [{n}] to match the logits, got shape {list(y.shape)}")
    if (
        y.size
        and not np.issubdtype(y.dtype, np.integer)
        and (not np.all(np.isfinite(y)) or not np.all(y == np.round(y)))
    ):
        raise ContractError(f"{where}: labels must be integer class ids, got dtype {y.dtype} with non-integer values")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ContractError(f"{where}: labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return y


def _as_slices(slices: Any, n: int, where: str) -> np.ndarray:
    if slices is None:
        raise ValueError(f"{where}: pass slices=<array of N slice labels> (one per logits row)")
    s = np.asarray([str(v) for v in np.asarray(slices, dtype=object).ravel()], dtype=object)
    if s.shape != (n,):
        raise ContractError(f"{where}: slices must be [{n}] to match the logits, got {np.asarray(slices).shape}")
    return s


# --- torch optimization helper -------------------------------------------------------------


def _lbfgs(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], max_iter: int = 500) -> float:
    """Minimize ``loss_fn`` over ``params`` in place with LBFGS + strong Wolfe; returns the final loss.

    The best finite point seen (including line-search trial points) is kept, so a run that
    wanders off to a non-finite loss (e.g. a degenerate calibration set) still ends finite.
    """
    with _one_torch_thread():
        return _lbfgs_run(params, loss_fn, max_iter)


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch ops single-threaded, then restore the caller's setting.

    Calibration problems are tiny ([N, C] with a handful of parameters); intra-op threads only
    add synchronization, which costs 10-40x on a loaded machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lbfgs_run(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], max_iter: int) -> float:
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 2,
        tolerance_grad=1e-10,
        tolerance_change=1e-13,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    best = {"loss": math.inf, "params": [p.detach().clone() for p in params]}

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        value = float(loss.detach())
        if math.isfinite(value) and value < best["loss"]:
            best["loss"] = value
            best["params"] = [p.detach().clone() for p in params]
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(loss_fn())
        if not math.isfinite(final) or final > best["loss"]:
            for p, b in zip(params, best["params"], strict=False):
                p.copy_(b)
            final = best["loss"]
    return final


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    return v


def _binary_probs(score: np.ndarray) -> np.ndarray:
    """``[N]`` class-1 log-odds → ``[N, 2]`` probabilities, each computed directly (no 1 − p cancellation)."""
    return np.stack([expit(-score), expit(score)], axis=1)
