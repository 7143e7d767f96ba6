"""The server's monitoring inference log (:mod:`roadwork_ml.monitoring.inference_log`).

Layout under ``root`` (``monitoring.serving_log_dir``)::

    day=YYYY-MM-DD/log.parquet            the day's log, what production_traffic reads
    day=YYYY-MM-DD/.parts/<seq>.parquet   rows written since the last rotation

Scored batches are queued to one writer thread. It writes the buffered rows as a new part
file (validated, atomic) when ``flush_rows`` rows are buffered or the oldest is
``flush_seconds`` old. Rotation merges a day's parts into its ``log.parquet`` (one atomic
rewrite, rows de-duplicated by ``image_id`` like every writer of that log) and then deletes
the parts: a day's parts are rotated when a row of a later day arrives, the current day's
every ``compact_seconds``, and every day on :meth:`close`. A crash between the rewrite and
the deletion only re-merges rows already in the log (the de-duplication keeps one), and a
crash before a flush loses at most the buffered rows; a clean shutdown loses none.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from roadwork_ml.monitoring.inference_log import day_path, read_log, write_log

log = logging.getLogger("roadwork.serve.log")
PARTS = ".parts"


@dataclass
class LogBatch:
    """Rows to log: one scored batch's outputs and per-image metadata (lists of equal length)."""

    outputs: Any  # model.BatchOutputs
    image_ids: list[str]
    timestamps: list[datetime]
    sources: list[str]
    camera_ids: list[str]
    hours: list[int]
    weathers: list[str]


def to_frame(batch: LogBatch) -> pd.DataFrame:
    """The log rows of ``batch`` in the declared schema (labels unknown)."""
    from roadwork_ml.data.records import time_of_day
    from roadwork_ml.monitoring.inference_log import build_log

    o = batch.outputs
    m = o.model
    return build_log(
        batch.timestamps,
        batch.image_ids,
        batch.sources,
        batch.camera_ids,
        m.log_version,
        o.probability.astype("float64"),
        list(o.decision),
        o.features.astype("float64"),
        m.projection.transform(o.embeddings),
        batch.hours,
        [time_of_day(h) for h in batch.hours],
        batch.weathers,
    )


class InferenceLogWriter:
    """Thread-safe appender; :meth:`put` never blocks on disk."""

    def __init__(
        self,
        root: str | Path,
        flush_rows: int = 512,
        flush_seconds: float = 5.0,
        compact_seconds: float = 300.0,
        on_rows=None,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.flush_rows, self.flush_seconds, self.compact_seconds = (
            flush_rows,
            flush_seconds,
            compact_seconds,
        )
        self.on_rows = on_rows  # callback(n_rows_written) for metrics
        self._q: queue.Queue = queue.Queue()
        self._seq = 0
        self._stop = object()
        self.rows_written = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="roadwork-inference-log", daemon=True)
        self._thread.start()

    def put(self, batch: LogBatch) -> None:
        self._q.put(batch)

    def _run(self) -> None:
        buf: list[pd.DataFrame] = []
        n_buf, oldest = 0, None
        last_compact = time.monotonic()
        current_day: date | None = None
        while True:
            timeout = (
                self.flush_seconds if oldest is None else max(0.0, self.flush_seconds - (time.monotonic() - oldest))
            )
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is self._stop:
                self._flush(buf)
                self.rotate_all()
                return
            if item is not None:
                try:
                    frame = to_frame(item)
                except Exception:
                    self.errors += 1
                    log.exception(
                        "inference log: %d rows did not fit the schema and were not logged",
                        len(item.image_ids),
                    )
                    continue
                buf.append(frame)
                n_buf += len(frame)
                oldest = oldest or time.monotonic()
                newest_day = frame["timestamp"].max().date()
                if current_day is not None and newest_day > current_day:
                    self._flush(buf)
                    buf, n_buf, oldest = [], 0, None
                    self.rotate_all(before=newest_day)  # the day ended: its parts become its log
                current_day = max(current_day or newest_day, newest_day)
            if buf and (n_buf >= self.flush_rows or time.monotonic() - oldest >= self.flush_seconds):
                self._flush(buf)
                buf, n_buf, oldest = [], 0, None
            if time.monotonic() - last_compact >= self.compact_seconds:
                self.rotate_all()
                last_compact = time.monotonic()

    def _flush(self, frames: list[pd.DataFrame]) -> None:
        if not frames:
            return
        rows = pd.concat(frames, ignore_index=True)
        for day, part in rows.groupby(rows["timestamp"].dt.date):
            part = part.drop_duplicates(
                "image_id", keep="last"
            )  # the same image twice: the later row wins, as in the day's log
            self._seq += 1
            path = day_path(self.root, day).parent / PARTS / f"{time.time_ns():020d}-{self._seq:06d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                write_log(path, part.reset_index(drop=True))
            except Exception:
                self.errors += 1
                log.exception("inference log: writing %s failed", path)
                continue
            self.rows_written += len(part)
            if self.on_rows:
                self.on_rows(len(part))

    def rotate(self, day: date) -> Path | None:
        """Merge ``day``'s parts into its ``log.parquet`` (atomic) and delete them."""
        final = day_path(self.root, day)
        parts = sorted((final.parent / PARTS).glob("*.parquet"))
        if not parts:
            return None
        frames = ([read_log(final)] if final.exists() else []) + [read_log(p) for p in parts]
        merged = pd.concat(frames, ignore_index=True).drop_duplicates("image_id", keep="last").reset_index(drop=True)
        write_log(final, merged)
        for p in parts:
            p.unlink()
        return final

    def rotate_all(self, before: date | None = None) -> list[Path]:
        """Rotate every day with parts (only days before ``before`` when given)."""
        done = []
        for d in sorted(self.root.glob(f"day=*/{PARTS}")):
            day = date.fromisoformat(d.parent.name.split("=", 1)[1])
            if before is None or day < before:
                try:
                    p = self.rotate(day)
                except Exception:
                    self.errors += 1
                    log.exception("inference log: rotating %s failed; its parts stay", day)
                    continue
                if p is not None:
                    done.append(p)
        return done

    def close(self, timeout: float = 120.0) -> None:
        """Write every queued row and rotate every day (a clean shutdown loses nothing)."""
        self._q.put(self._stop)
        self._thread.join(timeout)


def utc_now() -> datetime:
    return datetime.now(UTC)
