"""Drift reports explain themselves (issue 16 item 8): the accuracy rule says why it was not
applied and how many labels it needs; the slice table carries the labelled counts the log has,
checked against an independent pandas count of the same log."""

import pandas as pd
import pytest

from roadwork_assets.metadata import table
from roadwork_ml.monitoring.decisions import drift_report
from roadwork_ml.monitoring.explain import SLICE_COLUMNS_ORDER, accuracy_rule_note, slice_table
from tests.test_drift_decisions import RULES, _with_accuracy, as_log, make_reference, simulate

SLICES = ("time_of_day", "weather", "source")


@pytest.fixture(scope="module")
def reference():
    return make_reference()


def test_too_few_labels_say_so_and_how_many_more(reference):
    n = RULES.min_labels_for_accuracy - 12
    log = as_log(_with_accuracy(simulate(300, seed=4243), 0.5, n_labels=n))
    report = drift_report(reference, log, RULES, seed=0, slice_columns=SLICES)
    assert report.labelled["enough"] is False and report.n_labelled == n
    note = accuracy_rule_note(report.n_labelled, RULES.min_labels_for_accuracy, report.labelled)
    assert note == f"not applied: {n} labelled rows today, the rule needs {RULES.min_labels_for_accuracy} (12 more)"
    assert accuracy_rule_note(0, 50, None) == "not applied: no labelled rows today; the rule needs 50"
    assert accuracy_rule_note(80, 50, {"accuracy": 0.9123}).startswith("applied: labelled accuracy 0.912 on 80")


def test_slice_table_fills_labelled_counts_where_the_report_has_none(reference):
    log = as_log(simulate(300, seed=11, label_fraction=0.2))
    report = drift_report(reference, log, RULES, seed=0, slice_columns=SLICES)
    # before: the report's own per-slice "labelled" is None wherever a slice has < 50 labels
    assert any(s["labelled"] is None for s in report.slices)
    rows = slice_table(report.slices, log, RULES.min_labels_for_accuracy)
    assert [list(r) for r in rows][0] == list(SLICE_COLUMNS_ORDER)
    has_label = log["label"].fillna(-1).astype(int) >= 0
    for r in rows:  # oracle: a plain pandas count over the same log
        expected = int((has_label & (log[r["slice"]].astype(str) == r["value"])).sum())
        assert r["labelled_rows"] == expected
        assert r["labels_needed"] == max(0, RULES.min_labels_for_accuracy - expected)
        assert (r["labelled_accuracy"] is None) == (expected < RULES.min_labels_for_accuracy)
    assert sum(r["labelled_rows"] for r in rows if r["slice"] == "source") == int(has_label.sum()) > 0
    t = table(rows, columns=SLICE_COLUMNS_ORDER)
    types = {c.name: c.type for c in t.schema.columns}
    assert types["labelled_rows"] == types["rows"] == types["labels_needed"] == "int"
    assert [c.name for c in t.schema.columns] == list(SLICE_COLUMNS_ORDER)
    assert all(isinstance(rec.data["labelled_rows"], int) for rec in t.records)
    assert any(rec.data["labelled_accuracy"] == "—" for rec in t.records)


def test_a_log_without_labels_counts_zero():
    assert (
        slice_table([{"column": "weather", "value": "rain", "rows": 40}], pd.DataFrame({"weather": ["rain"] * 40}), 50)[
            0
        ]["labels_needed"]
        == 50
    )
