"""Drift decisions on simulated production days: false alarms, detection delay, accuracy rules;
plus the reference profile's persistence and the label-free performance estimate."""

from __future__ import annotations

import json
import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from roadwork_ml.artifacts import IntegrityError
from roadwork_ml.monitoring.decisions import decide, drift_report, evidently_html, reference_frame
from roadwork_ml.monitoring.inference_log import build_log, validate_log
from roadwork_ml.monitoring.performance import estimate_accuracy, labelled_performance
from roadwork_ml.monitoring.reference import MODEL_COLUMNS, ReferenceProfile
from roadwork_ml.monitoring.settings import DriftRules
from roadwork_ml.policy.uncertainty import uncertainty_features

RULES = DriftRules(
    psi_alert=0.2,
    psi_retrain=0.3,
    family_alpha=0.05,
    permutations=499,
    group_window_minutes=10,
    ece_increase_retrain=0.05,
    accuracy_drop_alert=0.05,
    reference_mode="fixed",
    rolling_days=7,
    accuracy_retrain=0.80,
    accuracy_rollback=0.75,
    min_labels_for_accuracy=50,
    min_slice_rows=30,
    psi_bins=10,
    psi_mode="quantile",
)
EMB_DIM = 8


def simulate(n: int, seed: int, night_rate: float = 0.3, label_fraction: float = 0.3, snow: float = 0.1) -> dict:
    """One batch of served images, calibrated by construction: y ~ Bernoulli(logged prob).

    Nights are harder (logits nearer 0, views disagree more) and move the embedding; snow
    adds view noise. Two views per image (global + flip), 8-d embeddings.
    """
    rng = np.random.default_rng(seed)
    night = rng.random(n) < night_rate
    weather = rng.choice(["clear", "rain", "snow", "fog"], n, p=[0.6, 0.2, snow, 0.2 - snow])
    side = np.where(rng.random(n) < 0.3, 1.0, -1.0)
    center = np.where(night, 1.8, 3.5) * side
    logit = center + rng.normal(0, 1.2, n)
    view_noise = np.where(night, 0.9, 0.4) + np.where(weather == "snow", 0.4, 0.0)
    view_logits = logit[:, None] + rng.normal(0, 1, (n, 2)) * view_noise[:, None]
    p1_views = 1 / (1 + np.exp(-view_logits))
    view_probs = np.stack([1 - p1_views, p1_views], axis=-1)  # [N, 2, 2]
    prob = p1_views.mean(axis=1)
    y = (rng.random(n) < prob).astype(int)
    emb = rng.normal(size=(n, EMB_DIM))
    emb[:, 0] += 0.8 * night
    emb[:, 1] += 0.6 * y
    view_emb = emb[:, None, :] + rng.normal(0, 0.3, (n, 2, EMB_DIM)) * view_noise[:, None, None]
    feats = uncertainty_features(view_probs, view_emb)
    hours = np.where(night, rng.choice([21, 22, 23, 0, 1, 2], n), rng.integers(9, 17, n))
    labels = np.where(rng.random(n) < label_fraction, y, -1)
    return {
        "prob": prob,
        "features": feats,
        "emb": emb.astype(np.float32),
        "y": y,
        "labels": labels,
        "hours": hours,
        "tod": np.where(night, "night", "day"),
        "weather": weather,
        "source": rng.choice(["natix", "mapillary"], n, p=[0.8, 0.2]),
    }


def as_log(sim: dict, day: str = "2026-03-01") -> pd.DataFrame:
    n = len(sim["prob"])
    return build_log(
        timestamps=[pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=int(h)) for h in sim["hours"]],
        image_ids=[f"{day}:{i}" for i in range(n)],
        sources=sim["source"].tolist(),
        camera_ids=["cam"] * n,
        model_version="v1",
        probs=sim["prob"],
        decisions=np.where(sim["prob"] > 0.5, "roadwork", "no_roadwork").tolist(),
        features=sim["features"],
        embeddings=sim["emb"],
        hours=sim["hours"],
        times_of_day=sim["tod"].tolist(),
        weathers=sim["weather"].tolist(),
        labels=sim["labels"],
        sequence_ids=[f"{day}:seq{i}" for i in range(n)],  # i.i.d. images: one per sequence
    )


