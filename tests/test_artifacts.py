import json

import pytest

from roadwork_ml.artifacts import (
    IntegrityError,
    atomic_path,
    atomic_write_bytes,
    sha256_bytes,
    verify_dir,
    write_manifest,
)


def test_manifest_round_trip_and_tamper_detection(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"hello")
    (tmp_path / "sub").mkdir()
    atomic_write_bytes(tmp_path / "sub" / "b.txt", b"world")
    manifest = write_manifest(tmp_path, extra={"kind": "x"})
    assert manifest["files"]["a.bin"] == {"sha256": sha256_bytes(b"hello"), "size": 5}
    assert verify_dir(tmp_path)["kind"] == "x"
    (tmp_path / "sub" / "b.txt").write_bytes(b"w0rld")
    with pytest.raises(IntegrityError, match="b.txt"):
        verify_dir(tmp_path)
    (tmp_path / "sub" / "b.txt").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        verify_dir(tmp_path)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text(json.dumps({"ok": 1}))
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_unmanifested_directory_is_refused(tmp_path):
    with pytest.raises(IntegrityError, match="MANIFEST.json"):
        verify_dir(tmp_path)
