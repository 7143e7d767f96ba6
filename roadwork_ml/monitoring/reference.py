"""The reference profile: what "normal" looks like, against which each day is compared.

Built once from the VAL_CALIB outputs of the deployed model (calibrated probabilities,
the 7 uncertainty features, PCA-projected embeddings, slice metadata). It stores

* per monitored column (``prob`` + :data:`~roadwork_ml.policy.uncertainty.FEATURE_NAMES`):
  the interior quantile bin edges and the reference share of each bin, computed on the
  *full* reference (quantile PSI needs nothing else);
* a seeded subsample of whole groups, at most ``max_samples`` reference rows (values ``[S, 8]`` and their
  slice metadata) for KS, evidently-mode PSI and per-slice statistics;
* a seeded subsample of whole groups, at most ``mmd_samples`` embeddings ``[S_mmd, k]`` and the RBF
  bandwidth of the MMD test (median heuristic on that subsample, fixed so every day is
  tested with the same kernel — alibi's ``configure_kernel_from_x_ref``);
* the share of each category of the slice columns (``time_of_day``, ``weather``, ``source``);
* the label-free accuracy estimate (and labelled accuracy, if labels are given) of the
  reference, as the baseline of :mod:`.performance`;
* optionally the :class:`~.projection.PCAProjection` that produced the embeddings;
* the grouping key of every kept row (``groups`` [S], ``embedding_groups`` [S_mmd]; the
  ``sequence_id`` of ``meta`` where present, see :func:`.group_tests.grouping_key`) and the
  kept rows' labels (``labels`` [S], -1 = none), so the drift tests permute whole reference
  sequences too and the labelled tests can compare accuracy and ECE.

On disk (:meth:`ReferenceProfile.save`): ``profile.json`` + ``arrays.safetensors`` +
``MANIFEST.json`` (sha256 of both), every file written atomically; :meth:`load` verifies
the manifest first and raises :class:`~roadwork_ml.artifacts.IntegrityError` on a mismatch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file

from roadwork_ml.artifacts import atomic_path, atomic_write_json, verify_dir, write_manifest
from roadwork_ml.monitoring.drift_family import subsample_groups
from roadwork_ml.monitoring.drift_stats import bin_shares, median_heuristic_sigma, quantile_edges
from roadwork_ml.monitoring.group_tests import grouping_key
from roadwork_ml.monitoring.performance import estimate_accuracy
from roadwork_ml.monitoring.projection import PCAProjection
from roadwork_ml.policy.uncertainty import FEATURE_NAMES, NUM_FEATURES

__all__ = ["MODEL_COLUMNS", "SLICE_COLUMNS", "ReferenceProfile"]

MODEL_COLUMNS: tuple[str, ...] = ("prob", *FEATURE_NAMES)
SLICE_COLUMNS: tuple[str, ...] = ("time_of_day", "weather", "source")
SCHEMA = "reference_profile/2"
_READABLE = ("reference_profile/1", SCHEMA)  # /1 lacks groups and labels: read with groups None


@dataclass
class ReferenceProfile:
    """See module notes. ``values``: [S, 8] float64 in :data:`MODEL_COLUMNS` order;
    ``meta``: [S] rows of slice metadata (strings); ``embeddings``: [S_mmd, k] float32."""

    columns: tuple[str, ...]
    bins: int
    edges: dict[str, np.ndarray]
    shares: dict[str, np.ndarray]
    values: np.ndarray
    meta: pd.DataFrame
    embeddings: np.ndarray
    mmd_sigma: float
    category_shares: dict[str, dict[str, float]]
    n_reference: int
    estimated_accuracy: float
    labelled_accuracy: float | None
    seed: int
    projection: PCAProjection | None = None
    groups: np.ndarray | None = None
    embedding_groups: np.ndarray | None = None
    labels: np.ndarray | None = None
    group_kind: str | None = None

    @classmethod
    def build(
        cls,
        probs1: Any,
        features: Any,
        embeddings_proj: Any,
        meta: pd.DataFrame,
        bins: int = 10,
        max_samples: int = 5000,
        mmd_samples: int = 1000,
        seed: int = 0,
        labels: Any = None,
        slice_columns: Sequence[str] = SLICE_COLUMNS,
        projection: PCAProjection | None = None,
        groups: Any = None,
        group_window_minutes: float = 10.0,
    ) -> ReferenceProfile:
        """Profile of ``probs1`` [N] (calibrated P(roadwork)), ``features`` [N, 7],
        ``embeddings_proj`` [N, k] and ``meta`` (N rows holding ``slice_columns``).

        ``groups`` [N]: grouping key per row (e.g. sequence id); ``None`` = derived from
        ``meta`` (``sequence_id``, else ``camera_id`` + ``timestamp`` window, else circular blocks)."""
        p = np.asarray(probs1, dtype=np.float64)
        f = np.asarray(features, dtype=np.float64)
        e = np.asarray(embeddings_proj, dtype=np.float32)
        n = p.shape[0]
        if p.ndim != 1 or n < 10:
            raise ValueError(f"probs1 must be [N] with N >= 10, got shape {list(p.shape)}")
        if f.shape != (n, NUM_FEATURES):
            raise ValueError(f"features must be [{n}, {NUM_FEATURES}], got {list(f.shape)}")
        if e.ndim != 2 or e.shape[0] != n:
            raise ValueError(f"embeddings_proj must be [{n}, k], got {list(e.shape)}")
        if len(meta) != n or not set(slice_columns) <= set(meta.columns):
            raise ValueError(
                f"meta must have {n} rows and columns {list(slice_columns)}, got {len(meta)} rows, {list(meta.columns)}"
            )
        if projection is not None and projection.dim != e.shape[1]:
            raise ValueError(f"projection gives {projection.dim}-d embeddings, embeddings_proj are {e.shape[1]}-d")
        values = np.column_stack([p, f])
        if not (np.isfinite(values).all() and np.isfinite(e).all()):
            raise ValueError("reference probabilities, features and embeddings must be finite")
        if p.min() < 0 or p.max() > 1:
            raise ValueError(f"probs1 must lie in [0, 1], got range [{p.min():.4g}, {p.max():.4g}]")
        if groups is None:
            group_arr, kind = grouping_key(meta.reset_index(drop=True), seed=seed, window_minutes=group_window_minutes)
        else:
            group_arr, kind = np.asarray(groups).astype(str).astype(object), "given"
            if len(group_arr) != n:
                raise ValueError(f"groups must have {n} entries, got {len(group_arr)}")
        y_all = (
            np.full(n, -1, dtype=np.int64)
            if labels is None
            else np.where(np.asarray(labels) >= 0, np.asarray(labels), -1).astype(np.int64)
        )
        edges = {c: quantile_edges(values[:, j], bins) for j, c in enumerate(MODEL_COLUMNS)}
        shares = {c: bin_shares(values[:, j], edges[c]) for j, c in enumerate(MODEL_COLUMNS)}
        rng = np.random.default_rng(seed)
        # whole groups: a reference of thinned sequences (1 frame of each) is not exchangeable with a
        # day of whole sequences, and the group-permutation null would be too narrow (false alarms)
        idx = subsample_groups(group_arr, max_samples, int(rng.integers(1 << 31)))
        idx_mmd = subsample_groups(group_arr, mmd_samples, int(rng.integers(1 << 31)))
        emb = np.ascontiguousarray(e[idx_mmd])
        sigma = median_heuristic_sigma(emb.astype(np.float64)) if len(emb) >= 2 else 1.0
        cat = {}
        for col in slice_columns:
            vc = meta[col].astype(str).value_counts(normalize=True)
            cat[col] = {str(k): float(v) for k, v in sorted(vc.items())}
        labelled = None
        if labels is not None:
            y = np.asarray(labels)
            ok = y >= 0
            if ok.any():
                labelled = float(np.mean((p[ok] > 0.5).astype(int) == y[ok]))
        return cls(
            columns=MODEL_COLUMNS,
            bins=int(bins),
            edges=edges,
            shares=shares,
            values=values[idx],
            meta=meta[list(slice_columns)].astype(str).iloc[idx].reset_index(drop=True),
            embeddings=emb,
            mmd_sigma=float(sigma),
            category_shares=cat,
            n_reference=int(n),
            estimated_accuracy=estimate_accuracy(p).accuracy,
            labelled_accuracy=labelled,
            seed=int(seed),
            projection=projection,
            groups=group_arr[idx],
            embedding_groups=group_arr[idx_mmd],
            labels=y_all[idx],
            group_kind=kind,
        )

    @property
    def slice_columns(self) -> tuple[str, ...]:
        return tuple(self.meta.columns)

    def column(self, name: str) -> np.ndarray:
        """Sampled reference values of one monitored column, [S]."""
        return self.values[:, self.columns.index(name)]

    # ------------------------------------------------------------------ persistence

    def _header(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "columns": list(self.columns),
            "bins": self.bins,
            "edges": {c: v.tolist() for c, v in self.edges.items()},
            "shares": {c: v.tolist() for c, v in self.shares.items()},
            "meta": {c: self.meta[c].tolist() for c in self.meta.columns},
            "meta_columns": list(self.meta.columns),
            "mmd_sigma": self.mmd_sigma,
            "category_shares": self.category_shares,
            "n_reference": self.n_reference,
            "estimated_accuracy": self.estimated_accuracy,
            "labelled_accuracy": self.labelled_accuracy,
            "seed": self.seed,
            "projection": None if self.projection is None else self.projection.to_dict(),
            "groups": None if self.groups is None else [str(g) for g in self.groups],
            "embedding_groups": None if self.embedding_groups is None else [str(g) for g in self.embedding_groups],
            "labels": None if self.labels is None else [int(v) for v in self.labels],
            "group_kind": self.group_kind,
        }

    def save(self, directory: str | Path) -> dict:
        """Write ``profile.json`` and ``arrays.safetensors`` atomically, then ``MANIFEST.json``; return the manifest."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "profile.json", self._header())
        with atomic_path(d / "arrays.safetensors") as tmp:
            save_file(
                {
                    "values": np.ascontiguousarray(self.values, dtype=np.float64),
                    "embeddings": np.ascontiguousarray(self.embeddings, dtype=np.float32),
                },
                str(tmp),
            )
        return write_manifest(d, extra={"schema": SCHEMA})

    @classmethod
    def load(cls, directory: str | Path) -> ReferenceProfile:
        """Verify the sha256 manifest, then read; raises ``IntegrityError`` / ``ValueError`` on a bad directory."""
        d = Path(directory)
        manifest = verify_dir(d)
        if manifest.get("schema") not in _READABLE:
            raise ValueError(f"{d} holds {manifest.get('schema')!r}, not a {SCHEMA} reference profile")
        h = json.loads((d / "profile.json").read_text())
        arrays = load_file(str(d / "arrays.safetensors"))
        columns = tuple(h["columns"])
        values = arrays["values"]
        if values.ndim != 2 or values.shape[1] != len(columns):
            raise ValueError(f"{d}: values have shape {list(values.shape)}, expected [S, {len(columns)}]")
        return cls(
            columns=columns,
            bins=int(h["bins"]),
            edges={c: np.asarray(v, dtype=np.float64) for c, v in h["edges"].items()},
            shares={c: np.asarray(v, dtype=np.float64) for c, v in h["shares"].items()},
            values=values,
            meta=pd.DataFrame(h["meta"])[h["meta_columns"]],
            embeddings=arrays["embeddings"],
            mmd_sigma=float(h["mmd_sigma"]),
            category_shares=h["category_shares"],
            n_reference=int(h["n_reference"]),
            estimated_accuracy=float(h["estimated_accuracy"]),
            labelled_accuracy=h["labelled_accuracy"],
            seed=int(h["seed"]),
            projection=None if h["projection"] is None else PCAProjection.from_dict(h["projection"]),
            groups=None if h.get("groups") is None else np.asarray(h["groups"], dtype=object),
            embedding_groups=None
            if h.get("embedding_groups") is None
            else np.asarray(h["embedding_groups"], dtype=object),
            labels=None if h.get("labels") is None else np.asarray(h["labels"], dtype=np.int64),
            group_kind=h.get("group_kind"),
        )