def make_reference(n: int = 500, seed: int = 12345) -> ReferenceProfile:
    sim = simulate(n, seed)
    meta = pd.DataFrame(
        {
            "time_of_day": sim["tod"],
            "weather": sim["weather"],
            "source": sim["source"],
            "sequence_id": [f"ref{i}" for i in range(n)],
        }
    )
    return ReferenceProfile.build(sim["prob"], sim["features"], sim["emb"], meta, bins=10, seed=0, labels=sim["y"])


@pytest.fixture(scope="module")
def reference() -> ReferenceProfile:
    return make_reference()


def _families(report) -> dict[str, bool]:
    return {
        "psi": any(
            s["psi"] > RULES.psi_alert and s["psi_p_holm"] <= RULES.family_alpha for s in report.columns.values()
        ),
        "ks": any(s["ks_p_holm"] <= RULES.family_alpha for s in report.columns.values()),
        "mmd": report.mmd["p_holm"] <= RULES.family_alpha,
        "category_psi": any(
            s["psi"] > RULES.psi_alert and s["p_holm"] <= RULES.family_alpha for s in report.categories.values()
        ),
        "any": report.decision != "ok",
    }


def stable_day_alarms(reference: ReferenceProfile, n_days: int = 50, n_per_day: int = 200) -> dict[str, float]:
    counts = dict.fromkeys(["psi", "ks", "mmd", "category_psi", "any"], 0)
    for d in range(n_days):
        report = drift_report(reference, as_log(simulate(n_per_day, seed=1000 + d)), RULES, seed=d)
        for k, v in _families(report).items():
            counts[k] += int(v)
    return {k: v / n_days for k, v in counts.items()}


def detection_delays(
    reference: ReferenceProfile, n_runs: int = 5, shift_day: int = 3, n_days: int = 6
) -> list[int | None]:
    """Days from the shift (nights 30% -> 60%) to the first non-ok decision, per run."""
    delays: list[int | None] = []
    for run in range(n_runs):
        found = None
        for d in range(n_days):
            night = 0.6 if d >= shift_day else 0.3
            report = drift_report(
                reference, as_log(simulate(200, seed=5000 + 100 * run + d, night_rate=night)), RULES, seed=d
            )
            if report.decision != "ok" and d >= shift_day:
                found = d - shift_day
                break
        delays.append(found)
    return delays


# ------------------------------------------------------------------------------------ false alarms / detection


def test_false_alarm_rate_on_stable_days(reference):
    n_days, alpha = 50, 0.05
    rates = stable_day_alarms(reference, n_days=n_days)
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_days)  # 0.142
    assert rates["psi"] <= bound, rates
    assert rates["ks"] <= bound, rates
    assert rates["any"] <= bound, rates  # Holm over the whole family: the decision's family-wise rate
    assert rates["mmd"] <= bound, rates
    assert rates["category_psi"] <= bound, rates


def test_nights_growing_is_detected_within_two_days(reference):
    delays = detection_delays(reference)
    assert all(d is not None and d <= 1 for d in delays), delays  # the shift day or the next


def test_shift_report_names_its_reasons(reference):
    report = drift_report(reference, as_log(simulate(200, seed=77, night_rate=0.7)), RULES, seed=0, day="2026-03-05")
    assert report.decision in ("alert", "retrain")
    rules = {r["rule"] for r in report.reasons}
    assert rules & {"psi_alert", "psi_retrain", "ks", "mmd"}
    assert report.categories["time_of_day"]["psi"] > RULES.psi_alert
    for r in report.reasons:
        assert set(r) == {"level", "rule", "column", "value", "threshold", "message"}
        assert str(round(r["threshold"], 3)) in r["message"] or f"{r['threshold']}" in r["message"]
    d = json.loads(json.dumps(report.to_dict()))
    assert d["decision"] == report.decision and d["day"] == "2026-03-05"
    night = [s for s in d["slices"] if s["column"] == "time_of_day" and s["value"] == "night"][0]
    assert night["rows"] > 100 and night["columns"] is not None and not night["new"]


