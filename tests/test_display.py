"""Numbers for people: counts as integers, sensible rounding, p-values and learning rates
never shown as 0.0000, None as "—"."""

import math

import numpy as np
import pytest

from roadwork_ml.evaluation.display import (
    MISSING,
    column_types,
    format_count,
    format_float,
    format_lr,
    format_pvalue,
    format_table,
    format_value,
    markdown_table,
    value_kind,
)


def test_the_gate_fold_table_shows_counts_as_integers():
    # the per-fold table of issue 16 showed "0.0000 | 106.0000 | 9.0000"
    rows = [
        {"fold": 0.0, "accepted": 106.0, "errors": 9.0, "coverage": 0.8123456789},
        {"fold": 1.0, "accepted": 98.0, "errors": 12.0, "coverage": 0.75},
    ]
    text = format_table(rows)
    assert [r["fold"] for r in text] == ["0", "1"]
    assert [r["accepted"] for r in text] == ["106", "98"]
    assert [r["errors"] for r in text] == ["9", "12"]
    assert [r["coverage"] for r in text] == ["0.8123", "0.7500"]
    md = markdown_table(rows)
    assert "| 0 | 106 | 9 | 0.8123 |" in md and "---:" in md and ".0000" not in md


def test_a_float_column_of_whole_numbers_is_a_count_column_but_not_a_metric_with_fractions():
    rows = [
        {"support": np.float64(40), "mcc": np.float32(0.5)},
        {"support": np.float64(41), "mcc": 1.0},
    ]
    assert format_table(rows) == [
        {"support": "40", "mcc": "0.5000"},
        {"support": "41", "mcc": "1.000"},
    ]
    assert column_types(rows) == {"support": "int", "mcc": "float"}
    assert column_types([{"a": True, "b": "x", "c": 3}]) == {
        "a": "bool",
        "b": "string",
        "c": "int",
    }


@pytest.mark.parametrize(
    "value, text",
    [
        (0.812345, "0.8123"),
        (12.3456, "12.35"),
        (143.27, "143.3"),
        (123456.7, "123457"),
        (0.00081234, "8.12e-04"),
        (0.0, "0"),
        (-0.5, "-0.5000"),
        (9.99995, "10.00"),
        (0.099996, "0.1000"),
    ],
)
def test_floats_are_rounded_to_four_significant_digits(value, text):
    assert format_float(value) == text


@pytest.mark.parametrize(
    "p, text",
    [
        (0.0342, "0.0342"),
        (3.1e-05, "3.1e-05"),
        (0.00049, "4.9e-04"),
        (1.0, "1"),
        (0.0, "0"),
        (0.5, "0.5"),
    ],
)
def test_p_values_are_never_zero_point_zero_zero_zero_zero(p, text):
    assert format_pvalue(p) == text
    assert format_value(p, "p_value") == text


@pytest.mark.parametrize(
    "lr, text",
    [
        (3e-05, "3e-05"),
        (0.001, "0.001"),
        (0.0025, "0.0025"),
        (1e-4, "0.0001"),
        (2.5e-6, "2.5e-06"),
    ],
)
def test_learning_rates_keep_their_digits(lr, text):
    assert format_lr(lr) == text
    assert format_value(lr, "lr") == text and format_value(lr, "head_lr") == text


def test_missing_values_and_other_types():
    for v in (None, float("nan"), np.float32("nan")):
        assert format_value(v) == MISSING and format_count(v) == MISSING and format_pvalue(v) == MISSING
    assert format_value(True) == "yes" and format_value(np.bool_(False)) == "no"
    assert format_value("scrc") == "scrc" and format_value(7) == "7" and format_value(np.int64(7)) == "7"
    assert format_value(math.inf) == "∞" and format_count(2.5) == "2.500"  # a non-integral "count" is not truncated
    assert format_table([{"a": 1}, {"a": 2, "b": None}]) == [
        {"a": "1", "b": MISSING},
        {"a": "2", "b": MISSING},
    ]
    assert markdown_table([]) == "_empty_"
    assert "a\\|b" in markdown_table([{"name": "a|b"}])


@pytest.mark.parametrize(
    "key, kind",
    [
        ("p_value", "pvalue"),
        ("mmd_p", "pvalue"),
        ("ks_p_value", "pvalue"),
        ("lr", "lr"),
        ("backbone_lr_mult", "float"),
        ("n_accepted", "count"),
        ("val_test_rows", "count"),
        ("mcc", "float"),
        ("psi", "float"),
        (None, "float"),
    ],
)
def test_value_kind_from_key(key, kind):
    assert value_kind(key) == kind


def test_columns_keep_the_given_order():
    rows = [{"b": 1.0, "a": 0.25}]
    assert list(format_table(rows, ["a", "b"])[0]) == ["a", "b"]
    assert markdown_table(rows, ["a", "b"]).splitlines()[0] == "| a | b |"
