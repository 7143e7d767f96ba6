"""Bootstrap confidence intervals for evaluation metrics (percentile and BCa).

Plain i.i.d. resampling of rows (no stratification): resample ``b`` draws ``n``
row indices with replacement. The indices come from ``numpy.random.SeedSequence(seed)``
spawned once per fixed-size chunk of :data:`CHUNK_SIZE` resamples, so the resamples,
and hence every interval, are the same for any ``n_jobs``; chunks run in parallel on
joblib's ``loky`` backend (``n_jobs=1`` runs in-process).

A *statistic* is any ``Callable[[idx int64 [n]], dict[str, float]]`` evaluated on the
rows ``idx``; :func:`bootstrap_statistic` turns it into intervals, so callers can
bootstrap anything (a StreetVision reward, slice metrics, a difference of models).
Resamples on which a statistic is nan (AUROC with one class, ...) are dropped from
that statistic's distribution and counted in :attr:`Interval.n_dropped`.

BCa (Efron 1987): bias correction ``z0 = Phi^-1(share of resamples below the
estimate, ties counted 1/2)`` (the share is clipped to ``[1/(2B), 1 - 1/(2B)]`` so z0
stays finite), acceleration ``a = sum(u^3) / (6 sum(u^2)^1.5)`` with ``u`` the
jackknife deviations ``mean(theta_(.)) - theta_(g)``. For ``n <= 2000`` the jackknife
leaves one row out (as ``scipy.stats.bootstrap``); above that it is a grouped
(delete-block) jackknife over at most :data:`JACKKNIFE_MAX_BLOCKS` blocks of a seeded
random partition, so its cost is bounded by that many statistic evaluations. The
same formula applies to blocks: third and second cumulants of block sums both scale
with the block size, so ``a`` keeps its expectation (~ skewness / (6 sqrt(n)));
it is only noisier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from roadwork_ml.evaluation import metrics as M

__all__ = [
    "CHUNK_SIZE",
    "JACKKNIFE_EXACT_MAX_N",
    "JACKKNIFE_MAX_BLOCKS",
    "METHODS",
    "METRICS",
    "PREDICTION_THRESHOLD",
    "Interval",
    "PairedComparison",
    "bootstrap_distribution",
    "bootstrap_metrics",
    "bootstrap_statistic",
    "hard_predictions",
    "interval_from_distribution",
    "paired_bootstrap",
]

CHUNK_SIZE = 64
JACKKNIFE_EXACT_MAX_N = 2000
JACKKNIFE_MAX_BLOCKS = 200
METHODS = ("percentile", "bca")
PREDICTION_THRESHOLD = 0.5
_JACKKNIFE_SPAWN_KEY = 2**31  # far above any resample chunk index

Statistic = Callable[[np.ndarray], Mapping[str, float]]


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided bootstrap interval.

    ``estimate`` is the statistic on the full sample; ``[low, high]`` the interval at
    ``level`` (e.g. 0.95) by ``method`` ("percentile" or "bca"); ``se`` the standard
    deviation of the bootstrap distribution; ``n_valid`` resamples used and
    ``n_dropped`` resamples on which the statistic was nan. Units are the statistic's.
    """

    estimate: float
    low: float
    high: float
    method: str
    level: float
    se: float
    n_valid: int = 0
    n_dropped: int = 0

    def format(self, digits: int = 3) -> str:
        """``"0.873 [0.861, 0.885]"``."""
        f = lambda v: f"{v:.{digits}f}" if math.isfinite(v) else "nan"  # noqa: E731
        return f"{f(self.estimate)} [{f(self.low)}, {f(self.high)}]"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (nan -> None)."""
        return {
            "estimate": _num(self.estimate),
            "low": _num(self.low),
            "high": _num(self.high),
            "method": self.method,
            "level": float(self.level),
            "se": _num(self.se),
            "n_valid": int(self.n_valid),
            "n_dropped": int(self.n_dropped),
        }


# --------------------------------------------------------------------------- metric registry
def hard_predictions(probs1: np.ndarray) -> np.ndarray:
    """int64 ``[N]``: 1 where P(class 1) > 0.5 (the StreetVision cut; p = 0.5 -> 0, as ``top_label``)."""
    return (np.asarray(probs1, dtype=np.float64) > PREDICTION_THRESHOLD).astype(np.int64)


def _hard(fn: Callable[[Any, Any], float]) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(labels: np.ndarray, probs1: np.ndarray) -> float:
        return fn(labels, hard_predictions(probs1))

    metric.__name__ = fn.__name__
    return metric


def _augrc(labels: np.ndarray, probs1: np.ndarray) -> float:
    p = np.asarray(probs1, dtype=np.float64)
    correct = hard_predictions(p) == np.asarray(labels)
    return M.augrc(np.maximum(p, 1.0 - p), correct)


# name -> fn(labels int [N], probs1 float [N] = P(class 1)) -> float
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _hard(M.accuracy),
    "precision": _hard(M.precision),
    "recall": _hard(M.recall),
    "f1": _hard(M.f1),
    "mcc": _hard(M.mcc),
    "auroc": M.auroc,
    "auprc": M.auprc,
    "ece": M.ece,
    "brier": M.brier,
    "augrc": _augrc,
}


def _check_binary(labels: Any, probs1: Any, name: str = "probs1") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    p = np.asarray(probs1, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or y.shape[0] != p.shape[0] or y.shape[0] == 0:
        raise ValueError(f"labels and {name} must be non-empty [N] arrays of equal length, got {y.shape} and {p.shape}")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0/1 (1 = roadwork present)")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError(f"{name} must be finite probabilities of class 1 in [0, 1]; apply a sigmoid to logits first")
    return y.astype(np.int64), p


def _check_common(n_resamples: int, level: float, n_jobs: int) -> None:
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")
    if int(n_jobs) == 0:
        raise ValueError("n_jobs must be -1 (all cores) or a positive/negative joblib count, not 0")


# --------------------------------------------------------------------------- generic core
def _eval(statistic: Statistic, idx: np.ndarray, keys: Sequence[str]) -> list[float]:
    vals = statistic(idx)
    return [float(vals[k]) for k in keys]


def _resample_chunk(
    n: int, statistic: Statistic, keys: tuple[str, ...], seed_seq: np.random.SeedSequence, size: int
) -> np.ndarray:
    rng = np.random.default_rng(seed_seq)
    out = np.empty((size, len(keys)), dtype=np.float64)
    for b in range(size):
        out[b] = _eval(statistic, rng.integers(0, n, size=n), keys)
    return out


def _deletion_chunk(n: int, statistic: Statistic, keys: tuple[str, ...], groups: list[np.ndarray]) -> np.ndarray:
    out = np.empty((len(groups), len(keys)), dtype=np.float64)
    for g, rows in enumerate(groups):
        keep = np.ones(n, dtype=bool)
        keep[rows] = False
        out[g] = _eval(statistic, np.flatnonzero(keep), keys)
    return out


def _run(fn: Callable, tasks: list[tuple], n_jobs: int) -> list[np.ndarray]:
    if int(n_jobs) == 1 or len(tasks) <= 1:
        return [fn(*t) for t in tasks]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=int(n_jobs), backend="loky")(delayed(fn)(*t) for t in tasks)


def bootstrap_distribution(
    n: int, statistic: Statistic, n_resamples: int = 1000, seed: int = 0, n_jobs: int = -1
) -> tuple[dict[str, float], np.ndarray]:
    """Evaluate ``statistic`` on the full sample and on ``n_resamples`` i.i.d. resamples.

    Args:
        n: number of rows N; ``statistic(idx)`` gets int64 ``[N]`` row indices.
        statistic: returns ``{name: float}`` with the same keys for every ``idx``.
        n_resamples: B. seed: int seed of the resample indices. n_jobs: joblib workers.

    Returns:
        ``(estimate, dist)``: ``{name: value on all rows}`` and float64 ``[B, K]``
        (columns in the order of ``estimate``'s keys; nan where undefined).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1 rows, got {n}")
    _check_common(n_resamples, 0.5, n_jobs)
    full = statistic(np.arange(n))
    estimate = {k: float(v) for k, v in full.items()}
    keys = tuple(estimate)
    b = int(n_resamples)
    n_chunks = -(-b // CHUNK_SIZE)
    seqs = np.random.SeedSequence(int(seed)).spawn(n_chunks)
    sizes = [min(CHUNK_SIZE, b - c * CHUNK_SIZE) for c in range(n_chunks)]
    parts = _run(_resample_chunk, [(n, statistic, keys, s, m) for s, m in zip(seqs, sizes, strict=False)], n_jobs)
    return estimate, np.concatenate(parts, axis=0)


def _jackknife(n: int, statistic: Statistic, keys: tuple[str, ...], seed: int, n_jobs: int) -> np.ndarray:
    """Jackknife values ``[G, K]``: leave-one-out for n <= 2000, else delete-one-block."""
    if n <= JACKKNIFE_EXACT_MAX_N:
        groups = [np.array([i]) for i in range(n)]
    else:
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_JACKKNIFE_SPAWN_KEY,)))
        groups = np.array_split(rng.permutation(n), JACKKNIFE_MAX_BLOCKS)
    per = -(-len(groups) // max(1, 4 * _n_workers(n_jobs)))
    tasks = [(n, statistic, keys, groups[i : i + per]) for i in range(0, len(groups), per)]
    return np.concatenate(_run(_deletion_chunk, tasks, n_jobs), axis=0)


def _n_workers(n_jobs: int) -> int:
    if int(n_jobs) > 0:
        return int(n_jobs)
    from joblib import cpu_count

    return max(1, cpu_count() + 1 + int(n_jobs))


def _acceleration(jack: np.ndarray) -> float:
    v = jack[np.isfinite(jack)]
    if v.shape[0] < 3:
        return 0.0
    u = v.mean() - v
    den = 6.0 * float(np.sum(u**2)) ** 1.5
    return float(np.sum(u**3)) / den if den > 0 else 0.0


def interval_from_distribution(
    estimate: float, dist: np.ndarray, method: str = "percentile", level: float = 0.95, acceleration: float = 0.0
) -> Interval:
    """Interval from a bootstrap distribution ``dist [B]`` (nan entries dropped and counted).

    ``method="percentile"``: the ``(1-level)/2`` and ``(1+level)/2`` quantiles (numpy
    linear interpolation, as scipy). ``method="bca"``: quantiles at the BCa-adjusted
    levels with the given jackknife ``acceleration``; nan when ``estimate`` is nan.
    A constant distribution gives ``low = high`` = that constant and ``se = 0``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    d = np.asarray(dist, dtype=np.float64).ravel()
    ok = np.isfinite(d)
    d, dropped = d[ok], int((~ok).sum())
    nan = float("nan")
    if d.shape[0] == 0:
        return Interval(float(estimate), nan, nan, method, float(level), nan, 0, dropped)
    se = float(np.std(d, ddof=1)) if d.shape[0] > 1 and np.ptp(d) > 0 else 0.0
    alpha = 1.0 - float(level)
    q = np.array([alpha / 2.0, 1.0 - alpha / 2.0])
    if method == "bca":
        if not math.isfinite(estimate):
            return Interval(float(estimate), nan, nan, method, float(level), se, d.shape[0], dropped)
        b = d.shape[0]
        share = (np.sum(d < estimate) + 0.5 * np.sum(d == estimate)) / b
        z0 = float(ndtri(np.clip(share, 0.5 / b, 1.0 - 0.5 / b)))
        num = z0 + ndtri(q)
        den = 1.0 - acceleration * num
        # den <= 0 only for |a| huge: the adjusted level runs off to the matching end.
        adj = np.where(den > 0, ndtr(z0 + num / np.where(den > 0, den, 1.0)), (num > 0).astype(float))
        q = np.clip(adj, 0.0, 1.0)
    low, high = np.quantile(d, q)
    return Interval(float(estimate), float(low), float(high), method, float(level), se, d.shape[0], dropped)


def bootstrap_statistic(
    n: int,
    statistic: Statistic,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_jobs: int = -1,
    methods: Sequence[str] = METHODS,
) -> dict[str, dict[str, Interval]]:
    """Bootstrap intervals of an arbitrary statistic of N rows.

    Args:
        n: number of rows N.
        statistic: ``f(idx int64 [N]) -> {name: float}`` on the rows ``idx`` (may hold
            repeats); nan where undefined on a resample.
        n_resamples: B (1000 gives endpoints to about +-0.1 se of Monte Carlo noise).
        level: two-sided confidence level, e.g. 0.95.
        seed: seed of the resample indices (results do not depend on ``n_jobs``).
        n_jobs: joblib loky workers; -1 = all cores, 1 = in-process.
        methods: subset of ("percentile", "bca"); BCa adds a jackknife (N or at most
            :data:`JACKKNIFE_MAX_BLOCKS` statistic evaluations).

    Returns:
        ``{name: {method: Interval}}``.
    """
    _check_common(n_resamples, level, n_jobs)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {tuple(methods)}")
    estimate, dist = bootstrap_distribution(n, statistic, n_resamples, seed, n_jobs)
    keys = tuple(estimate)
    accel = np.zeros(len(keys))
    if "bca" in methods:
        jack = _jackknife(int(n), statistic, keys, seed, n_jobs)
        accel = np.array([_acceleration(jack[:, k]) for k in range(len(keys))])
    return {
        key: {m: interval_from_distribution(estimate[key], dist[:, k], m, level, float(accel[k])) for m in methods}
        for k, key in enumerate(keys)
    }


class _MetricStatistic:
    """Picklable statistic: the named METRICS on rows ``idx`` of (labels, probs1)."""

    def __init__(self, labels: np.ndarray, probs1: np.ndarray, names: Sequence[str]):
        self.labels, self.probs1, self.names = labels, probs1, tuple(names)

    def __call__(self, idx: np.ndarray) -> dict[str, float]:
        y, p = self.labels[idx], self.probs1[idx]
        return {name: METRICS[name](y, p) for name in self.names}


def _metric_names(metrics: Sequence[str] | str | None) -> tuple[str, ...]:
    names = tuple(METRICS) if metrics is None else ((metrics,) if isinstance(metrics, str) else tuple(metrics))
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metrics {unknown}; choose from {sorted(METRICS)}")
    return names


def bootstrap_metrics(
    labels: Any,
    probs1: Any,
    metrics: Sequence[str] | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_jobs: int = -1,
    methods: Sequence[str] = METHODS,
) -> dict[str, dict[str, Interval]]:
    """Bootstrap intervals of binary-classifier metrics.

    Args:
        labels: int ``[N]`` in {0, 1}. probs1: float ``[N]`` P(class 1) in [0, 1]
            (hard prediction = ``probs1 > 0.5``).
        metrics: names from :data:`METRICS` (default: all).
        n_resamples, level, seed, n_jobs, methods: see :func:`bootstrap_statistic`.

    Returns:
        ``{metric: {method: Interval}}``; ``Interval.n_dropped`` counts resamples on
        which the metric was undefined (e.g. AUROC of a one-class resample).
    """
    y, p = _check_binary(labels, probs1)
    stat = _MetricStatistic(y, p, _metric_names(metrics))
    return bootstrap_statistic(y.shape[0], stat, n_resamples, level, seed, n_jobs, methods)


# --------------------------------------------------------------------------- paired comparison
@dataclass(frozen=True)
class PairedComparison:
    """New vs reference model on the same rows; see :func:`paired_bootstrap`."""

    metric: str
    new: float
    ref: float
    diff: float
    interval: Interval
    p_value: float
    margin: float
    alpha: float
    significantly_worse: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "new": _num(self.new),
            "ref": _num(self.ref),
            "diff": _num(self.diff),
            "interval": self.interval.to_dict(),
            "p_value": float(self.p_value),
            "margin": float(self.margin),
            "alpha": float(self.alpha),
            "significantly_worse": bool(self.significantly_worse),
            **self.extra,
        }


class _PairedStatistic:
    def __init__(self, labels: np.ndarray, p_new: np.ndarray, p_ref: np.ndarray, metric: str):
        self.labels, self.p_new, self.p_ref, self.fn = labels, p_new, p_ref, METRICS[metric]

    def __call__(self, idx: np.ndarray) -> dict[str, float]:
        y = self.labels[idx]
        return {"new": self.fn(y, self.p_new[idx]), "ref": self.fn(y, self.p_ref[idx])}


def paired_bootstrap(
    labels: Any,
    probs_new: Any,
    probs_ref: Any,
    metric: str = "mcc",
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    margin: float = 0.0,
    n_jobs: int = -1,
    alpha: float = 0.05,
) -> PairedComparison:
    """Paired bootstrap of ``metric(new) - metric(ref)`` on the same resampled rows.

    Reading (one-sided non-inferiority; higher-is-better metrics only):
    ``diff* = new* - ref*`` on each of B resamples (both models see the same indices).
    ``p_value = (1 + #{diff* >= -margin}) / (B + 1)`` is the bootstrap probability
    that the new model is no worse than ``ref`` by more than ``margin``;
    ``significantly_worse = p_value < alpha``, which is (up to the +1 terms) the
    one-sided upper ``1 - alpha`` percentile bound of the difference lying below
    ``-margin``. A large p-value does not prove equivalence; it says the data
    cannot show a loss beyond the margin. ``interval`` is the two-sided percentile
    interval of ``diff`` at ``level``; resamples where the metric is nan are dropped.

    Args:
        labels: int ``[N]``; probs_new, probs_ref: float ``[N]`` P(class 1).
        metric: a :data:`METRICS` name (higher is better: accuracy, precision,
            recall, f1, mcc, auroc, auprc).
        margin: tolerated loss (>= 0) in the metric's units.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}")
    if metric in ("ece", "brier", "augrc"):
        raise ValueError(f"paired_bootstrap reads higher as better; {metric!r} is lower-is-better")
    if margin < 0 or not 0 < alpha < 1:
        raise ValueError(f"need margin >= 0 and 0 < alpha < 1, got margin={margin}, alpha={alpha}")
    y, pn = _check_binary(labels, probs_new, "probs_new")
    _, pr = _check_binary(labels, probs_ref, "probs_ref")
    _check_common(n_resamples, level, n_jobs)
    est, dist = bootstrap_distribution(y.shape[0], _PairedStatistic(y, pn, pr, metric), n_resamples, seed, n_jobs)
    d = dist[:, 0] - dist[:, 1]
    diff = est["new"] - est["ref"]
    interval = interval_from_distribution(diff, d, "percentile", level)
    d = d[np.isfinite(d)]
    b = d.shape[0]
    p_value = (1.0 + float(np.sum(d >= -float(margin)))) / (b + 1.0)
    return PairedComparison(
        metric,
        est["new"],
        est["ref"],
        diff,
        interval,
        p_value,
        float(margin),
        float(alpha),
        bool(p_value < alpha),
        {"n_resamples": b},
    )
