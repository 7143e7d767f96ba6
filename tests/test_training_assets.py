"""The training assets alone on a real Dagster instance with the tiny profile and a temporary
store: LoRA and DoRA through phase1_checkpoint (merged, exported to ONNX, parity <= 1e-4; LoRA
also through the bundle and its checks), explora_checkpoint -> phase1_checkpoint with the
blocking checks green, hard_negatives and a 2-trial hpo_study; every read is a declared one."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import optuna
import pytest
import torch
from safetensors.torch import load_file

from roadwork_assets import bundle, explora, policies, predictions, recipe, training
from roadwork_assets.aggregation import aggregator_choice_reproduces, view_aggregator
from roadwork_assets.data import manifest_valid, source_images, splits, splits_checks
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource, resolve_profile
from roadwork_assets.selection import RECIPE_SEARCH, excluded_from_build, unpartitioned_tail
from roadwork_ml.config import SOURCE_NAMES

TRAINING = [
    explora.explora_checkpoint,
    explora.explora_checkpoint_checks,
    recipe.hard_negatives,
    recipe.hard_negative_weights_valid,
    recipe.hpo_study,
    recipe.best_params_match_study,
    training.phase1_checkpoint,
    training.reloads_identically,
    training.weights_finite,
    training.val_select_mcc_at_floor,
]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An instance whose store holds the tiny sources and splits; DAGSTER_HOME points at it
    (the HPO study's SQLite lives there)."""
    home = tmp_path_factory.mktemp("dagster_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        mp.delenv("ROADWORK_HPO_STORAGE_URL", raising=False)
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            res = _resources(home, "setup")
            for source in SOURCE_NAMES:
                r = dg.materialize(
                    [source_images, manifest_valid], partition_key=source, resources=res, instance=instance
                )
                assert r.success
            assert dg.materialize([splits, splits_checks], resources=res, instance=instance).success
            yield home, instance


def _resources(home, name: str) -> dict:
    return {
        "settings": ProfileResource.bound("tiny"),
        "store": ArtifactStore(root=str(home / "artifacts"), read_log=str(home / f"reads-{name}.jsonl")),
        "mlflow": MlflowTracking(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_root=str(home / "mlart")),
    }


def _run(home, assets, selection, name: str, overrides=()) -> dg.ExecuteInProcessResult:
    _, instance = home
    r = dg.materialize(
        [*TRAINING, *assets],
        selection=selection,
        resources=_resources(home[0], name),
        instance=instance,
        run_config={"resources": {"settings": {"config": {"overrides": list(overrides)}}}},
    )
    assert r.success
    failed = [(e.check_name, e.metadata) for e in r.get_asset_check_evaluations() if not e.passed]
    assert failed == []
    return r


def _meta(r, key: str) -> dict:
    return {k: getattr(v, "value", v) for k, v in r.asset_materializations_for_node(key)[0].metadata.items()}


def _undeclared(home, name: str, asset) -> set[str]:
    """Keys read by ``name``'s run that are neither its deps, itself nor its metadata-declared reads."""
    reads = [json.loads(line) for line in (home / f"reads-{name}.jsonl").read_text().splitlines()]
    spec = next(iter(asset.specs))
    meta = spec.metadata or {}
    declared = {d.asset_key.to_user_string() for d in spec.deps} | {spec.key.to_user_string()}
    declared |= {x.strip() for x in str(meta.get("roadwork/feedback_reads", "")).split(",") if x.strip()}
    return {r["key"] for r in reads} - declared


def _phase1(home, name: str, overrides=()) -> dict:
    r = _run(home, [], dg.AssetSelection.assets("phase1_checkpoint"), name, overrides)
    assert _undeclared(home[0], name, training.phase1_checkpoint) == set()
    return _meta(r, "phase1_checkpoint")


def _assert_plain_checkpoint(home) -> dict[str, torch.Tensor]:
    state = load_file(str(home / "artifacts" / "phase1_checkpoint" / "model.safetensors"))
    assert not [k for k in state if "lora_" in k or "base_layer" in k or "modules_to_save" in k]
    return state


@pytest.mark.parametrize("mode", ["lora", "dora"])
def test_peft_phase1_merges_and_exports_with_onnx_parity(home, mode):
    from roadwork_ml.export.onnx_export import export_onnx, onnx_parity
    from roadwork_ml.models.inference import multiview_model
    from roadwork_ml.training.checkpoint import load_checkpoint

    meta = _phase1(home, f"phase1-{mode}", [f"train.finetune={mode}"])
    assert meta["finetune"] == mode and 0 < meta["trainable_share"] < 0.6
    assert meta["trainable_params"] < meta["parameters"] and meta["step_seconds"] > 0 and meta["peak_memory_bytes"] > 0
    assert meta["ema_enabled"] is False and meta["init_from"] == "weights"
    _assert_plain_checkpoint(home[0])
    # the merged checkpoint is a plain classifier: the profile's multi-view model exports and matches ONNX
    model, ckpt = load_checkpoint(home[0] / "artifacts" / "phase1_checkpoint", device="cpu")
    profile = resolve_profile("tiny", ()).profile
    from roadwork_ml.config import ModelConfig

    mv = multiview_model(
        model,
        ModelConfig.model_validate(ckpt["model"]),
        profile.inference,
        {"multi_view": True, "aggregator": "mean", "top_k": 1},
    )
    path = home[0] / f"{mode}.onnx"
    export_onnx(mv, path, profile.inference.input_size, opset=profile.export.onnx_opset)
    probe = load_file(str(home[0] / "artifacts" / "phase1_checkpoint" / "probe.safetensors"))["images"]
    images = torch.nn.functional.interpolate(probe.float() / 255, size=profile.inference.input_size, mode="bilinear")
    parity = onnx_parity(mv, path, images, batch_size=16)
    assert parity.n == len(probe) and parity.max_prob_diff <= 1e-4


@pytest.mark.parametrize("mode", ["lora", "dora"])
def test_peft_checkpoint_passes_the_bundle_checks(home, mode):
    """LoRA / DoRA phase 1 (merged) through view_aggregator, the policies and the bundle, every
    check green: ONNX parity on VAL_CALIB within the profile's tolerance (1e-4) among them."""
    _phase1(home, f"phase1-{mode}-bundle", [f"train.finetune={mode}"])
    tail = [
        view_aggregator,
        aggregator_choice_reproduces,
        predictions.val_calib_logits,
        predictions.predictions_valid,
        policies.thresholds,
        policies.thresholds_meet_targets,
        policies.calibrator,
        policies.calibrator_not_worse,
        policies.gate,
        policies.scrc_params,
        policies.conformal_within_guarantee,
        bundle.bundle,
        bundle.bundle_hashes_verify,
        bundle.bundle_exactly_one_policy,
        bundle.bundle_onnx_matches_pytorch,
        bundle.bundle_predicts,
    ]
    keys = ["view_aggregator", "val_calib_logits", "thresholds", "calibrator", "gate", "scrc_params", "bundle"]
    _, instance = home
    r = dg.materialize(
        [*TRAINING, *tail],
        selection=dg.AssetSelection.assets(*keys),
        resources=_resources(home[0], "bundle"),
        instance=instance,
    )
    assert r.success
    evals = {e.check_name: e for e in r.get_asset_check_evaluations()}
    parity = evals["onnx_matches_pytorch"]
    assert parity.passed and parity.metadata["max_prob_diff"].value <= 1e-4
    failed = [n for n, e in evals.items() if not e.passed and n != "gate_beats_max_prob"]
    assert failed == []
    # the StreetVision cut is tuned on VAL_CALIB as the validator would send it: recomputed here
    # from the stored emulated outputs with sklearn (class weights 50/50, every level pooled)
    from sklearn.metrics import accuracy_score, matthews_corrcoef

    from roadwork_assets.predictions import load_val_calib_predictions, load_val_calib_streetvision

    store = _resources(home[0], "bundle")["store"]
    meta = r.asset_materializations_for_node("thresholds")[0].metadata
    levels, vp = load_val_calib_streetvision(store)
    y = load_val_calib_predictions(store).labels
    assert meta["decision_cut_rule"].value == "validator_reward" and levels == [0, 1, 2, 3]
    yy, pp = np.tile(y, len(levels)), vp.reshape(-1)
    w = np.where(yy == 1, 0.5 / (yy == 1).sum(), 0.5 / (yy == 0).sum())

    def reward_at(cut: float) -> float:
        pred = (pp > cut).astype(int)
        m, a = matthews_corrcoef(yy, pred, sample_weight=w), accuracy_score(yy, pred, sample_weight=w)
        return (0.5 * m + 0.5 * a) ** 3

    cut = meta["decision_cut"].value
    assert reward_at(cut) == pytest.approx(meta["streetvision_reward_at_cut"].value, rel=1e-3)
    assert all(reward_at(c) <= reward_at(cut) + 1e-3 for c in np.linspace(0.02, 0.98, 49))


def test_explora_then_phase1_from_its_backbone(home):
    r = _run(home, [], dg.AssetSelection.assets("explora_checkpoint"), "explora")
    checks = {e.check_name: e for e in r.get_asset_check_evaluations()}
    assert set(checks) == set(explora.EXPLORA_CHECKS) and all(e.passed for e in checks.values())
    floors = checks["teacher_not_collapsed"].metadata
    assert floors["teacher_entropy"].value >= floors["teacher_entropy_floor"].value
    assert _undeclared(home[0], "explora", explora.explora_checkpoint) == set()
    reads = [json.loads(x) for x in (home[0] / "reads-explora.jsonl").read_text().splitlines()]
    assert {x["split"] for x in reads if x["key"] == "splits"} - {None} == {"train"}  # never a validation split
    meta = _phase1(home, "phase1-explora", ["model.init_from=explora_checkpoint", "train.finetune=lora"])
    assert meta["init_from"] == "explora_checkpoint"
    phase1_reads = [json.loads(x) for x in (home[0] / "reads-phase1-explora.jsonl").read_text().splitlines()]
    assert "explora_checkpoint" in {x["key"] for x in phase1_reads}
    # phase 1 started from the ExPLoRA backbone: with LoRA, the frozen patch embedding is carried over bit for bit
    backbone = load_file(str(home[0] / "artifacts" / "explora_checkpoint" / "backbone.safetensors"))
    state = _assert_plain_checkpoint(home[0])
    assert torch.equal(state["backbone.patch_embed.proj.weight"], backbone["patch_embed.proj.weight"])


def test_explora_check_fails_on_a_tampered_backbone(home):
    """The reload check can fail: a flipped weight (manifest rewritten to match) is caught by the digest."""
    from roadwork_ml.artifacts import write_manifest

    store = ArtifactStore(root=str(home[0] / "artifacts"))
    if not store.exists("explora_checkpoint"):  # when run alone
        _run(home, [], dg.AssetSelection.assets("explora_checkpoint"), "explora-for-tamper")
    d = store.read("explora_checkpoint")
    path = d / "backbone.safetensors"
    original = path.read_bytes()
    state = load_file(str(path))
    key = next(iter(state))
    state[key] = state[key].clone()
    state[key].view(-1)[0] += 1.0
    from safetensors.torch import save_file

    try:
        save_file(state, str(path), metadata={"format": "pt"})
        write_manifest(d, extra={"kind": "explora-backbone"})
        results = {
            r.check_name: r
            for r in explora.explora_checkpoint_checks(store=store, settings=ProfileResource.bound("tiny"))
        }
        assert not results["reloads_bit_identically"].passed
    finally:
        path.write_bytes(original)
        write_manifest(d, extra={"kind": "explora-backbone"})


def test_hard_negatives_then_weighted_phase1(home):
    r = _run(
        home,
        [],
        dg.AssetSelection.assets("hard_negatives"),
        "hard-negatives",
        ["hard_negatives.n_folds=2", "hard_negatives.min_score=0.3"],
    )
    meta = _meta(r, "hard_negatives")
    assert _undeclared(home[0], "hard-negatives", recipe.hard_negatives) == set()
    import pandas as pd

    from roadwork_ml.training.hard_negatives import false_positive_rate

    df = pd.read_parquet(home[0] / "artifacts" / "hard_negatives" / "weights.parquet")
    # the reported slice FPR, recomputed from the written out-of-fold scores
    sl = df["hard_negative_slice"].to_numpy()
    assert meta["oof_fpr_hard_negative_slice"] == pytest.approx(
        false_positive_rate(df["oof_score"], df["label"], sl, 0.3), nan_ok=True
    )
    assert meta["mined"] == int((df["weight"] > 1).sum()) and meta["n_train"] == len(df)
    assert ((df["weight"] > 1) <= (df["label"] == 0)).all()
    reads = [json.loads(x) for x in (home[0] / "reads-hard-negatives.jsonl").read_text().splitlines()]
    assert {x["split"] for x in reads if x["key"] == "splits"} - {None} == {"train", "val_select"}
    p1 = _phase1(home, "phase1-hn", ["hard_negatives.use_in_training=true", "hard_negatives.min_score=0.3"])
    assert p1["hard_negative_weighted_rows"] == meta["mined"]
    assert 0.0 <= p1["val_select_hard_negative_fpr"] <= 1.0 or p1["val_select_hard_negatives"] == 0


def test_hpo_study_two_trials_then_phase1_takes_the_best(home):
    overrides = ["hpo.n_trials=2", "hpo.n_startup_trials=2", "hpo.study_name=tiny-test"]
    r = _run(home, [], dg.AssetSelection.assets("hpo_study"), "hpo", overrides)
    meta = _meta(r, "hpo_study")
    assert meta["trials"] == 2 and meta["complete"] >= 1 and "plot_history" in meta
    assert meta["storage"] == f"sqlite:///{home[0] / 'hpo.db'}"
    assert _undeclared(home[0], "hpo", recipe.hpo_study) == set()
    reads = [json.loads(x) for x in (home[0] / "reads-hpo.jsonl").read_text().splitlines()]
    assert {x["split"] for x in reads if x["key"] == "splits"} - {None} == {"train", "val_select"}
    study = optuna.load_study(study_name="tiny-test", storage=meta["storage"])
    assert len(study.trials) == 2 and meta["best_params"] == study.best_trial.params
    # each trial is an MLflow child run of the study's run
    client = MlflowTracking(tracking_uri=f"sqlite:///{home[0] / 'mlflow.db'}").client()
    runs = client.search_runs(
        [client.get_experiment_by_name(resolve_profile("tiny", ()).profile.tracking.experiment).experiment_id],
        f"tags.mlflow.parentRunId = '{meta['mlflow_parent_run_id']}'",
    )
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.tags["optuna.state"] for r in runs) == sorted(t.state.name for t in study.trials)
    # a re-run resumes the finished study: no new trial
    _run(home, [], dg.AssetSelection.assets("hpo_study"), "hpo-again", overrides)
    assert len(optuna.load_study(study_name="tiny-test", storage=meta["storage"]).trials) == 2
    p1 = _phase1(home, "phase1-hpo", ["hpo.apply_best=true", *overrides])
    assert p1["hpo_best_applied"] is True
    ckpt = json.loads((home[0] / "artifacts" / "phase1_checkpoint" / "config.json").read_text())
    assert ckpt["info"]["hpo_best_params"] == study.best_trial.params


