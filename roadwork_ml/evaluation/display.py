"""Numbers as a person expects to read them (UI metadata, model cards, CLI summaries).

* counts as integers (``106``, not ``106.0000``), also when they arrive as floats;
* other floats rounded to ``digits`` significant digits (``0.8123``, ``143.3``), tiny
  non-zero values in scientific notation instead of ``0.0000``;
* p-values: ``0.0342``, ``3.1e-05`` (never ``0.0000``); learning rates: ``3e-05``;
* ``None`` and NaN as "—"; booleans as "yes" / "no".

:func:`format_value` picks the rule from the key (``p_value`` → p-value, ``lr`` → learning
rate, ``n_*`` / ``count`` → count); :func:`format_table` also treats a column whose every
value is a whole number as a count column. Pure Python: no Dagster, no pandas needed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

MISSING = "—"

_PVALUE_KEYS = {"p", "pvalue", "p_value", "p-value", "mmd_p", "ks_p"}
_LR_KEYS = {"lr", "learning_rate"}
_COUNT_KEYS = {
    "n",
    "count",
    "rows",
    "support",
    "size",
    "tp",
    "fp",
    "tn",
    "fn",
    "errors",
    "accepted",
    "deferred",
    "labelled",
    "quarantined",
    "epoch",
    "epochs",
    "fold",
    "version",
}


def value_kind(key: str | None) -> str:
    """ "pvalue", "lr", "count" or "float" for a metadata / column name."""
    if not key:
        return "float"
    k = key.strip().lower().replace(" ", "_")
    if k in _PVALUE_KEYS or k.endswith(("_p_value", "_pvalue", "_p")) or k.startswith("p_value"):
        return "pvalue"
    if k in _LR_KEYS or k.endswith(("_lr", "_learning_rate")):
        return "lr"
    if k in _COUNT_KEYS or k.startswith("n_") or k.endswith(("_count", "_rows", "_n", "_errors", "_images")):
        return "count"
    return "float"


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) and math.isnan(float(v)))


def format_count(v: Any) -> str:
    """A whole number without decimals (``106.0`` → ``106``); a non-integral value keeps
    its decimals rather than being silently truncated."""
    if _is_missing(v):
        return MISSING
    f = float(v)
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    return str(round(f)) if f.is_integer() else format_float(f)


def format_float(v: Any, digits: int = 4) -> str:
    """``digits`` significant digits for |v| in [10^-(digits-1), 10^digits) written out
    (``0.8123``, ``12.35``, ``143.3``); larger values without decimals; smaller non-zero
    values in scientific notation (``8.12e-04``); 0 as ``0``."""
    if _is_missing(v):
        return MISSING
    f = float(v)
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    if f == 0:
        return "0"
    mag = math.floor(math.log10(abs(f)))
    if mag < -(digits - 1):
        return f"{f:.{digits - 2}e}"
    if mag >= digits:
        return f"{f:.0f}"
    text = f"{f:.{max(0, digits - 1 - mag)}f}"
    # rounding may carry into a new digit (9.99995 → 10.0000); keep the significant-digit count
    return text if len(text.lstrip("-").replace(".", "").lstrip("0")) <= digits else f"{f:.{max(0, digits - 2 - mag)}f}"


def format_pvalue(p: Any) -> str:
    """``0.0342`` for p >= 0.001, ``3.1e-05`` below (never ``0.0000``); exactly 0 as ``0``."""
    if _is_missing(p):
        return MISSING
    f = float(p)
    if f == 0:
        return "0"
    return f"{f:.3g}" if f >= 1e-3 else f"{f:.1e}"


def format_lr(lr: Any) -> str:
    """A learning rate with 3 significant digits: ``3e-05``, ``0.001``, ``0.0025``."""
    if _is_missing(lr):
        return MISSING
    return f"{float(lr):.3g}"


def format_value(v: Any, key: str | None = None, digits: int = 4) -> str:
    """Any metadata value as text, the rule chosen by ``key`` (see :func:`value_kind`)."""
    if _is_missing(v):
        return MISSING
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, str):
        return v
    if not isinstance(v, numbers.Real):
        return str(v)
    kind = value_kind(key)
    if kind == "pvalue":
        return format_pvalue(v)
    if kind == "lr":
        return format_lr(v)
    if kind == "count" or isinstance(v, numbers.Integral):
        return format_count(v)
    return format_float(v, digits)


def format_row(row: Mapping[str, Any], digits: int = 4) -> dict[str, str]:
    return {k: format_value(v, k, digits) for k, v in row.items()}


def _whole_column(values: Iterable[Any]) -> bool:
    """Every present value is a number with no fractional part (and at least one is present)."""
    seen = False
    for v in values:
        if _is_missing(v):
            continue
        if (
            isinstance(v, bool)
            or not isinstance(v, numbers.Real)
            or not math.isfinite(float(v))
            or not float(v).is_integer()
        ):
            return False
        seen = True
    return seen


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    digits: int = 4,
) -> list[dict[str, str]]:
    """Rows of text, in ``columns`` order (default: first row's keys, then any new ones).
    A column whose values are all whole numbers is shown as integers (``0 | 106 | 9``)."""
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    whole = {c for c in cols if value_kind(c) == "float" and _whole_column(r.get(c) for r in rows)}
    return [
        {c: (format_count(r.get(c)) if c in whole else format_value(r.get(c), c, digits)) for c in cols} for r in rows
    ]


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    digits: int = 4,
) -> str:
    """A Markdown table of :func:`format_table`'s text; numeric columns right-aligned."""
    if not rows:
        return "_empty_"
    text = format_table(rows, columns, digits)
    cols = list(text[0])
    numeric = {c for c in cols if all(isinstance(r.get(c), numbers.Real) or _is_missing(r.get(c)) for r in rows)}
    head = "| " + " | ".join(cols) + " |"
    rule = "|" + "|".join("---:" if c in numeric else "---" for c in cols) + "|"
    body = ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in text]
    return "\n".join([head, rule, *body])


def column_types(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> dict[str, str]:
    """ "int" | "float" | "bool" | "string" per column (for a typed table schema in the UI)."""
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    out = {}
    for c in cols:
        vals = [r.get(c) for r in rows if not _is_missing(r.get(c))]
        if vals and all(isinstance(v, (bool, np.bool_)) for v in vals):
            out[c] = "bool"
        elif vals and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in vals):
            out[c] = "int" if value_kind(c) == "count" or _whole_column(vals) and value_kind(c) == "float" else "float"
        else:
            out[c] = "string"
    return out
