"""`roadwork predict` / `export-hf` on awkward inputs, through the real console script in a
subprocess: a file name that is not UTF-8, a dangling symlink, a folder with nothing to
predict, a folder where nothing is readable, an export into a non-empty folder (issue 16)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from roadwork_ml.artifacts import sha256_file
from roadwork_ml.serving.inputs import escape_path, unescape_path
from tests.fixtures_data import jpeg_bytes, png_bytes, truncated_jpeg
from tests.test_bundle import tiny_bundle  # noqa: F401 - the module-scoped bundle fixture

ODD = b"caf\xe9 \xff.jpg"  # latin-1 e-acute and a byte that is never UTF-8


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "roadwork_ml.serving.cli", *args],
        check=False,
        capture_output=True,
        timeout=timeout,
        env=env,
    )


def _awkward_folder(root: Path) -> Path:
    """3 good images (one with a non-UTF-8 name), a truncated JPEG, a dangling symlink and a
    text file, in a folder with a subfolder."""
    folder = root / "imgs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(jpeg_bytes(80, 60, seed=1))
    (folder / "sub" / "b.png").write_bytes(png_bytes(50, 50, seed=2))
    with open(os.fsencode(folder) + b"/" + ODD, "wb") as f:
        f.write(jpeg_bytes(80, 60, seed=3))
    (folder / "broken.jpg").write_bytes(truncated_jpeg())
    os.symlink("gone/away.jpg", folder / "dangling.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _reference(tmp_path: Path, embed_dim: int) -> Path:
    import pandas as pd

    from roadwork_ml.monitoring.projection import PCAProjection
    from roadwork_ml.monitoring.reference import ReferenceProfile

    rng = np.random.default_rng(0)
    emb = rng.normal(0, 1, (60, embed_dim))
    proj = PCAProjection.fit(emb, 4, seed=0)
    meta = pd.DataFrame({"time_of_day": ["day"] * 60, "weather": ["clear"] * 60, "source": ["natix"] * 60})
    ReferenceProfile.build(
        rng.uniform(0, 1, 60), rng.uniform(0, 1, (60, 7)), proj.transform(emb), meta, projection=proj
    ).save(tmp_path / "ref")
    return tmp_path / "ref"


def test_a_non_utf8_name_keeps_every_row_and_round_trips_and_a_dangling_symlink_is_reported(tiny_bundle, tmp_path):  # noqa: F811
    from roadwork_ml.monitoring.inference_log import read_log_range

    bundle, mv = tiny_bundle[0], tiny_bundle[1]
    folder = _awkward_folder(tmp_path)
    out, errors, logs = tmp_path / "pred.csv", tmp_path / "errors.jsonl", tmp_path / "logs"
    ref = _reference(tmp_path, mv.model.embed_dim)
    proc = _cli(
        "predict",
        "--bundle",
        str(bundle),
        str(folder),
        "--format",
        "csv",
        "--out",
        str(out),
        "--errors",
        str(errors),
        "--log-dir",
        str(logs),
        "--reference",
        str(ref),
        "--no-progress",
        "--batch-size",
        "2",
    )
    stderr = proc.stderr.decode("utf-8")
    assert proc.returncode == 0, stderr
    # CSV: every readable image, the odd one included, as valid UTF-8 with its raw bytes beside
    rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8"))))
    names = {r["image"].rsplit("/", 1)[-1]: r for r in rows}
    odd_text = escape_path(ODD)
    assert set(names) == {"a.jpg", "b.png", odd_text}, names.keys()
    assert odd_text == "caf\\xe9 \\xff.jpg"
    odd_row = names[odd_text]
    raw = base64.b64decode(odd_row["image_path_b64"])
    assert raw == os.fsencode(folder) + b"/" + ODD and Path(os.fsdecode(raw)).read_bytes() == jpeg_bytes(80, 60, seed=3)
    assert unescape_path(odd_row["image"]) == raw
    assert names["a.jpg"]["image_path_b64"] == "" and names["a.jpg"]["image"] == str(folder / "a.jpg")
    assert all(0 <= float(r["streetvision_probability"]) <= 1 for r in rows)
    # the errors file: the truncated JPEG and the dangling symlink, each with its reason
    bad = {
        Path(json.loads(x)["image"]).name: json.loads(x)["reason"]
        for x in errors.read_text(encoding="utf-8").splitlines()
    }
    assert set(bad) == {"broken.jpg", "dangling.jpg"}
    assert "dangling symlink" in bad["dangling.jpg"] and "gone/away.jpg" in bad["dangling.jpg"]
    # the monitoring day log holds the three images, the odd one under its escaped name
    df, _ = read_log_range(logs, date.today() - timedelta(days=1), date.today() + timedelta(days=1))
    assert len(df) == 3 and odd_row["image"] in set(df["image_id"])
    assert {unescape_path(i) for i in df["image_id"]} == {
        os.fsencode(folder / "a.jpg"),
        os.fsencode(folder / "sub" / "b.png"),
        raw,
    }
    # stderr accounts for every path the scan saw
    assert "3 image(s) predicted" in stderr and "2 could not be read" in stderr and "1 file(s) skipped" in stderr
    assert "BAD " + str(folder / "dangling.jpg") in stderr and "SKIPPED " + str(folder / "notes.txt") in stderr


def test_jsonl_to_stdout_is_strict_utf8_json_and_names_the_deployed_model(tiny_bundle, tmp_path):  # noqa: F811
    # the deployed layout: <deployed_model>/bundle + deployed.json naming this bundle's manifest hash
    deployed = tmp_path / "deployed_model"
    shutil.copytree(tiny_bundle[0], deployed / "bundle")
    content_hash = sha256_file(deployed / "bundle" / "manifest.json")
    (deployed / "deployed.json").write_text(
        json.dumps({"registered_model": "roadwork-classifier", "champion": "3", "bundle_manifest_sha256": content_hash})
    )
    folder = tmp_path / "imgs"
    folder.mkdir()
    with open(os.fsencode(folder) + b"/" + ODD, "wb") as f:
        f.write(jpeg_bytes(80, 60, seed=3))
    proc = _cli("predict", "--bundle", str(deployed / "bundle"), str(folder), "--no-progress")
    stderr = proc.stderr.decode("utf-8")
    assert proc.returncode == 0, stderr
    (line,) = proc.stdout.decode("utf-8").splitlines()
    rec = json.loads(line)
    rec["image"].encode("utf-8")  # a lone surrogate would raise here
    assert rec["image"].endswith("caf\\xe9 \\xff.jpg") and base64.b64decode(rec["image_path_b64"]).endswith(ODD)
    # the model is named as Dagster and MLflow name it: registry version + manifest hash
    assert f"model roadwork-classifier v3 (manifest sha256 {content_hash[:12]})" in stderr
    weights_hash = json.loads((deployed / "bundle" / "manifest.json").read_text())["files"]["model.safetensors"][
        "sha256"
    ][:12]
    assert weights_hash not in stderr


def test_exit_codes_tell_the_truth(tiny_bundle, tmp_path):  # noqa: F811
    bundle = str(tiny_bundle[0])
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.md").write_text("x")
    proc = _cli("predict", "--bundle", bundle, str(empty), "--no-progress")
    stderr = proc.stderr.decode("utf-8")
    assert (
        proc.returncode == 3
        and "no image found in" in stderr
        and ".jpg" in stderr
        and ".png" in stderr
        and "subfolders" in stderr
        and "readme.md" in stderr
    )
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "broken.jpg").write_bytes(truncated_jpeg())
    os.symlink("nowhere.png", unreadable / "dangling.png")
    proc = _cli(
        "predict", "--bundle", bundle, str(unreadable), str(tmp_path / "missing.jpg"), "--no-progress"
    )  # no --strict
    stderr = proc.stderr.decode("utf-8")
    assert proc.returncode == 3, stderr
    assert "0 image(s) predicted" in stderr and "3 could not be read" in stderr and "no image could be read" in stderr
    help_text = _cli("predict", "--help").stdout.decode("utf-8")
    for code in ("0 ", "1 ", "2 ", "3 "):
        assert f"\n  {code}" in help_text
    assert "exit status" in help_text and "image_path_b64" in help_text


def test_export_hf_into_a_non_empty_folder_is_one_clean_line_and_files_share_permissions(tiny_bundle, tmp_path):  # noqa: F811
    bundle = str(tiny_bundle[0])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    proc = _cli("export-hf", "--bundle", bundle, str(busy))
    stderr = proc.stderr.decode("utf-8")
    assert proc.returncode == 2 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert (
        stderr.startswith("roadwork export-hf: error:")
        and "not empty" in stderr
        and (busy / "keep.txt").read_text() == "mine"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no temporary folder left behind

    from roadwork_ml.serving.cli import main

    out = tmp_path / "hf"
    old = os.umask(0o022)
    try:
        assert main(["export-hf", "--bundle", bundle, str(out)]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert set(modes.values()) == {0o644}, modes  # the bundle's 0600 files and README.md alike
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    card = json.loads((out / "model_card.json").read_text())
    assert card["version"].endswith("+" + sha256_file(Path(bundle) / "manifest.json")[:12])
    readme = (out / "README.md").read_text()
    assert "| val_select_mcc | 0.5000 |" in readme and "unregistered bundle (manifest sha256" in readme


def test_a_flipped_weight_byte_of_the_same_size_is_refused(tiny_bundle, tmp_path):  # noqa: F811
    from roadwork_ml.artifacts import IntegrityError
    from roadwork_ml.export.bundle import verify_bundle
    from roadwork_ml.serving.predictor import BundlePredictor

    d = tmp_path / "b"
    shutil.copytree(tiny_bundle[0], d)
    weights = d / "model.safetensors"
    data = bytearray(weights.read_bytes())
    i = len(data) - 7  # inside the last tensor's bytes, past the safetensors JSON header
    data[i] ^= 0x01
    weights.write_bytes(bytes(data))
    assert weights.stat().st_size == json.loads((d / "manifest.json").read_text())["files"]["model.safetensors"]["size"]
    with pytest.raises(IntegrityError, match="model.safetensors"):
        verify_bundle(d)
    with pytest.raises(IntegrityError):
        BundlePredictor(d, backend="torch")
    proc = _cli("predict", "--bundle", str(d), str(d / "manifest.json"), "--no-progress")
    assert proc.returncode == 2 and b"model.safetensors" in proc.stderr and b"Traceback" not in proc.stderr