def test_demo_selection_leaves_the_recipe_search_out_unless_phase1_uses_it():
    from test_cli_sequence import TAIL

    tiny = resolve_profile("tiny", ()).profile
    assert unpartitioned_tail(tiny) == TAIL
    assert set(RECIPE_SEARCH) <= set(excluded_from_build(tiny))
    used = resolve_profile("tiny", ("hpo.apply_best=true", "model.init_from=explora_checkpoint")).profile
    assert set(excluded_from_build(used)) & set(RECIPE_SEARCH) == {"hard_negatives"}
    # the string resolves in Dagster to splits' descendants minus exactly those keys
    from roadwork_assets.definitions import build_definitions

    graph = build_definitions("tiny").resolve_asset_graph()
    keys = {k.to_user_string() for k in dg.AssetSelection.from_string(unpartitioned_tail(tiny)).resolve(graph)}
    assert not keys & set(RECIPE_SEARCH) and {"phase1_checkpoint", "bundle"} <= keys


def test_retrain_with_production_labels_appends_them_to_train(home, monkeypatch):
    """The retrain path (include_production_labels): the labelled production images join the
    streamed TRAIN split, hard-negative weights padded with 1 for them."""
    import roadwork_assets.monitoring as monitoring

    size = resolve_profile("tiny", ()).profile.model.img_size
    extra = torch.randint(0, 256, (5, 3, size, size), dtype=torch.uint8)
    monkeypatch.setattr(
        monitoring, "load_labelled_production", lambda store, s: (extra, torch.tensor([0, 1, 0, 1, 1]), ["d1"])
    )
    _, instance = home
    r = dg.materialize(
        TRAINING,
        selection=dg.AssetSelection.assets("phase1_checkpoint"),
        resources=_resources(home[0], "retrain"),
        instance=instance,
        run_config={"ops": {"phase1_checkpoint": {"config": {"include_production_labels": True}}}},
    )
    assert r.success
    meta = _meta(r, "phase1_checkpoint")
    n_train = len(_train_rows(home[0]))
    assert meta["production_images_added"] == 5
    history = json.loads((home[0] / "artifacts" / "phase1_checkpoint" / "history.json").read_text())
    batch = resolve_profile("tiny", ()).profile.train.batch_size
    assert len(history["step_losses"]) == -(-(n_train + 5) // batch) * meta["epochs_run"]


def _train_rows(root):
    from roadwork_assets.data import load_train_rows

    return load_train_rows(ArtifactStore(root=str(root / "artifacts")), resolve_profile("tiny", ()).profile)


def test_phase1_keeps_the_epoch_with_the_best_streetvision_reward(home):
    """train.selection.metric: streetvision_reward through the asset: the kept epoch is the one
    whose VAL_SELECT reward (every selection level, 0.5 cut, the served global view) was best, and
    that reward is what the saved checkpoint scores on the evaluation's own emulation path with
    scikit-learn's MCC and accuracy."""
    from sklearn.metrics import accuracy_score, matthews_corrcoef

    from roadwork_assets.data import load_split_rows, load_split_tensors
    from roadwork_ml.config import ModelConfig
    from roadwork_ml.contracts import Split
    from roadwork_ml.evaluation.streetvision import emulated_outputs
    from roadwork_ml.models.inference import global_view_probability
    from roadwork_ml.training.checkpoint import load_checkpoint

    overrides = ["train.selection.metric=streetvision_reward", "train.epochs=3"]
    meta = _phase1(home, "phase1-select", overrides)
    root = home[0] / "artifacts"
    scores = [
        h["select_score"] for h in json.loads((root / "phase1_checkpoint" / "history.json").read_text())["epochs"]
    ]
    assert meta["selection_metric"] == "streetvision_reward" and len(scores) == meta["epochs_run"]
    assert meta["best_selection_score"] == max(scores) and meta["best_epoch"] == 1 + int(np.argmax(scores))

    profile = resolve_profile("tiny", overrides).profile
    sel, inf = profile.train.selection, profile.inference
    store = ArtifactStore(root=str(root))
    rows = load_split_rows(store, Split.VAL_SELECT)
    native = load_split_tensors(
        store, rows, Split.VAL_SELECT, max(inf.input_size, profile.evaluation.streetvision.size)
    )
    model, cfg = load_checkpoint(root / "phase1_checkpoint", device="cpu")
    fn = global_view_probability(model.eval(), ModelConfig.model_validate(cfg["model"]), inf)
    out = emulated_outputs(fn, native.images, sel.levels, seed=sel.seed, batch_size=inf.batch_size)
    p = np.concatenate([out[lv] for lv in sel.levels])
    y, d = np.tile(native.labels.numpy(), len(sel.levels)), (p > 0.5).astype(int)
    mcc, acc = matthews_corrcoef(y, d), accuracy_score(y, d)
    if not np.any(np.abs(p - 0.5) < 1e-5):  # a probability at the cut could round either way
        assert meta["best_selection_score"] == pytest.approx((0.5 * mcc + 0.5 * acc) ** 3, abs=1e-9)
