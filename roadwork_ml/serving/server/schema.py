"""What a request may carry and what the server answers with: client errors, per-image
metadata of the inference log, and the v2 model metadata."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from roadwork_ml.policy.uncertainty import FEATURE_NAMES
from roadwork_ml.serving.server.logwriter import utc_now

META_TEXT = ("image_id", "source", "camera_id", "weather", "timestamp")


class ClientError(Exception):
    """Answered with ``status`` and ``message`` (4xx)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Scored:
    """Per-image results of one request; ``errors[i]`` is "" for a scored image."""

    n: int
    errors: list[str]
    outputs: Any  # BatchOutputs of the good images, or None
    good: np.ndarray  # indices of the good images


def meta_from(values: dict[str, Any], n: int, key: str, default):
    v = values.get(key)
    if v is None:
        return [default] * n
    if isinstance(v, list):
        if len(v) != n:
            raise ClientError(400, f"{key} has {len(v)} values for {n} images")
        return v
    return [v] * n


def parse_timestamps(raw: list, n: int) -> list[datetime]:
    out = []
    for t in raw:
        if t is None:
            out.append(utc_now())
            continue
        try:
            ts = datetime.fromisoformat(t.decode() if isinstance(t, bytes) else str(t))
        except ValueError:
            raise ClientError(400, f"timestamp {t!r} is not ISO 8601") from None
        if ts.tzinfo is None:
            raise ClientError(400, f"timestamp {t!r} has no UTC offset")
        out.append(ts)
    return out


def parse_metadata(values: dict[str, Any], n: int) -> dict[str, list]:
    """Per-image log metadata of ``n`` images from inputs / parameters ``values`` (400 on bad values)."""
    if n > 1 and values.get("image_id") is not None and not isinstance(values["image_id"], list):
        raise ClientError(400, "image_id names one image: send it as a BYTES [N] input, one id per image")
    meta = {k: meta_from(values, n, k, None) for k in META_TEXT}
    try:
        meta["hour"] = [int(h) for h in meta_from(values, n, "hour", -1)]
    except (TypeError, ValueError):
        raise ClientError(400, "hour must be an integer 0..23 (or -1 for unknown)") from None
    if any(not -1 <= h <= 23 for h in meta["hour"]):
        raise ClientError(400, "hour must be 0..23 (or -1 for unknown)")
    meta["timestamp"] = parse_timestamps(meta["timestamp"], n)
    return meta


def fill_rows(scored: Scored, values: np.ndarray, fill) -> np.ndarray:
    """``values`` of the good images spread over all ``scored.n`` rows, ``fill`` for the bad ones."""
    out = np.full((scored.n, *values.shape[1:]), fill, dtype=values.dtype)
    out[scored.good] = values
    return out


def model_metadata(model, model_name: str) -> dict:
    """The v2 model metadata: name, the served version, platform, inputs and outputs."""
    s = model.input_size
    inputs = [
        {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
        {"name": "images", "datatype": "FP32", "shape": [-1, 3, s, s]},
    ]
    inputs += [{"name": k, "datatype": "BYTES", "shape": [-1]} for k in META_TEXT] + [
        {"name": "hour", "datatype": "INT32", "shape": [-1]}
    ]
    outputs = [{"name": k, "datatype": "FP32", "shape": [-1]} for k in ("probability", "streetvision_probability")]
    outputs += [
        {"name": k, "datatype": "BYTES", "shape": [-1]}
        for k in ("decision", "prediction_set", "model_version", "error")
    ]
    outputs += [
        {"name": "logits", "datatype": "FP32", "shape": [-1, model.num_classes]},
        {"name": "features", "datatype": "FP32", "shape": [-1, len(FEATURE_NAMES)]},
    ]
    return {
        "name": model_name,
        "versions": [model.version],
        "platform": f"roadwork_bundle_{model.backend}",
        "inputs": inputs,
        "outputs": outputs,
    }
