"""Phase 4, ExPLoRA: continued DINOv2 self-supervised pre-training on unlabeled TRAIN images
(and logged production images when the profile says so); phase 1 starts from its merged
backbone when ``model.init_from: explora_checkpoint``. Not part of ``make demo``."""

import hashlib
import json
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np

from roadwork_assets.data import SOURCE_IMAGES, SPLITS, load_split_rows, split_image_paths
from roadwork_assets.metadata import profile_md, table
from roadwork_assets.resources import ArtifactStore, ProfileResource
from roadwork_assets.run_tags import GPU_OP_TAGS
from roadwork_ml.artifacts import sha256_file, write_manifest
from roadwork_ml.config import ModelConfig
from roadwork_ml.contracts import PRODUCTION_TRAFFIC, Split

if TYPE_CHECKING:
    import torch

EXPLORA = "explora_checkpoint"
DIGEST = "state_digest.json"
CHECKS_FILE = "checks.json"
EXPLORA_CHECKS = ("teacher_not_collapsed", "only_intended_params_changed", "reloads_bit_identically")


def state_digest(state: "dict[str, torch.Tensor]") -> str:
    """sha256 over every tensor's key, dtype, shape and raw bytes, in key order."""
    import torch

    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def production_image_paths(store: ArtifactStore) -> list:
    """Images kept by production_traffic (every day's directory hash-verified); labels unused."""
    from roadwork_ml.artifacts import verify_dir

    paths = []
    for day in store.partitions(PRODUCTION_TRAFFIC):
        d = store.read(PRODUCTION_TRAFFIC, day)
        verify_dir(d)
        paths.extend(sorted((d / "images").glob("*.jpg")) if (d / "images").is_dir() else [])
    return paths


@dg.asset(
    deps=[SPLITS, SOURCE_IMAGES],
    group_name="training",
    kinds={"pytorch", "peft"},
    # logged production images are downstream of the deployed model: a read, not a dependency
    metadata={"roadwork/feedback_reads": PRODUCTION_TRAFFIC},
    op_tags=GPU_OP_TAGS,
)
def explora_checkpoint(
    context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore
) -> dg.MaterializeResult:
    """ExPLoRA (arXiv 2406.10973) on TRAIN images with their labels ignored (plus production
    traffic images when ``explora.include_production_traffic``; never a validation split):
    DINO student/teacher on multi-crops, last ``explora.unfrozen_blocks`` blocks in full, Q/V
    LoRA on the others, merged into ``backbone.safetensors``."""
    from roadwork_ml.models.device import require_initialisation
    from roadwork_ml.training.dataset import open_split_dataset
    from roadwork_ml.training.explora import explora_checks, run_explora, save_explora_backbone

    resolved = settings.resolved()
    profile = resolved.profile
    cfg = profile.explora
    # ExPLoRA continues a pre-training: it needs weights unless random init is intended
    require_initialisation(profile.model.model_copy(update={"init_from": "weights"}))
    rows = load_split_rows(store, Split.TRAIN)
    paths = split_image_paths(store, rows, Split.TRAIN)
    sha = list(rows["sha256"])
    tags = [Split.TRAIN.value]
    production = production_image_paths(store) if cfg.include_production_traffic else []
    if production:
        tags.append(PRODUCTION_TRAFFIC)
        paths, sha = paths + production, sha + [sha256_file(p) for p in production]
    images = open_split_dataset(
        paths,
        np.zeros(len(paths), dtype=np.int64),  # unlabeled: the objective never sees a label
        Split.TRAIN,
        profile.model.img_size,
        profile.data.decode,
        profile.data.loader,
        sha256=sha,
    )
    context.log.info(f"ExPLoRA on {len(rows)} TRAIN + {len(production)} production images, {cfg.steps} steps")
    result = run_explora(images, tags, profile.model, cfg, log=context.log.info)
    with store.staging(EXPLORA, profile=resolved) as out:
        save_explora_backbone(result, out, profile.model)
        checks = explora_checks(result, cfg, out)  # reload from disk before the swap
        (out / DIGEST).write_text(json.dumps({"sha256": state_digest(result.backbone_state)}))
        (out / CHECKS_FILE).write_text(json.dumps([c.to_dict() for c in checks], indent=1, default=str))
        write_manifest(out, extra={"kind": "explora-backbone"})
    r = result.report
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.location(EXPLORA))),
            "train_images": len(rows),
            "production_images": len(production),
            "steps": int(r["steps"]),
            "loss_first": float(r["loss_first"]),
            "loss_last": float(r["loss_last"]),
            "teacher_entropy": float(r["teacher_entropy"]),
            "embedding_std": float(r["embedding_std"]),
            "backbone_trainable_params": int(r["backbone_trainable_params"]),
            "backbone_trainable_share": float(r["backbone_trainable_share"]),
            "changed_tensors": len(r["changed_params"]),
            "seconds": float(r["seconds"]),
            "device": r["device"],
            "checks_at_write": table([{**c.to_dict(), "value": str(c.value)} for c in checks]),
            **profile_md(resolved),
        }
    )


def load_explora_dir(store: ArtifactStore):
    """The explora_checkpoint version directory (``init_from_explora`` verifies its hashes)."""
    return store.read(EXPLORA)


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=EXPLORA, blocking=True) for name in EXPLORA_CHECKS],
    description="ExPLoRA's blocking checks, re-judged from the written artifact under the run's profile",
)
def explora_checkpoint_checks(store: ArtifactStore, settings: ProfileResource):
    from roadwork_ml.models.classifier import build_classifier
    from roadwork_ml.training.explora import CONFIG, init_from_explora, load_explora_backbone

    profile = settings.load()
    directory = load_explora_dir(store)
    meta = json.loads((directory / CONFIG).read_text())
    report = meta["report"]
    floors = {
        "teacher_entropy": profile.explora.min_teacher_entropy,
        "embedding_std": profile.explora.min_embedding_std,
    }
    yield dg.AssetCheckResult(
        check_name="teacher_not_collapsed",
        passed=all(report[k] >= v for k, v in floors.items()),
        metadata={
            **{k: float(report[k]) for k in floors},
            **{f"{k}_floor": float(v) for k, v in floors.items()},
            "teacher_sample_entropy": float(report["teacher_sample_entropy"]),
            "probe_images": int(report["probe_images"]),
        },
    )
    yield dg.AssetCheckResult(
        check_name="only_intended_params_changed",
        passed=bool(report["changed_params"]) and not report["unintended_changes"],
        metadata={
            "changed_tensors": len(report["changed_params"]),
            "unintended": ", ".join(report["unintended_changes"][:10]) or "none",
            "intended_tensors": int(report["intended_params"]),
        },
    )
    state = load_explora_backbone(directory)  # hashes verified
    recorded = json.loads((directory / DIGEST).read_text())["sha256"]
    # the backbone as phase 1 loads it: into a freshly built classifier, strictly
    model = init_from_explora(build_classifier(ModelConfig.model_validate(meta["model"])), directory)
    loaded = {k: v for k, v in model.backbone.state_dict().items()}
    digests = {"file": state_digest(state), "phase1_backbone": state_digest(loaded)}
    yield dg.AssetCheckResult(
        check_name="reloads_bit_identically",
        passed=all(d == recorded for d in digests.values()),
        metadata={"recorded_sha256": recorded, **{f"{k}_sha256": v for k, v in digests.items()}},
    )
