"""What a person sees of Dagster metadata, and the number renderings issue 16 item 7 forbids:
a count shown as a float (``106.0000``), a 16-digit float, a p-value or rate shown as ``0.0000``."""

import re

import dagster as dg

BAD_NUMBER = re.compile(r"\b\d+\.0000\b|\d\.\d{9,}|^-?0\.0+$|\bnan\b", re.IGNORECASE)


def shown(value) -> list[str]:
    """Every text the UI renders for one metadata value (a table: every cell)."""
    if isinstance(value, dg.TableMetadataValue):
        return [str(v) for r in value.records for v in r.data.values()]
    if isinstance(value, (dg.MarkdownMetadataValue, dg.JsonMetadataValue, dg.PathMetadataValue, dg.UrlMetadataValue)):
        return []
    return [str(getattr(value, "value", value))]


def bad_numbers(metadata) -> dict[str, str]:
    """{key: offending text} over a metadata mapping (empty when every number reads well)."""
    return {k: t for k, v in metadata.items() for t in shown(v) if BAD_NUMBER.search(t)}
