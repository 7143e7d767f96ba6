"""verify_bundle on a minimal hand-made bundle (no model needed): the content hash decides,
and a damaged or hostile manifest is an IntegrityError, never a crash or a path outside."""

from __future__ import annotations

import json

import pytest

from roadwork_ml.artifacts import IntegrityError, sha256_file
from roadwork_ml.export.bundle import SCHEMA_VERSION, verify_bundle


def _bundle(tmp_path, **manifest_changes):
    d = tmp_path / "b"
    d.mkdir()
    (d / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (d / "policy.json").write_text(json.dumps({"kind": "thresholds"}))
    files = {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size} for p in d.iterdir()}
    manifest = {"schema_version": SCHEMA_VERSION, "active_policy": "thresholds", "files": files, **manifest_changes}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_a_same_size_byte_flip_anywhere_in_the_weights_is_refused(tmp_path):
    d = _bundle(tmp_path)
    assert verify_bundle(d)["active_policy"] == "thresholds"
    data = bytearray((d / "model.safetensors").read_bytes())
    for i in (0, len(data) // 2, len(data) - 1):
        flipped = data.copy()
        flipped[i] ^= 0x80
        (d / "model.safetensors").write_bytes(bytes(flipped))
        with pytest.raises(IntegrityError, match="sha256"):
            verify_bundle(d)
    (d / "model.safetensors").write_bytes(bytes(data))
    verify_bundle(d)


@pytest.mark.parametrize(
    "manifest, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "schema_version"),
        (
            json.dumps(
                {"schema_version": SCHEMA_VERSION, "active_policy": "thresholds", "files": {"policy.json": "abc"}}
            ),
            "sha256 and size",
        ),
        (
            json.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "active_policy": "thresholds",
                    "files": {"../secret": {"sha256": "0" * 64, "size": 1}},
                }
            ),
            "outside",
        ),
    ],
)
def test_a_damaged_or_hostile_manifest_is_an_integrity_error(tmp_path, manifest, message):
    d = _bundle(tmp_path)
    (d / "manifest.json").write_text(manifest)
    with pytest.raises(IntegrityError, match=message):
        verify_bundle(d)


def test_a_bundle_without_policy_json_is_refused(tmp_path):
    d = _bundle(tmp_path)
    (d / "policy.json").unlink()
    m = json.loads((d / "manifest.json").read_text())
    del m["files"]["policy.json"]
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match="policy.json is missing"):
        verify_bundle(d)
