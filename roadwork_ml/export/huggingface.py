"""A Hugging Face model folder for a StreetVision (subnet 72) submission.

The folder is the bundle itself (so ``BundlePredictor`` loads it as is) plus the
``model_card.json`` StreetVision reads (``model_name``, ``description``, ``version``,
``submitted_by``, ``submission_time``) and a README model card; the manifest is rewritten to
list the two new files and records the source bundle's manifest hash.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

from roadwork_ml.artifacts import atomic_write_json, sha256_file
from roadwork_ml.export.bundle import MANIFEST, WEIGHTS, verify_bundle

CARD_FIELDS = ("model_name", "description", "version", "submitted_by", "submission_time")


def _readme(card: dict, manifest: dict) -> str:
    metrics = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(manifest.get("metrics", {}).items()))
    return f"""---
library_name: onnx
tags: [image-classification, roadwork, streetvision]
---
# {card['model_name']}

{card['description']}

* Input: one RGB image, resized to {manifest['input_size']}×{manifest['input_size']}, float in [0, 1]
  (`model.onnx`, input `images` [B, 3, S, S]); {manifest['n_views']} views per image inside the graph.
* Output for StreetVision: `streetvision_probability` — P(roadwork) with the tuned decision cut
  folded onto 0.5 (always finite, in [0, 1]); see `streetvision.json`.
* Active decision policy: `{manifest['active_policy']}`; calibrator in `calibrator.json`.
* Every file's sha256 is in `manifest.json`; `roadwork predict --bundle <this folder> IMAGES` runs it.

| metric | value |
|---|---|
{metrics}
"""


def export_hf(bundle: str | Path, out: str | Path, *, model_name: str, description: str, submitted_by: str, version: str | None = None) -> dict:
    """Copy a verified bundle to ``out`` with ``model_card.json`` and ``README.md``; returns the card."""
    src, dst = Path(bundle), Path(out)
    manifest = verify_bundle(src)
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst} exists and is not empty; choose an empty or new folder")
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in manifest["files"]:
        shutil.copy2(src / name, tmp / name)
    card = {
        "model_name": model_name,
        "description": description,
        "version": version or f"{manifest['roadwork_version']}+{manifest['files'][WEIGHTS]['sha256'][:12]}",
        "submitted_by": submitted_by,
        "submission_time": int(datetime.now(timezone.utc).timestamp()),
    }
    atomic_write_json(tmp / "model_card.json", card)
    (tmp / "README.md").write_text(_readme(card, manifest))
    files = dict(manifest["files"])
    for name in ("model_card.json", "README.md"):
        files[name] = {"sha256": sha256_file(tmp / name), "size": (tmp / name).stat().st_size}
    atomic_write_json(tmp / MANIFEST, {**manifest, "files": files, "exported_from": sha256_file(src / MANIFEST), "export": "huggingface"})
    verify_bundle(tmp)
    if dst.exists():
        dst.rmdir()
    tmp.rename(dst)
    return card