# ------------------------------------------------------------------------------------ accuracy rules


def _with_accuracy(sim: dict, acc: float, n_labels: int) -> dict:
    """Labels that make the argmax prediction right on exactly ``acc`` of the first ``n_labels`` rows."""
    out = dict(sim)
    pred = (sim["prob"] > 0.5).astype(int)
    n_right = int(round(acc * n_labels))
    labels = np.full(len(pred), -1)
    labels[:n_labels] = np.where(np.arange(n_labels) < n_right, pred[:n_labels], 1 - pred[:n_labels])
    out["labels"] = labels
    return out


@pytest.mark.parametrize("acc, expected", [(0.95, "ok"), (0.78, "retrain"), (0.70, "rollback")])
def test_accuracy_rules(reference, acc, expected):
    sim = _with_accuracy(simulate(200, seed=4242), acc, n_labels=100)
    report = drift_report(reference, as_log(sim), RULES, seed=0)
    assert report.labelled["n"] == 100 and report.labelled["accuracy"] == pytest.approx(acc)
    levels = {r["rule"] for r in report.reasons}
    if expected == "ok":
        assert not levels & {"accuracy_retrain", "accuracy_rollback"}
    else:
        assert report.decision == expected
        assert f"accuracy_{expected}" in levels


def test_too_few_labels_do_not_trigger_accuracy_rules(reference):
    sim = _with_accuracy(simulate(200, seed=4243), 0.5, n_labels=RULES.min_labels_for_accuracy - 1)
    report = drift_report(reference, as_log(sim), RULES, seed=0)
    assert report.labelled["enough"] is False
    assert not {r["rule"] for r in report.reasons} & {"accuracy_retrain", "accuracy_rollback"}


def test_mmd_sees_a_bounded_seeded_subsample(reference):
    log = as_log(simulate(400, seed=21))
    a = drift_report(reference, log, RULES, seed=3, max_mmd_rows=150, day="2026-03-01")
    b = drift_report(reference, log, RULES, seed=3, max_mmd_rows=150, day="2026-03-01")
    assert 0 < a.mmd["rows"] <= 150 and a.mmd == b.mmd  # whole groups, so at most 150
    assert drift_report(reference, log, RULES, seed=3).mmd["rows"] == 400


def test_permutations_are_drawn_afresh_per_day(reference):
    log = as_log(simulate(200, seed=22))
    a = drift_report(reference, log, RULES, seed=3, day="2026-03-01")
    b = drift_report(reference, log, RULES, seed=3, day="2026-03-02")
    assert a.family["seed"] != b.family["seed"]
    assert a.mmd["statistic"] == b.mmd["statistic"]  # same data, same statistic ...
    assert [t["p_value"] for t in a.family["tests"].values()] != [
        t["p_value"] for t in b.family["tests"].values()
    ]  # ... other nulls


def test_decide_most_severe_wins():
    cols = {c: {"psi": 0.0, "ks_statistic": 0.0, "psi_p_holm": 1.0, "ks_p_holm": 1.0} for c in MODEL_COLUMNS}
    assert decide(cols, {}, {"p_holm": 0.5}, None, RULES) == ("ok", [])
    cols["entropy"]["psi"] = 0.25
    assert decide(cols, {}, {"p_holm": 0.5}, None, RULES)[0] == "ok"  # large PSI, not significant: no alarm
    cols["entropy"]["psi_p_holm"] = 0.01
    assert decide(cols, {}, {"p_holm": 0.5}, None, RULES)[0] == "alert"
    cols["prob"].update(psi=0.35, psi_p_holm=0.002)
    decision, reasons = decide(cols, {}, {"p_holm": 0.01}, {"accuracy": 0.7, "n": 60}, RULES)
    assert decision == "rollback"
    assert [r["rule"] for r in reasons] == ["psi_retrain", "psi_alert", "mmd", "accuracy_rollback"]
    assert reasons[0]["value"] == 0.35 and reasons[0]["column"] == "prob"


