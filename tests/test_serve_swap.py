"""Hot swaps under load: the server follows the MLflow registry's ``champion`` alias (what
``deployed_model`` moves on promotion and rollback). A bounded load loop runs while the alias
moves: no request fails, each client sees the version change exactly once, and a tampered
champion is refused (hashes verified) while the old one keeps serving."""

from __future__ import annotations

import itertools
import json
import shutil
import threading
import time

import numpy as np
import pytest
import requests

from tests.fixtures_data import jpeg_bytes
from tests.serving_fixtures import (
    auth_headers,
    build_tiny_bundle,
    register_bundle,
    set_champion,
    start_server,
    triton_client,
)

MODEL = "roadwork-classifier"
MAX_REQUESTS_PER_CLIENT = 1500  # the loop is bounded in count ...
MAX_SECONDS = 150  # ... and in time


def _infer(client, blob: bytes):
    import tritonclient.http as hc

    inp = hc.InferInput("image_bytes", [1], "BYTES")
    inp.set_data_from_numpy(np.array([blob], dtype=object))
    res = client.infer(
        "roadwork",
        [inp],
        outputs=[hc.InferRequestedOutput("model_version"), hc.InferRequestedOutput("probability")],
        headers=auth_headers(),
    )
    return res.as_numpy("model_version")[0].decode(), float(res.as_numpy("probability")[0])


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    b1 = build_tiny_bundle(tmp / "b1", seed=1)
    b2 = build_tiny_bundle(tmp / "b2", seed=2)
    tampered = shutil.copytree(b2, tmp / "b3")
    cal = json.loads((tampered / "calibrator.json").read_text())
    (tampered / "calibrator.json").write_text(json.dumps(cal) + " ")  # one byte more than the manifest says
    versions = [register_bundle(uri, MODEL, b, tmp / "mlartifacts") for b in (b1, b2, tampered)]
    set_champion(uri, MODEL, versions[0])
    return uri, versions, tmp


def test_champion_moves_under_load_with_zero_failures_and_one_version_change(registry):
    uri, (v1, v2, v3), tmp = registry
    server = start_server(
        [
            "--tracking-uri",
            uri,
            "--registered-model",
            MODEL,
            "--profile",
            "tiny",
            "--set",
            "serving.champion_poll_seconds=0.5",
            "--cache-dir",
            str(tmp / "cache"),
        ],
        tmp,
    )
    try:
        stop = threading.Event()
        seen: list[list[tuple[float, str]]] = [[] for _ in range(3)]
        failures: list[str] = []
        blobs = [jpeg_bytes(64, 48, seed=i) for i in range(8)]

        def client_loop(k: int) -> None:
            client = triton_client(server)
            t_end = time.monotonic() + MAX_SECONDS
            for i in range(MAX_REQUESTS_PER_CLIENT):
                if stop.is_set() or time.monotonic() > t_end:
                    return
                try:
                    version, p = _infer(client, blobs[(i + k) % len(blobs)])
                    assert np.isfinite(p)
                    seen[k].append((time.monotonic(), version))
                except Exception as exc:  # noqa: BLE001 - every failure is recorded and asserted on
                    failures.append(f"client {k} request {i}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()

        def wait_for(pred, timeout: float) -> bool:
            t_end = time.monotonic() + timeout
            while time.monotonic() < t_end and not pred():
                time.sleep(0.05)
            return pred()

        assert wait_for(lambda: all(len(s) >= 20 for s in seen), 60), "the load loop did not get going"
        set_champion(uri, MODEL, v2)  # a promotion
        assert wait_for(lambda: all(sum(v == f"{MODEL}/{v2}" for _, v in s) >= 20 for s in seen), 60), (
            "the new champion was not served"
        )
        set_champion(uri, MODEL, v3)  # a tampered bundle: refused, v2 keeps serving
        # wait for the refusal itself: 30 requests alone can finish before the poller has even
        # downloaded and verified the tampered copy on a loaded machine
        assert wait_for(lambda: "refused, still serving" in server.output(), 60), (
            "the tampered champion was not refused"
        )
        n_before = [len(s) for s in seen]
        assert wait_for(lambda: all(len(s) >= n + 30 for s, n in zip(seen, n_before, strict=False)), 60)
        stop.set()
        for t in threads:
            t.join(60)

        assert failures == []
        for s in seen:
            versions = [v for _, v in s]
            changes = sum(a != b for a, b in itertools.pairwise(versions))
            assert versions[0] == f"{MODEL}/{v1}" and versions[-1] == f"{MODEL}/{v2}" and changes == 1, versions
        metrics = requests.get(f"http://{server.url}/metrics", headers=auth_headers(), timeout=10).text
        assert "roadwork_model_swaps_total 1.0" in metrics and "roadwork_model_swap_failures_total 1.0" in metrics
        assert f'log_version="{MODEL}/{v2}"' in metrics
        meta = triton_client(server).get_model_metadata("roadwork", headers=auth_headers())
        assert meta["versions"] == [v2]
        assert "refused, still serving" in server.output() and "IntegrityError" in server.output()
        assert len(list((tmp / "cache").iterdir())) == 1  # the old champion's copy was removed after the swap
    finally:
        server.stop()
