"""Rolling reference: the leakage rules each remove what they should, and a dirty reference is refused."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from roadwork_ml.contracts import LeakageError, Purpose, Split, require_split
from roadwork_ml.monitoring.rolling_reference import assert_rolling_reference_clean, select_rolling_rows


def _log():
    rows = []
    for d in range(1, 11):
        for i in range(50):
            rows.append(
                {"day": f"2026-11-{d:02d}", "image_id": f"11-{d:02d}:{i}", "model_version": "m/2" if d >= 3 else "m/1"}
            )
    return pd.DataFrame(rows)


def test_rules_remove_what_they_should():
    decisions = {f"2026-11-{d:02d}": "ok" for d in range(1, 11)} | {"2026-11-06": "retrain"}
    sel = select_rolling_rows(
        _log(), date(2026, 11, 9), decisions, "m/2", trained_ids=["11-05:0", "11-05:1"], min_rows=100
    )
    assert sel.days_used == ["2026-11-03", "2026-11-04", "2026-11-05", "2026-11-07", "2026-11-08"]
    assert sel.removed == {"outside_window": 150, "day_not_accepted": 50, "other_model_version": 50, "trained_on": 2}
    assert len(sel.rows) == 248 and sel.usable
    assert (sel.rows["day"] < "2026-11-09").all()  # never the day under test


def test_too_little_keeps_the_fixed_reference():
    sel = select_rolling_rows(_log(), date(2026, 11, 4), {"2026-11-03": "ok"}, "m/2", min_rows=100)
    assert not sel.usable and "keep the fixed reference" in sel.reason


def test_dirty_reference_is_refused_and_no_split_may_serve_it():
    rows = _log()
    with pytest.raises(LeakageError, match="not before"):
        assert_rolling_reference_clean(rows, date(2026, 11, 5), {d: "ok" for d in rows["day"]}, "m/2")
    early = rows[rows["day"] < "2026-11-05"]
    with pytest.raises(LeakageError, match="other model versions"):
        assert_rolling_reference_clean(early, date(2026, 11, 5), {d: "ok" for d in rows["day"]}, "m/2")
    with pytest.raises(LeakageError, match="monitor_rolling_reference may only use"):
        require_split(Purpose.MONITOR_ROLLING_REFERENCE, Split.VAL_CALIB)


def test_a_rolling_profile_serves_a_drift_report():
    from roadwork_ml.monitoring.decisions import drift_report
    from roadwork_ml.monitoring.rolling_reference import build_rolling_profile
    from tests.test_drift_decisions import RULES, as_log, simulate

    days = [f"2026-03-0{d}" for d in range(1, 6)]
    log = pd.concat(
        [as_log(simulate(150, seed=100 + i), day=d).assign(day=d) for i, d in enumerate(days)], ignore_index=True
    )
    sel = select_rolling_rows(log, date(2026, 3, 6), dict.fromkeys(days, "ok"), "v1", min_rows=300)
    profile = build_rolling_profile(sel, projection=None)
    assert profile.n_reference == 750 and profile.group_kind == "sequence"
    report = drift_report(profile, as_log(simulate(200, seed=7), day="2026-03-06"), RULES, day="2026-03-06")
    assert report.family["grouping"] == {"day": "sequence", "reference": "sequence"}
    assert report.labelled["reference_accuracy"] is not None
