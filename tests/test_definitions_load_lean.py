"""Loading the code location stays lean: every ``dagster`` CLI call, the webserver, the daemon
and each run worker import ``roadwork_assets.definitions`` and build the definitions, so the
asset modules import the ML stack (torch, timm, scikit-learn, ...) inside the bodies that use
it, never at module level. Checked in a fresh interpreter, which a test process's own imports
cannot contaminate."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

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
    env = {**os.environ, "ROADWORK_PROFILE": "demo", "DAGSTER_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(heavy=HEAVY)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"training_job", "daily_drift_job", "retrain_job", "rollback_job"} <= set(out["jobs"]), out["jobs"]
    assert out["sensors"] == ["drift_action_sensor", "reference_follows_champion"]
    assert out["schedules"] == ["daily_drift_schedule"]
    assert out["after_load"] == [], f"loading the definitions imported {out['after_load']}"
    # the check detects a heavy import: the trainer (imported by the phase-1 asset's body) pulls torch
    assert "torch" in out["after_trainer"], out["after_trainer"]
