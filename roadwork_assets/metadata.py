"""Helpers that turn artifacts into Dagster metadata values."""

import base64
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from roadwork_assets.resources import ResolvedProfile


def image_md(png: str | Path, alt: str = "plot") -> dg.MetadataValue:
    """Embed a PNG in Markdown metadata so the Dagster UI renders it inline."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def _cell(v: Any) -> Any:
    """A value a Dagster table cell holds: integers stay integers, floats round to 4 places,
    NaN / None become None (shown as an empty text cell), anything else its string."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return round(f, 4) if math.isfinite(f) else None
    if v is None:
        return None
    return str(v)


def _column_type(values: list) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float"
    return "string"


def table(rows: Sequence[Mapping[str, Any]]) -> dg.MetadataValue:
    """A Dagster table (``MetadataValue.table``) with a typed schema from dict rows: integer
    columns show as integers, floats as floats, the rest as text."""
    if not rows:
        return dg.MetadataValue.md("_empty_")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cells = [{k: _cell(r.get(k)) for k in keys} for r in rows]
    types = {k: _column_type([c[k] for c in cells]) for k in keys}
    for c in cells:  # a float column keeps its integers as floats; a text column its numbers as text
        for k, v in c.items():
            if v is None:
                types[k] = "string" if types[k] in ("string", "bool") else types[k]
                c[k] = "" if types[k] == "string" else float("nan")
            elif types[k] == "float":
                c[k] = float(v)
            elif types[k] == "string":
                c[k] = str(v)
    records = [dg.TableRecord(c) for c in cells]
    schema = dg.TableSchema(columns=[dg.TableColumn(k, types[k]) for k in keys])
    return dg.MetadataValue.table(records, schema=schema)


def profile_md(resolved: ResolvedProfile) -> dict[str, Any]:
    """The profile an asset was built under, as metadata the sensor and the UI read back."""
    return {
        "profile": resolved.source,
        "profile_sha256": resolved.sha256,
        "profile_overrides": dg.MetadataValue.json(list(resolved.overrides)),
    }


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
