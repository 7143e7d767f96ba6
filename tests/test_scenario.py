"""Drift scenario: phases accumulate, days are deterministic, phases move the shares they name.

The scenario is the demo profile's ``monitoring.scenario``; the production block is validated too.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta

import pytest
from pydantic import ValidationError

from roadwork_ml.config import load_profile
from roadwork_ml.monitoring.scenario import (
    NEW_CAMERA_SUFFIX,
    active_phase,
    day_counts,
    day_styles,
    generate_day,
    label_arrives,
    record_timestamp,
)
from roadwork_ml.monitoring.settings import DriftRules, DriftScenario, MonitoringConfig

BASE = {name: src.synthetic for name, src in load_profile("demo").data.sources.items()}
SIZE = 32


# The test's own scenario (the profiles' scenarios are tuned by measurement and may change).
SCENARIO = {
    "seed": 7,
    "start_date": "2026-11-01",
    "n_days": 12,
    "images_per_day": 200,
    "label_fraction": 0.3,
    "source_shares": {"natix": 0.6, "roadwork": 0.1, "mapillary": 0.3},
    "phases": [
        {
            "name": "stable",
            "start_day": 0,
            "night_rate": None,
            "weather_probs": None,
            "positive_rate": None,
            "new_camera": None,
        },
        {
            "name": "winter_nights",
            "start_day": 4,
            "night_rate": 0.65,
            "weather_probs": {"clear": 0.25, "rain": 0.15, "snow": 0.50, "fog": 0.10},
            "positive_rate": None,
            "new_camera": None,
        },
        {
            "name": "new_camera",
            "start_day": 7,
            "night_rate": None,
            "weather_probs": None,
            "positive_rate": None,
            "new_camera": {
                "source": "natix",
                "share": 0.4,
                "jpeg_quality": [15, 30],
                "blur_max": 2.5,
                "noise_std": 16.0,
            },
        },
        {
            "name": "label_shift",
            "start_day": 10,
            "night_rate": None,
            "weather_probs": None,
            "positive_rate": 0.7,
            "new_camera": None,
        },
    ],
}


@pytest.fixture(scope="module")
def config() -> MonitoringConfig:
    return load_profile("demo").monitoring.model_copy(update={"scenario": DriftScenario.model_validate(SCENARIO)})


@pytest.fixture(scope="module")
def scenario(config) -> DriftScenario:
    return config.scenario


def _day(scenario: DriftScenario, i: int) -> date:
    return scenario.start + timedelta(days=i)


def _digest(records) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(r.record_id.encode())
        h.update(r.image_bytes)
        h.update(json.dumps([r.label, r.hour, r.weather, r.camera_id, r.source]).encode())
    return h.hexdigest()


def test_production_block_validates():
    cfg = load_profile("production").monitoring
    assert cfg.rules.min_labels_for_accuracy == 200 and [p.start_day for p in cfg.scenario.phases] == [0, 7, 14, 21]


def test_demo_block_validates_and_strictness(config):
    assert config.rules.psi_mode == "quantile" and config.schedule_cron == "0 2 * * *"
    raw = load_profile("demo").monitoring.model_dump(mode="json")
    with pytest.raises(ValidationError, match="psi_alertt"):
        DriftRules.model_validate({**raw["rules"], "psi_alertt": 0.1})
    missing = dict(raw["rules"])
    missing.pop("family_alpha")
    with pytest.raises(ValidationError, match="family_alpha"):
        DriftRules.model_validate(missing)  # no defaults: the profile must say it
    with pytest.raises(ValidationError, match="psi_retrain"):
        DriftRules.model_validate({**raw["rules"], "psi_retrain": 0.1})
    bad = {**raw["scenario"], "phases": list(reversed(raw["scenario"]["phases"]))}
    with pytest.raises(ValidationError, match="start at day 0"):
        DriftScenario.model_validate(bad)


def test_phases_accumulate(scenario):
    assert active_phase(scenario, 0)["name"] == "stable"
    s0, s5, s8, s11 = (day_styles(BASE, scenario, d) for d in (0, 5, 8, 11))
    assert s0 == BASE
    assert s5["natix"].night_rate == 0.65 and s5["mapillary"].weather_probs["snow"] == 0.5
    assert s5["natix"].positive_rate == BASE["natix"].positive_rate
    cam = s8["natix" + NEW_CAMERA_SUFFIX]
    assert cam.jpeg_quality == (15, 30) and cam.blur_max == 2.5 and cam.n_cameras == 1
    assert cam.night_rate == 0.65  # winter persists into the next phase
    assert s11["natix"].positive_rate == 0.7 and "natix" + NEW_CAMERA_SUFFIX in s11
    for d in range(12):
        counts = day_counts(scenario, d)
        assert sum(counts.values()) == scenario.images_per_day
    assert day_counts(scenario, 8) == {
        "natix": 72,
        "mapillary": 60,
        "roadwork": 20,
        "natix/new-camera": 48,
    }  # 0.6/0.3/0.1 of 200, 40% of natix new


def test_generate_day_is_deterministic_and_ids_are_stable(scenario):
    day = _day(scenario, 8)
    a = list(generate_day(BASE, scenario, day, SIZE))
    b = list(generate_day(BASE, scenario, day, SIZE))
    assert len(a) == scenario.images_per_day
    assert _digest(a) == _digest(b)
    ids = [r.record_id for r in a]
    assert len(set(ids)) == len(ids) and all(i.startswith(f"{day.isoformat()}:") for i in ids)
    other = list(generate_day(BASE, scenario, day + timedelta(days=1), SIZE))
    assert not set(ids) & {r.record_id for r in other}
    assert _digest(a) != _digest(other)
    new = [r for r in a if r.camera_id == "natix-cam-new"]
    assert len(new) == 48 and all(r.source == "natix" for r in new)
    ts = record_timestamp(day, a[0])
    assert ts.date() == day and ts.hour == a[0].hour and ts.tzinfo is not None
    share = sum(label_arrives(scenario, i) for i in ids) / len(ids)
    assert 0.2 < share < 0.4
    with pytest.raises(ValueError, match="before the scenario"):
        next(generate_day(BASE, scenario, scenario.start - timedelta(days=1), SIZE))


def _shares(scenario: DriftScenario, days: list[int]) -> dict[str, float]:
    """Shares over *sequences* (frames of a sequence share hour, weather and label), plus the
    mean JPEG quality of natix images."""
    recs = [r for d in days for r in generate_day(BASE, scenario, _day(scenario, d), SIZE)]
    seqs = list({r.sequence_id: r for r in recs}.values())
    n = len(seqs)
    q = [json.loads(r.tags)["jpeg_quality"] for r in recs if r.source == "natix"]
    return {
        "night": sum(r.hour >= 20 or r.hour < 6 for r in seqs) / n,
        "snow": sum(r.weather == "snow" for r in seqs) / n,
        "positive": sum(r.true_label for r in seqs) / n,
        "natix_jpeg": sum(q) / len(q),
        "sequences": n,
    }


def test_phases_move_the_shares_they_name(scenario):
    stable = _shares(scenario, [0, 1, 2, 3])  # night 0.30, snow ~0.1, positives ~0.28 by style
    winter = _shares(scenario, [4, 5, 6])  # night 0.65, snow 0.50
    camera = _shares(scenario, [7, 8, 9])  # + 40 % of natix from a camera with JPEG quality 15-30
    labels = _shares(scenario, [10, 11])  # positives 0.70
    # ~100-200 sequences per phase: a share's SE is <= 0.05, so the margins below are >= 2.5 SE
    assert winter["night"] > stable["night"] + 0.15, (stable, winter)
    assert winter["snow"] > stable["snow"] + 0.2, (stable, winter)
    assert camera["natix_jpeg"] < winter["natix_jpeg"] - 8, (winter, camera)
    assert labels["positive"] > camera["positive"] + 0.3, (camera, labels)
    assert camera["snow"] > stable["snow"] + 0.2  # phases accumulate
