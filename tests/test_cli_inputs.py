"""File names as text (escape / unescape / base64), the folder scan that accounts for every
path, and the model identity the CLI prints — pure functions, no model."""

from __future__ import annotations

import base64
import json
import os

import pytest

from roadwork_ml.export.identity import ModelIdentity, bundle_identity, identity_from_record
from roadwork_ml.serving.inputs import escape_path, path_b64, scan_inputs, unescape_path

NAMES = [
    b"plain.jpg",
    "café.jpg".encode(),
    b"caf\xe9.jpg",
    b"back\\slash.jpg",
    b"caf\\xe9.jpg",
    b"\xff\xfe\\\\x41",
    "日本\u00e9".encode() + b"\x80",
]


@pytest.mark.parametrize("raw", NAMES)
def test_escaped_names_are_utf8_text_and_round_trip(raw):
    text = escape_path(os.fsdecode(raw))
    text.encode("utf-8")  # never a lone surrogate
    assert unescape_path(text) == raw
    b64 = path_b64(os.fsdecode(raw))
    assert (b64 is None) == (text.encode("utf-8") == raw)
    if b64 is not None:
        assert base64.b64decode(b64) == raw


def test_the_escape_is_one_to_one_and_keeps_ordinary_names():
    texts = [escape_path(os.fsdecode(r)) for r in NAMES]
    assert len(set(texts)) == len(NAMES)  # b"caf\xe9.jpg" and the literal "caf\\xe9.jpg" differ
    assert escape_path("dir/café.jpg") == "dir/café.jpg" and escape_path(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"


def test_scan_reports_every_path_it_sees(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.JPG").write_bytes(b"x")
    (tmp_path / "sub" / "b.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    os.symlink("missing.jpg", tmp_path / "dangling.jpg")
    os.symlink("missing.jpg", tmp_path / "dangling_link")  # no suffix, but its target is an image name
    os.symlink("missing.txt", tmp_path / "dangling.txt")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")  # a symlinked folder pointing back up
    os.mkfifo(tmp_path / "pipe.jpg")
    scan = scan_inputs([tmp_path, tmp_path / "given.jpg"])
    name = {str(p): os.path.relpath(p, tmp_path) for p in [*scan.files, *scan.skipped, *(p for p, _ in scan.problems)]}
    assert [name[p] for p in scan.files] == ["a.JPG", "sub/b.png", "given.jpg"]
    assert sorted(name[p] for p in scan.skipped) == ["dangling.txt", "notes.txt"]
    problems = {name[p]: why for p, why in scan.problems}
    assert set(problems) == {"dangling.jpg", "dangling_link", "pipe.jpg", "sub/loop"}
    assert "dangling symlink" in problems["dangling.jpg"] and "missing.jpg" in problems["dangling_link"]
    assert "not a regular file" in problems["pipe.jpg"] and "loop" in problems["sub/loop"]


def test_scan_follows_a_symlinked_folder_once(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "x.jpg").write_bytes(b"x")
    top = tmp_path / "top"
    top.mkdir()
    os.symlink(real, top / "linked")
    scan = scan_inputs([top])
    assert [os.path.relpath(p, top) for p in scan.files] == ["linked/x.jpg"] and not scan.problems


H = "ab" * 32


def test_model_identity_forms_and_validation():
    reg = ModelIdentity(H, "roadwork-classifier", "3")
    assert reg.tag == "roadwork-classifier/3" and reg.label == f"roadwork-classifier v3 (manifest sha256 {H[:12]})"
    anon = ModelIdentity(H)
    assert anon.tag == f"sha256:{H[:12]}" and anon.label.startswith("unregistered bundle") and not anon.registered
    assert json.loads(json.dumps(reg.to_dict()))["version"] == "3"
    with pytest.raises(ValueError, match="64 lowercase hex"):
        ModelIdentity("abc")
    with pytest.raises(ValueError, match="together"):
        ModelIdentity(H, "roadwork-classifier", None)


def test_the_registry_version_is_used_only_for_the_bundle_the_record_names(tmp_path):
    record = {"registered_model": "m", "champion": "7", "bundle_manifest_sha256": H}
    assert identity_from_record(H, record).version == "7"
    assert identity_from_record("cd" * 32, record).version is None  # another bundle: never guessed
    assert identity_from_record(H, None).version is None
    d = tmp_path / "deployed" / "bundle"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text('{"files": {}}')
    from roadwork_ml.artifacts import sha256_file

    h = sha256_file(d / "manifest.json")
    assert bundle_identity(d) == ModelIdentity(h)
    (d.parent / "deployed.json").write_text(json.dumps({**record, "bundle_manifest_sha256": h}))
    assert bundle_identity(d) == ModelIdentity(h, "m", "7")
    (d.parent / "deployed.json").write_text("{not json")
    assert bundle_identity(d) == ModelIdentity(h)


def test_csv_rows_keep_zeros_blank_missing_values_and_escape_names():
    import csv
    import io

    from roadwork_ml.policy.uncertainty import FEATURE_NAMES
    from roadwork_ml.serving.cli import CSV_COLUMNS, _write_rows

    rec = {
        "image": os.fsdecode(b"x\xe9.jpg"),
        "probability": 0.0,
        "streetvision_probability": 0.0,
        "decision": "no_roadwork",
        "prediction_set": ["no_roadwork"],
        "features": dict.fromkeys(FEATURE_NAMES, 0.0),
    }  # no gate_confidence
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    _write_rows([rec], "csv", buf, writer)
    (row,) = csv.DictReader(io.StringIO(buf.getvalue()), fieldnames=CSV_COLUMNS)
    assert row["probability"] == "0.0" and row["streetvision_probability"] == "0.0" and row["gate_confidence"] == ""
    assert row["image"] == "x\\xe9.jpg" and base64.b64decode(row["image_path_b64"]) == b"x\xe9.jpg"
    buf = io.StringIO()
    _write_rows([rec], "jsonl", buf, None)
    assert json.loads(buf.getvalue())["image_path_b64"] == base64.b64encode(b"x\xe9.jpg").decode()


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    # chmod cannot deny root (these tests may run as root), so the OS refusal is simulated
    from roadwork_ml.serving import inputs

    (tmp_path / "locked").mkdir()
    (tmp_path / "ok.jpg").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(path):
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(inputs.os, "scandir", scandir)
    scan = scan_inputs([tmp_path])
    assert [os.path.basename(p) for p in scan.files] == ["ok.jpg"]
    ((path, why),) = scan.problems
    assert os.path.basename(path) == "locked" and "cannot list folder" in why and "Permission denied" in why
