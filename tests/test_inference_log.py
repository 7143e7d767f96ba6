"""Inference log: schema round trip, clear validation errors, re-writes never double count."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from roadwork_ml.monitoring.inference_log import (
    LogValidationError,
    build_log,
    day_path,
    embedding_matrix,
    log_columns,
    log_schema,
    merge_labels,
    read_log,
    read_log_range,
    validate_log,
    write_log,
)
from roadwork_ml.policy.uncertainty import FEATURE_NAMES

DAY = date(2026, 3, 1)


def make_day(day: date = DAY, n: int = 50, k: int = 6, seed: int = 0, id_prefix: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0, 1, n)
    hours = rng.integers(0, 24, n)
    labels = np.where(rng.random(n) < 0.3, rng.integers(0, 2, n), -1)
    prefix = id_prefix or day.isoformat()
    return build_log(
        timestamps=[
            pd.Timestamp(day.isoformat(), tz="UTC") + pd.Timedelta(hours=int(h), minutes=i % 60)
            for i, h in enumerate(hours)
        ],
        image_ids=[f"{prefix}:img-{i:05d}" for i in range(n)],
        sources=rng.choice(["natix", "mapillary"], n).tolist(),
        camera_ids=[f"natix-cam-{i % 7:03d}" for i in range(n)],
        model_version="bundle-abc123",
        probs=probs,
        decisions=np.where(probs > 0.8, "roadwork", np.where(probs < 0.2, "no_roadwork", "defer")).tolist(),
        features=rng.uniform(0, 0.5, (n, 7)),
        embeddings=rng.normal(size=(n, k)),
        hours=hours,
        times_of_day=np.where((hours >= 8) & (hours < 18), "day", "night").tolist(),
        weathers=rng.choice(["clear", "rain", "snow", "fog"], n).tolist(),
        labels=labels,
    )


def test_round_trip(tmp_path):
    df = make_day()
    path = write_log(day_path(tmp_path, DAY), df)
    assert path == tmp_path / "day=2026-03-01" / "log.parquet"
    table = pq.read_table(path)
    assert table.schema.equals(log_schema(6), check_metadata=False)
    assert table.schema.metadata[b"roadwork.schema"] == b"inference_log/2"
    back = read_log(path)
    assert list(back.columns) == log_columns()
    assert str(back["timestamp"].dtype) == "datetime64[ns, UTC]" or str(back["timestamp"].dtype).endswith(", UTC]")
    assert (back["timestamp"] == df["timestamp"]).all()
    for col in ["image_id", "source", "camera_id", "model_version", "decision", "time_of_day", "weather"]:
        assert back[col].tolist() == df[col].tolist()
    for col in ["prob", *FEATURE_NAMES]:
        assert np.array_equal(back[col].to_numpy(), df[col].to_numpy())
    assert np.array_equal(embedding_matrix(back), embedding_matrix(df))
    assert embedding_matrix(back).dtype == np.float32
    assert back["label"].dtype == "Int8"
    assert back["label"].isna().sum() == df["label"].isna().sum() > 0
    assert back["label"].dropna().tolist() == df["label"].dropna().tolist()
    assert back["hour"].tolist() == df["hour"].tolist()
    assert not list(tmp_path.rglob(".*.tmp"))  # no temp file left behind


def test_minus_one_label_is_stored_as_null(tmp_path):
    df = make_day(n=5)
    df["label"] = [0, 1, -1, None, 1]
    back = read_log(write_log(tmp_path / "x.parquet", df))
    assert back["label"].isna().tolist() == [False, False, True, True, False]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda d: d.assign(prob=d["prob"].where(d.index != 3, 1.5)),
            r"prob must be finite and in \[0, 1\].*rows \[3\]",
        ),
        (lambda d: d.assign(prob=d["prob"].where(d.index != 0, np.nan)), "prob must be finite"),
        (lambda d: d.assign(image_id=["same"] * len(d)), "image_id must be unique"),
        (lambda d: d.assign(decision="maybe"), "decision must be one of"),
        (lambda d: d.drop(columns=["entropy"]), r"missing \['entropy'\]"),
        (lambda d: d.assign(extra=1), r"unexpected \['extra'\]"),
        (lambda d: d.assign(label=2), "label must be 0, 1, -1 or null"),
        (lambda d: d.assign(timestamp=d["timestamp"].dt.tz_localize(None)), "timezone-aware"),
        (lambda d: d.assign(max_prob=np.inf), "'max_prob' holds 1 non-finite|'max_prob' holds"),
        (lambda d: d.assign(embedding=[np.zeros(6)] * (len(d) - 1) + [np.zeros(5)]), "same length"),
        (lambda d: d.assign(hour=30), "hour must be"),
    ],
)
def test_validation_errors_are_clear(tmp_path, mutate, message):
    df = mutate(make_day(n=20))
    with pytest.raises(LogValidationError, match=message):
        validate_log(df)
    with pytest.raises(LogValidationError):
        write_log(tmp_path / "bad.parquet", df)
    assert not (tmp_path / "bad.parquet").exists()


def test_rewrite_of_a_day_never_double_counts(tmp_path):
    days = [DAY + timedelta(days=i) for i in range(3)]
    for i, d in enumerate(days):
        write_log(day_path(tmp_path, d), make_day(d, n=40, seed=i))
    first, stats1 = read_log_range(tmp_path, days[0], days[-1])
    assert stats1.rows_read == 120 and stats1.rows == 120 and stats1.duplicates_dropped == 0
    # rerun day 1 (same ids, new scores): the file is replaced, not appended
    rerun = make_day(days[1], n=40, seed=99)
    write_log(day_path(tmp_path, days[1]), rerun)
    second, stats2 = read_log_range(tmp_path, days[0], days[-1])
    assert stats2.rows_read == 120 and stats2.rows == 120 and stats2.duplicates_dropped == 0
    assert second["image_id"].is_unique
    assert set(second["image_id"]) == set(first["image_id"])
    day1 = second[second["image_id"].str.startswith(days[1].isoformat())]
    assert np.allclose(np.sort(day1["prob"].to_numpy()), np.sort(rerun["prob"].to_numpy()))
    # an image logged again on a later day (late re-score) is counted once, the later row wins
    late = make_day(days[2], n=10, seed=5, id_prefix=days[0].isoformat())
    late = pd.concat([read_log(day_path(tmp_path, days[2])), late], ignore_index=True)
    write_log(day_path(tmp_path, days[2]), late)
    third, stats3 = read_log_range(tmp_path, days[0], days[-1] + timedelta(days=1))
    assert stats3.rows_read == 130 and stats3.duplicates_dropped == 10 and stats3.rows == 120 == len(third)
    assert stats3.days_missing == [(days[-1] + timedelta(days=1)).isoformat()]
    again = third.set_index("image_id").loc[late["image_id"].iloc[-10:], "prob"].to_numpy()
    assert np.allclose(again, late["prob"].iloc[-10:].to_numpy())


def test_merge_labels(tmp_path):
    df = make_day(n=30)
    df["label"] = pd.array([pd.NA] * 30, dtype="Int8")
    df.loc[0, "label"] = 1
    labels = pd.DataFrame(
        {
            "image_id": [df.image_id[0], df.image_id[1], df.image_id[2], "unknown-id", df.image_id[1]],
            "label": [0, 1, 0, 1, 1],
        }
    )
    out = merge_labels(df, labels)
    assert out["label"].iloc[:3].tolist() == [0, 1, 0]
    assert out["label"].iloc[3:].isna().all()
    assert out.attrs["merge_labels"] == {"matched": 3, "unknown": 1, "changed": 1, "labelled": 3}
    assert df["label"].iloc[0] == 1  # input untouched
    back = read_log(write_log(tmp_path / "m.parquet", out))
    assert back["label"].iloc[:3].tolist() == [0, 1, 0]
    with pytest.raises(LogValidationError, match="different labels"):
        merge_labels(df, pd.DataFrame({"image_id": ["a", "a"], "label": [0, 1]}))
    with pytest.raises(LogValidationError, match="0 or 1"):
        merge_labels(df, pd.DataFrame({"image_id": ["a"], "label": [3]}))


def test_read_rejects_foreign_parquet(tmp_path):
    p = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(p)
    with pytest.raises(LogValidationError, match="not a roadwork inference log"):
        read_log(p)


def test_sequence_ids_round_trip_and_version_1_files_still_read(tmp_path):

    df = make_day(n=12)
    df["sequence_id"] = pd.array([f"seq{i // 4}" if i < 8 else None for i in range(12)], dtype="string")
    back = read_log(write_log(tmp_path / "a.parquet", df))
    assert (
        back["sequence_id"].tolist()[:8] == [f"seq{i // 4}" for i in range(8)] and back["sequence_id"].isna().sum() == 4
    )
    # a frame built before the column existed is written with nulls
    old_frame = make_day(n=5).drop(columns="sequence_id")
    assert read_log(write_log(tmp_path / "b.parquet", old_frame))["sequence_id"].isna().all()
    # an inference_log/1 file (no sequence_id column, old schema tag) still reads
    table = pq.read_table(tmp_path / "b.parquet").drop_columns(["sequence_id"])
    meta = dict(table.schema.metadata)
    meta[b"roadwork.schema"] = b"inference_log/1"
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "v1.parquet")
    v1 = read_log(tmp_path / "v1.parquet")
    assert list(v1.columns) == log_columns() and v1["sequence_id"].isna().all()
    with pytest.raises(LogValidationError, match="sequence_ids must have"):
        build_log(
            [pd.Timestamp("2026-03-01", tz="UTC")],
            ["a"],
            ["s"],
            ["c"],
            "m",
            [0.5],
            ["defer"],
            np.zeros((1, 7)),
            np.zeros((1, 2)),
            [1],
            ["day"],
            ["clear"],
            sequence_ids=["x", "y"],
        )
