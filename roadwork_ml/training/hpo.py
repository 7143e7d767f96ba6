"""Hyper-parameter search with Optuna: TPE sampler, median or Hyperband pruner fed each epoch's
VAL_SELECT MCC, the search space from the profile (``hpo.search_space``), and a study in an RDB
(SQLite under DAGSTER_HOME, or the instance's Postgres) so a crashed search resumes.

Resume: trials run with an RDB heartbeat; a trial whose process died stops beating, is marked
FAIL when the study is next opened and re-queued once with the same parameters
(``RetryFailedTrialCallback``). :func:`run_study` runs only the trials still missing, so
calling it again after a crash finishes the same ``n_trials``.

VAL_TEST is never touched: the objective only sees what ``train_classifier`` validates on,
and that refuses anything but VAL_SELECT.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.trial import TrialState
from pydantic import ValidationError

from roadwork_ml.config import HpoConfig, HpoParam, TrainConfig

__all__ = [
    "apply_params",
    "build_study",
    "check_search_space",
    "phase1_objective",
    "run_study",
    "study_plots",
    "suggest",
]


def suggest(trial: optuna.Trial, space: list[HpoParam]) -> dict[str, Any]:
    """Draw one value per searched key: ``{"lr": 3e-4, "optimizer.name": "sgd", ...}``."""
    out: dict[str, Any] = {}
    for p in space:
        if p.kind == "categorical":
            out[p.key] = trial.suggest_categorical(p.key, p.choices)
        elif p.kind == "int":
            out[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log)
        else:
            out[p.key] = trial.suggest_float(p.key, float(p.low), float(p.high), log=p.log)
    return out


def apply_params(cfg: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """``cfg`` with dotted keys replaced (validated again: a bad search space fails here, loudly)."""
    data = cfg.model_dump(mode="python")
    for key, value in params.items():
        cursor = data
        *parents, leaf = key.split(".")
        for part in parents:
            if part not in cursor or not isinstance(cursor[part], dict):
                raise KeyError(f"hpo key {key!r}: train has no section {part!r}")
            cursor = cursor[part]
        if leaf not in cursor:
            raise KeyError(f"hpo key {key!r}: train has no key {leaf!r}")
        cursor[leaf] = value
    return TrainConfig.model_validate(data)


def _pruner(cfg: HpoConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_epochs)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs))
    return optuna.pruners.NopPruner()


def build_study(storage_url: str, cfg: HpoConfig, max_epochs: int, study_name: str | None = None) -> optuna.Study:
    """Create or reopen (``load_if_exists``) the study at ``storage_url`` (``sqlite:///...`` or
    ``postgresql://...``). Stale RUNNING trials of a dead process are failed and re-queued."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat + retry
    storage = RDBStorage(
        storage_url,
        heartbeat_interval=cfg.heartbeat_s,
        grace_period=2 * cfg.heartbeat_s,
        failed_trial_callback=RetryFailedTrialCallback(max_retry=1),
    )
    return optuna.create_study(
        storage=storage,
        study_name=study_name or cfg.study_name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.n_startup_trials),
        pruner=_pruner(cfg, max_epochs),
        load_if_exists=True,
    )


def finished_trials(study: optuna.Study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))


def run_study(study: optuna.Study, objective: Callable[[optuna.Trial], float], cfg: HpoConfig) -> optuna.Study:
    """Run until ``cfg.n_trials`` trials are COMPLETE or PRUNED (counting earlier runs), or the timeout."""
    optuna.storages.fail_stale_trials(study)  # a killed run's trial: FAIL, re-queued by the callback
    missing = cfg.n_trials - finished_trials(study)
    if missing > 0:  # queued (re-tried) trials run first
        study.optimize(objective, n_trials=missing, timeout=cfg.timeout_s)
    return study


def check_search_space(base: TrainConfig, space: list[HpoParam]) -> None:
    """Refuse, before any trial runs, a searched value the rest of ``base`` rules out (each
    categorical choice and each range end, one key at a time): otherwise its trials would fail
    one by one, mid-study. ValueError names the key, the value and the rule."""
    for p in space:
        values = p.choices if p.kind == "categorical" else [p.low, p.high]
        for value in values:
            value = int(value) if p.kind == "int" else value
            try:
                apply_params(base, {p.key: value})
            except KeyError as err:
                raise ValueError(f"hpo.search_space: {err.args[0]}") from None
            except ValidationError as err:
                why = "; ".join(e["msg"] for e in err.errors())
                raise ValueError(
                    f"hpo.search_space: {p.key}={value!r} does not fit the profile's train: {why}"
                ) from None


def phase1_objective(
    train_fn: Callable[[TrainConfig, Callable[[int, float], None]], float], base: TrainConfig, space: list[HpoParam]
) -> Callable[[optuna.Trial], float]:
    """An Optuna objective over the phase-1 recipe.

    ``train_fn(train_cfg, report)`` trains with ``train_cfg`` and calls ``report(epoch, val_select_mcc)``
    after each epoch (e.g. from ``train_classifier``'s ``on_epoch``); it returns the best
    VAL_SELECT MCC (or the trainer's selection score, ``TrainResult.best_score``, when
    ``train.selection`` is not ``val_mcc``; the same number is then reported each epoch).
    ``report`` raises ``optuna.TrialPruned`` when the pruner says so.
    """

    check_search_space(base, space)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)  # a re-queued trial gets its fixed parameters back here
        cfg = apply_params(base, params)

        def report(epoch: int, mcc: float) -> None:
            trial.report(float(mcc), step=int(epoch))
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: VAL_SELECT MCC {mcc:.4f} below the pruner's bar")

        return float(train_fn(cfg, report))

    return objective


def study_plots(study: optuna.Study, out_dir) -> dict[str, str]:
    """Optuna's optimisation history and parameter importance (fANOVA) as PNGs in ``out_dir``;
    returns ``{name: path}`` for asset metadata. Importance needs two finished trials whose
    values differ: fANOVA apportions the objective's variance, and with none it raises."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    plots = {"history": ovm.plot_optimization_history}
    values = {t.value for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE}
    if len(values) >= 2:
        plots["importance"] = ovm.plot_param_importances
    for name, fn in plots.items():
        ax = fn(study)
        fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
        path = out / f"hpo_{name}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths[name] = str(path)
    return paths
