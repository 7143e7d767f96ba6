"""Helpers of the model-server tests: tiny bundles, a server subprocess on loopback, a
registry champion, a reference profile. Plain functions (no pytest fixtures)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789abcdef"


def build_tiny_bundle(directory: Path, seed: int = 0, profile: str = "tiny") -> Path:
    """A complete bundle (random-init model of ``profile``, a fitted thresholds policy) in
    ``directory``; ``seed`` changes the weights, so two seeds give two model versions."""
    import torch

    from roadwork_ml.config import load_profile
    from roadwork_ml.contracts import Split
    from roadwork_ml.export.bundle import write_bundle
    from roadwork_ml.export.onnx_export import export_onnx
    from roadwork_ml.models import build_classifier
    from roadwork_ml.models.inference import multiview_model
    from roadwork_ml.policy.calibration import TemperatureScaling
    from roadwork_ml.policy.conformal import SplitConformalLAC
    from roadwork_ml.policy.decision import DecisionPolicy
    from roadwork_ml.policy.thresholds import fit_thresholds

    torch.manual_seed(seed)
    prof = load_profile(profile)
    model = build_classifier(prof.model).eval()
    choice = {"multi_view": prof.inference.multi_view, "aggregator": "mean", "top_k": 0}
    mv = multiview_model(model, prof.model, prof.inference, choice, None)
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.integers(0, 2, n)
    logits = np.stack([np.zeros(n), (2 * y - 1) * 1.5 + rng.normal(0, 1.5, n)], 1)
    cal = TemperatureScaling().fit(logits, y, split=Split.VAL_CALIB)
    raw1 = torch.from_numpy(logits).softmax(-1).numpy()[:, 1]
    th = fit_thresholds(raw1, y, Split.VAL_CALIB, 0.3, 0.2, 201)
    lac = SplitConformalLAC(0.1).fit(cal.predict_proba(logits), y, split=Split.VAL_CALIB)
    policy = DecisionPolicy(cal, "thresholds", th.to_dict(), th.decision_cut_, lac, None)
    write_bundle(
        directory,
        mv,
        prof.model,
        prof.inference,
        choice,
        policy,
        profile=prof.model_dump(mode="json"),
        splits_fingerprint="0" * 64,
        metrics={"seed": float(seed)},
        onnx_export=lambda m, p, s: export_onnx(m, p, s).to_dict(),
    )
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict:
    e = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ROADWORK_SERVE_TOKEN": TOKEN,
        "OMP_NUM_THREADS": "1",
    }
    e.update(extra)
    return e


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (uvicorn's clean shutdown), then wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def start_server(
    args: list[str],
    tmp: Path,
    extra_env: dict | None = None,
    ready_timeout: float = 120,
) -> Server:
    """``roadwork serve ARGS --port <free>`` on 127.0.0.1; waits until /v2/health/ready answers 200."""
    import urllib.error
    import urllib.request

    port = free_port()
    log_path = tmp / f"server-{port}.log"
    out = open(log_path, "w")  # noqa: SIM115 - the server process writes it until it exits
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "roadwork_ml.serving.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        cwd=ROOT,
        env=env(**(extra_env or {})),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    server = Server(proc, port, log_path)
    t_end = time.monotonic() + ready_timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{server.output()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the server was not ready within {ready_timeout} s:\n{server.output()}")


def register_bundle(tracking_uri: str, model_name: str, bundle: Path, artifact_root: Path) -> str:
    """Log ``bundle`` as a run's ``bundle`` artifact and register it as a new version of
    ``model_name`` (tagged with its manifest hash, like deployed_model does); returns the version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from roadwork_ml.artifacts import sha256_file
    from roadwork_ml.serving.server.swap import TAG_MANIFEST

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp = client.get_experiment_by_name("serve-test")
    exp_id = (
        exp.experiment_id if exp else client.create_experiment("serve-test", artifact_location=artifact_root.as_uri())
    )
    run = client.create_run(exp_id)
    client.log_artifacts(run.info.run_id, str(bundle), "bundle")
    client.set_terminated(run.info.run_id)
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name)
    mv = client.create_model_version(
        model_name,
        source=f"{run.info.artifact_uri}/bundle",
        run_id=run.info.run_id,
        tags={TAG_MANIFEST: sha256_file(bundle / "manifest.json")},
    )
    return str(mv.version)


def set_champion(tracking_uri: str, model_name: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(
        model_name, "champion", version
    )


def triton_client(server: Server, **kw):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(server.url, **kw)


def auth_headers() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
