"""Phase 6: the verified bundle, and what is built from it (TensorRT engine, Triton repository)."""


import json

import dagster as dg
import numpy as np
import torch

from roadwork_assets.loaders import AGGREGATOR_DIR, SPLITS_DIR, load_predictions, load_served_model, load_split_tensors, load_splits, split_rows
from roadwork_assets.metadata import table_md
from roadwork_assets.policies import CALIBRATOR_DIR, GATE_DIR, SCRC_DIR, THRESHOLDS_DIR
from roadwork_assets.resources import ArtifactStore, ProfileResource, RunOverrides
from roadwork_assets.run_tags import GPU_OP_TAGS
from roadwork_ml.artifacts import IntegrityError, verify_dir
from roadwork_ml.config import Profile
from roadwork_ml.contracts import Split
from roadwork_ml.policy.decision import DecisionPolicy

BUNDLE_DIR = "bundle"
ENGINE_DIR = "tensorrt_engine"
TRITON_DIR = "triton_repository"


def _json(store: ArtifactStore, *parts: str) -> dict:
    directory = store.require(*parts[:-1])
    verify_dir(directory)
    return json.loads((directory / parts[-1]).read_text())


def decision_policy_from_store(store: ArtifactStore, profile: Profile) -> DecisionPolicy:
    """Calibrator, the profile's one active policy, the StreetVision fold and the LAC set
    predictor, read (hash-verified) from the policy assets' artifacts."""
    from roadwork_ml.policy.calibration import calibrator_from_dict
    from roadwork_ml.policy.conformal import conformal_from_dict
    from roadwork_ml.policy.gate import FailureGate

    cal = _json(store, CALIBRATOR_DIR, "calibrator.json")
    cal.pop("slice_key", None)
    thresholds = _json(store, THRESHOLDS_DIR, "thresholds.json")
    suite = _json(store, SCRC_DIR, "conformal.json")["methods"]
    kind = profile.policy.active_kind
    gate = None
    if kind in ("gate", "scrc"):
        verify_dir(store.require(GATE_DIR))
        gate = FailureGate.load(store.path(GATE_DIR))
    params = {"thresholds": thresholds, "gate": _json(store, GATE_DIR, "gate_policy.json") if kind == "gate" else None, "scrc": suite["scrc"]}[kind]
    return DecisionPolicy(calibrator_from_dict(cal), kind, params, thresholds["decision_cut"], conformal_from_dict(suite["lac"]), gate)


def _headline(store: ArtifactStore, policy: DecisionPolicy) -> dict:
    """VAL_SELECT MCC of the served views and VAL_CALIB figures of the decision path."""
    from roadwork_ml.evaluation.metrics import ece, mcc

    preds = load_predictions(store, Split.VAL_CALIB)
    d = policy.decide(preds.logits, preds.features)
    y = preds.labels
    acc = d.accepted
    choice = _json(store, AGGREGATOR_DIR, "aggregator.json")
    return {
        "val_select_mcc": float(choice["val_select_mcc"]),
        "val_calib_mcc_folded": mcc(y, d.label),
        "val_calib_accuracy_folded": float((d.label == y).mean()),
        "val_calib_ece_calibrated": ece(y, d.calibrated),
        "val_calib_policy_coverage": float(acc.mean()),
        "val_calib_policy_risk": float((d.label[acc] != y[acc]).mean()) if acc.any() else 0.0,
    }


def _parity_images(store: ArtifactStore, profile: Profile) -> torch.Tensor:
    rows = split_rows(load_splits(store), Split.VAL_CALIB).head(profile.export.parity_images)
    return load_split_tensors(store, rows, Split.VAL_CALIB, profile.inference.input_size).images


