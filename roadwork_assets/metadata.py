"""Helpers that turn artifacts into Dagster metadata values."""

import base64
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from roadwork_assets.resources import MlflowTracking, ResolvedProfile
from roadwork_ml.evaluation import display


def image_md(png: str | Path, alt: str = "plot") -> dg.MetadataValue:
    """Embed a PNG in Markdown metadata so the Dagster UI renders it inline."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def number(value: Any, key: str | None = None) -> Any:
    """One scalar as a person reads it (roadwork_ml.evaluation.display rules, chosen by ``key``):
    counts as ``int``, other floats as a ``float`` rounded to 4 significant digits (Dagster still
    plots them), p-values and learning rates as text in scientific notation where small
    (``3.1e-05``, never ``0.0000``), None / NaN / inf as text ("—", "∞")."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None or isinstance(value, str) or not isinstance(value, numbers.Real):
        return display.MISSING if value is None else value
    f = float(value)
    if not math.isfinite(f):
        return display.format_value(f, key)
    kind = display.value_kind(key)
    if kind == "pvalue":
        return dg.MetadataValue.text(display.format_pvalue(f))
    if kind == "lr":
        return dg.MetadataValue.text(display.format_lr(f))
    if isinstance(value, (int, np.integer)) or (kind == "count" and f.is_integer()):
        return dg.MetadataValue.int(int(round(f)))
    return dg.MetadataValue.float(float(display.format_float(f)))


def humane(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A whole metadata dict through :func:`number`: plain numbers, None and
    ``MetadataValue.float`` / ``.int`` values are formatted by their key; every other
    ``MetadataValue`` (tables from :func:`table`, paths, Markdown, JSON) passes unchanged."""
    out: dict[str, Any] = {}
    for k, v in metadata.items():
        if isinstance(v, (dg.FloatMetadataValue, dg.IntMetadataValue)):
            v = v.value
        out[k] = number(v, k) if v is None or isinstance(v, (numbers.Real, np.bool_)) else v
    return out


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> dg.MetadataValue:
    """A Dagster table (``MetadataValue.table``) with a typed schema (``display.column_types``)
    from dict rows, columns in ``columns`` order (default: first row's keys). Integer columns
    hold integers; every other cell is ``display.format_table``'s text (4 significant digits,
    p-values in scientific notation, None as "—"), so the UI shows no 16-digit floats."""
    if not rows:
        return dg.MetadataValue.md("_empty_")
    rows = [{k: _plain(v) for k, v in r.items()} for r in rows]
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    types = display.column_types(rows, cols)
    text = display.format_table(rows, cols)
    cells = []
    for raw, shown in zip(rows, text, strict=True):
        cell: dict[str, Any] = {}
        for c in cols:
            v = raw.get(c)
            if types[c] == "int" and not display._is_missing(v):
                cell[c] = int(round(float(v)))
            elif types[c] == "bool" and not display._is_missing(v):
                cell[c] = bool(v)
            else:
                cell[c] = shown[c]
        cells.append(dg.TableRecord(cell))
    schema = dg.TableSchema(columns=[dg.TableColumn(c, types[c]) for c in cols])
    return dg.MetadataValue.table(cells, schema=schema)


def _plain(v: Any) -> Any:
    """numpy scalars as Python scalars (display.py's type tests are on Python numbers)."""
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def identity_md(
    mlflow: MlflowTracking, registered_model: str, content_hash: str, *, when: str = "", known: dict | None = None
) -> dict[str, Any]:
    """The model one asset belongs to, the same identity the CLI prints (registry version +
    bundle manifest sha256), and its status in the registry at ``when`` (e.g. "materialization"):
    champion, challenger, rolled back, previous champion, superseded or not registered.
    ``known``: :meth:`MlflowTracking.identity`'s answer when the caller already asked."""
    known = known if known is not None else mlflow.identity(registered_model, content_hash)
    ident, status = known["identity"], known["status"]
    note = {
        "champion": "this is the deployed model",
        "not registered": "not judged by deployed_model yet: not deployed",
    }.get(status, "NOT the deployed model (see deployed_model)")
    return {
        "model": ident.label,
        "model_version": ident.version or display.MISSING,
        "model_sha256": content_hash,
        "model_status": dg.MetadataValue.md(
            f"**{status}**{' at ' + when if when else ''}: {note}"
            # a materialization's metadata is frozen; a promotion or rollback afterwards shows in the checks
            + (
                " (its status now: the *model_in_service* check, Checks tab)"
                if when == "materialization" and status != "champion"
                else ""
            )
        ),
    }


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
