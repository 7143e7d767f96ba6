"""The bundle format, BundlePredictor on ONNX Runtime and PyTorch, the roadwork CLI, and the
Hugging Face export — on a tiny multi-view ViT with fitted policies and real files."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from roadwork_ml.artifacts import IntegrityError
from roadwork_ml.config import load_profile
from roadwork_ml.contracts import Split
from roadwork_ml.export.bundle import load_bundle, verify_bundle, write_bundle
from roadwork_ml.export.onnx_export import export_onnx
from roadwork_ml.models import build_classifier
from roadwork_ml.models.aggregator import AttentionAggregator
from roadwork_ml.models.inference import multiview_model
from roadwork_ml.policy.calibration import TemperatureScaling
from roadwork_ml.policy.conformal import SCRC, SplitConformalLAC
from roadwork_ml.policy.decision import DecisionPolicy
from roadwork_ml.policy.gate import FailureGate
from roadwork_ml.policy.thresholds import fit_thresholds
from tests.fixtures_data import jpeg_bytes, png_bytes, truncated_jpeg


def _policy(kind: str, rng: np.random.Generator) -> DecisionPolicy:
    n = 300
    y = rng.integers(0, 2, n)
    logits = np.stack([np.zeros(n), (2 * y - 1) * 1.5 + rng.normal(0, 1.5, n)], 1)
    cal = TemperatureScaling().fit(logits, y, split=Split.VAL_CALIB)
    probs = cal.predict_proba(logits)
    raw1 = torch.from_numpy(logits).softmax(-1).numpy()[:, 1]
    th = fit_thresholds(raw1, y, Split.VAL_CALIB, 0.3, 0.2, 201)
    lac = SplitConformalLAC(0.1).fit(probs, y, split=Split.VAL_CALIB)
    feats = rng.normal(0, 1, (n, 7))
    gate = None
    if kind == "thresholds":
        params = th.to_dict()
    else:
        gate = FailureGate(epochs=2, batch_size=64).fit(
            feats, (probs.argmax(1) != y).astype(int), split=Split.VAL_CALIB
        )
        conf = gate.confidence(feats)
        params = (
            {"kind": "gate", "cut": float(np.quantile(conf, 0.2))}
            if kind == "gate"
            else SCRC(0.3, 0.2, n_grid=10).fit(probs, y, conf, split=Split.VAL_CALIB).to_dict()
        )
    return DecisionPolicy(cal, kind, params, th.decision_cut_, lac, gate)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    torch.manual_seed(0)
    prof = load_profile("tiny")
    model = build_classifier(prof.model).eval()
    attention = AttentionAggregator(model.embed_dim).eval()
    choice = {"multi_view": True, "aggregator": "attention", "top_k": 0}
    mv = multiview_model(model, prof.model, prof.inference, choice, attention)
    policy = _policy("scrc", np.random.default_rng(0))
    d = tmp_path_factory.mktemp("bundle") / "b"
    manifest = write_bundle(
        d,
        mv,
        prof.model,
        prof.inference,
        choice,
        policy,
        profile=prof.model_dump(mode="json"),
        splits_fingerprint="f" * 64,
        metrics={"val_select_mcc": 0.5},
        onnx_export=lambda m, p, s: export_onnx(m, p, s).to_dict(),
    )
    return d, mv, manifest, prof


def test_manifest_lists_every_file_with_hashes_and_provenance(tiny_bundle):
    d, _, manifest, _ = tiny_bundle
    files = {p.name for p in d.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == files
    assert {
        "model.safetensors",
        "model.onnx",
        "config.json",
        "calibrator.json",
        "policy.json",
        "streetvision.json",
        "prediction_sets.json",
        "gate.json",
        "gate.safetensors",
    } <= files
    for key in (
        "schema_version",
        "roadwork_version",
        "git_commit",
        "profile",
        "created",
        "splits_fingerprint",
        "active_policy",
        "metrics",
    ):
        assert key in manifest
    assert manifest["active_policy"] == "scrc" and manifest["n_views"] == 10
    assert verify_bundle(d)["files"] == manifest["files"]


@pytest.mark.parametrize("tamper", ["modify", "extra", "missing", "policy"])
def test_tampered_bundles_are_refused(tiny_bundle, tmp_path, tamper):
    src = tiny_bundle[0]
    d = tmp_path / "b"
    shutil.copytree(src, d)
    if tamper == "modify":
        (d / "calibrator.json").write_text((d / "calibrator.json").read_text().replace("1", "2", 1))
    elif tamper == "extra":
        (d / "evil.pkl").write_bytes(b"\x80\x04N.")
    elif tamper == "missing":
        (d / "model.onnx").unlink()
    else:
        m = json.loads((d / "manifest.json").read_text())
        m["active_policy"] = "thresholds"
        (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IntegrityError):
        load_bundle(d)


def test_onnx_and_torch_backends_agree_and_match_the_module(tiny_bundle):
    from roadwork_ml.serving.predictor import BundlePredictor

    d, mv, _, prof = tiny_bundle
    images = (torch.rand(9, 3, prof.inference.input_size, prof.inference.input_size) * 255).to(torch.uint8)
    onnx_out = BundlePredictor(d, backend="onnx").predict_tensor(images, batch_size=4)
    torch_out = BundlePredictor(d, backend="torch").predict_tensor(images, batch_size=4)
    with torch.no_grad():
        ref = mv(images.float() / 255)[0].exp().numpy()
    raw = np.exp(onnx_out.logits.astype(np.float64))
    assert np.abs(raw - ref).max() < 1e-4
    assert np.abs(onnx_out.decisions.calibrated - torch_out.decisions.calibrated).max() < 1e-4
    assert np.abs(onnx_out.features - torch_out.features).max() < 1e-3
    d_ = onnx_out.decisions
    assert np.isfinite(d_.streetvision).all() and d_.streetvision.min() >= 0 and d_.streetvision.max() <= 1
    assert set(d_.decision) <= {"roadwork", "no_roadwork", "defer"}
    assert ((d_.decision == "defer") == ~d_.accepted).all()
    recs = onnx_out.records([f"i{i}" for i in range(9)])
    assert recs[0]["image"] == "i0" and set(recs[0]["features"]) and "gate_confidence" in recs[0]


@pytest.mark.parametrize("kind", ["thresholds", "gate", "scrc"])
def test_each_policy_round_trips_and_decides_the_same(tmp_path, kind):
    rng = np.random.default_rng(1)
    policy = _policy(kind, rng)
    policy.save(tmp_path)
    again = DecisionPolicy.load(tmp_path)
    logits = np.stack([np.zeros(50), rng.normal(0, 2, 50)], 1)
    feats = rng.normal(0, 1, (50, 7))
    a, b = policy.decide(logits, feats), again.decide(logits, feats)
    assert (a.decision == b.decision).all() and np.allclose(a.calibrated, b.calibrated)
    assert (tmp_path / "gate.safetensors").exists() == (kind != "thresholds")
    # the StreetVision output folds the tuned cut onto 0.5
    raw1 = torch.from_numpy(logits).softmax(-1).numpy()[:, 1]
    assert ((a.streetvision > 0.5) == (raw1 > policy.decision_cut)).all()


def _folder(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        (folder / f"ok{i}.jpg").write_bytes(jpeg_bytes(80, 60, seed=i))
    (folder / "sub" / "ok5.png").write_bytes(png_bytes(50, 50, seed=5))
    (folder / "broken.jpg").write_bytes(truncated_jpeg())
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_cli_predict_reports_bad_files_and_writes_one_line_per_good_image(tiny_bundle, tmp_path):
    d = tiny_bundle[0]
    folder = _folder(tmp_path)
    out, errors = tmp_path / "pred.jsonl", tmp_path / "errors.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "roadwork_ml.serving.cli",
            "predict",
            "--bundle",
            str(d),
            str(folder),
            str(tmp_path / "missing.jpg"),
            "--out",
            str(out),
            "--errors",
            str(errors),
            "--no-progress",
            "--batch-size",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6 and all(0 <= r["streetvision_probability"] <= 1 for r in lines)
    assert {r["image"].rsplit("/", 1)[-1] for r in lines} == {
        "ok0.jpg",
        "ok1.jpg",
        "ok2.jpg",
        "ok3.jpg",
        "ok4.jpg",
        "ok5.png",
    }
    bad = {json.loads(x)["image"].rsplit("/", 1)[-1]: json.loads(x)["reason"] for x in errors.read_text().splitlines()}
    assert set(bad) == {"broken.jpg", "empty.png", "missing.jpg"}
    assert "3 could not be read" in proc.stderr and "BAD" in proc.stderr
    strict = subprocess.run(
        [
            sys.executable,
            "-m",
            "roadwork_ml.serving.cli",
            "predict",
            "--bundle",
            str(d),
            str(folder),
            "--format",
            "csv",
            "--strict",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert strict.returncode == 1 and len(strict.stdout.strip().splitlines()) == 7  # header + 6 rows


def test_cli_refuses_a_tampered_bundle_with_a_clear_error(tiny_bundle, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(tiny_bundle[0], d)
    (d / "policy.json").write_text((d / "policy.json").read_text() + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "roadwork_ml.serving.cli", "predict", "--bundle", str(d), str(d)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "sha256" in proc.stderr


def test_export_hf_writes_the_streetvision_model_card_and_stays_loadable(tiny_bundle, tmp_path):
    from roadwork_ml.serving.cli import main
    from roadwork_ml.serving.predictor import BundlePredictor

    out = tmp_path / "hf"
    assert main(["export-hf", "--bundle", str(tiny_bundle[0]), str(out), "--submitted-by", "tester"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert (
        set(card) == {"model_name", "description", "version", "submitted_by", "submission_time"}
        and card["submitted_by"] == "tester"
    )
    assert isinstance(card["submission_time"], int) and (out / "README.md").read_text().startswith("---")
    p = BundlePredictor(out, backend="onnx")
    assert p.predict_tensor(torch.zeros(1, 3, p.input_size, p.input_size, dtype=torch.uint8)).logits.shape == (1, 2)
    assert (
        main(["export-hf", "--bundle", str(tiny_bundle[0]), str(out)]) == 2
    )  # not empty: one-line error (test_cli.py)


def test_cli_writes_the_inference_log_and_a_rerun_does_not_double_count(tiny_bundle, tmp_path):
    import pandas as pd

    from roadwork_ml.monitoring.inference_log import read_log_range
    from roadwork_ml.monitoring.projection import PCAProjection
    from roadwork_ml.monitoring.reference import ReferenceProfile
    from roadwork_ml.serving.cli import main

    d, mv, _, _ = tiny_bundle
    rng = np.random.default_rng(0)
    emb = rng.normal(0, 1, (60, mv.model.embed_dim))
    proj = PCAProjection.fit(emb, 4, seed=0)
    meta = pd.DataFrame({"time_of_day": ["day"] * 60, "weather": ["clear"] * 60, "source": ["natix"] * 60})
    ReferenceProfile.build(
        rng.uniform(0, 1, 60), rng.uniform(0, 1, (60, 7)), proj.transform(emb), meta, projection=proj
    ).save(tmp_path / "ref")
    folder = _folder(tmp_path)
    args = [
        "predict",
        "--bundle",
        str(d),
        str(folder),
        "--out",
        str(tmp_path / "p.jsonl"),
        "--no-progress",
        "--log-dir",
        str(tmp_path / "logs"),
        "--reference",
        str(tmp_path / "ref"),
    ]
    assert main(args) == 0
    assert main(args) == 0  # the same images again: replaced, not appended
    from datetime import date, timedelta

    df, stats = read_log_range(tmp_path / "logs", date.today() - timedelta(days=1), date.today() + timedelta(days=1))
    assert len(df) == 6 and df["image_id"].is_unique and stats.to_dict()["duplicates_dropped"] == 0
    assert (
        df["embedding"].map(len).eq(4).all()
        and df["prob"].between(0, 1).all()
        and set(df["decision"]) <= {"roadwork", "no_roadwork", "defer"}
    )
    assert (df["label"].isna() | (df["label"] < 0)).all()  # labels arrive later
    assert (
        main(["predict", "--bundle", str(d), str(folder), "--log-dir", str(tmp_path / "x"), "--no-progress"]) == 2
    )  # needs --reference