def test_covariate_shift_retrains_only_when_the_embeddings_moved_too():
    cols = {c: {"psi": 0.0, "ks_statistic": 0.0, "psi_p_holm": 1.0, "ks_p_holm": 1.0} for c in MODEL_COLUMNS}
    nights = {"time_of_day": {"psi": 3.2, "p_holm": 0.01, "new": []}}
    # shares moved a lot, the model's representation did not: an alert
    assert decide(cols, nights, {"p_holm": 0.4}, None, RULES)[0] == "alert"
    decision, reasons = decide(cols, nights, {"p_holm": 0.04}, None, RULES)
    assert decision == "retrain" and [r["rule"] for r in reasons] == ["psi_alert", "covariate_shift", "mmd"]
    # a small (or not significant) share shift with a moved embedding stays an alert
    small = {"time_of_day": {"psi": 0.25, "p_holm": 0.01, "new": []}}
    assert decide(cols, small, {"p_holm": 0.04}, None, RULES)[0] == "alert"
    assert (
        decide(cols, {"time_of_day": {**nights["time_of_day"], "p_holm": 0.2}}, {"p_holm": 0.04}, None, RULES)[0]
        == "alert"
    )


def test_labelled_drift_rules():
    cols = {c: {"psi": 0.0, "ks_statistic": 0.0, "psi_p_holm": 1.0, "ks_p_holm": 1.0} for c in MODEL_COLUMNS}
    lab = {
        "accuracy": 0.85,
        "n": 100,
        "ece": 0.12,
        "ece_increase": 0.07,
        "ece_increase_p_holm": 0.01,
        "accuracy_drop": 0.08,
        "accuracy_drop_p_holm": 0.02,
    }
    decision, reasons = decide(cols, {}, None, lab, RULES)
    assert decision == "retrain" and [r["rule"] for r in reasons] == ["ece_increase", "accuracy_drop"]
    # below the effect thresholds, or not significant: nothing
    assert decide(cols, {}, None, {**lab, "ece_increase": 0.04, "accuracy_drop": 0.04}, RULES)[0] == "ok"
    assert decide(cols, {}, None, {**lab, "ece_increase_p_holm": 0.2, "accuracy_drop_p_holm": 0.3}, RULES)[0] == "ok"


# ------------------------------------------------------------------------------------ reference profile


def test_reference_save_load_verified(tmp_path, reference):
    reference.save(tmp_path / "ref")
    back = ReferenceProfile.load(tmp_path / "ref")
    assert back.columns == reference.columns and back.bins == reference.bins
    for c in MODEL_COLUMNS:
        assert np.array_equal(back.edges[c], reference.edges[c]) and np.array_equal(back.shares[c], reference.shares[c])
    assert np.array_equal(back.values, reference.values) and np.array_equal(back.embeddings, reference.embeddings)
    assert back.meta.equals(reference.meta)
    assert back.mmd_sigma == reference.mmd_sigma and back.category_shares == reference.category_shares
    assert back.group_kind == "sequence" and list(back.groups) == list(
        reference.groups
    )  # the reference keeps its grouping key
    assert list(back.embedding_groups) == list(reference.embedding_groups) and np.array_equal(
        back.labels, reference.labels
    )
    # same report from the loaded profile
    log = as_log(simulate(200, seed=9))
    assert drift_report(back, log, RULES, seed=1).to_dict() == drift_report(reference, log, RULES, seed=1).to_dict()
    # a flipped byte is caught before anything is read
    f = tmp_path / "ref" / "arrays.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="arrays.safetensors"):
        ReferenceProfile.load(tmp_path / "ref")
    assert not list((tmp_path / "ref").glob(".*.tmp"))


