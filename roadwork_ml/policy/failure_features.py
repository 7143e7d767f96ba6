"""Failure-predictor features that see what the softmax does not, and an honest choice among them.

The gate predicts "this prediction is wrong". With one view, the 7 uncertainty features are
all functions of one softmax, so a gate on them cannot beat max-prob. These features add
information from elsewhere:

* :class:`TrainDistanceFeatures` (fitted on TRAIN embeddings only): ``knn_distance`` (mean
  Euclidean distance to the k nearest TRAIN embeddings, standardised units), ``mahalanobis``
  (class-conditional Mahalanobis distance to the predicted class's TRAIN mean with the shared
  covariance, Lee et al. 2018; squared, standardised units), ``mahalanobis_margin`` (to the
  predicted class minus to the nearest other class), ``trust_score`` (Jiang et al. 2018:
  distance to the nearest TRAIN point of another class / distance to the nearest TRAIN point
  of the predicted class, on the alpha-filtered high-density sets; > 1 = agrees with the
  neighbours, its log is returned);
* :func:`view_disagreement`: std across views of P(roadwork), where several views exist;
* :func:`tta_variance`: variance of P(roadwork) across test-time augmentations;
* :func:`image_quality`: blur (log variance of the Laplacian of the grey image; low = blurry),
  exposure (mean grey level in [0, 1]) and clipping (share of pixels <= 5 or >= 250).

:func:`cross_fit_gate` chooses among candidate feature sets by *nested* group cross-fitting on
VAL_CALIB: in each outer fold the set is chosen by inner-fold AUROC on the outer-training part
only, so the out-of-fold scores it returns are honest; the set chosen on all of VAL_CALIB is
recorded with every set's inner AUROC. :func:`compare_with_max_prob` gives the paired-bootstrap
interval of ``AUROC(gate) - AUROC(1 - max_prob)`` for predicting failures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from roadwork_ml.evaluation import metrics
from roadwork_ml.evaluation.bootstrap import paired_bootstrap

__all__ = [
    "CANDIDATE_SETS",
    "DISTANCE_FEATURES",
    "GateCrossFit",
    "TrainDistanceFeatures",
    "candidate_sets",
    "compare_with_max_prob",
    "cross_fit_gate",
    "failure_feature_blocks",
    "feature_sets",
    "image_quality",
    "tta_variance",
    "view_disagreement",
]

DISTANCE_FEATURES = ("knn_distance", "mahalanobis", "mahalanobis_margin", "trust_score")


class TrainDistanceFeatures:
    """Distances of embeddings to the TRAIN embeddings (scikit-learn style; see module notes).

    Args:
        n_neighbors: k of the k-NN distance.
        trust_alpha: share of each class's TRAIN points dropped as low-density (largest
            k-NN radius) before the trust score, as Jiang et al.
        shrinkage: ridge added to the shared covariance (fraction of its mean variance).
        max_train: TRAIN rows kept (seeded subsample) to bound memory and time.
    """

    def __init__(
        self,
        n_neighbors: int = 10,
        trust_alpha: float = 0.1,
        shrinkage: float = 1e-3,
        max_train: int = 20000,
        seed: int = 0,
    ):
        self.n_neighbors = n_neighbors
        self.trust_alpha = trust_alpha
        self.shrinkage = shrinkage
        self.max_train = max_train
        self.seed = seed

    def fit(self, train_embeddings: Any, train_labels: Any) -> TrainDistanceFeatures:
        """``train_embeddings`` [N, D] (TRAIN only), ``train_labels`` [N] ints."""
        x = np.asarray(train_embeddings, dtype=np.float64)
        y = np.asarray(train_labels, dtype=np.int64)
        if x.ndim != 2 or len(x) != len(y) or len(x) < self.n_neighbors + 1:
            raise ValueError(
                f"need [N, D] embeddings and [N] labels with N > n_neighbors, got {list(x.shape)} and {list(y.shape)}"
            )
        if len(x) > self.max_train:
            keep = np.sort(np.random.default_rng(self.seed).choice(len(x), self.max_train, replace=False))
            x, y = x[keep], y[keep]
        self.mean_, self.scale_ = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-8)
        z = (x - self.mean_) / self.scale_
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError("TRAIN embeddings must cover at least two classes")
        self.class_means_ = np.stack([z[y == c].mean(axis=0) for c in self.classes_])
        centred = z - self.class_means_[np.searchsorted(self.classes_, y)]
        cov = centred.T @ centred / len(z)
        cov += self.shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        self.precision_ = np.linalg.inv(cov)
        # the k-NN searches run over float32-rounded points: what the served gate stores and reloads
        self.train_z_ = z.astype(np.float32)
        z32 = self.train_z_.astype(np.float64)
        self.knn_ = NearestNeighbors(n_neighbors=self.n_neighbors).fit(z32)
        self.class_nn_, self.dense_ = {}, {}
        for c in self.classes_:
            zc = z32[y == c]
            k = min(self.n_neighbors, len(zc) - 1)
            radius = NearestNeighbors(n_neighbors=k + 1).fit(zc).kneighbors(zc)[0][:, -1]
            dense = zc[radius <= np.quantile(radius, 1 - self.trust_alpha)] if k >= 1 else zc
            self.dense_[int(c)] = dense.astype(np.float32)
            self.class_nn_[int(c)] = NearestNeighbors(n_neighbors=1).fit(dense)
        return self

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as plain arrays (for safetensors; no pickle): the standardised TRAIN
        points behind the k-NN searches as float32, everything else float64. The hyper-parameters
        travel as ``params`` (int64 k, float64 alpha / shrinkage)."""
        arrays = {
            "mean": self.mean_,
            "scale": self.scale_,
            "classes": self.classes_.astype(np.int64),
            "class_means": self.class_means_,
            "precision": self.precision_,
            "train_z": self.train_z_,
            "params": np.array([self.n_neighbors, self.trust_alpha, self.shrinkage], dtype=np.float64),
        }
        for c in self.classes_:
            arrays[f"dense_{int(c)}"] = self.dense_[int(c)]
        return {k: np.ascontiguousarray(v) for k, v in arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> TrainDistanceFeatures:
        """Rebuild from :meth:`to_arrays` (the k-NN indexes are rebuilt over the stored points, so
        :meth:`transform` of the rebuilt object is what serving computes)."""
        k, alpha, shrinkage = (float(v) for v in np.asarray(arrays["params"]).reshape(-1))
        self = cls(n_neighbors=int(k), trust_alpha=alpha, shrinkage=shrinkage)
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        self.scale_ = np.asarray(arrays["scale"], dtype=np.float64)
        self.classes_ = np.asarray(arrays["classes"], dtype=np.int64)
        self.class_means_ = np.asarray(arrays["class_means"], dtype=np.float64)
        self.precision_ = np.asarray(arrays["precision"], dtype=np.float64)
        self.train_z_ = np.asarray(arrays["train_z"], dtype=np.float32)
        self.knn_ = NearestNeighbors(n_neighbors=self.n_neighbors).fit(self.train_z_.astype(np.float64))
        self.dense_ = {int(c): np.asarray(arrays[f"dense_{int(c)}"], dtype=np.float32) for c in self.classes_}
        self.class_nn_ = {
            int(c): NearestNeighbors(n_neighbors=1).fit(d.astype(np.float64)) for c, d in self.dense_.items()
        }
        return self

    def transform(self, embeddings: Any, predicted: Any) -> np.ndarray:
        """[M, 4] in :data:`DISTANCE_FEATURES` order for ``embeddings`` [M, D] and predicted classes [M]."""
        z = (np.asarray(embeddings, dtype=np.float64) - self.mean_) / self.scale_
        pred = np.asarray(predicted, dtype=np.int64)
        knn = self.knn_.kneighbors(z)[0].mean(axis=1)
        diff = z[:, None, :] - self.class_means_[None, :, :]  # [M, C, D]
        maha = np.einsum("mcd,de,mce->mc", diff, self.precision_, diff)
        pi = np.searchsorted(self.classes_, pred)
        own = maha[np.arange(len(z)), pi]
        other = np.where(np.arange(len(self.classes_))[None, :] == pi[:, None], np.inf, maha).min(axis=1)
        d_class = np.stack([self.class_nn_[int(c)].kneighbors(z)[0][:, 0] for c in self.classes_], axis=1)  # [M, C]
        d_own = d_class[np.arange(len(z)), pi]
        d_other = np.where(np.arange(len(self.classes_))[None, :] == pi[:, None], np.inf, d_class).min(axis=1)
        trust = np.log((d_other + 1e-12) / (d_own + 1e-12))
        return np.column_stack([knn, own, own - other, trust])


def view_disagreement(view_probs1: Any) -> np.ndarray:
    """[N] population std across views of P(roadwork), ``view_probs1`` [N, V] (V >= 2)."""
    p = np.asarray(view_probs1, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"view_disagreement needs [N, V >= 2] view probabilities, got {list(p.shape)}")
    return p.std(axis=1)


def tta_variance(tta_probs1: Any) -> np.ndarray:
    """[N] variance across T test-time augmentations of P(roadwork), ``tta_probs1`` [N, T] (T >= 2)."""
    p = np.asarray(tta_probs1, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"tta_variance needs [N, T >= 2] probabilities, got {list(p.shape)}")
    return p.var(axis=1)


def image_quality(images: Any) -> np.ndarray:
    """[N, 3]: log(1 + var of the 4-neighbour Laplacian of grey), exposure (mean grey / 255) and
    clipped-pixel share, for uint8 ``images`` [N, 3, H, W] (channels first, as the model's tensors)."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {list(x.shape)}")
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).astype(np.float64)  # [N, H, W], 0..255
    lap = grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:] + grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] - 4 * grey[:, 1:-1, 1:-1]
    blur = np.log1p(lap.reshape(len(x), -1).var(axis=1))
    exposure = grey.reshape(len(x), -1).mean(axis=1) / 255.0
    clipped = ((grey <= 5) | (grey >= 250)).reshape(len(x), -1).mean(axis=1)
    return np.column_stack([blur, exposure, clipped])


def _model() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))


def _oof(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_folds: int) -> np.ndarray:
    out = np.zeros(len(y))
    for tr, te in GroupKFold(n_splits=n_folds).split(x, y, groups):
        if len(np.unique(y[tr])) < 2:
            out[te] = y[tr].mean()
            continue
        out[te] = _model().fit(x[tr], y[tr]).predict_proba(x[te])[:, 1]
    return out


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    return float(metrics.auroc(y, s)) if 0 < y.sum() < len(y) else float("nan")


@dataclass
class GateCrossFit:
    """``oof_score`` [N]: honest out-of-fold P(failure) (nested choice); ``oof_auroc``: its AUROC;
    ``chosen``: the set chosen on all of VAL_CALIB; ``set_auroc``: each set's inner OOF AUROC there;
    ``fold_choices``: the set each outer fold chose."""

    chosen: str
    set_auroc: dict[str, float]
    oof_score: np.ndarray
    oof_auroc: float
    fold_choices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "set_auroc": self.set_auroc,
            "oof_auroc": self.oof_auroc,
            "fold_choices": self.fold_choices,
        }


def cross_fit_gate(feature_sets: Mapping[str, Any], failure: Any, groups: Any, n_folds: int = 5) -> GateCrossFit:
    """Choose among ``feature_sets`` (name -> [N, k] VAL_CALIB features) for predicting ``failure``
    [N] (1 = the served prediction is wrong) by nested group cross-fitting (``groups`` [N], e.g.
    sequence ids, keep a sequence in one fold). Logistic regression on standardised features."""
    y = np.asarray(failure, dtype=np.int64)
    g = np.asarray(groups)
    sets = {k: np.asarray(v, dtype=np.float64).reshape(len(y), -1) for k, v in feature_sets.items()}
    if not sets or len(g) != len(y):
        raise ValueError("need at least one feature set and one group per row")

    def choose(idx: np.ndarray) -> tuple[str, dict[str, float]]:
        scores = {k: _auroc(y[idx], _oof(x[idx], y[idx], g[idx], n_folds)) for k, x in sets.items()}
        return max(scores, key=lambda k: -np.inf if np.isnan(scores[k]) else scores[k]), scores

    oof = np.zeros(len(y))
    fold_choices = []
    for tr, te in GroupKFold(n_splits=n_folds).split(np.zeros(len(y)), y, g):
        name, _ = choose(tr)
        fold_choices.append(name)
        oof[te] = _model().fit(sets[name][tr], y[tr]).predict_proba(sets[name][te])[:, 1]
    chosen, set_auroc = choose(np.arange(len(y)))
    return GateCrossFit(
        chosen=chosen, set_auroc=set_auroc, oof_score=oof, oof_auroc=_auroc(y, oof), fold_choices=fold_choices
    )


def compare_with_max_prob(
    failure: Any, gate_score: Any, max_prob: Any, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Paired bootstrap of ``AUROC(gate_score) - AUROC(1 - max_prob)`` for predicting ``failure`` [N]."""
    c = paired_bootstrap(
        np.asarray(failure, dtype=np.int64),
        np.asarray(gate_score, dtype=np.float64),
        1.0 - np.asarray(max_prob, dtype=np.float64),
        metric="auroc",
        n_resamples=n_resamples,
        seed=seed,
        level=level,
        n_jobs=1,
    )
    return {
        "gate_auroc": c.new,
        "max_prob_auroc": c.ref,
        "difference": c.diff,
        "interval": [c.interval.low, c.interval.high],
        "excludes_zero": bool(c.interval.low > 0 or c.interval.high < 0),
        "level": level,
        "n_resamples": n_resamples,
    }


CANDIDATE_SETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("max_prob", ("max_prob",)),
    ("softmax", ("softmax",)),
    ("softmax+distance", ("softmax", "distance")),
    ("softmax+distance+quality", ("softmax", "distance", "quality")),
    ("softmax+distance+views", ("softmax", "distance", "views")),
    ("all", ("softmax", "distance", "views", "quality")),
)


