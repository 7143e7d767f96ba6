"""The README's build sequence through the real `dagster` CLI, as subprocesses, on the tiny
profile from an empty DAGSTER_HOME; then `--select 'bundle+'` re-runs the tail alone."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAGSTER = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "roadwork_assets.definitions"]
# the Makefile's selection for the tiny profile (roadwork_assets.selection), spelled out
TAIL = (
    'key:"splits"+ and not key:"production_traffic" and not key:"drift_report"'
    ' and not key:"explora_checkpoint" and not key:"hard_negatives" and not key:"hpo_study"'
)


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(DAGSTER + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_readme_sequence_then_bundle_plus(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "ROADWORK_PROFILE": "tiny", "MPLBACKEND": "Agg"}
    for source in ("natix", "roadwork", "mapillary"):
        _run(["--select", "source_images", "--partition", source], env)
    _run(["--select", TAIL], env)
    art = home / "artifacts"
    first = json.loads((art / "bundle" / "manifest.json").read_text())
    deployed = json.loads((art / "deployed_model" / "deployed.json").read_text())
    assert deployed["decision"] == "promoted" and deployed["version"] == "1"

    proc = _run(["--select", "bundle+"], env)
    log = proc.stdout + proc.stderr
    # the tail ran (bundle and its children), nothing upstream of it
    for step in ("bundle", "evaluation_report", "deployed_model", "triton_repository", "tensorrt_engine"):
        assert f'Started execution of step "{step}"' in log
    for step in ("phase1_checkpoint", "view_aggregator", "calibrator", "splits"):
        assert f'Started execution of step "{step}"' not in log
    second = json.loads((art / "bundle" / "manifest.json").read_text())
    assert second["files"]["model.safetensors"] == first["files"]["model.safetensors"]  # same weights, rebuilt bundle
    assert second["created"] >= first["created"]
    again = json.loads((art / "deployed_model" / "deployed.json").read_text())
    # the same content rebuilt: registered as version 2, judged by content — the champion's own,
    # so nothing is promoted (the champion, and the reference built for it, stay as they were)
    assert again["version"] == "2" and again["decision"] == "unchanged" and again["champion"] == "1", again["reason"]
    assert again["content_verdict"]["repeats"] == "champion" and again["content_id"] == deployed["content_id"]
    assert "tensorrt is not installed" in log or "CUDA" in log  # the skip reason reaches the logs
    # every artifact path stayed a stable location while versions were swapped under it
    assert (art / "bundle").is_symlink() and len(
        [p for p in (art / ".versions" / "bundle").iterdir() if p.is_dir()]
    ) <= 2
