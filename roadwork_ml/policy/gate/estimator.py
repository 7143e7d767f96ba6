"""The failure gate as an estimator: :class:`FailureGate` (fit, predict, JSON + safetensors persistence)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from roadwork_ml.artifacts import IntegrityError, atomic_path, atomic_write_json, sha256_file
from roadwork_ml.contracts import ContractError, Split
from roadwork_ml.policy.estimator import PolicyEstimator
from roadwork_ml.policy.gate.model import (
    MODE_MAX_PROB,
    MODE_MLP,
    GateConfig,
    GateMLP,
    _batches,
    _GateConfidenceModule,
    _safe_auc,
    _to_2d_float,
    _to_labels,
    _torch_threads,
)
from roadwork_ml.policy.uncertainty import FEATURE_NAMES

GATE_WEIGHTS_FILE = "gate.safetensors"
GATE_JSON_FILE = "gate.json"
GATE_KIND = "failure_gate"


class FailureGate(PolicyEstimator):
    """sklearn-style failure predictor over the uncertainty features.

    ``fit(features [N, F], is_wrong [N], split=...)`` → ``predict_score`` = P(wrong),
    ``confidence`` = 1 − P(wrong), ``predict_proba`` = ``[P(right), P(wrong)]``.

    Hyper-parameters are :class:`GateConfig`'s fields plus ``feature_names``. Fitted:
    ``mode_`` (``"mlp"`` or ``"max_prob_fallback"``), ``mean_`` / ``std_`` (float32 ``[F]``,
    standardization), ``active_`` (bool ``[F]``; False = constant at fit time, input ignored),
    ``weights_`` (the MLP's state dict as numpy arrays; None in fallback mode), ``metrics_``.
    """

    kind = GATE_KIND

    def __init__(
        self,
        hidden_sizes: Iterable[int] = (128, 64, 32),
        dropouts: Iterable[float] = (0.2, 0.1, 0.05),
        pos_weight: float = 2.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        epochs: int = 20,
        batch_size: int = 256,
        seed: int = 0,
        std_floor: float = 1e-6,
        num_threads: int = 1,
        feature_names: Iterable[str] = FEATURE_NAMES,
    ) -> None:
        cfg = GateConfig(
            tuple(hidden_sizes),
            tuple(dropouts),
            pos_weight,
            lr,
            weight_decay,
            epochs,
            batch_size,
            seed,
            std_floor,
            num_threads,
        )  # validates
        for k, v in cfg.to_dict().items():
            setattr(self, k, tuple(v) if isinstance(v, list) else v)
        self.feature_names = tuple(feature_names)
        self._model: GateMLP | None = None  # built from weights_ on first use

    @classmethod
    def from_config(cls, config: GateConfig | None = None, feature_names: Iterable[str] = FEATURE_NAMES) -> FailureGate:
        return cls(**(config or GateConfig()).to_dict(), feature_names=feature_names)

    @property
    def config(self) -> GateConfig:
        return GateConfig(**{k: v for k, v in self.get_params().items() if k != "feature_names"})

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    # --- fitting --------------------------------------------------------------------------

    def fit(self, features: Any, is_wrong: Any, *, split: Split | str | Iterable[Split | str]) -> FailureGate:
        """Train the MLP on ``VAL_CALIB`` data. Deterministic for a given ``seed`` on CPU.

        Raises :class:`~roadwork_ml.contracts.LeakageError` for any split but ``val_calib``.
        """
        self.check_split(split)
        x = _to_2d_float(features, self.n_features, "FailureGate.fit")
        y = _to_labels(is_wrong, x.shape[0], "FailureGate.fit")
        n = x.shape[0]
        if n < 2:
            raise ValueError(f"FailureGate.fit: need at least 2 rows to train (BatchNorm), got {n}")
        n_wrong = int(y.sum())
        if n_wrong == 0 or n_wrong == n:
            warnings.warn(
                f"FailureGate.fit: is_wrong has a single class ({n_wrong} wrong of {n}); "
                "the gate will output a near-constant score. cross_fit_gate falls back to max_prob in this case",
                RuntimeWarning,
                stacklevel=2,
            )
        self._set_standardization(x)
        xs = self._standardize(torch.from_numpy(x).float())
        yt = torch.from_numpy(y).float()

        losses: list[float] = []
        with torch.random.fork_rng(devices=[]), _torch_threads(self.num_threads):
            torch.manual_seed(self.seed)  # weight init and dropout masks
            model = GateMLP(self.n_features, self.hidden_sizes, self.dropouts)
            gen = torch.Generator().manual_seed(self.seed)  # batch order
            opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay, foreach=True)
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.pos_weight]))
            model.train()
            for _ in range(self.epochs):
                perm = torch.randperm(n, generator=gen)
                total = 0.0
                for idx in _batches(perm, self.batch_size):
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(xs[idx]), yt[idx])
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                losses.append(total / n)
        model.eval()
        self._model = model
        self.mode_ = MODE_MLP
        self.weights_ = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}

        train_auroc, train_auprc = _safe_auc(y, self.predict_score(x))
        self.metrics_ = {
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
    def max_prob_fallback(
        cls,
        features: Any,
        config: GateConfig | None = None,
        feature_names: Iterable[str] = FEATURE_NAMES,
        reason: str = "",
    ) -> FailureGate:
        """A gate with nothing learned: ``P(wrong) = 1 - max_prob``, ``confidence = max_prob``.

        Used when there are too few wrong predictions to train the MLP.
        """
        gate = cls.from_config(config, feature_names)
        if "max_prob" not in gate.feature_names:
            raise ValueError("max_prob fallback needs a 'max_prob' feature column")
        x = _to_2d_float(features, gate.n_features, "FailureGate.max_prob_fallback")
        gate._set_standardization(x)
        gate.mode_, gate.weights_, gate._model = MODE_MAX_PROB, None, None
        gate.metrics_ = {"n_train": int(x.shape[0]), "fallback_reason": reason, **gate._standardization_report(x)}
        return gate

    def _set_standardization(self, x: np.ndarray) -> None:
        raw_std = x.std(axis=0)
        self.mean_ = x.mean(axis=0).astype(np.float32)
        self.std_ = np.maximum(raw_std, self.std_floor).astype(np.float32)
        self.active_ = raw_std >= self.std_floor

    def _standardization_report(self, x: np.ndarray) -> dict:
        raw_std = x.std(axis=0)
        return {
            "feature_mean": {k: float(v) for k, v in zip(self.feature_names, self.mean_.tolist(), strict=False)},
            "feature_std": {k: float(v) for k, v in zip(self.feature_names, self.std_.tolist(), strict=False)},
            # constant at fit time (e.g. epistemic_feature_variance without embeddings): the gate
            # learned nothing from them, so their input is ignored (standardized value fixed at 0)
            "constant_features": [k for k, s in zip(self.feature_names, raw_std, strict=False) if s < self.std_floor],
        }

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` with ``std = max(std, std_floor)``; features that were constant at fit
        time map to 0 (exactly what training saw), so a value that appears there only at inference
        (e.g. embeddings present at serving but not at fit) cannot blow up through ``1 / std_floor``."""
        mean, std, active = (torch.from_numpy(np.asarray(a)) for a in (self.mean_, self.std_, self.active_))
        return torch.where(active, (x - mean) / std, torch.zeros_like(x))

    def _restored(self) -> None:
        """After :meth:`from_dict`: check the shapes and rebuild the MLP from ``weights_``."""
        self.mean_ = np.asarray(self.mean_, dtype=np.float32)
        self.std_ = np.asarray(self.std_, dtype=np.float32)
        self.active_ = np.asarray(self.active_, dtype=bool)
        if any(a.shape != (self.n_features,) for a in (self.mean_, self.std_, self.active_)):
            raise ContractError(f"failure_gate: standardization stats must be [{self.n_features}]")
        self._model = None
        if self.mode_ == MODE_MLP:
            model = GateMLP(self.n_features, self.hidden_sizes, self.dropouts)
            shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            weights = dict(self.weights_ or {})
            for k, v in weights.items():  # safetensors stores a 0-d buffer (num_batches_tracked) as [1]
                if k in shapes and np.asarray(v).size == int(np.prod(shapes[k])):
                    weights[k] = np.asarray(v).reshape(shapes[k])
            self.weights_ = weights
            try:
                model.load_state_dict(
                    {k: torch.from_numpy(np.asarray(v).copy()) for k, v in weights.items()}, strict=True
                )
            except RuntimeError as exc:
                raise ContractError(
                    f"failure_gate: weights do not match the GateMLP its hyper-parameters describe: {exc}"
                ) from exc
            self._model = model.eval()
        elif self.mode_ != MODE_MAX_PROB:
            raise ContractError(f"failure_gate: unknown gate mode {self.mode_!r}")

    # --- prediction -----------------------------------------------------------------------

    def predict_logit(self, features: Any) -> np.ndarray:
        """Logit of P(wrong), ``[N]`` float64 (float32 network). Fallback mode: ``logit(1 - max_prob)``."""
        self.check_fitted()
        if self.mode_ == MODE_MAX_PROB:
            p = np.clip(self.predict_score(features), 1e-12, 1 - 1e-12)
            return np.log(p) - np.log1p(-p)
        return self._mlp_logit(features)

    def _mlp_logit(self, features: Any) -> np.ndarray:
        x = _to_2d_float(features, self.n_features, "FailureGate.predict")
        with torch.no_grad(), _torch_threads(self.num_threads):
            self._model.eval()
            z = self._model(self._standardize(torch.from_numpy(x).float()))
        return z.double().numpy()

    def predict_score(self, features: Any) -> np.ndarray:
        """``P(wrong)`` in ``[0, 1]``, ``[N]`` float64. Higher = more likely a wrong prediction."""
        self.check_fitted()
        if self.mode_ == MODE_MAX_PROB:
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
        self.check_fitted()
        import copy

        mlp = copy.deepcopy(self._model).eval() if self._model is not None else None
        idx = self.feature_names.index("max_prob") if "max_prob" in self.feature_names else 0
        mean, std, active = (torch.from_numpy(np.asarray(a).copy()) for a in (self.mean_, self.std_, self.active_))
        module = _GateConfidenceModule(mlp, mean, std, active, idx).eval()
        module.requires_grad_(False)
        return module

    # --- persistence: the generic JSON with the arrays in safetensors ----------------------

    def save(self, directory: str | Path) -> dict:
        """Write ``gate.safetensors`` (every array) then ``gate.json`` (:meth:`to_dict` with array
        references, the weights' sha256), each atomically; return the JSON object."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        obj = self.to_dict(arrays=arrays)
        weights = directory / GATE_WEIGHTS_FILE
        with atomic_path(weights) as tmp:
            save_file(arrays, str(tmp), metadata={"kind": GATE_KIND, "format_version": str(self.format_version)})
        obj.update(
            {
                "score_convention": {
                    "predict_score": "P(wrong): higher = the classifier's prediction is more likely wrong",
                    "confidence": "1 - P(wrong): SCRC accepts when confidence >= lambda1",
                },
                "weights_file": GATE_WEIGHTS_FILE,
                "weights_sha256": sha256_file(weights),
            }
        )
        atomic_write_json(directory / GATE_JSON_FILE, obj)
        return obj

    @classmethod
    def load(cls, directory: str | Path) -> FailureGate:
        """Rebuild a gate from :meth:`save`'s files (safetensors only; no pickle, no torch.load)."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        jpath, wpath = directory / GATE_JSON_FILE, directory / GATE_WEIGHTS_FILE
        if not jpath.exists() or not wpath.exists():
            raise FileNotFoundError(
                f"{directory} must hold {GATE_JSON_FILE} and {GATE_WEIGHTS_FILE} written by FailureGate.save"
            )
        obj = json.loads(jpath.read_text())
        if "weights_sha256" not in obj:
            raise ContractError(f"{jpath}: no weights_sha256; re-run the gate asset")
        digest = sha256_file(wpath)
        if digest != obj["weights_sha256"]:
            raise IntegrityError(
                f"{wpath}: sha256 {digest[:12]}… does not match {jpath.name}'s {obj['weights_sha256'][:12]}…; "
                "the files are from different saves or were modified — re-run the gate asset"
            )
        return cls.from_dict(obj, arrays=load_file(str(wpath)))
