"""The artifact store: one location rule, an atomic version swap that survives a writer killed
with SIGKILL at any point, garbage collection that never deletes what a reader holds."""

import json
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from roadwork_assets.resources import ArtifactStore, resolve_profile
from roadwork_ml.artifacts import IntegrityError, atomic_write_bytes, verify_dir, write_manifest

REPO = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from roadwork_assets.resources import ArtifactStore, resolve_profile
    from roadwork_ml.artifacts import atomic_write_bytes, write_manifest

    store = ArtifactStore(root=sys.argv[1])
    profile = resolve_profile("tiny", ())
    start = int(sys.argv[2])
    for n in range(start, start + 1000):
        with store.staging("thing", "p1", profile=profile) as d:
            for i in range(6):  # ~1.5 MB per version: a kill lands mid-write often
                atomic_write_bytes(d / f"part{i}.bin", os.urandom(256 * 1024))
                time.sleep(0.02)  # a writer doing work between files
            (d / "n.txt").write_text(str(n))
            write_manifest(d, extra={"kind": "test", "n": n})
        print(n, flush=True)
    """
)


def _write(store: ArtifactStore, n: int, profile) -> None:
    with store.staging("thing", profile=profile) as d:
        atomic_write_bytes(d / "n.txt", str(n).encode())
        write_manifest(d, extra={"n": n})


def test_location_is_derived_from_key_and_partition(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    assert store.location("splits") == tmp_path / "splits"
    assert store.location("source_images", "natix") == tmp_path / "source_images" / "natix"
    with pytest.raises(FileNotFoundError, match="materialize asset 'source_images' partition 'roadwork' first"):
        store.read("source_images", "roadwork")


def test_swap_keeps_paths_records_the_profile_and_collects_old_versions(tmp_path):
    store = ArtifactStore(root=str(tmp_path), keep_versions=2)
    profile = resolve_profile("tiny", ("splits.class_share_tolerance=0.2",))
    for n in range(5):
        _write(store, n, profile)
    loc = store.location("thing")
    assert loc.is_symlink() and (loc / "n.txt").read_text() == "4"
    manifest = verify_dir(store.read("thing"))
    assert manifest["profile"] == {
        "name": "tiny",
        "source": "tiny",
        "overrides": ["splits.class_share_tolerance=0.2"],
        "sha256": profile.sha256,
    }
    versions = sorted(p.name for p in (tmp_path / ".versions" / "thing").iterdir() if p.is_dir())
    assert len(versions) == 2  # current + one previous; the three older ones are gone
    record = json.loads((tmp_path / ".versions" / "thing" / f"{versions[-1]}.json").read_text())
    assert record["profile"]["resolved"]["splits"]["class_share_tolerance"] == 0.2
    # a different resolved tree, a different hash; the same tree reached another way, the same
    assert resolve_profile("tiny", ()).sha256 != profile.sha256
    assert resolve_profile("tiny", ("splits.class_share_tolerance=0.2", "train.epochs=1")).sha256 == profile.sha256


def test_a_held_version_is_not_collected(tmp_path):
    store = ArtifactStore(root=str(tmp_path), keep_versions=1)
    profile = resolve_profile("tiny", ())
    _write(store, 0, profile)
    held = store.read("thing")  # this process now holds version 0
    code = (
        "import sys\nfrom roadwork_assets.resources import ArtifactStore, resolve_profile\nfrom tests.test_artifact_store import _write\n"
        "s = ArtifactStore(root=sys.argv[1], keep_versions=1)\nfor n in (1, 2, 3): _write(s, n, resolve_profile('tiny', ()))\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert (held / "n.txt").read_text() == "0" and verify_dir(held)["n"] == 0  # still there for its reader
    assert (store.location("thing") / "n.txt").read_text() == "3"
    store.read("thing")  # the reader moves on to the new version and releases the old one
    _write(store, 4, profile)
    assert not held.exists()


def test_sigkilled_writer_never_leaves_a_reader_without_a_complete_version(tmp_path):
    """A writer process is killed with SIGKILL at seeded random moments, 20 times. After every
    kill (and while it runs) a reader finds a complete, hash-verified version, and versions
    never go backwards; a last clean write collects the leftovers of the killed writers."""
    rng = random.Random(20261129)
    store = ArtifactStore(root=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    seen, start, kills_mid_write = -1, 0, 0
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "store"), str(start)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        # wait for the writer's first finished version (start-up time depends on the machine's
        # load), then kill it at a random moment of the next 0.6 s: ~4 versions of writing
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the writer did not start within 120 s"
        first = proc.stdout.readline()
        deadline = time.monotonic() + rng.uniform(0.0, 0.6)
        reader = ArtifactStore(root=str(tmp_path / "store"))
        while time.monotonic() < deadline:
            if reader.exists("thing", "p1"):
                d = reader.read("thing", "p1")
                manifest = verify_dir(d)
                assert int((d / "n.txt").read_text()) == manifest["n"] >= seen
                seen = manifest["n"]
            time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        done = [int(x) for x in (first + out).split()]
        reader = ArtifactStore(root=str(tmp_path / "store"))
        if not done:
            assert not reader.exists("thing", "p1") or start > 0
            continue
        d = reader.read("thing", "p1")
        manifest = verify_dir(d)  # complete and hash-verified
        n = manifest["n"]
        # the pointer holds the last finished version, or the one whose swap happened just
        # before the kill (finished but not yet printed)
        assert n in (done[-1], done[-1] + 1) and n >= seen, (n, done[-1], seen)
        vroot = tmp_path / "store" / ".versions" / "thing" / "p1"
        kills_mid_write += any(not (vroot / f"{p.name}.json").exists() for p in vroot.iterdir() if p.is_dir())
        seen, start = n, n + 1
    assert seen >= 20 and kills_mid_write >= 5  # the kills really landed in the middle of writes
    # a clean writer collects what the killed ones left
    store = ArtifactStore(root=str(tmp_path / "store"))
    with store.staging("thing", "p1", profile=resolve_profile("tiny", ())) as d:
        (d / "n.txt").write_text(str(seen + 1))
        write_manifest(d, extra={"n": seen + 1})
    vroot = tmp_path / "store" / ".versions" / "thing" / "p1"
    assert len([p for p in vroot.iterdir() if p.is_dir()]) <= 3  # current, previous, at most one held by this process
    assert verify_dir(store.read("thing", "p1"))["n"] == seen + 1


def test_tampered_version_is_refused(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    _write(store, 1, resolve_profile("tiny", ()))
    (store.read("thing") / "n.txt").write_text("9")
    with pytest.raises(IntegrityError, match="n.txt"):
        verify_dir(store.read("thing"))


def test_an_edited_profile_file_is_resolved_again(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("extends: tiny\nname: edited\ntrain: {epochs: 1}\n")
    first = resolve_profile(str(path), ())
    assert resolve_profile(str(path), ()) is first  # cached while nothing changed
    path.write_text("extends: tiny\nname: edited\ntrain: {epochs: 2}\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    second = resolve_profile(str(path), ())
    assert second.profile.train.epochs == 2 and second.sha256 != first.sha256
