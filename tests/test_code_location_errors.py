"""Loading the code location, each time in a fresh interpreter (a test process's own imports
cannot contaminate it): a bad profile says what is wrong first, not at the end of an import
traceback (issue 16 item 5), through the real ``dagster`` CLI; and loading stays lean: every
``dagster`` CLI call, the webserver, the daemon and each run worker import
``roadwork_assets.definitions`` and build the definitions, so the asset modules import the ML
stack (torch, timm, scikit-learn, ...) inside the bodies that use it, never at module level."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load(args: list[str], profile: str, home: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    """``python *args`` in the repository with the code location's environment."""
    env = {**os.environ, "ROADWORK_PROFILE": profile, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


DAGSTER_ASSET_LIST = ["-m", "dagster", "asset", "list", "-m", "roadwork_assets.definitions"]


def test_a_typo_in_the_profile_heads_the_code_location_load_error(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("extends: tiny\ntrain:\n  epohcs: 2\n")
    (tmp_path / "home").mkdir()
    proc = _load(DAGSTER_ASSET_LIST, str(bad), tmp_path / "home")
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
    proc = _load(DAGSTER_ASSET_LIST, "tiny", tmp_path / "home")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bundle" in proc.stdout.split() and "configuration error" not in proc.stderr


HEAVY = (
    "torch",
    "timm",
    "torchvision",
    "peft",
    "transformers",
    "sklearn",
    "scipy",
    "matplotlib",
    "cv2",
    "optuna",
    "onnx",
    "onnxruntime",
    "safetensors.torch",
    "mlflow",
)

SCRIPT = """
import json, sys
heavy = {heavy!r}
loaded = lambda: [m for m in heavy if m in sys.modules]
import roadwork_assets.definitions as d
defs = d.build_definitions("demo")
jobs = sorted(j.name for j in defs.resolve_all_job_defs())
repo = defs.get_repository_def()
sensors = sorted(s.name for s in repo.sensor_defs)
schedules = sorted(s.name for s in repo.schedule_defs)
after_load = loaded()
import roadwork_ml.training.trainer  # what phase1_checkpoint's body imports: the check must see it
print(json.dumps({{"jobs": jobs, "sensors": sensors, "schedules": schedules,
                   "after_load": after_load, "after_trainer": loaded()}}))
"""


def test_building_the_definitions_imports_no_ml_stack(tmp_path):
    proc = _load(["-c", SCRIPT.format(heavy=HEAVY)], "demo", tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"training_job", "daily_drift_job", "retrain_job", "rollback_job"} <= set(out["jobs"]), out["jobs"]
    assert out["sensors"] == ["drift_action_sensor", "reference_follows_champion"]
    assert out["schedules"] == ["daily_drift_schedule"]
    assert out["after_load"] == [], f"loading the definitions imported {out['after_load']}"
    # the check detects a heavy import: the trainer (imported by the phase-1 asset's body) pulls torch
    assert "torch" in out["after_trainer"], out["after_trainer"]
