"""The failure-predictor gate (phase 3): predict, from the uncertainty features, whether
the classifier's prediction is wrong.

Score convention
----------------
* :meth:`FailureGate.predict_score` returns ``P(wrong)`` in ``[0, 1]`` — higher means the
  classifier's prediction is more likely wrong. This is the score whose AUROC / AUPRC for
  detecting errors we report.
* :meth:`FailureGate.confidence` returns ``1 - P(wrong)`` — higher means more trustworthy.
  The SCRC rule ACCEPTS a prediction when ``confidence >= λ1``; everything downstream of the
  gate (SCRC, the bundle, serving) uses ``confidence``.
* :meth:`FailureGate.to_module` gives an ``nn.Module`` mapping raw features ``[N, 7]`` to
  ``confidence`` ``[N]`` (standardization included) for exported graphs.

The baseline it must beat is the classifier's own confidence: error score ``1 - max_prob``
(confidence ``max_prob``).

Fitting happens on ``VAL_CALIB`` only (:class:`~roadwork_ml.contracts.Purpose.FIT_POLICY`).
Because SCRC is calibrated on the same split, use the *out-of-fold* confidences from
:func:`cross_fit_gate` (``CrossFitResult.oof_confidence``) there, not the refit gate's
in-sample scores, which are optimistic.

Files: ``gate.safetensors`` (MLP weights, BatchNorm buffers, standardization mean/std) and
``gate.json`` (config, feature names, metrics, sha256 of the weights). No pickle anywhere.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from roadwork_ml.artifacts import IntegrityError, atomic_path, atomic_write_json, sha256_file
from roadwork_ml.contracts import ContractError, Purpose, Split, require_split, validate_policy_json
from roadwork_ml.policy.uncertainty import FEATURE_NAMES

__all__ = [
    "GateConfig",
    "GateMLP",
    "FailureGate",
    "CrossFitResult",
    "cross_fit_gate",
    "GATE_WEIGHTS_FILE",
    "GATE_JSON_FILE",
]

log = logging.getLogger(__name__)

GATE_WEIGHTS_FILE = "gate.safetensors"
GATE_JSON_FILE = "gate.json"
GATE_KIND = "failure_gate"
GATE_FORMAT_VERSION = 1

MODE_MLP = "mlp"
MODE_MAX_PROB = "max_prob_fallback"  # too few errors to learn from: confidence = max_prob


@dataclass(frozen=True)
class GateConfig:
    """Hyper-parameters of the gate (the seed plan's phase-3 numbers are the defaults)."""

    hidden_sizes: tuple[int, ...] = (128, 64, 32)
    dropouts: tuple[float, ...] = (0.2, 0.1, 0.05)
    pos_weight: float = 2.0  # weight of the "wrong" class in BCEWithLogits
    lr: float = 1e-3
    weight_decay: float = 1e-2  # AdamW
    epochs: int = 20
    batch_size: int = 256
    seed: int = 0
    std_floor: float = 1e-6  # standardization: std = max(std, std_floor)
    # intra-op CPU threads while training / predicting (restored afterwards). The MLP is tiny:
    # one thread is as fast when the machine is idle and ~10x faster when it is busy.
    num_threads: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(self, "dropouts", tuple(float(d) for d in self.dropouts))
        if len(self.hidden_sizes) != len(self.dropouts):
            raise ValueError(f"GateConfig: {len(self.hidden_sizes)} hidden sizes but {len(self.dropouts)} dropouts")
        if any(h < 1 for h in self.hidden_sizes) or any(not 0 <= d < 1 for d in self.dropouts):
            raise ValueError(f"GateConfig: hidden sizes must be >= 1 and dropouts in [0, 1), got {self}")
        if self.num_threads < 1:
            raise ValueError(f"GateConfig: num_threads must be >= 1, got {self.num_threads}")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or self.pos_weight <= 0 or self.std_floor <= 0:
            raise ValueError(f"GateConfig: epochs >= 1, batch_size >= 2, lr/pos_weight/std_floor > 0 required, got {self}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        d["dropouts"] = list(self.dropouts)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GateConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ContractError(f"GateConfig: unknown keys {sorted(unknown)}")
        return cls(**d)


class GateMLP(nn.Module):
    """``in → 128 → 64 → 32 → 1``; each hidden block is Linear → BatchNorm1d → ReLU → Dropout.

    ``forward(x [N, in]) -> logit [N]`` (logit of P(wrong)).
    """

    def __init__(self, in_features: int = len(FEATURE_NAMES), hidden_sizes: Iterable[int] = (128, 64, 32),
                 dropouts: Iterable[float] = (0.2, 0.1, 0.05)):
        super().__init__()
        hidden_sizes, dropouts = list(hidden_sizes), list(dropouts)
        if len(hidden_sizes) != len(dropouts):
            raise ValueError(f"GateMLP: {len(hidden_sizes)} hidden sizes but {len(dropouts)} dropouts")
        layers: list[nn.Module] = []
        width = in_features
        for h, d in zip(hidden_sizes, dropouts):
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(d)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class _GateConfidenceModule(nn.Module):
    """Raw features ``[N, F]`` → ``confidence = 1 - P(wrong)`` ``[N]`` (float32, eval mode)."""

    def __init__(self, mlp: GateMLP | None, mean: torch.Tensor, std: torch.Tensor, active: torch.Tensor,
                 max_prob_index: int):
        super().__init__()
        self.mlp = mlp
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())
        self.register_buffer("active", active.detach().clone().bool())
        self.max_prob_index = int(max_prob_index)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.float()
        if self.mlp is None:
            return x[:, self.max_prob_index]
        z = torch.where(self.active, (x - self.mean) / self.std, torch.zeros_like(x))
        return torch.sigmoid(-self.mlp(z))


def _to_2d_float(features: Any, n_features: int | None, where: str) -> np.ndarray:
    x = np.asarray(features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
        want = f"[N, {n_features}]" if n_features is not None else "[N, F]"
        raise ValueError(f"{where}: features must be {want}, got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{where}: features hold non-finite values in {bad} of {x.shape[0]} rows")
    return x


def _to_labels(is_wrong: Any, n: int, where: str) -> np.ndarray:
    y = np.asarray(is_wrong)
    if y.shape != (n,):
        raise ValueError(f"{where}: is_wrong must be [{n}] to match features, got shape {list(y.shape)}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{where}: is_wrong must hold only 0/1 (1 = the classifier's prediction was wrong)")
    return y.astype(np.int64)


def _safe_auc(y: np.ndarray, score: np.ndarray) -> tuple[float | None, float | None]:
    """(AUROC, AUPRC) for detecting ``y == 1``; ``None`` when only one class is present."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if y.size == 0 or y.min() == y.max():
        return None, None
    return float(roc_auc_score(y, score)), float(average_precision_score(y, score))


class FailureGate:
    """sklearn-style failure predictor over the uncertainty features.

    ``fit(features [N, F], is_wrong [N], split=...)`` → ``predict_score`` = P(wrong),
    ``confidence`` = 1 − P(wrong), ``predict_proba`` = ``[P(right), P(wrong)]``.
    """

    def __init__(self, config: GateConfig | None = None, feature_names: Iterable[str] = FEATURE_NAMES):
        self.config = config or GateConfig()
        self.feature_names: tuple[str, ...] = tuple(feature_names)
        self.mode: str = MODE_MLP
        self.model: GateMLP | None = None
        self.mean: torch.Tensor | None = None  # float32 [F]
        self.std: torch.Tensor | None = None  # float32 [F]
        self.active: torch.Tensor | None = None  # bool [F]; False = constant at fit time, input ignored
        self.metrics: dict[str, Any] = {}

    # --- fitting --------------------------------------------------------------------------

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def is_fitted(self) -> bool:
        return self.mean is not None and (self.model is not None or self.mode == MODE_MAX_PROB)

    def fit(self, features: Any, is_wrong: Any, *, split: Split | str | Iterable[Split | str]) -> "FailureGate":
        """Train the MLP on ``VAL_CALIB`` data. Deterministic for a given ``config.seed`` on CPU.

        Raises :class:`~roadwork_ml.contracts.LeakageError` for any split but ``val_calib``.
        """
        require_split(Purpose.FIT_POLICY, split)
        x = _to_2d_float(features, self.n_features, "FailureGate.fit")
        y = _to_labels(is_wrong, x.shape[0], "FailureGate.fit")
        n = x.shape[0]
        if n < 2:
            raise ValueError(f"FailureGate.fit: need at least 2 rows to train (BatchNorm), got {n}")
        n_wrong = int(y.sum())
        if n_wrong == 0 or n_wrong == n:
            warnings.warn(f"FailureGate.fit: is_wrong has a single class ({n_wrong} wrong of {n}); "
                          "the gate will output a near-constant score. cross_fit_gate falls back to max_prob in this case",
                          RuntimeWarning, stacklevel=2)
        cfg = self.config
        self._set_standardization(x)
        xs = self._standardize(torch.from_numpy(x).float())
        yt = torch.from_numpy(y).float()

        losses: list[float] = []
        with torch.random.fork_rng(devices=[]), _torch_threads(cfg.num_threads):
            torch.manual_seed(cfg.seed)  # weight init and dropout masks
            model = GateMLP(self.n_features, cfg.hidden_sizes, cfg.dropouts)
            gen = torch.Generator().manual_seed(cfg.seed)  # batch order
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([cfg.pos_weight]))
            model.train()
            for _ in range(cfg.epochs):
                perm = torch.randperm(n, generator=gen)
                total = 0.0
                for idx in _batches(perm, cfg.batch_size):
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(xs[idx]), yt[idx])
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                losses.append(total / n)
        model.eval()
        self.model, self.mode = model, MODE_MLP

        train_auroc, train_auprc = _safe_auc(y, self.predict_score(x))
        self.metrics = {
            "n_train": n,
            "n_wrong": n_wrong,
            "error_rate": n_wrong / n,
            "loss_history": [round(v, 6) for v in losses],
            "final_train_loss": losses[-1],
            "train_auroc_in_sample": train_auroc,  # optimistic; see cross_fit for honest numbers
            "train_auprc_in_sample": train_auprc,
            **self._standardization_report(x),
        }
        return self

    @classmethod
    def max_prob_fallback(cls, features: Any, config: GateConfig | None = None,
                          feature_names: Iterable[str] = FEATURE_NAMES, reason: str = "") -> "FailureGate":
        """A gate with nothing learned: ``P(wrong) = 1 - max_prob``, ``confidence = max_prob``.

        Used when there are too few wrong predictions to train the MLP.
        """
        gate = cls(config, feature_names)
        if "max_prob" not in gate.feature_names:
            raise ValueError("max_prob fallback needs a 'max_prob' feature column")
        x = _to_2d_float(features, gate.n_features, "FailureGate.max_prob_fallback")
        gate._set_standardization(x)
        gate.mode, gate.model = MODE_MAX_PROB, None
        gate.metrics = {"n_train": int(x.shape[0]), "fallback_reason": reason, **gate._standardization_report(x)}
        return gate

    def _set_standardization(self, x: np.ndarray) -> None:
        mean = x.mean(axis=0)
        std = np.maximum(x.std(axis=0), self.config.std_floor)
        self.mean = torch.from_numpy(mean).float()
        self.std = torch.from_numpy(std).float()
        self.active = torch.from_numpy(x.std(axis=0) >= self.config.std_floor)

    def _standardization_report(self, x: np.ndarray) -> dict:
        raw_std = x.std(axis=0)
        return {
            "feature_mean": {k: float(v) for k, v in zip(self.feature_names, self.mean.tolist())},
            "feature_std": {k: float(v) for k, v in zip(self.feature_names, self.std.tolist())},
            # constant at fit time (e.g. epistemic_feature_variance without embeddings): the gate
            # learned nothing from them, so their input is ignored (standardized value fixed at 0)
            "constant_features": [k for k, s in zip(self.feature_names, raw_std) if s < self.config.std_floor],
        }

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` with ``std = max(std, std_floor)``; features that were constant at fit
        time map to 0 (exactly what training saw), so a value that appears there only at inference
        (e.g. embeddings present at serving but not at fit) cannot blow up through ``1 / std_floor``."""
        return torch.where(self.active, (x - self.mean) / self.std, torch.zeros_like(x))

    # --- prediction -----------------------------------------------------------------------

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("FailureGate is not fitted: call fit(...), cross_fit_gate(...) or FailureGate.load(dir)")

    def predict_logit(self, features: Any) -> np.ndarray:
        """Logit of P(wrong), ``[N]`` float64 (float32 network). Fallback mode: ``logit(1 - max_prob)``."""
        self._require_fitted()
        if self.mode == MODE_MAX_PROB:
            p = np.clip(self.predict_score(features), 1e-12, 1 - 1e-12)
            return np.log(p) - np.log1p(-p)
        return self._mlp_logit(features)

    def _mlp_logit(self, features: Any) -> np.ndarray:
        x = _to_2d_float(features, self.n_features, "FailureGate.predict")
        with torch.no_grad(), _torch_threads(self.config.num_threads):
            self.model.eval()
            z = self.model(self._standardize(torch.from_numpy(x).float()))
        return z.double().numpy()

    def predict_score(self, features: Any) -> np.ndarray:
        """``P(wrong)`` in ``[0, 1]``, ``[N]`` float64. Higher = more likely a wrong prediction."""
        self._require_fitted()
        if self.mode == MODE_MAX_PROB:
            x = _to_2d_float(features, self.n_features, "FailureGate.predict")
            return 1.0 - x[:, self.feature_names.index("max_prob")]
        z = self._mlp_logit(features)
        return 1.0 / (1.0 + np.exp(-z))

    def confidence(self, features: Any) -> np.ndarray:
        """``1 - P(wrong)``, ``[N]`` float64. SCRC accepts a prediction when ``confidence >= λ1``."""
        return 1.0 - self.predict_score(features)

    def predict_proba(self, features: Any) -> np.ndarray:
        """``[N, 2]``: columns ``[P(right), P(wrong)]`` (class 1 = wrong, as in ``is_wrong``)."""
        s = self.predict_score(features)
        return np.stack([1.0 - s, s], axis=1)

    def predict(self, features: Any, threshold: float = 0.5) -> np.ndarray:
        """``1`` where ``P(wrong) >= threshold``."""
        return (self.predict_score(features) >= threshold).astype(np.int64)

    def to_module(self) -> nn.Module:
        """An eval-mode ``nn.Module``: raw features ``[N, F]`` → confidence ``[N]`` (float32).

        Agrees with :meth:`confidence` to float32 precision (~1e-7); for exported graphs.
        """
        self._require_fitted()
        import copy

        mlp = copy.deepcopy(self.model).eval() if self.model is not None else None
        idx = self.feature_names.index("max_prob") if "max_prob" in self.feature_names else 0
        module = _GateConfidenceModule(mlp, self.mean, self.std, self.active, idx).eval()
        module.requires_grad_(False)
        return module

    # --- persistence ----------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._require_fitted()
        tensors = {"standardize.mean": self.mean.contiguous(), "standardize.std": self.std.contiguous(),
                   "standardize.active": self.active.contiguous()}
        if self.model is not None:
            for k, v in self.model.state_dict().items():
                tensors[f"model.{k}"] = v.detach().cpu().contiguous()
        return tensors

    def save(self, directory: str | Path) -> dict:
        """Write ``gate.safetensors`` then ``gate.json`` (each atomically); return the JSON object."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = directory / GATE_WEIGHTS_FILE
        with atomic_path(weights) as tmp:
            save_file(self.state_tensors(), str(tmp), metadata={"kind": GATE_KIND, "format_version": str(GATE_FORMAT_VERSION)})
        obj = {
            "kind": GATE_KIND,
            "format_version": GATE_FORMAT_VERSION,
            "mode": self.mode,
            "config": self.config.to_dict(),
            "feature_names": list(self.feature_names),
            "score_convention": {
                "predict_score": "P(wrong): higher = the classifier's prediction is more likely wrong",
                "confidence": "1 - P(wrong): SCRC accepts when confidence >= lambda1",
            },
            "weights_file": GATE_WEIGHTS_FILE,
            "weights_sha256": sha256_file(weights),
            "metrics": _json_safe(self.metrics),
        }
        atomic_write_json(directory / GATE_JSON_FILE, obj)
        return obj

    @classmethod
    def load(cls, directory: str | Path) -> "FailureGate":
        """Rebuild a gate from :meth:`save`'s files (safetensors only; no pickle, no torch.load)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        jpath, wpath = directory / GATE_JSON_FILE, directory / GATE_WEIGHTS_FILE
        if not jpath.exists() or not wpath.exists():
            raise FileNotFoundError(f"{directory} must hold {GATE_JSON_FILE} and {GATE_WEIGHTS_FILE} written by FailureGate.save")
        obj = json.loads(jpath.read_text())
        validate_policy_json(obj, GATE_KIND, ["format_version", "mode", "config", "feature_names", "weights_sha256"])
        if obj["format_version"] != GATE_FORMAT_VERSION:
            raise ContractError(f"{jpath}: gate format_version {obj['format_version']} is not supported (expected {GATE_FORMAT_VERSION})")
        digest = sha256_file(wpath)
        if digest != obj["weights_sha256"]:
            raise IntegrityError(f"{wpath}: sha256 {digest[:12]}… does not match {jpath.name}'s {obj['weights_sha256'][:12]}…; "
                                 "the files are from different saves or were modified — re-run the gate asset")
        tensors = load_file(str(wpath))
        gate = cls(GateConfig.from_dict(obj["config"]), obj["feature_names"])
        gate.mode = obj["mode"]
        try:
            gate.mean, gate.std = tensors.pop("standardize.mean"), tensors.pop("standardize.std")
            gate.active = tensors.pop("standardize.active").bool()
        except KeyError as exc:
            raise ContractError(f"{wpath}: missing standardization tensor {exc}; re-run the gate asset") from exc
        if any(t.shape != (gate.n_features,) for t in (gate.mean, gate.std, gate.active)):
            raise ContractError(f"{wpath}: standardization stats must be [{gate.n_features}]")
        if gate.mode == MODE_MLP:
            model = GateMLP(gate.n_features, gate.config.hidden_sizes, gate.config.dropouts)
            state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ContractError(f"{wpath}: weights do not match the GateMLP described in {jpath.name}: {exc}") from exc
            gate.model = model.eval()
        elif gate.mode != MODE_MAX_PROB:
            raise ContractError(f"{jpath}: unknown gate mode {gate.mode!r}")
        gate.metrics = obj.get("metrics", {})
        return gate


@contextmanager
def _torch_threads(n: int):
    """Run the block with ``n`` intra-op torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _batches(perm: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split ``perm`` into batches; a trailing batch of 1 joins the previous one (BatchNorm needs >= 2)."""
    chunks = list(torch.split(perm, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


def _json_safe(obj: Any) -> Any:
    """Replace NaN/inf with None and numpy scalars with Python ones, so the JSON is strict."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


# --- cross-fitting ------------------------------------------------------------------------

@dataclass
class CrossFitResult:
    """Out-of-fold evaluation of the gate against the max-prob baseline, plus the refit gate.

    Scores are error scores (higher = more likely wrong): gate ``P(wrong)`` and baseline
    ``1 - max_prob``. ``pooled`` and each ``per_fold`` entry hold ``gate_auroc``,
    ``gate_auprc``, ``baseline_auroc``, ``baseline_auprc`` (``None`` where undefined).
    When no cross-fitting was possible, ``oof_gate_score`` equals the baseline score and
    ``gate`` is the max-prob fallback; ``fallback`` says why.
    """

    gate: FailureGate
    oof_gate_score: np.ndarray  # [N] out-of-fold P(wrong)
    oof_baseline_score: np.ndarray  # [N] 1 - max_prob
    fold_ids: np.ndarray  # [N] test fold of each row (-1 when no folds were used)
    per_fold: list[dict]
    pooled: dict
    n: int
    n_wrong: int
    n_folds_requested: int
    n_folds_used: int
    fallback: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def oof_confidence(self) -> np.ndarray:
        """``1 - oof_gate_score``: honest confidences for calibrating SCRC on the same split."""
        return 1.0 - self.oof_gate_score

    @property
    def gate_beats_baseline(self) -> bool | None:
        g, b = self.pooled.get("gate_auroc"), self.pooled.get("baseline_auroc")
        return None if g is None or b is None else bool(g > b)

    def to_dict(self) -> dict:
        """JSON-safe summary (no per-row arrays) for asset metadata and ``gate.json``."""
        return _json_safe({
            "n": self.n,
            "n_wrong": self.n_wrong,
            "error_rate": self.n_wrong / self.n if self.n else None,
            "n_folds_requested": self.n_folds_requested,
            "n_folds_used": self.n_folds_used,
            "fallback": self.fallback,
            "notes": self.notes,
            "pooled": self.pooled,
            "per_fold": self.per_fold,
            "gate_beats_baseline": self.gate_beats_baseline,
            "gate_mode": self.gate.mode,
        })


def _fold_seed(seed: int, fold: int) -> int:
    return int(np.random.SeedSequence([int(seed), 7919, int(fold)]).generate_state(1)[0])


def cross_fit_gate(features: Any, is_wrong: Any, n_folds: int = 5, seed: int = 0, config: GateConfig | None = None, *,
                   split: Split | str | Iterable[Split | str], min_wrong_per_fold: int = 2,
                   feature_names: Iterable[str] = FEATURE_NAMES, progress: bool = False) -> CrossFitResult:
    """Stratified K-fold out-of-fold gate scores vs the max-prob baseline, then refit on all rows.

    * Folds: ``StratifiedKFold(n_folds_used, shuffle=True, random_state=seed)``; fold ``k``'s
      gate trains with a seed derived from ``(config.seed, k)``; the final gate uses ``config.seed``.
    * Few errors: the folds are reduced so every test fold holds at least ``min_wrong_per_fold``
      wrong (and right) predictions. If fewer than 2 such folds are possible, nothing is learned:
      the returned gate is :meth:`FailureGate.max_prob_fallback`, ``fallback`` names the reason,
      and the baseline metrics are still reported (pooled over all rows) when defined.
    """
    require_split(Purpose.FIT_POLICY, split)
    cfg = config or GateConfig()
    names = tuple(feature_names)
    if "max_prob" not in names:
        raise ValueError("cross_fit_gate: features need a 'max_prob' column for the baseline")
    x = _to_2d_float(features, len(names), "cross_fit_gate")
    n = x.shape[0]
    y = _to_labels(is_wrong, n, "cross_fit_gate")
    n_wrong, n_right = int(y.sum()), int(n - y.sum())
    if n_folds < 2:
        raise ValueError(f"cross_fit_gate: n_folds must be >= 2, got {n_folds}")
    baseline = 1.0 - x[:, names.index("max_prob")]
    notes: list[str] = []

    per_class_min = max(1, int(min_wrong_per_fold))
    n_used = min(n_folds, n_wrong // per_class_min, n_right // per_class_min)
    if n_used < n_folds:
        notes.append(f"requested {n_folds} folds but only {n_wrong} wrong / {n_right} right predictions: "
                     f"using {n_used} folds so each test fold holds >= {per_class_min} of each")

    if n_used < 2:
        reason = (f"too few {'wrong' if n_wrong <= n_right else 'right'} predictions to cross-fit a gate "
                  f"({n_wrong} wrong, {n_right} right of {n}; need >= {2 * per_class_min} of each): "
                  "using confidence = max_prob")
        log.warning("cross_fit_gate: %s", reason)
        b_auroc, b_auprc = _safe_auc(y, baseline)
        pooled = {"gate_auroc": b_auroc, "gate_auprc": b_auprc, "baseline_auroc": b_auroc, "baseline_auprc": b_auprc,
                  "gate_is_baseline": True}
        gate = FailureGate.max_prob_fallback(x, cfg, names, reason=reason)
        result = CrossFitResult(gate, baseline.copy(), baseline.copy(), np.full(n, -1, dtype=np.int64), [], pooled,
                                n, n_wrong, n_folds, 0, fallback=reason, notes=notes)
        gate.metrics["cross_fit"] = result.to_dict()
        return result

    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=n_used, shuffle=True, random_state=seed)
    oof = np.full(n, np.nan)
    fold_ids = np.full(n, -1, dtype=np.int64)
    per_fold = []
    folds = list(skf.split(np.zeros(n), y))
    if progress:
        from tqdm.auto import tqdm

        folds = tqdm(folds, desc="gate cross-fit", unit="fold")
    for k, (tr, te) in enumerate(folds):
        g = FailureGate(replace(cfg, seed=_fold_seed(cfg.seed, k)), names)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            g.fit(x[tr], y[tr], split=split)
        oof[te] = g.predict_score(x[te])
        fold_ids[te] = k
        ga, gp = _safe_auc(y[te], oof[te])
        ba, bp = _safe_auc(y[te], baseline[te])
        per_fold.append({"fold": k, "n": int(len(te)), "n_wrong": int(y[te].sum()),
                         "gate_auroc": ga, "gate_auprc": gp, "baseline_auroc": ba, "baseline_auprc": bp})

    ga, gp = _safe_auc(y, oof)
    ba, bp = _safe_auc(y, baseline)

    def _mean(key: str) -> float | None:
        vals = [f[key] for f in per_fold if f[key] is not None]
        return float(np.mean(vals)) if vals else None

    pooled = {"gate_auroc": ga, "gate_auprc": gp, "baseline_auroc": ba, "baseline_auprc": bp,
              "gate_auroc_fold_mean": _mean("gate_auroc"), "baseline_auroc_fold_mean": _mean("baseline_auroc"),
              "gate_auprc_fold_mean": _mean("gate_auprc"), "baseline_auprc_fold_mean": _mean("baseline_auprc"),
              "gate_is_baseline": False}

    final = FailureGate(cfg, names).fit(x, y, split=split)
    result = CrossFitResult(final, oof, baseline, fold_ids, per_fold, pooled, n, n_wrong, n_folds, n_used,
                            fallback=None, notes=notes)
    final.metrics["cross_fit"] = result.to_dict()
    return result
