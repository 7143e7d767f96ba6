"""Fit every conformal method of a profile at once, and measure them on held-out folds.

The scores fed here are *out-of-fold* on VAL_CALIB: calibrated probabilities from the
calibrator's cross-fitting and gate confidences from the gate's cross-fitting, so no row is
scored by a model that saw its label. (The deployed calibrator and gate are refits on all
of VAL_CALIB; see :class:`roadwork_ml.policy.conformal.SCRC` for what that means for the
finite-sample statement.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold

from roadwork_ml.config import ConformalConfig
from roadwork_ml.contracts import Purpose, Split, require_split
from roadwork_ml.evaluation import metrics as M
from roadwork_ml.policy.conformal import APS, RAPS, SCRC, ConformalRiskControl, SplitConformalLAC, conformal_from_dict

SET_METHODS = ("lac", "aps", "raps")


def build_methods(cfg: ConformalConfig) -> dict:
    """Unfitted estimators named as in the bundle: lac, aps, raps, crc_fnr, scrc."""
    eps = cfg.contamination_eps
    return {
        "lac": SplitConformalLAC(cfg.alpha, contamination_eps=eps),
        "aps": APS(cfg.alpha, randomized=cfg.randomized, seed=cfg.seed, contamination_eps=eps),
        "raps": RAPS(
            cfg.alpha,
            k_reg=cfg.k_reg,
            lambda_reg=cfg.lambda_reg,
            randomized=cfg.randomized,
            seed=cfg.seed,
            contamination_eps=eps,
        ),
        "crc_fnr": ConformalRiskControl(cfg.crc_alpha),
        "scrc": SCRC(cfg.scrc_alpha, cfg.scrc_delta, n_grid=cfg.scrc_grid, seed=cfg.seed, contamination_eps=eps),
    }


def fit_all(
    probs: np.ndarray, labels: np.ndarray, gate_conf: np.ndarray, cfg: ConformalConfig, split: Split | str
) -> dict:
    """Fit every method on ``probs`` [N, C], ``labels`` [N], ``gate_conf`` [N]; returns name → estimator."""
    require_split(Purpose.FIT_POLICY, split)
    fitted = {}
    for name, est in build_methods(cfg).items():
        fitted[name] = (
            est.fit(probs, labels, gate_conf, split=split) if name == "scrc" else est.fit(probs, labels, split=split)
        )
    return fitted


def fit_escalated_scrc(
    probs: np.ndarray,
    labels: np.ndarray,
    gate_conf: np.ndarray,
    cfg: ConformalConfig,
    split: Split | str,
    alpha: float,
) -> SCRC:
    """SCRC at the stricter selective risk ``alpha`` the decision policy switches to while
    monitoring has escalated (same delta, grid and data as the profile's SCRC)."""
    require_split(Purpose.FIT_POLICY, split)
    est = SCRC(alpha, cfg.scrc_delta, n_grid=cfg.scrc_grid, seed=cfg.seed, contamination_eps=cfg.contamination_eps)
    return est.fit(probs, labels, gate_conf, split=split)


def to_dict(fitted: dict) -> dict:
    return {name: est.to_dict() for name, est in fitted.items()}


def from_dict(d: dict) -> dict:
    return {name: conformal_from_dict(v) for name, v in d.items()}


@dataclass
class HeldOut:
    """Pooled held-out measurements, each with its binomial standard error."""

    rows: list[dict]

    def by_method(self) -> dict[str, dict]:
        return {r["method"]: r for r in self.rows}


def held_out_evaluation(
    probs: np.ndarray, labels: np.ndarray, gate_conf: np.ndarray, cfg: ConformalConfig, split: Split | str
) -> HeldOut:
    """K-fold: fit on K−1 folds, predict the held-out fold, pool the held-out rows.

    Reports coverage / size / singleton / empty for LAC, APS, RAPS; FNR (P(miss | y=1)) and
    joint miss rate for CRC; selective risk and coverage for SCRC. The target each must meet
    is in ``target``; ``se`` is the binomial standard error of the measured value.
    """
    require_split(Purpose.FIT_POLICY, split)
    n = len(labels)
    skf = StratifiedKFold(cfg.eval_folds, shuffle=True, random_state=cfg.seed)
    sets = {m: np.zeros((n, probs.shape[1]), bool) for m in (*SET_METHODS, "crc_fnr", "scrc")}
    accepted = np.zeros(n, bool)
    for fold, (tr, te) in enumerate(skf.split(probs, labels)):
        fitted = fit_all(probs[tr], labels[tr], gate_conf[tr], cfg, split)
        for m in SET_METHODS:
            sets[m][te] = fitted[m].predict_sets(probs[te], seed=cfg.seed + 1000 + fold)
        sets["crc_fnr"][te] = fitted["crc_fnr"].predict_sets(probs[te])
        sets["scrc"][te] = fitted["scrc"].predict_sets(probs[te], gate_conf[te])
        accepted[te] = fitted["scrc"].accept(probs[te], gate_conf[te])

    def se(p: float, m: int) -> float:
        return float(np.sqrt(max(p * (1 - p), 1e-12) / max(m, 1)))

    rows = []
    for m in SET_METHODS:
        cov = M.set_coverage(labels, sets[m])
        rows.append(
            {
                "method": m,
                "metric": "coverage",
                "value": cov,
                "target": 1 - cfg.alpha,
                "se": se(cov, n),
                "avg_size": M.set_average_size(sets[m]),
                "singleton_rate": M.singleton_rate(sets[m]),
                "empty_rate": M.empty_rate(sets[m]),
            }
        )
    pos = labels == 1
    miss = pos & ~sets["crc_fnr"][:, 1]
    joint = float(miss.mean())
    rows.append(
        {
            "method": "crc_fnr",
            "metric": "joint_miss_rate",
            "value": joint,
            "target": cfg.crc_alpha,
            "se": se(joint, n),
            "avg_size": M.set_average_size(sets["crc_fnr"]),
            "singleton_rate": M.singleton_rate(sets["crc_fnr"]),
            "empty_rate": M.empty_rate(sets["crc_fnr"]),
            "fnr_given_positive": float(miss[pos].mean()) if pos.any() else 0.0,
        }
    )
    n_acc = int(accepted.sum())
    wrong = probs.argmax(1) != labels
    risk = float(wrong[accepted].mean()) if n_acc else 0.0
    rows.append(
        {
            "method": "scrc",
            "metric": "selective_risk",
            "value": risk,
            "target": cfg.scrc_alpha,
            "se": se(risk, n_acc),
            "avg_size": M.set_average_size(sets["scrc"]),
            "singleton_rate": M.singleton_rate(sets["scrc"]),
            "empty_rate": M.empty_rate(sets["scrc"]),
            "coverage": n_acc / n,
        }
    )
    return HeldOut(rows)


def within_guarantee(row: dict, n_se: float = 3.0) -> bool:
    """Coverage must reach its target, risks stay below theirs, up to ``n_se`` standard errors."""
    if row["metric"] == "coverage":
        return row["value"] >= row["target"] - n_se * row["se"]
    return row["value"] <= row["target"] + n_se * row["se"]


def gate_accept_threshold(confidence: np.ndarray, is_wrong: np.ndarray, target_risk: float) -> dict:
    """Lowest confidence cut whose error rate among accepted (conf ≥ cut) is ≤ ``target_risk``:
    the largest coverage meeting the target. Out-of-fold inputs ``[N]``; returns cut, coverage, risk."""
    coverage, risk, cuts = M.risk_coverage_curve(confidence, 1 - np.asarray(is_wrong), return_thresholds=True)
    ok = np.flatnonzero(risk <= target_risk)
    if ok.size == 0:
        return {"cut": float("inf"), "coverage": 0.0, "risk": 0.0, "feasible": False}
    k = int(ok[-1])
    return {"cut": float(cuts[k]), "coverage": float(coverage[k]), "risk": float(risk[k]), "feasible": True}


def scrc_versus(held: dict[str, HeldOut], alpha: float, ships: str) -> dict:
    """SCRC on the same held-out folds with each confidence in ``held`` (name -> evaluation; must
    hold ``shipped`` and ``max_prob``), at the same ``alpha``: coverage (share accepted) and
    selective risk of each, and the coverage the shipped confidence adds over max-prob."""
    rows = {name: h.by_method()["scrc"] for name, h in held.items()}
    out = {"scrc_alpha": alpha, "ships": ships}
    for name, r in rows.items():
        out[f"coverage_{name}"] = r["coverage"]
        out[f"risk_{name}"] = r["value"]
    out["coverage_gain"] = rows["shipped"]["coverage"] - rows["max_prob"]["coverage"]
    return out