@dg.asset(deps=["view_aggregator", "calibrator", "thresholds", "gate", "scrc_params"], group_name="export", kinds={"onnx", "safetensors"})
def bundle(context: dg.AssetExecutionContext, config: RunOverrides, settings: ProfileResource, store: ArtifactStore) -> dg.MaterializeResult:
    """The deployable bundle: manifest (hashes, profile, splits fingerprint, active policy,
    headline metrics), model.safetensors, model.onnx (the whole batched multi-view graph),
    calibrator, the one active policy, the StreetVision fold, prediction sets, config."""
    from roadwork_ml.export.bundle import write_bundle
    from roadwork_ml.export.onnx_export import export_onnx, onnx_parity

    profile = settings.load(config.overrides)
    mv, choice, model_cfg = load_served_model(store, profile.inference)
    policy = decision_policy_from_store(store, profile)
    headline = _headline(store, policy)
    splits_manifest = verify_dir(store.require(SPLITS_DIR))

    def onnx_export(model, path, input_size):
        return export_onnx(model, path, input_size, opset=profile.export.onnx_opset).to_dict()

    with store.staging(BUNDLE_DIR) as out:
        manifest = write_bundle(out, mv, model_cfg, profile.inference, choice, policy, profile=profile.model_dump(mode="json"), splits_fingerprint=splits_manifest["files"]["splits.parquet"]["sha256"], metrics=headline, onnx_export=onnx_export)
    directory = store.path(BUNDLE_DIR)
    parity = onnx_parity(mv, directory / "model.onnx", _parity_images(store, profile).float().div(255.0), batch_size=profile.inference.batch_size)
    context.log.info(f"bundle written: {len(manifest['files'])} files, ONNX parity max |Δp| {parity.max_prob_diff:.2e}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(directory)),
            "active_policy": manifest["active_policy"],
            "views_per_image": manifest["n_views"],
            "input_size": manifest["input_size"],
            "onnx_max_prob_diff": parity.max_prob_diff,
            "onnx_decision_agreement": parity.decision_agreement,
            "files": table_md([{"file": k, "bytes": v["size"], "sha256": v["sha256"][:16] + "…"} for k, v in manifest["files"].items()]),
            "headline": table_md([{"metric": k, "value": float(v)} for k, v in headline.items()]),
            **{k: float(v) for k, v in headline.items()},
        }
    )


@dg.asset_check(asset=bundle, name="hashes_verify", blocking=True, description="every file's sha256 and size match manifest.json and no unlisted file is present")
def bundle_hashes_verify(store: ArtifactStore) -> dg.AssetCheckResult:
    from roadwork_ml.export.bundle import verify_bundle

    try:
        manifest = verify_bundle(store.require(BUNDLE_DIR))
    except IntegrityError as exc:
        return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)})
    return dg.AssetCheckResult(passed=True, metadata={"files_verified": len(manifest["files"]), "bytes": sum(v["size"] for v in manifest["files"].values())})


