"""One identity for a model, shown the same way by the CLI, Dagster and MLflow.

A model is its bundle; the bundle's *content hash* is the sha256 of its ``manifest.json``,
which lists the sha256 of every other file (weights, ONNX graph, calibrator, policy), so
two bundles with the same content hash decide identically. The MLflow registry adds a
*version* number (``roadwork-classifier`` v3) that is tagged with this same hash
(``roadwork.bundle_manifest_sha256``). :class:`ModelIdentity` carries both;
:func:`bundle_identity` finds the version of a deployed bundle from the ``deployed.json``
record beside it, and only when that record's hash is the bundle's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from roadwork_ml.artifacts import sha256_file

MANIFEST = "manifest.json"
DEPLOYED_RECORD = "deployed.json"
SHORT = 12  # hex digits shown to people


@dataclass(frozen=True)
class ModelIdentity:
    """``content_hash``: sha256 (64 hex) of the bundle's manifest.json; ``registered_model`` and
    ``version``: the MLflow registry entry holding this very bundle, or None when unknown."""

    content_hash: str
    registered_model: str | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        if len(self.content_hash) != 64 or any(c not in "0123456789abcdef" for c in self.content_hash):
            raise ValueError(
                f"content_hash must be 64 lowercase hex digits (sha256 of manifest.json), got {self.content_hash!r}"
            )
        if (self.registered_model is None) != (self.version is None):
            raise ValueError("registered_model and version are given together or not at all")

    @property
    def short_hash(self) -> str:
        return self.content_hash[:SHORT]

    @property
    def registered(self) -> bool:
        return self.version is not None

    @property
    def tag(self) -> str:
        """Compact id for logs and tables: ``roadwork-classifier/3`` or ``sha256:1a2b3c4d5e6f``
        (the inference log's ``model_version`` column uses this form)."""
        return f"{self.registered_model}/{self.version}" if self.registered else f"sha256:{self.short_hash}"

    @property
    def label(self) -> str:
        """For people: ``roadwork-classifier v3 (manifest sha256 1a2b3c4d5e6f)`` or
        ``unregistered bundle (manifest sha256 1a2b3c4d5e6f)``."""
        head = f"{self.registered_model} v{self.version}" if self.registered else "unregistered bundle"
        return f"{head} (manifest sha256 {self.short_hash})"

    def to_dict(self) -> dict:
        return {**asdict(self), "tag": self.tag, "label": self.label}


def bundle_content_hash(bundle_dir: str | Path) -> str:
    """sha256 of ``<bundle_dir>/manifest.json`` (64 hex)."""
    return sha256_file(Path(bundle_dir) / MANIFEST)


def identity_from_record(content_hash: str, record: Mapping | None) -> ModelIdentity:
    """The identity of the bundle with ``content_hash`` given a deployment record
    (``deployed.json``: ``registered_model``, ``champion``, ``bundle_manifest_sha256``).
    The deployed bundle is the champion, so ``champion`` is its version — but only when the
    record names this content hash; otherwise the version is unknown (never guessed)."""
    if (
        record
        and record.get("bundle_manifest_sha256") == content_hash
        and record.get("registered_model")
        and record.get("champion") is not None
    ):
        return ModelIdentity(content_hash, str(record["registered_model"]), str(record["champion"]))
    return ModelIdentity(content_hash)


def bundle_identity(bundle_dir: str | Path) -> ModelIdentity:
    """Identity of a bundle directory; a deployed copy (``<deployed_model>/bundle`` with
    ``deployed.json`` beside it) gets its registry version."""
    d = Path(bundle_dir)
    content_hash = bundle_content_hash(d)
    record_path = d.resolve().parent / DEPLOYED_RECORD
    record = None
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = None
    return identity_from_record(content_hash, record if isinstance(record, dict) else None)


def model_status(
    version: str | None,
    *,
    champion: str | None,
    challenger: str | None = None,
    previous_champion: str | None = None,
    rolled_back: bool = False,
) -> str:
    """Where the model with registry ``version`` stands, for people: ``champion``,
    ``rolled back`` (demoted, never promoted again), ``challenger`` (registered, refused),
    ``previous champion`` (the rollback target), ``superseded`` (registered, no alias), or
    ``not registered`` (a candidate no promotion has judged yet). ``rolled back`` wins over
    an alias that still names the version, since the alias is moved after the tag is set."""
    if version is None:
        return "not registered"
    v = str(version)
    if rolled_back:
        return "rolled back"
    if champion is not None and v == str(champion):
        return "champion"
    if challenger is not None and v == str(challenger):
        return "challenger"
    if previous_champion is not None and v == str(previous_champion):
        return "previous champion"
    return "superseded"