def failure_feature_blocks(
    softmax_features: Any,
    max_prob: Any,
    embeddings: Any,
    predicted: Any,
    distance: TrainDistanceFeatures,
    view_probs1: Any = None,
    tta_probs1: Any = None,
    images: Any = None,
) -> dict[str, np.ndarray]:
    """The named feature blocks of N VAL_CALIB (or served) images, for :data:`CANDIDATE_SETS`.

    ``softmax_features`` [N, 7] (the uncertainty features), ``max_prob`` [N], ``embeddings`` [N, D]
    and ``predicted`` [N] classes, ``distance`` fitted on TRAIN embeddings only; optional
    ``view_probs1`` [N, V >= 2], ``tta_probs1`` [N, T >= 2], ``images`` uint8 [N, 3, H, W]. A block whose
    inputs are absent is left out (and so are the sets that need it).
    """
    blocks = {
        "max_prob": np.asarray(max_prob, dtype=np.float64)[:, None],
        "softmax": np.asarray(softmax_features, dtype=np.float64),
        "distance": distance.transform(embeddings, predicted),
    }
    views = []
    if view_probs1 is not None and np.asarray(view_probs1).shape[1] >= 2:
        views.append(view_disagreement(view_probs1))
    if tta_probs1 is not None:
        views.append(tta_variance(tta_probs1))
    if views:
        blocks["views"] = np.column_stack(views)
    if images is not None:
        blocks["quality"] = image_quality(images)
    return blocks


def candidate_sets(blocks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:data:`CANDIDATE_SETS` whose blocks all exist, stacked [N, k]."""
    return feature_sets(blocks, [(name, need) for name, need in CANDIDATE_SETS if all(b in blocks for b in need)])


def feature_sets(
    base: Mapping[str, np.ndarray], groups_of_features: Sequence[tuple[str, Sequence[str]]]
) -> dict[str, np.ndarray]:
    """Stack named feature blocks into candidate sets: ``[("softmax", ["softmax"]), ("softmax+distance", ["softmax", "distance"])]``."""
    return {
        name: np.column_stack(
            [np.asarray(base[b], dtype=np.float64).reshape(len(next(iter(base.values()))), -1) for b in blocks]
        )
        for name, blocks in groups_of_features
    }
