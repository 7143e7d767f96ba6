"""Simulated production traffic whose distribution drifts by phase (the demo's "production").

A :class:`~roadwork_ml.monitoring.settings.DriftScenario` is a list of phases. Phases
*accumulate*: a phase's ``None`` field keeps the value of the previous phase (the source's
base style for the first), so "snow grows" followed by "a new camera appears" keeps the
snow. The active phase of day ``d`` (0 = ``start_date``) is the last with
``start_day <= d``.

Each day is drawn from :func:`roadwork_ml.data.synthetic.generate_source`, one *stream*
per source (share ``source_shares``) plus, once a phase adds one, a new-camera stream
(key ``"<source>/new-camera"``) that takes ``share`` of its source's images with its own
JPEG quality, blur and noise. Its records keep ``source = <source>`` and get
``camera_id = "<source>-cam-new"``, an id the reference never saw.

Determinism: a stream's generator seed is derived from ``(scenario.seed, day, stream)``,
so a day is byte-identical across reruns and independent of the other days. Image ids
are ``"<YYYY-MM-DD>:<stream>-<index>"``: unique within and across days, stable across reruns.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime

import numpy as np

from roadwork_ml.config import SyntheticStyle
from roadwork_ml.data.records import ImageRecord
from roadwork_ml.data.synthetic import generate_source
from roadwork_ml.monitoring.settings import DriftScenario, NewCamera, ScenarioPhase

__all__ = [
    "NEW_CAMERA_SUFFIX",
    "active_phase",
    "day_styles",
    "day_counts",
    "stream_seed",
    "generate_day",
    "record_timestamp",
    "label_arrives",
]

NEW_CAMERA_SUFFIX = "/new-camera"


def active_phase(scenario: DriftScenario, day_index: int) -> dict:
    """The accumulated phase settings of day ``day_index``: name, night_rate, weather_probs,
    positive_rate (None = base style) and new_camera (None = none yet)."""
    if day_index < 0:
        raise ValueError(f"day_index must be >= 0, got {day_index}")
    state: dict = {"name": None, "night_rate": None, "weather_probs": None, "positive_rate": None, "new_camera": None}
    phase: ScenarioPhase
    for phase in scenario.phases:
        if phase.start_day > day_index:
            break
        state["name"] = phase.name
        for key in ("night_rate", "weather_probs", "positive_rate", "new_camera"):
            value = getattr(phase, key)
            if value is not None:
                state[key] = value
    return state


def _restyle(style: SyntheticStyle, **updates) -> SyntheticStyle:
    return SyntheticStyle(**{**style.model_dump(), **{k: v for k, v in updates.items() if v is not None}})


def day_styles(
    base_styles: dict[str, SyntheticStyle], scenario: DriftScenario, day_index: int
) -> dict[str, SyntheticStyle]:
    """The style of every stream on day ``day_index`` (keys: sources, plus ``"<source>/new-camera"``)."""
    state = active_phase(scenario, day_index)
    out: dict[str, SyntheticStyle] = {}
    for source, share in scenario.source_shares.items():
        if share <= 0:
            continue
        if source not in base_styles:
            raise ValueError(f"scenario sends traffic from {source!r}, but base_styles has only {sorted(base_styles)}")
        out[source] = _restyle(
            base_styles[source],
            night_rate=state["night_rate"],
            weather_probs=state["weather_probs"],
            positive_rate=state["positive_rate"],
        )
    cam: NewCamera | None = state["new_camera"]
    if cam is not None:
        if cam.source not in out:
            raise ValueError(f"the new camera joins {cam.source!r}, which sends no traffic in this scenario")
        out[cam.source + NEW_CAMERA_SUFFIX] = _restyle(
            out[cam.source],
            n_cameras=1,
            jpeg_quality=tuple(cam.jpeg_quality),
            blur_max=cam.blur_max,
            noise_std=cam.noise_std,
        )
    return out


def day_counts(scenario: DriftScenario, day_index: int) -> dict[str, int]:
    """Images per stream on that day: ``images_per_day`` split by ``source_shares`` (largest
    remainder, so the total is exact), the new camera taking ``round(share * n)`` of its source's ``n``."""
    shares = {s: v for s, v in scenario.source_shares.items() if v > 0}
    total = sum(shares.values())
    raw = {s: scenario.images_per_day * v / total for s, v in shares.items()}
    counts = {s: int(np.floor(v)) for s, v in raw.items()}
    for s in sorted(raw, key=lambda s: (-(raw[s] - counts[s]), s))[: scenario.images_per_day - sum(counts.values())]:
        counts[s] += 1
    cam: NewCamera | None = active_phase(scenario, day_index)["new_camera"]
    if cam is not None:
        k = int(round(cam.share * counts[cam.source]))
        counts[cam.source] -= k
        counts[cam.source + NEW_CAMERA_SUFFIX] = k
    return counts


def stream_seed(seed: int, day: date, stream: str) -> int:
    """64-bit generator seed of one stream on one day."""
    ss = np.random.SeedSequence([int(seed) % (1 << 64), day.toordinal(), zlib.crc32(stream.encode("utf-8"))])
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def generate_day(
    base_styles: dict[str, SyntheticStyle], scenario: DriftScenario, day: date, image_size: int
) -> Iterator[ImageRecord]:
    """Yield the day's synthetic records, stream by stream (see module notes for ids and seeds)."""
    day_index = (day - scenario.start).days
    if day_index < 0:
        raise ValueError(f"day {day} is before the scenario's start_date {scenario.start_date}")
    styles = day_styles(base_styles, scenario, day_index)
    counts = day_counts(scenario, day_index)
    for stream in sorted(styles):
        n = counts.get(stream, 0)
        if n == 0:
            continue
        source = stream.removesuffix(NEW_CAMERA_SUFFIX)
        is_new = stream != source
        prefix = f"{day.isoformat()}:{stream}"
        for i, rec in enumerate(
            generate_source(source, styles[stream], image_size, stream_seed(scenario.seed, day, stream), n)
        ):
            updates = {
                "record_id": f"{prefix}-{i:06d}",
                "sequence_id": f"{prefix}:{rec.sequence_id}",
                "group_id": f"{prefix}:{rec.group_id}",
                "origin": f"scenario:{scenario.seed}:{prefix}:{i}",
            }
            if is_new:
                updates["camera_id"] = f"{source}-cam-new"
            yield replace(rec, **updates)


def record_timestamp(day: date, record: ImageRecord) -> datetime:
    """A UTC timestamp on ``day`` in the record's hour (minute/second from a hash of its id)."""
    h = zlib.crc32(record.record_id.encode("utf-8"))
    hour = record.hour if 0 <= record.hour <= 23 else (h >> 12) % 24
    return datetime(day.year, day.month, day.day, hour, h % 60, (h >> 6) % 60, tzinfo=UTC)


def label_arrives(scenario: DriftScenario, image_id: str) -> bool:
    """Whether this image's label reaches us (a fixed ``label_fraction`` share, chosen by hash)."""
    h = zlib.crc32(f"{scenario.seed}:{image_id}".encode())
    return (h / 2**32) < scenario.label_fraction
