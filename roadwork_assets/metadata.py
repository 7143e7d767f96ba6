"""Helpers that turn artifacts into Dagster metadata values."""


import base64
from pathlib import Path
from typing import Any, Mapping, Sequence

import dagster as dg


def image_md(png: str | Path, alt: str = "plot") -> dg.MetadataValue:
    """Embed a PNG in Markdown metadata so the Dagster UI renders it inline."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def table_md(rows: Sequence[Mapping[str, Any]], floatfmt: str = ".4f") -> dg.MetadataValue:
    """A Markdown table from dict rows (same keys), floats formatted."""
    if not rows:
        return dg.MetadataValue.md("_empty_")
    keys = list(rows[0])

    def fmt(v: Any) -> str:
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


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
