"""Optuna study: search space from the profile, pruning on per-epoch VAL_SELECT MCC, resume after SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from roadwork_ml.config import HpoConfig, HpoParam, load_profile
from roadwork_ml.training.hpo import apply_params, build_study, check_search_space, phase1_objective, run_study

WORKER = Path(__file__).parent / "hpo_worker.py"


def test_apply_params_and_profile_space():
    p = load_profile("tiny")
    assert {q.key for q in p.hpo.search_space} >= {"lr"}
    t = apply_params(p.train, {"lr": 0.01, "optimizer.name": "sgd", "loss.focal_gamma": 1.0})
    assert (t.lr, t.optimizer.name, t.loss.focal_gamma) == (0.01, "sgd", 1.0)
    with pytest.raises(KeyError, match="no key"):
        apply_params(p.train, {"optimizer.nope": 1})
    with pytest.raises(ValueError):
        apply_params(p.train, {"lr": -1.0})  # validated again
    with pytest.raises(ValueError, match="choices"):
        HpoParam(key="x", kind="categorical")


@pytest.mark.parametrize("profile", ["tiny", "demo", "production"])
def test_the_shipped_search_spaces_fit_their_profiles(profile):
    p = load_profile(profile)
    check_search_space(p.train, p.hpo.search_space)


def test_a_searched_value_the_profile_rules_out_is_refused_before_any_trial():
    """Lost-object weights need the batch step, so a space that also tries the validator policy would fail
    every such trial mid-study; the objective refuses it when it is built, and names key, value and rule."""
    p = load_profile("tiny", ["train.augmentation.policy=legacy", "train.augmentation.lost_object_weight=0"])
    space = [HpoParam(key="augmentation.policy", kind="categorical", choices=["legacy", "validator"])]
    calls = []
    with pytest.raises(
        ValueError, match="augmentation.policy='validator' does not fit.*needs augmentation.policy legacy"
    ):
        phase1_objective(lambda cfg, report: calls.append(cfg) or 0.0, p.train, space)
    assert calls == []
    with pytest.raises(ValueError, match="lr=-1.0 does not fit"):
        check_search_space(p.train, [HpoParam(key="lr", kind="float", low=-1.0, high=1e-3)])
    with pytest.raises(ValueError, match="train has no key 'nope'"):
        check_search_space(p.train, [HpoParam(key="optimizer.nope", kind="int", low=1, high=2)])
    check_search_space(p.train, [HpoParam(key="augmentation.lost_object_weight", kind="float", low=0.0, high=1.0)])


def test_median_pruner_stops_a_trial_below_the_median(tmp_path):
    cfg = HpoConfig(
        n_trials=6,
        n_startup_trials=3,
        n_warmup_epochs=0,
        heartbeat_s=5,
        search_space=[HpoParam(key="lr", kind="float", low=1e-4, high=1e-2, log=True)],
    )
    base = load_profile("tiny").train

    def fake_train(tcfg, report):  # MCC grows with lr: small lr trials fall below the median
        for epoch in range(1, 5):
            report(epoch, tcfg.lr * 100 * epoch / 4)
        return tcfg.lr * 100

    study = build_study(f"sqlite:///{tmp_path / 's.db'}", cfg, max_epochs=4)
    run_study(study, phase1_objective(fake_train, base, cfg.search_space), cfg)
    states = [t.state for t in study.trials]
    assert len(states) == 6 and TrialState.PRUNED in states
    for t in study.trials:
        assert t.state != TrialState.COMPLETE or len(t.intermediate_values) == 4
    from PIL import Image

    from roadwork_ml.training.hpo import study_plots

    plots = study_plots(study, tmp_path / "plots")
    assert set(plots) == {"history", "importance"}
    for path in plots.values():
        with Image.open(path) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    # hyperband is accepted too
    hb = build_study(f"sqlite:///{tmp_path / 'h.db'}", cfg.model_copy(update={"pruner": "hyperband"}), max_epochs=4)
    assert isinstance(hb.pruner, optuna.pruners.HyperbandPruner)


def test_study_plots_skip_importance_when_every_trial_scored_the_same(tmp_path):
    """Two trials with the same VAL_SELECT MCC (a tiny model that learned nothing yet): fANOVA
    has no variance to apportion and raises, which failed the hpo_study asset; the history
    is still drawn and the importance plot is left out."""
    from roadwork_ml.training.hpo import study_plots

    cfg = HpoConfig(n_trials=2, search_space=[HpoParam(key="lr", kind="float", low=1e-4, high=1e-2, log=True)])
    study = build_study(f"sqlite:///{tmp_path / 's.db'}", cfg, max_epochs=1)
    run_study(study, phase1_objective(lambda tcfg, report: 0.0, load_profile("tiny").train, cfg.search_space), cfg)
    assert [t.value for t in study.trials] == [0.0, 0.0]
    with pytest.raises(RuntimeError, match="zero total variance"):
        optuna.importance.get_param_importances(study)  # what the importance plot calls
    assert set(study_plots(study, tmp_path / "plots")) == {"history"}


def _counts(url):
    study = optuna.load_study(study_name="phase1", storage=url)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return study, {s: states.count(s) for s in TrialState}


def test_study_resumes_after_sigkill(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    n = 5
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), url, str(n)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            time.sleep(0.3)
            if proc.poll() is not None:
                pytest.fail(f"worker ended before the kill: {proc.stderr.read().decode()[-2000:]}")
            try:
                study, c = _counts(url)
            except Exception:  # noqa: BLE001, S112 - study not created yet
                continue
            running = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
            # kill inside a trial that has reported an epoch (all its parameters are drawn by then)
            if c[TrialState.COMPLETE] + c[TrialState.PRUNED] >= 1 and running and running[0].intermediate_values:
                break
        else:
            pytest.fail("no trial finished within 180 s")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    study, before = _counts(url)
    assert before[TrialState.RUNNING] == 1  # the killed trial is left RUNNING
    killed = next(t for t in study.trials if t.state == TrialState.RUNNING)
    done_before = before[TrialState.COMPLETE] + before[TrialState.PRUNED]
    time.sleep(2.5)  # past the heartbeat grace period (2 x 1 s)

    again = subprocess.run(
        [sys.executable, str(WORKER), url, str(n)], env=env, capture_output=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    study, after = _counts(url)
    assert after[TrialState.COMPLETE] + after[TrialState.PRUNED] == n
    assert after[TrialState.RUNNING] == 0 and after[TrialState.FAIL] == 1
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert failed.number == killed.number
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert (
        len(killed.params) == 2 and len(retried) == 1 and retried[0].params == killed.params
    )  # re-run with the same parameters
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done_before >= 1 and complete and all(len(t.intermediate_values) == 3 for t in complete)
    assert study.best_value == max(t.value for t in complete) and -1 <= study.best_value <= 1
