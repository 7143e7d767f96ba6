"""A Hugging Face model folder for a StreetVision (subnet 72) submission.

The folder is the bundle itself (so ``BundlePredictor`` loads it as is) plus the
``model_card.json`` StreetVision reads (``model_name``, ``description``, ``version``,
``submitted_by``, ``submission_time``) and a README model card; the manifest is rewritten to
list the two new files and records the source bundle's manifest hash. Every exported file gets
the same permissions, those of a file the user creates (``0666 & ~umask``; folder ``0777 & ~umask``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from roadwork_ml.artifacts import atomic_write_json, sha256_file
from roadwork_ml.evaluation.display import format_value
from roadwork_ml.export.bundle import MANIFEST, verify_bundle
from roadwork_ml.export.identity import bundle_identity

CARD_FIELDS = ("model_name", "description", "version", "submitted_by", "submission_time")


def _readme(card: dict, manifest: dict) -> str:
    metrics = "\n".join(f"| {k} | {format_value(v, k)} |" for k, v in sorted(manifest.get("metrics", {}).items()))
    return f"""---
library_name: onnx
tags: [image-classification, roadwork, streetvision]
---
# {card["model_name"]}

{card["description"]}

* Input: one RGB image, resized to {manifest["input_size"]}×{manifest["input_size"]}, float in [0, 1]
  (`model.onnx`, input `images` [B, 3, S, S]); {manifest["n_views"]} views per image inside the graph.
* Output for StreetVision: `streetvision_probability` — P(roadwork) with the tuned decision cut
  folded onto 0.5 (always finite, in [0, 1]); see `streetvision.json`.
* Active decision policy: `{manifest["active_policy"]}`; calibrator in `calibrator.json`.
* Model: {card["model_identity"]}; every file's sha256 is in `manifest.json`;
  `roadwork predict --bundle <this folder> IMAGES` runs it.

| metric | value |
|---|---|
{metrics}
"""


def _umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def export_hf(
    bundle: str | Path,
    out: str | Path,
    *,
    model_name: str,
    description: str,
    submitted_by: str,
    version: str | None = None,
) -> dict:
    """Copy a verified bundle to ``out`` (a new or empty folder) with ``model_card.json`` and
    ``README.md``; returns the card. Raises FileExistsError (one line) when ``out`` holds files."""
    src, dst = Path(bundle), Path(out)
    manifest = verify_bundle(src)
    if dst.exists() and not dst.is_dir():
        raise FileExistsError(f"{dst} exists and is not a folder; choose an empty or new folder")
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst} exists and is not empty; choose an empty or new folder")
    identity = bundle_identity(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    try:
        for name in manifest["files"]:
            shutil.copyfile(src / name, tmp / name)
        local = f"v{identity.version}.{identity.short_hash}" if identity.registered else identity.short_hash
        card = {
            "model_name": model_name,
            "description": description,
            "version": version or f"{manifest['roadwork_version']}+{local}",
            "submitted_by": submitted_by,
            "submission_time": int(datetime.now(UTC).timestamp()),
        }
        atomic_write_json(tmp / "model_card.json", card)
        (tmp / "README.md").write_text(_readme({**card, "model_identity": identity.label}, manifest))
        files = dict(manifest["files"])
        for name in ("model_card.json", "README.md"):
            files[name] = {"sha256": sha256_file(tmp / name), "size": (tmp / name).stat().st_size}
        atomic_write_json(
            tmp / MANIFEST,
            {
                **manifest,
                "files": files,
                "exported_from": identity.content_hash,
                "model_identity": identity.to_dict(),
                "export": "huggingface",
            },
        )
        mask = _umask()
        for f in tmp.iterdir():
            f.chmod(0o666 & ~mask)
        tmp.chmod(0o777 & ~mask)
        verify_bundle(tmp)
        if dst.exists():
            dst.rmdir()
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card