@dg.asset_check(asset=bundle, name="exactly_one_policy", blocking=True, description="policy.json names exactly one of thresholds / gate / scrc, the manifest and the profile agree, and no other policy's parameters ship")
def bundle_exactly_one_policy(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    d = store.require(BUNDLE_DIR)
    manifest = json.loads((d / "manifest.json").read_text())
    policy = json.loads((d / "policy.json").read_text())
    expected = settings.load().policy.active_kind
    stray = sorted(n for n in manifest["files"] if n in ("thresholds.json", "gate_policy.json", "conformal.json"))
    gate_files = {"gate.json", "gate.safetensors"} & set(manifest["files"])
    gate_ok = bool(gate_files) == (policy.get("kind") in ("gate", "scrc"))
    passed = policy.get("kind") == manifest["active_policy"] == expected and not stray and gate_ok and set(policy) == {"kind", "params"}
    return dg.AssetCheckResult(passed=bool(passed), metadata={"policy": str(policy.get("kind")), "manifest": manifest["active_policy"], "profile": expected, "stray_policy_files": ", ".join(stray) or "none", "gate_files_consistent": gate_ok})


@dg.asset_check(asset=bundle, name="onnx_matches_pytorch", blocking=True, description="ONNX Runtime vs PyTorch (both rebuilt from the bundle's files) on VAL_CALIB images: max |Δ probability| ≤ the profile's tolerance (1e-4)")
def bundle_onnx_matches_pytorch(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    from safetensors.torch import load_file

    from roadwork_ml.export.bundle import load_bundle, rebuild_model
    from roadwork_ml.export.onnx_export import onnx_parity

    profile = settings.load()
    d = store.require(BUNDLE_DIR)
    _, record, _ = load_bundle(d)
    mv = rebuild_model(record, load_file(str(d / "model.safetensors")))
    images = _parity_images(store, profile).float().div(255.0)
    parity = onnx_parity(mv, d / "model.onnx", images, batch_size=profile.inference.batch_size)
    tol = profile.export.parity_tolerance
    return dg.AssetCheckResult(passed=bool(parity.max_prob_diff <= tol), metadata={"max_prob_diff": parity.max_prob_diff, "tolerance": tol, "decision_agreement": parity.decision_agreement, "max_embedding_diff": parity.max_embedding_diff, "images": parity.n})


@dg.asset_check(asset=bundle, name="predicts_through_predictor", blocking=True, description="BundlePredictor (ONNX Runtime) loads the bundle and reproduces the decision path on VAL_CALIB: calibrated probabilities match the val_calib_logits path within 1e-4; StreetVision outputs finite in [0, 1]")
def bundle_predicts(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    from roadwork_ml.serving.predictor import BundlePredictor

    profile = settings.load()
    predictor = BundlePredictor(store.require(BUNDLE_DIR), backend="onnx")
    images = _parity_images(store, profile)
    out = predictor.predict_tensor(images, batch_size=profile.inference.batch_size)
    preds = load_predictions(store, Split.VAL_CALIB)
    n = len(images)
    ref = predictor.policy.decide(preds.logits[:n], preds.features[:n])
    prob_diff = float(np.abs(out.decisions.calibrated - ref.calibrated).max())
    feat_diff = float(np.abs(out.features - preds.features[:n]).max())
    sv = out.decisions.streetvision
    sv_ok = bool(np.isfinite(sv).all() and sv.min() >= 0 and sv.max() <= 1)
    agree = float((out.decisions.decision == ref.decision).mean())
    return dg.AssetCheckResult(passed=bool(prob_diff <= 1e-4 and sv_ok and agree >= 0.99), metadata={"images": n, "max_calibrated_prob_diff": prob_diff, "max_feature_diff": feat_diff, "decision_agreement": agree, "streetvision_valid": sv_ok, "decisions": json.dumps({k: int((out.decisions.decision == k).sum()) for k in ("roadwork", "no_roadwork", "defer")})})


@dg.asset(deps=[bundle], group_name="export", kinds={"tensorrt"}, output_required=False, op_tags=GPU_OP_TAGS)
def tensorrt_engine(context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore):
    """FP16 TensorRT engine from the bundle's ONNX, refused when its decisions disagree with
    ONNX Runtime beyond the profile's tolerance. Without TensorRT or CUDA nothing is written,
    the asset stays unmaterialized, and an observation says why."""
    from roadwork_ml.export.tensorrt_build import tensorrt_available

    ok, reason = tensorrt_available()
    if not ok:
        context.log.warning(f"tensorrt_engine not built: {reason}")
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata={"status": "skipped", "reason": reason}))
        return
    from roadwork_ml.export.onnx_export import OnnxRunner
    from roadwork_ml.export.tensorrt_build import TensorRTRunner, build_engine, engine_agreement

    profile = settings.load()
    t = profile.export.tensorrt
    bundle_dir = store.require(BUNDLE_DIR)
    with store.staging(ENGINE_DIR) as out:
        info = build_engine(bundle_dir / "model.onnx", out / "model.plan", profile.inference.input_size, min_batch=t.min_batch, opt_batch=t.opt_batch, max_batch=t.max_batch, fp16=t.fp16, workspace_gb=t.workspace_gb)
        images = _parity_images(store, profile).float().div(255.0).numpy()
        agreement = engine_agreement(OnnxRunner(bundle_dir / "model.onnx"), TensorRTRunner(out / "model.plan"), images, tolerance=t.min_decision_agreement, max_prob_diff=t.max_prob_diff, raise_on_reject=False, batch_size=min(32, t.max_batch))
        if not agreement["accepted"]:
            raise dg.Failure(description=f"TensorRT engine refused: {agreement['reason']}", metadata={k: float(v) for k, v in agreement.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        from roadwork_ml.artifacts import atomic_write_json, sha256_file, write_manifest

        atomic_write_json(out / "engine.json", {**info.to_dict(), **agreement, "onnx_sha256": sha256_file(bundle_dir / "model.onnx")})
        write_manifest(out, extra={"kind": "tensorrt_engine"})
    yield dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(store.path(ENGINE_DIR, "model.plan"))), **{k: v for k, v in agreement.items() if isinstance(v, (int, float))}})


