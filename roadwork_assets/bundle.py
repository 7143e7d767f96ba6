"""Phase 6: the verified bundle, and what is built from it (TensorRT engine, Triton repository)."""

import json
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from roadwork_assets.aggregation import VIEW_AGGREGATOR, load_aggregator, load_served_model
from roadwork_assets.data import SOURCE_IMAGES, SPLITS, load_split_rows, load_split_tensors
from roadwork_assets.metadata import humane, identity_md, profile_md, table
from roadwork_assets.policies import CALIBRATOR, GATE, SCRC, THRESHOLDS, load_decision_policy
from roadwork_assets.predictions import VAL_CALIB_LOGITS, load_val_calib_predictions
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource
from roadwork_assets.run_tags import GPU_OP_TAGS
from roadwork_assets.training import PHASE1
from roadwork_ml.artifacts import IntegrityError, sha256_file, verify_dir
from roadwork_ml.config import Profile
from roadwork_ml.contracts import Split

if TYPE_CHECKING:
    import torch

    from roadwork_ml.policy.decision import DecisionPolicy

BUNDLE = "bundle"
ENGINE = "tensorrt_engine"
TRITON = "triton_repository"


def load_bundle_dir(store: ArtifactStore) -> "Path":
    """The current bundle's directory, every file verified against its manifest.json."""
    from roadwork_ml.export.bundle import verify_bundle

    directory = store.read(BUNDLE)
    verify_bundle(directory)
    return directory


def _headline(store: ArtifactStore, policy: "DecisionPolicy", size: int) -> dict:
    """VAL_SELECT MCC of the served views and VAL_CALIB figures of the decision path."""
    from roadwork_ml.evaluation.metrics import ece, mcc

    preds = load_val_calib_predictions(store)
    d = policy.decide(preds.logits, preds.features, **gate_inputs(store, policy, preds, size))
    y = preds.labels
    acc = d.accepted
    _, choice, _ = load_aggregator(store)
    return {
        "val_select_mcc": float(choice["val_select_mcc"]),
        "val_calib_mcc_folded": mcc(y, d.label),
        "val_calib_accuracy_folded": float((d.label == y).mean()),
        "val_calib_ece_calibrated": ece(y, d.calibrated),
        "val_calib_policy_coverage": float(acc.mean()),
        "val_calib_policy_risk": float((d.label[acc] != y[acc]).mean()) if acc.any() else 0.0,
    }


def gate_inputs(store: ArtifactStore, policy: "DecisionPolicy", preds, size: int) -> dict:
    """The extra inputs the policy's gate reads for the predictions ``preds`` (VAL_CALIB rows):
    embeddings and view logits from the predictions, image quality (decoded in chunks) when it reads it."""
    from roadwork_assets.predictions import val_calib_image_quality

    quality = val_calib_image_quality(store, preds, size) if "images" in policy.gate_needs else None
    return {"embeddings": preds.embeddings, "view_logits": preds.view_logits, "image_quality": quality}


def _parity_images(store: ArtifactStore, profile: Profile) -> "torch.Tensor":
    rows = load_split_rows(store, Split.VAL_CALIB).head(profile.export.parity_images)
    return load_split_tensors(store, rows, Split.VAL_CALIB, profile.inference.input_size).images