def test_reference_is_bounded_and_seeded():
    sim = simulate(3000, seed=1)
    meta = pd.DataFrame({"time_of_day": sim["tod"], "weather": sim["weather"], "source": sim["source"]})
    a = ReferenceProfile.build(sim["prob"], sim["features"], sim["emb"], meta, max_samples=800, mmd_samples=300, seed=3)
    b = ReferenceProfile.build(sim["prob"], sim["features"], sim["emb"], meta, max_samples=800, mmd_samples=300, seed=3)
    # whole circular blocks of ceil(sqrt(3000)) = 55 rows: at most 800 / 300 rows, less than one block short
    assert 800 - 55 < a.values.shape[0] <= 800 and 300 - 55 < a.embeddings.shape[0] <= 300 and a.n_reference == 3000
    assert a.values.shape[1] == 8 and a.embeddings.shape[1] == EMB_DIM
    assert np.array_equal(a.values, b.values) and a.mmd_sigma == b.mmd_sigma
    assert (
        a.group_kind == "circular_block"
        and len(a.groups) == len(a.values)
        and len(a.embedding_groups) == len(a.embeddings)
    )
    assert np.allclose(a.shares["prob"], 0.1, atol=0.002)  # deciles of the full reference
    with pytest.raises(ValueError, match="features must be"):
        ReferenceProfile.build(sim["prob"], sim["features"][:, :6], sim["emb"], meta)


# ------------------------------------------------------------------------------------ performance


def test_label_free_estimate_within_two_se_of_true_accuracy():
    inside, z = [], []
    for seed in range(200):
        sim = simulate(300, seed=seed)
        est = estimate_accuracy(sim["prob"])
        true = float(np.mean((sim["prob"] > 0.5).astype(int) == sim["y"]))
        inside.append(abs(est.accuracy - true) <= 2 * est.se)
        z.append((true - est.accuracy) / est.se)
    assert np.mean(inside) >= 0.90, np.mean(inside)  # nominal ~95 %; 0.90 is 3 MC SEs below
    assert abs(np.mean(z)) < 3 / math.sqrt(200)  # unbiased
    assert 0.8 < np.std(z) < 1.2  # the SE is the right size
    sim = simulate(2000, seed=1)
    lab = labelled_performance(sim["prob"], sim["labels"])
    assert lab is not None and lab.n == int((sim["labels"] >= 0).sum())
    assert labelled_performance(sim["prob"], np.full(2000, -1)) is None


def test_evidently_html_report(tmp_path, reference):
    log = as_log(simulate(200, seed=3))
    out = evidently_html(reference_frame(reference), log, tmp_path / "report" / "drift.html")
    html = out.read_text()
    assert out.exists() and len(html) > 10_000 and "<html" in html.lower()
    assert "prob" in html and not list(out.parent.glob(".*.tmp"))


def test_log_from_simulation_is_valid():
    validate_log(as_log(simulate(50, seed=0)))
    assert date.fromisoformat("2026-03-01")


def test_evidently_html_survives_a_column_that_differs_only_in_its_last_bits(tmp_path):
    """A saturated probability column (1.0 and 1.0 + 2e-16) left numpy no 10 finite histogram
    bins and failed the day's drift_report; the noise below float32 precision is rounded away,
    real differences stay."""
    from roadwork_ml.monitoring.decisions import _snap_float_noise

    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(size=200), "p": np.full(200, 1.0)})
    cur = pd.DataFrame({"a": rng.normal(size=40), "p": np.r_[np.ones(39), 1.0 + 2.2e-16]})
    with pytest.raises(ValueError, match="finite-sized bins"):
        np.histogram(cur["p"].to_numpy(), bins=10)  # what evidently does with the raw column
    out = evidently_html(ref, cur, tmp_path / "drift.html")
    assert out.stat().st_size > 10_000
    snapped_ref, snapped_cur = _snap_float_noise(ref, cur)
    assert snapped_cur["p"].nunique() == 1
    # real values keep 7 significant digits of the column's scale
    scale = max(np.abs(ref["a"]).max(), np.abs(cur["a"]).max())
    assert np.abs(snapped_ref["a"] - ref["a"]).max() <= 1e-6 * scale
    assert snapped_ref["a"].nunique() == 200