@dg.asset(deps=[bundle], group_name="export", kinds={"triton"})
def triton_repository(context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore) -> dg.MaterializeResult:
    """A Triton model repository: the bundle's ONNX (onnxruntime_onnx) and, when a TensorRT
    engine built from this very ONNX exists, a tensorrt_plan model; dynamic batching; every
    config.pbtxt parsed with tritonclient's protobuf ModelConfig and checked against the graph."""
    from roadwork_ml.artifacts import sha256_file, write_manifest
    from roadwork_ml.export.triton import validate_config, write_triton_repository

    profile = settings.load()
    tc = profile.export.triton
    bundle_dir = store.require(BUNDLE_DIR)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    record = json.loads((bundle_dir / "config.json").read_text())
    engine = store.path(ENGINE_DIR, "model.plan")
    engine_note = "no TensorRT engine (not built on this machine)"
    if engine.exists():
        built_from = json.loads(store.path(ENGINE_DIR, "engine.json").read_text()).get("onnx_sha256")
        if built_from == sha256_file(bundle_dir / "model.onnx"):
            engine_note = "TensorRT engine included"
        else:
            engine, engine_note = None, "stale TensorRT engine (built from another ONNX) left out"
    else:
        engine = None
    with store.staging(TRITON_DIR) as out:
        info = write_triton_repository(out, tc.model_name, bundle_dir / "model.onnx", input_size=record["input_size"], n_views=record["n_views"], num_classes=record["num_classes"], embed_dim=record["embed_dim"], max_batch_size=tc.max_batch_size, preferred_batch_sizes=tuple(tc.preferred_batch_sizes), max_queue_delay_us=tc.max_queue_delay_us, engine_path=engine, instance_kind=tc.instance_kind)
        configs = sorted(out.rglob("config.pbtxt"))
        for cfg in configs:
            validate_config(cfg, onnx_path=bundle_dir / "model.onnx")
        models = [c.parent.name for c in configs]
        first_config = configs[0].read_text()
        write_manifest(out, extra={"kind": "triton_repository", "bundle_manifest_sha256": sha256_file(bundle_dir / "manifest.json")})
    context.log.info(engine_note)
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(store.path(TRITON_DIR))), "models": ", ".join(models), "tensorrt": engine_note, "active_policy": manifest["active_policy"], "config": dg.MetadataValue.md("```\n" + first_config + "\n```"), "info": json.dumps(info, default=str)[:2000]})


@dg.asset_check(asset=triton_repository, name="configs_parse", blocking=True, description="every config.pbtxt parses into tritonclient's ModelConfig protobuf and its tensor names and dims match the ONNX graph")
def triton_configs_parse(store: ArtifactStore) -> dg.AssetCheckResult:
    from roadwork_ml.export.triton import validate_config

    d = store.require(TRITON_DIR)
    verify_dir(d)
    results = []
    for cfg in sorted(d.rglob("config.pbtxt")):
        try:
            mc = validate_config(cfg, onnx_path=store.require(BUNDLE_DIR) / "model.onnx")
            results.append({"model": cfg.parent.name, "platform": mc.platform, "max_batch_size": mc.max_batch_size, "inputs": len(mc.input), "outputs": len(mc.output), "ok": True})
        except Exception as exc:  # noqa: BLE001 - a failed validation is the check's result
            results.append({"model": cfg.parent.name, "error": str(exc)[:300], "ok": False})
    return dg.AssetCheckResult(passed=bool(results) and all(r["ok"] for r in results), metadata={"configs": table_md(results) if results else "none found"})


@dg.asset_check(asset=tensorrt_engine, name="engine_agrees_with_onnx", blocking=True, description="re-runs the engine and the bundle's ONNX on VAL_CALIB images: decision agreement and max |Δp| within the profile's tolerances, engine built from this bundle's ONNX")
def engine_agrees_with_onnx(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    from roadwork_ml.artifacts import sha256_file
    from roadwork_ml.export.onnx_export import OnnxRunner
    from roadwork_ml.export.tensorrt_build import TensorRTRunner, engine_agreement, tensorrt_available

    ok, reason = tensorrt_available()
    if not ok:
        return dg.AssetCheckResult(passed=False, metadata={"reason": f"cannot re-run the engine here: {reason}"})
    profile = settings.load()
    t = profile.export.tensorrt
    d = store.require(ENGINE_DIR)
    verify_dir(d)
    onnx = store.require(BUNDLE_DIR) / "model.onnx"
    same = json.loads((d / "engine.json").read_text()).get("onnx_sha256") == sha256_file(onnx)
    agreement = engine_agreement(OnnxRunner(onnx), TensorRTRunner(d / "model.plan"), _parity_images(store, profile).float().div(255.0).numpy(), tolerance=t.min_decision_agreement, max_prob_diff=t.max_prob_diff, raise_on_reject=False, batch_size=min(32, t.max_batch))
    passed = same and agreement["decision_agreement"] >= t.min_decision_agreement and agreement["max_prob_diff"] <= t.max_prob_diff
    return dg.AssetCheckResult(passed=bool(passed), metadata={"built_from_this_onnx": same, **{k: float(v) for k, v in agreement.items() if isinstance(v, (int, float))}})
