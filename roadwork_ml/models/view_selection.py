"""Which views and which aggregator the served model uses, chosen on VAL_SELECT.

:func:`select_aggregator` trains the attention aggregator on TRAIN view outputs (backbone
frozen), measures single-view vs multi-view and mean / global / top-K / attention by VAL_SELECT
MCC, and applies the profile's rule (``inference.aggregator``; ``auto`` = the best allowed).
:func:`remeasure_choice` re-derives the recorded MCC from the saved VAL_SELECT view outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from roadwork_ml.config import InferenceConfig
from roadwork_ml.contracts import Purpose, Split, require_split
from roadwork_ml.evaluation.metrics import mcc
from roadwork_ml.models.aggregator import (
    AttentionAggregator,
    Candidate,
    aggregate,
    choose,
    compare_aggregators,
    fit_attention,
    single_view_indices,
)
from roadwork_ml.models.multiview import ViewSpec


@dataclass
class AggregatorSelection:
    """The outcome. ``choice`` is the record saved beside the attention weights; ``val_weights``
    are the chosen setting's attention weights on VAL_SELECT, ``[N_val, n_views]`` (zeros
    ``[N_val, 1]`` when no attention was fitted)."""

    chosen: Candidate
    candidates: list[Candidate]
    best: dict[bool, Candidate]
    choice: dict
    attention: AttentionAggregator | None
    losses: dict[bool, list[float]]
    val_weights: np.ndarray


def select_aggregator(
    train_embeddings: np.ndarray,
    train_probs: np.ndarray,
    y_train: np.ndarray,
    val_probs: np.ndarray,
    val_embeddings: np.ndarray,
    y_val: np.ndarray,
    spec: ViewSpec,
    inference: InferenceConfig,
) -> AggregatorSelection:
    """Fit attention on TRAIN, compare every aggregator on VAL_SELECT, apply the profile's rule.

    ``*_probs`` are per-view class probabilities ``[N, n_views, 2]``; ``*_embeddings`` the
    per-view pooled embeddings ``[N, n_views, D]``. A single-view ``spec`` (a single-view
    profile with ``inference.compare_multi_view`` false) scores the single-view candidates only.
    """
    require_split(Purpose.MODEL_SELECTION, Split.VAL_SELECT)
    if inference.multi_view and not spec.multi:
        raise ValueError("a multi-view profile needs the multi-view outputs to choose from")
    a = inference.attention
    single = single_view_indices(spec)
    modules, weights, losses = {}, {}, {}
    for multi in (True, False) if spec.multi else (False,):
        views = slice(None) if multi else single
        if not multi and len(single) < 2:
            continue
        fit = fit_attention(
            train_embeddings[:, views],
            train_probs[:, views],
            y_train,
            Split.TRAIN,
            epochs=a.epochs,
            lr=a.lr,
            weight_decay=a.weight_decay,
            batch_size=a.batch_size,
            dropout=a.dropout,
            seed=a.seed,
        )
        modules[multi], losses[multi] = fit.module, fit.losses
        with torch.no_grad():
            weights[multi] = fit.module(torch.from_numpy(val_embeddings[:, views])).double().numpy()
    candidates = compare_aggregators(val_probs, y_val, Split.VAL_SELECT, spec, inference.top_k_candidates, weights)
    chosen = choose(candidates, inference.multi_view, inference.aggregator)
    scored = sorted({c.multi_view for c in candidates})
    best = {m: max((c for c in candidates if c.multi_view == m), key=lambda c: c.mcc) for m in scored}
    choice = {
        "multi_view": chosen.multi_view,
        "aggregator": chosen.aggregator,
        "top_k": chosen.top_k,
        "candidate": chosen.name,
        "val_select_mcc": chosen.mcc,
        "profile_aggregator": inference.aggregator,
        "profile_multi_view": inference.multi_view,
        "n_views": spec.n_views if chosen.multi_view else len(single),
        "multi_view_scored": spec.multi,
    }
    attention = modules.get(chosen.multi_view) if chosen.aggregator == "attention" else None
    val_weights = np.ascontiguousarray(weights.get(chosen.multi_view, np.zeros((len(y_val), 1))))
    return AggregatorSelection(chosen, candidates, best, choice, attention, losses, val_weights)


def remeasure_choice(
    choice: dict,
    candidates: list[dict],
    view_probs: np.ndarray,
    labels: np.ndarray,
    attention_weights: np.ndarray,
    flip: bool,
) -> dict:
    """Re-measure a saved choice on the saved VAL_SELECT view outputs (every view scored: the
    multi-view set, or the single view's when ``choice["multi_view_scored"]`` is false).

    Returns ``measured_mcc`` (the chosen aggregation thresholded at 0.5), ``best_allowed``
    (what the profile's rule picks from the saved candidate table) and ``reproduces`` (the
    measured MCC equals the recorded one and the choice is the rule's pick).
    """
    # the saved outputs are the single view's alone when the multi-view set was not scored
    scored_multi = choice.get("multi_view_scored", True)
    views = None if choice["multi_view"] or not scored_multi else single_view_indices(ViewSpec(size=1, flip=flip))
    agg = aggregate(choice["aggregator"], view_probs, k=choice["top_k"], weights=attention_weights, views=views)
    measured = mcc(labels, (agg[:, 1] > 0.5).astype(int))
    cands = [
        Candidate(
            r["candidate"], r["multi_view"], r["aggregator"], r["top_k"], r["val_select_mcc"], r["val_select_accuracy"]
        )
        for r in candidates
    ]
    best = choose(cands, choice["profile_multi_view"], choice["profile_aggregator"])
    return {
        "measured_mcc": float(measured),
        "best_allowed": best.name,
        "reproduces": bool(abs(measured - choice["val_select_mcc"]) < 1e-9 and best.name == choice["candidate"]),
    }
