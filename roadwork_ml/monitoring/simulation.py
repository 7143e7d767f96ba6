"""Fast simulated monitoring days with the demo's sequence structure (for tests and benches).

Rendering real images for hundreds of days is too slow for a statistical test, so this
module draws what the monitor sees directly, with the dependence that matters: frames
come in sequences of ``frames`` (3-8, uniform) frames of one drive, and every frame of a
sequence shares the drive's latent scene ``z_s ~ N(mu, I_d)``, its time of day and source.

Per frame: embedding ``z_s + 0.35 ε`` ([d], PCA-like units), logit
``1.6 w·z_s - 0.8 night + 0.5 ε`` (``w`` a fixed unit vector), the served probability
``p = sigmoid(logit)`` and 7 uncertainty-like features (entropy, margin, and five
columns mixing a sequence effect with frame noise). Labels are ``y ~ Bernoulli(p_true)``
with ``p_true = p`` (calibrated) unless ``concept_temperature`` != 1, where
``p_true = sigmoid(logit / concept_temperature)``: the model is then over-confident and its
confidence-based estimate is biased (concept shift).

Covariate shift: ``mean_shift`` moves ``mu`` along the first two embedding axes and
``night_rate`` changes the share of night drives; calibration still holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from roadwork_ml.monitoring.drift_family import DriftSample, subsample_groups
from roadwork_ml.monitoring.drift_stats import median_heuristic_sigma, quantile_edges

__all__ = [
    "CONCEPT",
    "MODEL_COLUMNS_SIM",
    "STABLE",
    "WINTER",
    "DayConfig",
    "as_sample",
    "simulate_day",
    "simulate_frame",
    "simulate_reference",
    "simulated_reference_setup",
]

MODEL_COLUMNS_SIM = ("prob", "entropy", "margin", "f_view", "f_tta", "f_seq1", "f_seq2", "f_noise")
_DIM = 16


@dataclass(frozen=True)
class DayConfig:
    """Distribution of one simulated day (see module notes)."""

    night_rate: float = 0.3
    mean_shift: float = 0.0
    concept_temperature: float = 1.0
    label_fraction: float = 0.3
    frames: tuple[int, int] = (3, 8)


STABLE = DayConfig()
WINTER = DayConfig(night_rate=0.85, mean_shift=0.5)
CONCEPT = DayConfig(concept_temperature=4.0)


def _direction() -> np.ndarray:
    w = np.random.default_rng(12345).normal(size=_DIM)
    return w / np.linalg.norm(w)


def simulate_frame(n: int, config: DayConfig, rng: np.random.Generator, prefix: str) -> pd.DataFrame:
    """``n`` frames (the last sequence cut short) as a frame: sequence_id, time_of_day, source,
    prob, the 7 feature columns, embedding [d], y (true label), label (y or -1) and p_true."""
    lo, hi = config.frames
    lengths = []
    while sum(lengths) < n:
        lengths.append(int(rng.integers(lo, hi + 1)))
    lengths[-1] -= sum(lengths) - n
    s = len(lengths)
    seq = np.repeat(np.arange(s), lengths)
    night_s = rng.random(s) < config.night_rate
    mu = np.zeros(_DIM)
    mu[:2] = config.mean_shift
    z_s = rng.normal(size=(s, _DIM)) + mu
    z_s[:, 2] += 0.8 * night_s
    src_s = rng.choice(["natix", "roadwork", "mapillary"], s, p=[0.46, 0.24, 0.30])
    eff_s = rng.normal(size=(s, 3))
    night = night_s[seq]
    emb = z_s[seq] + 0.35 * rng.normal(size=(n, _DIM))
    logit = 1.6 * (z_s[seq] @ _direction()) - 0.8 * night + 0.5 * rng.normal(size=n)
    p = 1.0 / (1.0 + np.exp(-logit))
    p_true = 1.0 / (1.0 + np.exp(-logit / config.concept_temperature))
    y = (rng.random(n) < p_true).astype(np.int64)
    eps = 1e-12
    df = pd.DataFrame(
        {
            "sequence_id": [f"{prefix}:seq{k}" for k in seq],
            "time_of_day": np.where(night, "night", "day"),
            "source": src_s[seq],
            "prob": p,
            "entropy": -(p * np.log(p + eps) + (1 - p) * np.log(1 - p + eps)),
            "margin": np.abs(2 * p - 1),
            "f_view": np.abs(0.3 + 0.3 * night + 0.2 * eff_s[seq, 0] + 0.1 * rng.normal(size=n)),
            "f_tta": np.abs(0.2 * eff_s[seq, 1] + 0.1 * rng.normal(size=n)),
            "f_seq1": eff_s[seq, 2] + 0.3 * rng.normal(size=n),
            "f_seq2": 0.5 * eff_s[seq, 0] - 0.5 * eff_s[seq, 2] + 0.3 * rng.normal(size=n),
            "f_noise": rng.normal(size=n),
            "y": y,
            "p_true": p_true,
        }
    )
    df["embedding"] = list(emb.astype(np.float32))
    df["label"] = np.where(rng.random(n) < config.label_fraction, y, -1)
    return df


def as_sample(df: pd.DataFrame, embedding_rows: np.ndarray | None = None, iid: bool = False) -> DriftSample:
    """A :class:`DriftSample` of a simulated frame; ``iid=True`` gives every row its own group
    (the naive row-exchangeable test)."""
    groups = np.arange(len(df)).astype(str) if iid else df["sequence_id"].to_numpy(dtype=object)
    rows = np.arange(len(df)) if embedding_rows is None else embedding_rows
    emb = np.stack(df["embedding"].to_numpy())[rows]
    return DriftSample(
        values=df[list(MODEL_COLUMNS_SIM)].to_numpy(dtype=np.float64),
        groups=groups,
        embeddings=emb,
        embedding_groups=groups[rows],
        categories={"time_of_day": df["time_of_day"].to_numpy(), "source": df["source"].to_numpy()},
        labels=df["label"].to_numpy(dtype=np.float64),
    )


def simulate_reference(n: int = 1200, seed: int = 0, label_fraction: float = 1.0) -> pd.DataFrame:
    """A VAL_CALIB-like reference: ``n`` stable frames (all labelled by default)."""
    return simulate_frame(n, DayConfig(label_fraction=label_fraction), np.random.default_rng(seed), "ref")


def simulated_reference_setup(
    n: int, mmd_rows: int, seed: int = 1, bins: int = 10
) -> tuple[pd.DataFrame, np.ndarray, dict[str, np.ndarray], float]:
    """What a reference profile keeps, on :func:`simulate_reference` ``(n, seed)``: (the frame,
    the embedding rows of whole sequences kept for the MMD (about ``mmd_rows``), quantile bin
    edges per model column (``bins`` bins), the MMD bandwidth by the median heuristic)."""
    ref = simulate_reference(n, seed=seed)
    emb_rows = subsample_groups(ref["sequence_id"].to_numpy(dtype=object), mmd_rows, seed=0)
    vals = ref[list(MODEL_COLUMNS_SIM)].to_numpy()
    edges = {c: quantile_edges(vals[:, j], bins) for j, c in enumerate(MODEL_COLUMNS_SIM)}
    sigma = median_heuristic_sigma(np.stack(ref["embedding"].to_numpy())[emb_rows].astype(np.float64))
    return ref, emb_rows, edges, sigma


def simulate_day(n: int, config: DayConfig, seed: int, day: int) -> pd.DataFrame:
    """Day ``day`` of ``n`` frames under ``config`` (independent of other days)."""
    return simulate_frame(n, config, np.random.default_rng([seed, day]), f"day{day}")
