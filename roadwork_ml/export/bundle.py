"""The bundle: one directory that holds everything a deployment needs, hash-verified on load.

Layout::

    manifest.json          schema version, roadwork version, git commit, profile, created time,
                           splits fingerprint, active policy, headline metrics, and the sha256
                           and size of every other file
    model.safetensors      the multi-view model's state (backbone, head, attention aggregator)
    model.onnx             the whole batched multi-view graph: images [B,3,S,S] in [0,1] →
                           logits [B,C], view_logits [B,V,C], view_embeddings [B,V,D]
    config.json            model + inference config, the aggregator choice, the profile
    calibrator.json, policy.json, streetvision.json, prediction_sets.json (+ gate.json,
    gate.safetensors when the active policy uses the gate)

Nothing in a bundle is unpickled: weights are safetensors, everything else JSON.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import torch

from roadwork_ml.artifacts import IntegrityError, atomic_write_json, sha256_file
from roadwork_ml.config import InferenceConfig, ModelConfig
from roadwork_ml.models.aggregator import AttentionAggregator
from roadwork_ml.models.classifier import build_classifier
from roadwork_ml.models.inference import view_spec
from roadwork_ml.models.multiview import MultiViewClassifier
from roadwork_ml.policy.decision import DecisionPolicy

# 2: calibrator.json, policy.json (thresholds, scrc), prediction_sets.json and gate.json use the one
# estimator layout {kind, format_version, params, fitted} (roadwork_ml.policy.estimator)
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
ONNX = "model.onnx"
CONFIG = "config.json"


def roadwork_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("roadwork")
    except PackageNotFoundError:
        return "unknown"


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` when it has local changes), or None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def model_record(mv: MultiViewClassifier, model_cfg: ModelConfig, inference_cfg: InferenceConfig, choice: dict) -> dict:
    """What :func:`rebuild_model` needs, as JSON."""
    return {
        "model": model_cfg.model_dump(mode="json"),
        "inference": inference_cfg.model_dump(mode="json"),
        "choice": {k: choice[k] for k in ("multi_view", "aggregator", "top_k")},
        "n_views": mv.spec.n_views,
        "embed_dim": int(mv.model.embed_dim),
        "num_classes": int(model_cfg.num_classes),
        "input_size": int(inference_cfg.input_size),
        "attention": {"embed_dim": mv.attention.embed_dim, "dropout": mv.attention.dropout}
        if mv.attention is not None
        else None,
    }


def rebuild_model(record: dict, state: dict[str, torch.Tensor]) -> MultiViewClassifier:
    """The multi-view model from ``config.json``'s record and ``model.safetensors``' tensors
    (random init, then every tensor loaded strictly; no weight file is read from elsewhere)."""
    model_cfg = ModelConfig.model_validate({**record["model"], "weights_path": None})
    inf = InferenceConfig.model_validate(record["inference"])
    attention = AttentionAggregator(**record["attention"]) if record.get("attention") else None
    choice = record["choice"]
    mv = MultiViewClassifier(
        build_classifier(model_cfg),
        view_spec(model_cfg, inf, choice["multi_view"]),
        choice["aggregator"],
        int(choice["top_k"]) or 1,
        attention,
        view_chunk=inf.view_chunk,
    )
    mv.load_state_dict(state, strict=True)
    return mv.eval()


def write_bundle(
    directory: str | Path,
    mv: MultiViewClassifier,
    model_cfg: ModelConfig,
    inference_cfg: InferenceConfig,
    choice: dict,
    policy: DecisionPolicy,
    *,
    profile: dict,
    splits_fingerprint: str,
    metrics: dict,
    onnx_export,
) -> dict:
    """Write a complete bundle into ``directory`` (which the caller stages and renames
    atomically); ``onnx_export(mv, path, input_size)`` writes ``model.onnx``. Returns the manifest."""
    from safetensors.torch import save_file

    from roadwork_ml.artifacts import atomic_path

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    mv = mv.eval().cpu()
    with atomic_path(d / WEIGHTS) as tmp:
        save_file({k: v.detach().contiguous() for k, v in mv.state_dict().items()}, str(tmp))
    record = model_record(mv, model_cfg, inference_cfg, choice)
    onnx_info = onnx_export(mv, d / ONNX, inference_cfg.input_size)
    atomic_write_json(d / CONFIG, {**record, "onnx": onnx_info, "profile": profile})
    policy.save(d)
    files = {
        p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(d.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "roadwork_version": roadwork_version(),
        "git_commit": git_commit(Path(__file__).parent),
        "profile": profile.get("name"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "splits_fingerprint": splits_fingerprint,
        "active_policy": policy.kind,
        "metrics": metrics,
        "n_views": record["n_views"],
        "input_size": record["input_size"],
        "files": files,
    }
    atomic_write_json(d / MANIFEST, manifest)
    return manifest


def verify_bundle(directory: str | Path) -> dict:
    """Recompute every file's sha256 and size against ``manifest.json``; refuse unlisted files,
    missing files, a wrong schema version, or more or less than one active policy."""
    d = Path(directory)
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise IntegrityError(f"{d} is not a roadwork bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{mpath} is not valid JSON ({exc}); the bundle is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise IntegrityError(
            f"{mpath}: bundle schema_version {version!r} is not supported (this roadwork reads {SCHEMA_VERSION})"
        )
    listed = manifest.get("files", {})
    if not isinstance(listed, dict) or not all(
        isinstance(m, dict) and isinstance(m.get("sha256"), str) and isinstance(m.get("size"), int)
        for m in listed.values()
    ):
        raise IntegrityError(f"{mpath}: 'files' must map each file name to its sha256 and size")
    outside = sorted(n for n in listed if n in ("", ".", "..") or "/" in n or "\\" in n)
    if outside:
        raise IntegrityError(f"{mpath} lists paths outside the bundle folder: {outside}")
    present = {p.name for p in d.iterdir() if p.is_file() and p.name != MANIFEST}
    if present - set(listed):
        raise IntegrityError(f"{d}: files not in the manifest: {sorted(present - set(listed))}")
    for name, meta in listed.items():
        p = d / name
        if not p.is_file():
            raise IntegrityError(f"{p} is listed in the bundle manifest but missing")
        # the size is a cheap first check; the sha256 of the content is what proves the file
        if p.stat().st_size != meta["size"] or sha256_file(p) != meta["sha256"]:
            raise IntegrityError(
                f"{p}: size or sha256 does not match the bundle manifest; the bundle was modified or is incomplete"
            )
    if "policy.json" not in listed:
        raise IntegrityError(f"{d}: policy.json is missing from the bundle")
    policy = json.loads((d / "policy.json").read_text())
    if not isinstance(policy, dict) or policy.get("kind") != manifest.get("active_policy"):
        raise IntegrityError(
            f"{d}: policy.json holds {policy.get('kind')!r} but the manifest says {manifest.get('active_policy')!r}"
        )
    return manifest


def load_bundle(directory: str | Path) -> tuple[dict, dict, DecisionPolicy]:
    """Verify, then read: (manifest, config record, decision policy). The model is rebuilt on
    demand by the predictor (PyTorch path) or not at all (ONNX Runtime / TensorRT path)."""
    manifest = verify_bundle(directory)
    d = Path(directory)
    return manifest, json.loads((d / CONFIG).read_text()), DecisionPolicy.load(d)
