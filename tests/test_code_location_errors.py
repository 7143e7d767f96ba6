"""A code location loaded with a bad profile says what is wrong first, not at the end of an
import traceback (issue 16 item 5): the real ``dagster`` CLI in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_typo_in_the_profile_heads_the_code_location_load_error(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("extends: tiny\ntrain:\n  epohcs: 2\n")
    env = {**os.environ, "ROADWORK_PROFILE": str(bad), "DAGSTER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    (tmp_path / "home").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "list", "-m", "roadwork_assets.definitions"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode != 0
    head = proc.stderr.splitlines()[:3]
    assert head[0].startswith("roadwork: configuration error: profile"), proc.stderr[:2000]
    assert str(bad) in head[0]
    assert any("train.epohcs" in line and "did you mean 'epochs'" in line for line in head), head
    assert "roadwork check-profile" in "\n".join(head)
    # the traceback still follows (nothing is swallowed), but after the message
    assert proc.stderr.index("configuration error") < proc.stderr.index("Traceback")


def test_a_valid_profile_loads_and_lists_the_assets(tmp_path):
    (tmp_path / "home").mkdir()
    env = {**os.environ, "ROADWORK_PROFILE": "tiny", "DAGSTER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "list", "-m", "roadwork_assets.definitions"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bundle" in proc.stdout.split() and "configuration error" not in proc.stderr
