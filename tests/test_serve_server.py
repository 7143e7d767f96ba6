"""``roadwork serve`` as a real process on 127.0.0.1 with a tiny bundle: the KServe v2 protocol
through an unmodified ``tritonclient.http`` (answers equal BundlePredictor's offline ones),
``POST /predict``, the bearer token, 413 / 415 / 422 / 504, no stack traces, a bad image
never failing its neighbours, ``/metrics`` scraped by a real Prometheus (with the alert rules
loaded, and every Grafana panel's query run through it), and TensorRT refused clearly."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import requests

from tests.fixtures_data import bomb_png, jpeg_bytes, png_bytes, truncated_jpeg
from tests.serving_fixtures import (
    ROOT,
    TOKEN,
    auth_headers,
    build_tiny_bundle,
    env,
    free_port,
    start_server,
    triton_client,
)

DEPLOY = ROOT / "deploy"
MAX_BYTES = 400_000
DELAY_US = 150_000  # long enough that concurrent requests share a dynamic batch


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("serve") / "bundle", seed=0)


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    s = start_server(
        [
            "--bundle",
            str(bundle),
            "--profile",
            "tiny",
            "--set",
            f"serving.max_request_bytes={MAX_BYTES}",
            "--set",
            f"export.triton.max_queue_delay_us={DELAY_US}",
            "--set",
            "export.triton.preferred_batch_sizes=[]",
            "--set",
            "export.triton.max_batch_size=16",
        ],
        tmp,
    )
    yield s
    assert s.stop() in (0, -signal.SIGTERM), s.output()  # uvicorn re-raises the signal after a clean shutdown
    assert "Application shutdown complete" in s.output() and "Traceback" not in s.output()


def _images(n: int, offset: int = 0) -> list[bytes]:
    return [
        jpeg_bytes(64 + 8 * (i % 3), 48 + 8 * (i % 2), seed=offset + i)
        if i % 2 == 0
        else png_bytes(56, 40, seed=offset + i)
        for i in range(n)
    ]


def _infer_bytes(client, blobs: list[bytes], outputs=None, headers=None, **kw):
    import tritonclient.http as hc

    inp = hc.InferInput("image_bytes", [len(blobs)], "BYTES")
    inp.set_data_from_numpy(np.array(blobs, dtype=object))
    outs = [hc.InferRequestedOutput(o) for o in outputs] if outputs else None
    return client.infer("roadwork", [inp], outputs=outs, headers=auth_headers() if headers is None else headers, **kw)


def _url(server, path: str) -> str:
    return f"http://{server.url}{path}"


def _metrics(server) -> str:
    return requests.get(_url(server, "/metrics"), headers=auth_headers(), timeout=10).text


def _sample(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- protocol --------------------------------------------------------------------------------
def test_tritonclient_metadata_and_answers_equal_the_offline_predictor(server, bundle):
    import tritonclient.http as hc

    from roadwork_ml.serving.predictor import BundlePredictor

    client = triton_client(server)
    assert (
        client.is_server_live()
        and client.is_server_ready()
        and client.is_model_ready("roadwork", headers=auth_headers())
    )
    meta = client.get_model_metadata("roadwork", headers=auth_headers())
    offline = BundlePredictor(bundle, backend="onnx")
    assert meta["versions"] == [offline.model_version]
    assert {i["name"]: i["datatype"] for i in meta["inputs"]}["image_bytes"] == "BYTES"
    config = client.get_model_config("roadwork", headers=auth_headers())
    assert config["max_batch_size"] == 16 and config["dynamic_batching"]["max_queue_delay_microseconds"] == DELAY_US

    blobs = _images(5)
    res = _infer_bytes(
        client,
        blobs,
        outputs=[
            "probability",
            "decision",
            "prediction_set",
            "streetvision_probability",
            "model_version",
            "features",
            "error",
        ],
    )
    import torch

    ref = offline.predict_tensor(torch.stack([offline.load_image(b) for b in blobs]))
    np.testing.assert_allclose(res.as_numpy("probability"), ref.decisions.calibrated[:, 1], atol=1e-5)
    np.testing.assert_allclose(res.as_numpy("streetvision_probability"), ref.decisions.streetvision, atol=1e-5)
    np.testing.assert_allclose(res.as_numpy("features"), ref.features, atol=1e-4)
    recs = ref.records()
    assert [d.decode() for d in res.as_numpy("decision")] == [r["decision"] for r in recs]
    assert [s.decode().split("|") if s else [] for s in res.as_numpy("prediction_set")] == [
        r["prediction_set"] for r in recs
    ]
    assert set(res.as_numpy("model_version")) == {offline.model_version.encode()} and set(res.as_numpy("error")) == {
        b""
    }

    # the ready-made FP32 tensor input, the same images: the same answers; JSON (non-binary) outputs too
    x = torch.stack([offline.load_image(b) for b in blobs]).float().div(255).numpy()
    inp = hc.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res2 = client.infer(
        "roadwork",
        [inp],
        outputs=[hc.InferRequestedOutput("probability", binary_data=False), hc.InferRequestedOutput("logits")],
        headers=auth_headers(),
    )
    np.testing.assert_allclose(res2.as_numpy("probability"), ref.decisions.calibrated[:, 1], atol=1e-5)
    np.testing.assert_allclose(res2.as_numpy("logits"), ref.logits, atol=1e-4)
    # tritonclient's gzip request compression
    res_gz = _infer_bytes(client, blobs, outputs=["probability"], request_compression_algorithm="gzip")
    np.testing.assert_allclose(res_gz.as_numpy("probability"), ref.decisions.calibrated[:, 1], atol=1e-5)
    # default outputs (none named): everything but the features, in binary
    res3 = _infer_bytes(client, blobs[:1])
    assert {o["name"] for o in res3.get_response()["outputs"]} == {
        "probability",
        "streetvision_probability",
        "decision",
        "prediction_set",
        "model_version",
        "error",
        "logits",
    }


def test_predict_multipart_for_curl(server, bundle):
    from roadwork_ml.serving.predictor import BundlePredictor

    blobs = _images(3, offset=20)
    files = [("file", (f"img{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)] + [
        ("file", ("broken.jpg", truncated_jpeg(), "image/jpeg"))
    ]
    r = requests.post(_url(server, "/predict?features=true"), files=files, headers=auth_headers(), timeout=30)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    import torch

    p = BundlePredictor(bundle, backend="onnx")
    ref = p.predict_tensor(torch.stack([p.load_image(b) for b in blobs])).records([f"img{i}.jpg" for i in range(3)])
    for got, want in zip(results[:3], ref, strict=False):
        assert (
            got["image"] == want["image"]
            and got["decision"] == want["decision"]
            and got["prediction_set"] == want["prediction_set"]
        )
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-5) and set(got["features"]) == set(
            want["features"]
        )
    assert results[3]["image"] == "broken.jpg" and results[3]["error"].startswith("truncated")


# -- access and bad input ----------------------------------------------------------------------
def test_bearer_token_guards_everything_but_health(server):
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert requests.get(_url(server, path), timeout=10).status_code == 200
    wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "X"}
    for headers in ({}, wrong, {"Authorization": TOKEN}):
        assert requests.get(_url(server, "/v2/models/roadwork"), headers=headers, timeout=10).status_code == 401
        assert requests.get(_url(server, "/metrics"), headers=headers, timeout=10).status_code == 401
        assert (
            requests.post(
                _url(server, "/predict"), files=[("file", ("a.jpg", _images(1)[0]))], headers=headers, timeout=10
            ).status_code
            == 401
        )
        r = requests.post(_url(server, "/v2/models/roadwork/infer"), data=b"{}", headers=headers, timeout=10)
        assert r.status_code == 401 and r.json()["error"].startswith("missing or wrong bearer token")
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="401|bearer"):
        _infer_bytes(triton_client(server), _images(1), headers={})


def test_413_415_and_400_answers_are_json_without_stack_traces(server):
    big = b"\xff" * (MAX_BYTES + 1)
    r = requests.post(_url(server, "/predict"), files=[("file", ("big.jpg", big))], headers=auth_headers(), timeout=30)
    assert r.status_code == 413 and "limit of 400000 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced on the bytes streamed
        for _ in range(10):
            yield b"x" * (MAX_BYTES // 5)

    r = requests.post(_url(server, "/v2/models/roadwork/infer"), data=chunks(), headers=auth_headers(), timeout=30)
    assert r.status_code == 413, r.text
    import gzip

    bomb = gzip.compress(b" " * (3 * MAX_BYTES))  # small on the wire, three times the limit inflated
    r = requests.post(
        _url(server, "/v2/models/roadwork/infer"),
        data=bomb,
        headers={**auth_headers(), "Content-Encoding": "gzip"},
        timeout=30,
    )
    assert r.status_code == 413 and "inflates past" in r.json()["error"]
    r = requests.post(
        _url(server, "/v2/models/roadwork/infer"),
        data=b"hello",
        headers={**auth_headers(), "Content-Type": "text/plain"},
        timeout=10,
    )
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = requests.post(_url(server, "/predict"), json={"image": "x"}, headers=auth_headers(), timeout=10)
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    bad = [
        b"{not json",
        json.dumps({"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1], "data": [0.5]}]}).encode(),
        json.dumps(
            {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": [0.5] * 12}]}
        ).encode(),
    ]
    for body in bad:
        r = requests.post(
            _url(server, "/v2/models/roadwork/infer"),
            data=body,
            headers={**auth_headers(), "Content-Type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 400 and set(r.json()) == {"error"}
        assert "Traceback" not in r.text and 'File "' not in r.text
    for fields, message in (
        ({"hour": "noon"}, "hour must be an integer"),
        ({"hour": "25"}, "0..23"),
        ({"timestamp": "yesterday"}, "not ISO 8601"),
        ({"timestamp": "2026-11-02T10:00:00"}, "no UTC offset"),
    ):
        r = requests.post(
            _url(server, "/predict"),
            files=[("file", ("a.jpg", _images(1)[0]))],
            data=fields,
            headers=auth_headers(),
            timeout=30,
        )
        assert r.status_code == 400 and message in r.json()["error"], (fields, r.text)
    body = json.dumps(
        {
            "inputs": [
                {"name": "images", "datatype": "FP32", "shape": [2, 3, 48, 48], "data": [0.5] * (2 * 3 * 48 * 48)}
            ],
            "parameters": {"image_id": "same-for-all"},
        }
    )
    r = requests.post(
        _url(server, "/v2/models/roadwork/infer"),
        data=body,
        headers={**auth_headers(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400 and "one id per image" in r.json()["error"]
    r = requests.get(_url(server, "/v2/models/other"), headers=auth_headers(), timeout=10)
    assert r.status_code == 404 and "unknown model" in r.json()["error"]


def test_undecodable_and_oversized_images_get_422_with_the_decoder_reason(server):
    from tritonclient.utils import InferenceServerException

    before = _metrics(server)
    client = triton_client(server)
    for blob, reason in (
        (truncated_jpeg(), "truncated"),
        (bomb_png(), "decompression_bomb"),
        (b"not an image at all", "not_an_image"),
        (b"", "empty"),
    ):
        with pytest.raises(InferenceServerException) as err:
            _infer_bytes(client, [blob])
        assert err.value.status() == "422" and reason in err.value.message(), err.value.message()
    r = requests.post(
        _url(server, "/predict"), files=[("file", ("bomb.png", bomb_png()))], headers=auth_headers(), timeout=30
    )
    assert r.status_code == 422 and "decompression_bomb" in r.json()["error"]
    after = _metrics(server)
    for reason, n in (("truncated", 1), ("decompression_bomb", 2), ("not_an_image", 1), ("empty", 1)):
        assert (
            _sample(after, "roadwork_decode_failures_total", reason=reason)
            - _sample(before, "roadwork_decode_failures_total", reason=reason)
            == n
        )
    # bad pixel values in the FP32 input are that image's error too
    import tritonclient.http as hc

    x = np.full((2, 3, 48, 48), 0.5, np.float32)
    x[1, 0, 0, 0] = np.nan
    inp = hc.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = client.infer("roadwork", [inp], headers=auth_headers())
    assert (
        list(res.as_numpy("decision"))[1] == b"error"
        and np.isfinite(res.as_numpy("probability")[0])
        and b"bad_values" in res.as_numpy("error")[1]
    )


def test_one_bad_image_never_fails_the_others_in_its_request_or_its_dynamic_batch(server):
    client = triton_client(server)
    blobs = _images(4, offset=40)
    mixed = [blobs[0], truncated_jpeg(), blobs[1]]
    res = _infer_bytes(client, mixed)
    assert [d.decode() for d in res.as_numpy("decision")][1] == "error"
    assert np.isfinite(res.as_numpy("probability")[[0, 2]]).all() and np.isnan(res.as_numpy("probability")[1])
    alone = _infer_bytes(client, [blobs[0], blobs[1]]).as_numpy("probability")
    np.testing.assert_allclose(res.as_numpy("probability")[[0, 2]], alone, atol=1e-5)

    # concurrent requests share one dynamic batch (150 ms queue delay); the bad one gets 422, the rest 200
    before = _metrics(server)
    outcomes: dict[int, object] = {}

    def send(i: int) -> None:
        c = triton_client(server)
        try:
            outcomes[i] = _infer_bytes(c, [truncated_jpeg()] if i == 0 else [blobs[i % 4]]).as_numpy("probability")[0]
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            outcomes[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert "422" in str(outcomes[0]) and all(isinstance(outcomes[i], np.floating) for i in range(1, 6)), outcomes
    after = _metrics(server)
    batches = _sample(after, "roadwork_batch_size_count") - _sample(before, "roadwork_batch_size_count")
    images = _sample(after, "roadwork_batch_size_sum") - _sample(before, "roadwork_batch_size_sum")
    assert images == 5 and batches < 5  # at least two requests were batched together


def test_per_request_timeout_gives_504_and_the_server_keeps_serving(server):
    from tritonclient.utils import InferenceServerException

    client = triton_client(server)
    with pytest.raises(InferenceServerException) as err:
        _infer_bytes(client, _images(1), timeout=1)  # Triton's per-request timeout, microseconds
    assert err.value.status() == "504" and "timed out" in err.value.message()
    assert np.isfinite(_infer_bytes(client, _images(1)).as_numpy("probability")).all()


def test_metrics_count_requests_decisions_and_probability(server):
    before = _metrics(server)
    n = 6
    res = _infer_bytes(triton_client(server), _images(n, offset=60))
    after = _metrics(server)
    decisions = [d.decode() for d in res.as_numpy("decision")]
    for d in ("roadwork", "no_roadwork", "defer"):
        assert _sample(after, "roadwork_decisions_total", decision=d) - _sample(
            before, "roadwork_decisions_total", decision=d
        ) == decisions.count(d)
    assert (
        _sample(after, "roadwork_requests_total", endpoint="infer", code="200")
        - _sample(before, "roadwork_requests_total", endpoint="infer", code="200")
        == 1
    )
    dsum = _sample(after, "roadwork_calibrated_probability_sum") - _sample(
        before, "roadwork_calibrated_probability_sum"
    )
    assert dsum == pytest.approx(float(res.as_numpy("probability").sum()), abs=1e-4)
    for name in (
        "roadwork_queue_duration_seconds_count",
        "roadwork_inference_duration_seconds_count",
        "roadwork_request_duration_seconds_count",
    ):
        assert _sample(after, name) > _sample(before, name)
    assert 'roadwork_model_info{backend="onnx"' in after


# -- Prometheus, alert rules, Grafana ------------------------------------------------------------
def _prom_query(port: int, expr: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is missing: apt-get install prometheus (.ci/run installs it)"
)
def test_alert_rules_pass_promtool_check_and_unit_tests():
    check = subprocess.run(
        check=False,
        args=["promtool", "check", "rules", str(DEPLOY / "prometheus" / "roadwork-alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and "SUCCESS: 5 rules found" in check.stdout, check.stdout + check.stderr
    unit = subprocess.run(
        check=False,
        args=["promtool", "test", "rules", "roadwork-alerts.test.yml"],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus is missing: apt-get install prometheus (.ci/run installs it)"
)
def test_a_real_prometheus_scrapes_the_server_and_answers_its_series(server, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        json.dumps(
            {  # JSON is YAML
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(DEPLOY / "prometheus" / "roadwork-alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "roadwork",
                        "authorization": {"type": "Bearer", "credentials_file": str(token)},
                        "static_configs": [{"targets": [server.url]}],
                    }
                ],
            }
        )
    )
    n = 7
    _infer_bytes(triton_client(server), _images(n, offset=80))
    expected = _sample(_metrics(server), "roadwork_images_total")
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 - open while the process runs
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        got, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                res = _prom_query(port, 'roadwork_images_total{job="roadwork"}')["data"]["result"]
                if res and float(res[0]["value"][1]) == expected:
                    got = float(res[0]["value"][1])
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert got == expected and expected >= n, (tmp_path / "prometheus.log").read_text()[-3000:]
        up = _prom_query(port, 'up{job="roadwork"}')["data"]["result"]
        assert up and up[0]["value"][1] == "1"
        rules, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=10) as r:
                rules = [rule for g in json.loads(r.read())["data"]["groups"] for rule in g["rules"]]
            if len(rules) == 5 and all(rule["health"] == "ok" for rule in rules):
                break
            time.sleep(0.5)
        assert sorted(r["name"] for r in rules) == [
            "RoadworkHighDeferRate",
            "RoadworkHighErrorRate",
            "RoadworkHighP99Latency",
            "RoadworkModelVersionChanged",
            "RoadworkNoTraffic",
        ]
        assert all(r["health"] == "ok" for r in rules), rules
        # every Grafana panel's query is valid PromQL over series this server really exports
        dash = json.loads((DEPLOY / "grafana" / "roadwork-serving.json").read_text())
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]] + [
            a["expr"] for a in dash["annotations"]["list"]
        ]
        exported = set(re.findall(r"^# TYPE (\w+) ", _metrics(server), re.MULTILINE))
        for expr in exprs:
            concrete = expr.replace("$job", ".*").replace("$instance", ".*")
            out = _prom_query(port, concrete)
            assert out["status"] == "success", (expr, out)
            for name in re.findall(r"\b(roadwork_\w+)", expr):
                assert re.sub(r"_(bucket|sum|count|total|info)$", "", name) in {
                    re.sub(r"_(total|info)$", "", e) for e in exported
                }, name
    finally:
        prom.terminate()
        prom.wait(30)
        log.close()


# -- TensorRT ----------------------------------------------------------------------------------
def test_tensorrt_backend_is_refused_clearly_without_tensorrt_or_cuda(bundle, tmp_path, capsys, monkeypatch):
    from roadwork_ml.export.tensorrt_build import tensorrt_available
    from roadwork_ml.serving.cli import main

    ok, reason = tensorrt_available()
    if ok:
        pytest.skip(f"TensorRT is available here ({reason}); the GPU path is covered by bench/gpu_tensorrt.py")
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"not an engine")
    serve = ["serve", "--bundle", str(bundle), "--profile", "tiny", "--port", str(free_port())]
    # the real command line once, as a user runs it
    r = subprocess.run(
        check=False,
        args=[
            sys.executable,
            "-m",
            "roadwork_ml.serving.cli",
            *serve,
            "--backend",
            "tensorrt",
            "--engine",
            str(engine),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env(),
        cwd=ROOT,
    )
    assert r.returncode == 2, r.stderr
    assert "cannot build or run a TensorRT engine" in r.stderr and reason in r.stderr and "Traceback" not in r.stderr
    # the same entry point in-process for the other refusals
    monkeypatch.setenv("ROADWORK_SERVE_TOKEN", "test-token-0123456789abcdef")
    cases = [
        (
            ["predict", "--bundle", str(bundle), "--backend", "tensorrt", "--engine", str(engine), str(tmp_path)],
            "cannot build or run a TensorRT engine",
        ),
        ([*serve, "--backend", "tensorrt"], "needs --engine PATH"),
        ([*serve, "--engine", str(engine)], "--engine is only used with --backend tensorrt"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    monkeypatch.delenv("ROADWORK_SERVE_TOKEN")
    assert main(serve) == 2
    assert "no bearer token" in capsys.readouterr().err