@dg.asset(
    deps=[PHASE1, VIEW_AGGREGATOR, CALIBRATOR, THRESHOLDS, GATE, SCRC, VAL_CALIB_LOGITS, SPLITS, SOURCE_IMAGES],
    group_name="export",
    kinds={"onnx", "safetensors"},
)
def bundle(
    context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    """The deployable bundle: manifest (hashes, profile, splits fingerprint, active policy,
    headline metrics), model.safetensors, model.onnx (the whole batched multi-view graph),
    calibrator, the one active policy, the StreetVision fold, prediction sets, config."""
    from roadwork_ml.export.bundle import write_bundle
    from roadwork_ml.export.onnx_export import export_onnx, onnx_parity
    from roadwork_ml.policy.gate.feature_gate import describe_gate

    resolved = settings.resolved()
    profile = resolved.profile
    mv, choice, model_cfg = load_served_model(store, profile.inference)
    policy = load_decision_policy(store, profile)
    headline = _headline(store, policy, profile.inference.input_size)
    splits_manifest = verify_dir(store.read(SPLITS))

    def onnx_export(model, path, input_size):
        return export_onnx(model, path, input_size, opset=profile.export.onnx_opset).to_dict()

    with store.staging(BUNDLE, profile=resolved) as out:
        manifest = write_bundle(
            out,
            mv,
            model_cfg,
            profile.inference,
            choice,
            policy,
            profile=profile.model_dump(mode="json"),
            splits_fingerprint=splits_manifest["files"]["splits.parquet"]["sha256"],
            metrics=headline,
            onnx_export=onnx_export,
        )
    directory = store.read(BUNDLE)
    parity = onnx_parity(
        mv,
        directory / "model.onnx",
        _parity_images(store, profile).float().div(255.0),
        batch_size=profile.inference.batch_size,
    )
    context.log.info(f"bundle written: {len(manifest['files'])} files, ONNX parity max |Δp| {parity.max_prob_diff:.2e}")
    return dg.MaterializeResult(
        metadata=humane(
            {
                "path": dg.MetadataValue.path(str(directory)),
                "active_policy": manifest["active_policy"],
                "gate": describe_gate(directory),
                "views_per_image": manifest["n_views"],
                "input_size": manifest["input_size"],
                "onnx_max_prob_diff": parity.max_prob_diff,
                "onnx_decision_agreement": parity.decision_agreement,
                "files": table(
                    [
                        {"file": k, "bytes": v["size"], "sha256": v["sha256"][:16] + "…"}
                        for k, v in manifest["files"].items()
                    ]
                ),
                "headline": table([{"metric": k, "value": float(v)} for k, v in headline.items()]),
                **identity_md(
                    mlflow,
                    profile.deploy.registered_model,
                    sha256_file(directory / "manifest.json"),
                    when="materialization",
                ),
                **{k: float(v) for k, v in headline.items()},
                **profile_md(resolved),
            }
        )
    )


@dg.asset_check(
    asset=bundle,
    name="hashes_verify",
    blocking=True,
    description="every file's sha256 and size match manifest.json and no unlisted file is present",
)
def bundle_hashes_verify(store: ArtifactStore) -> dg.AssetCheckResult:
    from roadwork_ml.export.bundle import verify_bundle

    try:
        manifest = verify_bundle(store.read(BUNDLE))
    except IntegrityError as exc:
        return dg.AssetCheckResult(passed=False, metadata=humane({"error": str(exc)}))
    return dg.AssetCheckResult(
        passed=True,
        metadata=humane(
            {
                "files_verified": len(manifest["files"]),
                "bytes": sum(v["size"] for v in manifest["files"].values()),
            }
        ),
    )


@dg.asset_check(
    asset=bundle,
    name="exactly_one_policy",
    blocking=True,
    description="policy.json names exactly one of thresholds / gate / scrc, the manifest and the profile agree, and no other policy's parameters ship",
)
def bundle_exactly_one_policy(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    d = load_bundle_dir(store)
    manifest = json.loads((d / "manifest.json").read_text())
    policy = json.loads((d / "policy.json").read_text())
    expected = settings.load().policy.active_kind
    stray = sorted(n for n in manifest["files"] if n in ("thresholds.json", "gate_policy.json", "conformal.json"))
    gate_files = {"gate.json", "gate.safetensors"} & set(manifest["files"])
    gate_ok = bool(gate_files) == (policy.get("kind") in ("gate", "scrc"))
    passed = (
        policy.get("kind") == manifest["active_policy"] == expected
        and not stray
        and gate_ok
        and set(policy) == {"kind", "params"}
    )
    return dg.AssetCheckResult(
        passed=bool(passed),
        metadata=humane(
            {
                "policy": str(policy.get("kind")),
                "manifest": manifest["active_policy"],
                "profile": expected,
                "stray_policy_files": ", ".join(stray) or "none",
                "gate_files_consistent": gate_ok,
            }
        ),
    )


@dg.asset_check(
    asset=bundle,
    name="onnx_matches_pytorch",
    blocking=True,
    description="ONNX Runtime vs PyTorch (both rebuilt from the bundle's files) on VAL_CALIB images: max |Δ probability| ≤ the profile's tolerance (1e-4)",
)
def bundle_onnx_matches_pytorch(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    from safetensors.torch import load_file

    from roadwork_ml.export.bundle import load_bundle, rebuild_model
    from roadwork_ml.export.onnx_export import onnx_parity

    profile = settings.load()
    d = store.read(BUNDLE)
    _, record, _ = load_bundle(d)
    mv = rebuild_model(record, load_file(str(d / "model.safetensors")))
    images = _parity_images(store, profile).float().div(255.0)
    parity = onnx_parity(mv, d / "model.onnx", images, batch_size=profile.inference.batch_size)
    tol = profile.export.parity_tolerance
    return dg.AssetCheckResult(
        passed=bool(parity.max_prob_diff <= tol),
        metadata=humane(
            {
                "max_prob_diff": parity.max_prob_diff,
                "tolerance": tol,
                "decision_agreement": parity.decision_agreement,
                "max_embedding_diff": parity.max_embedding_diff,
                "images": parity.n,
            }
        ),
    )


@dg.asset_check(
    asset=bundle,
    name="predicts_through_predictor",
    blocking=True,
    description="BundlePredictor (ONNX Runtime) on VAL_CALIB vs the val_calib_logits path (PyTorch): P(roadwork) "
    "and features within the profile's tolerance (1e-4), the same decision for every image a move within that "
    "tolerance cannot flip; the bundle's policy vs the policy assets' on the same outputs: equal to 1e-9; "
    "StreetVision outputs finite in [0, 1]",
)
def bundle_predicts(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    from roadwork_ml.serving.parity import ModelOutputs, decision_path_parity
    from roadwork_ml.serving.predictor import BundlePredictor

    profile = settings.load()
    predictor = BundlePredictor(store.read(BUNDLE), backend="onnx")
    images = _parity_images(store, profile)
    out = predictor.predict_tensor(images, batch_size=profile.inference.batch_size)
    preds = load_val_calib_predictions(store)
    n = len(images)
    tol = profile.export.parity_tolerance
    parity = decision_path_parity(
        ModelOutputs(out.logits, out.features, out.embeddings, out.view_logits),
        out.decisions,
        predictor.policy,
        ModelOutputs(preds.logits[:n], preds.features[:n], preds.embeddings[:n], preds.view_logits[:n]),
        load_decision_policy(store, profile),
        tolerance=tol,
        images=images,
    )
    failures = parity.failures(tol)
    return dg.AssetCheckResult(
        passed=not failures,
        description="; ".join(failures) or None,
        metadata=humane(
            {
                "images": n,
                "tolerance": tol,
                "failures": "; ".join(failures) or "none",
                **{k: v for k, v in parity.as_dict().items() if k != "n"},
                "decisions": table(
                    [
                        {"decision": k, "images": int((out.decisions.decision == k).sum())}
                        for k in ("roadwork", "no_roadwork", "defer")
                    ]
                ),
            }
        ),
    )


@dg.asset(
    deps=[bundle, SPLITS, SOURCE_IMAGES],
    group_name="export",
    kinds={"tensorrt"},
    output_required=False,
    op_tags=GPU_OP_TAGS,
)
def tensorrt_engine(context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore):
    """FP16 TensorRT engine from the bundle's ONNX, refused when its decisions disagree with
    ONNX Runtime beyond the profile's tolerance. Without TensorRT or CUDA nothing is written,
    the asset stays unmaterialized, and an observation says why."""
    from roadwork_ml.export.tensorrt_build import tensorrt_available

    ok, reason = tensorrt_available()
    if not ok:
        context.log.warning(f"tensorrt_engine not built: {reason}")
        context.log_event(
            dg.AssetObservation(asset_key=context.asset_key, metadata={"status": "skipped", "reason": reason})
        )
        return
    from roadwork_ml.export.onnx_export import OnnxRunner
    from roadwork_ml.export.tensorrt_build import TensorRTRunner, build_engine, engine_agreement

    resolved = settings.resolved()
    profile = resolved.profile
    t = profile.export.tensorrt
    bundle_dir = load_bundle_dir(store)
    with store.staging(ENGINE, profile=resolved) as out:
        info = build_engine(
            bundle_dir / "model.onnx",
            out / "model.plan",
            profile.inference.input_size,
            min_batch=t.min_batch,
            opt_batch=t.opt_batch,
            max_batch=t.max_batch,
            fp16=t.fp16,
            workspace_gb=t.workspace_gb,
        )
        images = _parity_images(store, profile).float().div(255.0).numpy()
        agreement = engine_agreement(
            OnnxRunner(bundle_dir / "model.onnx"),
            TensorRTRunner(out / "model.plan"),
            images,
            tolerance=t.min_decision_agreement,
            max_prob_diff=t.max_prob_diff,
            raise_on_reject=False,
            batch_size=min(32, t.max_batch),
        )
        if not agreement["accepted"]:
            raise dg.Failure(
                description=f"TensorRT engine refused: {agreement['reason']}",
                metadata={
                    k: float(v) for k, v in agreement.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                },
            )
        from roadwork_ml.artifacts import atomic_write_json, sha256_file, write_manifest

        atomic_write_json(
            out / "engine.json", {**info.to_dict(), **agreement, "onnx_sha256": sha256_file(bundle_dir / "model.onnx")}
        )
        write_manifest(out, extra={"kind": "tensorrt_engine"})
    yield dg.MaterializeResult(
        metadata=humane(
            {
                "path": dg.MetadataValue.path(str(store.location(ENGINE) / "model.plan")),
                **{k: v for k, v in agreement.items() if isinstance(v, (int, float))},
                **profile_md(resolved),
            }
        )
    )


# the engine is optional (no TensorRT on CPU machines): a dep on it would skip this asset there,
# so the read is declared as optional instead (the declared-I/O test allows it)
@dg.asset(deps=[bundle], group_name="export", kinds={"triton"}, metadata={"roadwork/optional_reads": ENGINE})
def triton_repository(
    context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore
) -> dg.MaterializeResult:
    """A Triton model repository: the bundle's ONNX (onnxruntime_onnx) and, when a TensorRT
    engine built from this very ONNX exists, a tensorrt_plan model; dynamic batching; every
    config.pbtxt parsed with tritonclient's protobuf ModelConfig and checked against the graph."""
    from roadwork_ml.artifacts import sha256_file, write_manifest
    from roadwork_ml.export.triton import validate_config, write_triton_repository

    resolved = settings.resolved()
    tc = resolved.profile.export.triton
    bundle_dir = load_bundle_dir(store)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    record = json.loads((bundle_dir / "config.json").read_text())
    engine = None
    engine_note = "no TensorRT engine (not built on this machine)"
    if store.exists(ENGINE):
        engine_dir = store.read(ENGINE)
        verify_dir(engine_dir)
        engine = engine_dir / "model.plan"
        built_from = json.loads((engine_dir / "engine.json").read_text()).get("onnx_sha256")
        if built_from == sha256_file(bundle_dir / "model.onnx"):
            engine_note = "TensorRT engine included"
        else:
            engine, engine_note = None, "stale TensorRT engine (built from another ONNX) left out"
    with store.staging(TRITON, profile=resolved) as out:
        info = write_triton_repository(
            out,
            tc.model_name,
            bundle_dir / "model.onnx",
            input_size=record["input_size"],
            n_views=record["n_views"],
            num_classes=record["num_classes"],
            embed_dim=record["embed_dim"],
            max_batch_size=tc.max_batch_size,
            preferred_batch_sizes=tuple(tc.preferred_batch_sizes),
            max_queue_delay_us=tc.max_queue_delay_us,
            engine_path=engine,
            instance_kind=tc.instance_kind,
        )
        configs = sorted(out.rglob("config.pbtxt"))
        for cfg in configs:
            validate_config(cfg, onnx_path=bundle_dir / "model.onnx")
        models = [c.parent.name for c in configs]
        first_config = configs[0].read_text()
        write_manifest(
            out,
            extra={"kind": "triton_repository", "bundle_manifest_sha256": sha256_file(bundle_dir / "manifest.json")},
        )
    context.log.info(engine_note)
    return dg.MaterializeResult(
        metadata=humane(
            {
                "path": dg.MetadataValue.path(str(store.location(TRITON))),
                "models": ", ".join(models),
                "tensorrt": engine_note,
                "active_policy": manifest["active_policy"],
                "config": dg.MetadataValue.md("```\n" + first_config + "\n```"),
                "info": dg.MetadataValue.json(json.loads(json.dumps(info, default=str))),
                **profile_md(resolved),
            }
        )
    )


@dg.asset_check(
    asset=triton_repository,
    name="configs_parse",
    blocking=True,
    description="every config.pbtxt parses into tritonclient's ModelConfig protobuf and its tensor names and dims match the ONNX graph",
)
def triton_configs_parse(store: ArtifactStore) -> dg.AssetCheckResult:
    from roadwork_ml.export.triton import validate_config

    d = store.read(TRITON)
    verify_dir(d)
    results = []
    for cfg in sorted(d.rglob("config.pbtxt")):
        try:
            mc = validate_config(cfg, onnx_path=store.read(BUNDLE) / "model.onnx")
            results.append(
                {
                    "model": cfg.parent.name,
                    "platform": mc.platform,
                    "max_batch_size": mc.max_batch_size,
                    "inputs": len(mc.input),
                    "outputs": len(mc.output),
                    "ok": True,
                }
            )
        except Exception as exc:  # noqa: BLE001 - a failed validation is the check's result
            results.append({"model": cfg.parent.name, "error": str(exc)[:300], "ok": False})
    return dg.AssetCheckResult(
        passed=bool(results) and all(r["ok"] for r in results),
        metadata=humane({"configs": table(results) if results else "none found"}),
    )


@dg.asset_check(
    asset=tensorrt_engine,
    name="engine_agrees_with_onnx",
    blocking=True,
    description="re-runs the engine and the bundle's ONNX on VAL_CALIB images: decision agreement and max |Δp| within the profile's tolerances, engine built from this bundle's ONNX",
)
def engine_agrees_with_onnx(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    from roadwork_ml.artifacts import sha256_file
    from roadwork_ml.export.onnx_export import OnnxRunner
    from roadwork_ml.export.tensorrt_build import TensorRTRunner, engine_agreement, tensorrt_available

    ok, reason = tensorrt_available()
    if not ok:
        return dg.AssetCheckResult(
            passed=False, metadata=humane({"reason": f"cannot re-run the engine here: {reason}"})
        )
    profile = settings.load()
    t = profile.export.tensorrt
    d = store.read(ENGINE)
    verify_dir(d)
    onnx = load_bundle_dir(store) / "model.onnx"
    same = json.loads((d / "engine.json").read_text()).get("onnx_sha256") == sha256_file(onnx)
    agreement = engine_agreement(
        OnnxRunner(onnx),
        TensorRTRunner(d / "model.plan"),
        _parity_images(store, profile).float().div(255.0).numpy(),
        tolerance=t.min_decision_agreement,
        max_prob_diff=t.max_prob_diff,
        raise_on_reject=False,
        batch_size=min(32, t.max_batch),
    )
    passed = (
        same
        and agreement["decision_agreement"] >= t.min_decision_agreement
        and agreement["max_prob_diff"] <= t.max_prob_diff
    )
    return dg.AssetCheckResult(
        passed=bool(passed),
        metadata=humane(
            {
                "built_from_this_onnx": same,
                **{k: float(v) for k, v in agreement.items() if isinstance(v, (int, float))},
            }
        ),
    )
