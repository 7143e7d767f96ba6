"""Model-server parts on their own: the v2 protocol against tritonclient's own serializer and
parser, Triton's dynamic-batching policy, the bearer token, and the inference-log writer."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from roadwork_ml.serving.server.auth import load_token, token_matches
from roadwork_ml.serving.server.batching import BatchTooLarge, DynamicBatcher, RequestTimeout, plan_batch
from roadwork_ml.serving.server.protocol import HEADER_LENGTH, ProtocolError, encode_infer_response, parse_infer_request


# -- protocol ---------------------------------------------------------------------------------
def _triton_request(inputs, outputs=None, binary=True, parameters=None):
    import tritonclient.http as hc
    from tritonclient.http._utils import _get_inference_request

    tensors = []
    for name, arr, dtype in inputs:
        t = hc.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr, binary_data=binary)
        tensors.append(t)
    outs = [hc.InferRequestedOutput(n, binary_data=b) for n, b in (outputs or [])]
    return _get_inference_request(tensors, "req-1", outs or None, 0, False, False, 0, None, parameters)


@pytest.mark.parametrize("binary", [True, False])
def test_requests_built_by_tritonclient_parse_to_the_same_tensors(binary):
    # JSON carries BYTES as UTF-8 text only; binary data carries any bytes
    blobs = np.array(
        [b"\xff\xd8jpeg", b"", b"\x00\x01\x02" * 100] if binary else [b"abc", b"", b"text" * 100], dtype=object
    )
    x = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    hours = np.array([3, 23], dtype=np.int32)
    body, json_len = _triton_request(
        [("image_bytes", blobs, "BYTES"), ("images", x, "FP32"), ("hour", hours, "INT32")],
        binary=binary,
        parameters={"source": "natix"},
    )
    req = parse_infer_request(body, None if json_len is None else str(json_len))
    assert req.id == "req-1" and req.parameters["source"] == "natix"
    assert list(req.inputs["image_bytes"].data) == list(blobs)
    np.testing.assert_array_equal(req.inputs["images"].data, x)
    np.testing.assert_array_equal(req.inputs["hour"].data, hours)
    assert req.parameters.get("binary_data_output") is True  # tritonclient asks for binary outputs when none are named


def test_responses_parse_in_tritonclient_binary_and_json():
    from tritonclient.http import InferResult

    body, json_len = _triton_request(
        [("images", np.zeros((2, 3, 4, 4), np.float32), "FP32")],
        outputs=[("probability", True), ("decision", False), ("logits", True), ("error", True)],
    )
    req = parse_infer_request(body, str(json_len))
    outs = {
        "probability": ("FP32", np.array([0.25, np.nan], np.float32)),
        "decision": ("BYTES", np.array(["roadwork", "error"], dtype=object)),
        "logits": ("FP32", np.arange(4, dtype=np.float32).reshape(2, 2)),
        "error": ("BYTES", np.array(["", "truncated: x"], dtype=object)),
    }
    resp, n = encode_infer_response("roadwork", "7", req, outs)
    res = InferResult.from_response_body(resp, header_length=n)
    np.testing.assert_array_equal(res.as_numpy("probability"), outs["probability"][1])
    assert list(res.as_numpy("decision")) == ["roadwork", "error"]  # JSON BYTES come back as str, as from Triton
    assert list(res.as_numpy("error")) == [b"", b"truncated: x"]
    np.testing.assert_array_equal(res.as_numpy("logits"), outs["logits"][1])
    assert res.get_response()["model_version"] == "7" and res.get_response()["id"] == "req-1"


@pytest.mark.parametrize(
    "bad, message",
    [
        (b"{not json", "not valid JSON"),
        (b'{"inputs": []}', "non-empty 'inputs'"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1]}]}', "1 values for shape [2]"),
        (b'{"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}', "datatype 'FP99'"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 8}}]}',
            "does not fit",
        ),
    ],
)
def test_malformed_requests_are_protocol_errors(bad, message):
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse_infer_request(bad, str(len(bad)) if b"binary_data_size" in bad else None)


def test_bytes_elements_are_length_checked():
    head = b'{"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 9}}]}'
    body = head + b"\x05\x00\x00\x00abcde"  # one element where two are declared
    with pytest.raises(ProtocolError, match="ends after 1 of 2"):
        parse_infer_request(body, str(len(head)))
    assert HEADER_LENGTH == "Inference-Header-Content-Length"


# -- dynamic batching ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sizes, waited, preferred, expect",
    [
        ([1, 1, 1], 0.0, (), 0),  # no preferred size, below max, delay not over: wait
        ([1, 1, 1], 0.01, (), 3),  # delay over: send everything
        ([1, 1, 1, 1, 1], 0.0, (4,), 4),  # a preferred size can be formed: send it now
        ([2, 2, 2], 0.0, (4, 6), 3),  # the largest preferred size wins
        ([3, 3, 3], 0.0, (), 2),  # the next request does not fit max 8: send what fits
        ([8], 0.0, (), 1),  # exactly full
        ([3, 2], 0.0, (4,), 0),  # 3 and 5 are not preferred: wait
    ],
)
def test_plan_batch_follows_triton(sizes, waited, preferred, expect):
    assert plan_batch(sizes, waited, 8, preferred, 0.005) == expect


def _batcher(sizes_seen, max_batch=8, preferred=(), delay_us=50_000, work_s=0.0):
    def run(_instance, x):
        sizes_seen.append(len(x))
        time.sleep(work_s)
        return x[:, 0, 0, 0] * 2

    return DynamicBatcher(run, lambda out, a, b: out[a:b], max_batch, preferred, delay_us)


def test_batcher_sends_a_preferred_batch_without_waiting_and_keeps_rows_in_order():
    async def main():
        seen: list[int] = []
        b = _batcher(seen, preferred=(4,), delay_us=2_000_000)  # a 2 s delay that must not be waited for
        b.start()
        t0 = time.perf_counter()
        outs = await asyncio.gather(
            *(b.submit(np.full((1, 3, 2, 2), i, np.float32), time.perf_counter() + 10) for i in range(4))
        )
        took = time.perf_counter() - t0
        await b.close()
        return seen, [o.value.tolist() for o in outs], took

    seen, values, took = asyncio.run(main())
    assert seen == [4] and values == [[0.0], [2.0], [4.0], [6.0]] and took < 1.0


def test_batcher_waits_the_queue_delay_then_sends_what_it_has_and_splits_at_max():
    async def main():
        seen: list[int] = []
        b = _batcher(seen, max_batch=8, delay_us=100_000)
        b.start()
        t0 = time.perf_counter()
        r3 = await asyncio.gather(
            *(b.submit(np.zeros((1, 3, 2, 2), np.float32), time.perf_counter() + 10) for _ in range(3))
        )
        waited = time.perf_counter() - t0
        r10 = await asyncio.gather(
            *(b.submit(np.zeros((1, 3, 2, 2), np.float32), time.perf_counter() + 10) for _ in range(10))
        )
        with pytest.raises(BatchTooLarge):
            await b.submit(np.zeros((9, 3, 2, 2), np.float32), time.perf_counter() + 10)
        await b.close()
        return seen, waited, r3, r10

    seen, waited, r3, r10 = asyncio.run(main())
    assert seen == [3, 8, 2] and waited >= 0.1
    assert {r.batch_size for r in r3} == {3} and sorted(r.batch_size for r in r10) == [2, 2] + [8] * 8


def test_batcher_times_out_queued_requests_and_keeps_serving():
    async def main():
        seen: list[int] = []
        b = _batcher(seen, max_batch=1, delay_us=0, work_s=0.3)  # one slow instance
        b.start()
        first = asyncio.ensure_future(b.submit(np.zeros((1, 3, 2, 2), np.float32), time.perf_counter() + 10))
        await asyncio.sleep(0.05)
        with pytest.raises(RequestTimeout):
            await b.submit(
                np.zeros((1, 3, 2, 2), np.float32), time.perf_counter() + 0.1
            )  # queued behind the slow batch
        ok = await first
        later = await b.submit(np.zeros((1, 3, 2, 2), np.float32), time.perf_counter() + 10)
        await b.close()
        return seen, ok, later

    seen, ok, later = asyncio.run(main())
    assert seen == [1, 1] and ok.batch_size == 1 and later.batch_size == 1  # the timed-out request never ran


# -- auth ---------------------------------------------------------------------------------------
def test_token_from_file_or_env_and_constant_time_match(tmp_path):
    f = tmp_path / "token"
    f.write_text("  file-token-abcdefghijkl \nignored\n")
    assert load_token(f, env={}) == "file-token-abcdefghijkl"
    assert load_token(None, env={"ROADWORK_SERVE_TOKEN": "env-token-abcdefghijkl"}) == "env-token-abcdefghijkl"
    assert load_token(None, env={}) is None
    with pytest.raises(ValueError, match="at least 16"):
        load_token(None, env={"ROADWORK_SERVE_TOKEN": "short"})
    assert token_matches("Bearer env-token-abcdefghijkl", "env-token-abcdefghijkl")
    assert token_matches("bearer env-token-abcdefghijkl", "env-token-abcdefghijkl")
    for wrong in (None, "", "Bearer env-token-abcdefghijkX", "Basic env-token-abcdefghijkl", "env-token-abcdefghijkl"):
        assert not token_matches(wrong, "env-token-abcdefghijkl")


# -- the inference log writer -------------------------------------------------------------------
class _Proj:
    input_dim = 6

    def transform(self, e):
        return np.asarray(e, np.float32)[:, :4]


def _batch(ids, ts):
    n = len(ids)
    rng = np.random.default_rng(len(ids))
    model = SimpleNamespace(log_version="roadwork-classifier/3", projection=_Proj())
    outputs = SimpleNamespace(
        probability=rng.random(n).astype(np.float32),
        decision=np.array(["roadwork", "no_roadwork", "defer"] * n, dtype=object)[:n],
        features=rng.random((n, 7)).astype(np.float32),
        embeddings=rng.random((n, 6)).astype(np.float32),
        model=model,
    )
    from roadwork_ml.serving.server.logwriter import LogBatch

    return LogBatch(outputs, ids, ts, ["natix"] * n, ["cam"] * n, [12] * n, ["clear"] * n)


def test_log_writer_rotates_days_and_a_clean_close_loses_no_row(tmp_path):
    from roadwork_ml.monitoring.inference_log import day_path, read_log
    from roadwork_ml.serving.server.logwriter import PARTS, InferenceLogWriter

    d1 = datetime(2026, 11, 2, 23, 59, tzinfo=UTC)
    d2 = d1 + timedelta(minutes=2)
    w = InferenceLogWriter(tmp_path, flush_rows=5, flush_seconds=60, compact_seconds=3600)
    for i in range(4):  # 12 rows of day 1 in batches of 3: part files at 6 and 12 rows
        w.put(_batch([f"a{i}-{j}" for j in range(3)], [d1] * 3))
    w.put(_batch(["a0-0", "a0-1"], [d1] * 2))  # the same images again: replaced, not counted twice
    w.put(_batch([f"b{j}" for j in range(4)], [d2] * 4))  # day 2 begins: day 1 is rotated
    deadline = time.monotonic() + 20
    parts1 = day_path(tmp_path, d1.date()).parent / PARTS

    def rotated() -> bool:  # the rewrite lands first, then the parts are deleted
        return day_path(tmp_path, d1.date()).exists() and not list(parts1.glob("*.parquet"))

    while time.monotonic() < deadline and not rotated():
        time.sleep(0.05)
    assert day_path(tmp_path, d1.date()).exists() and not list(
        (day_path(tmp_path, d1.date()).parent / PARTS).glob("*.parquet")
    )
    w.put(_batch(["b4"], [d2]))  # buffered only (below flush_rows, flush_seconds far away)
    w.close()
    day1, day2 = read_log(day_path(tmp_path, d1.date())), read_log(day_path(tmp_path, d2.date()))
    assert len(day1) == 12 and day1["image_id"].is_unique
    assert sorted(day2["image_id"]) == ["b0", "b1", "b2", "b3", "b4"]  # the buffered row was written on close
    assert set(day1["model_version"]) == {"roadwork-classifier/3"}
    assert not list(tmp_path.rglob(f"{PARTS}/*.parquet"))


def test_the_same_image_twice_in_one_flush_is_logged_once(tmp_path):
    from roadwork_ml.monitoring.inference_log import day_path, read_log
    from roadwork_ml.serving.server.logwriter import InferenceLogWriter

    ts = datetime(2026, 11, 4, 9, 0, tzinfo=UTC)
    w = InferenceLogWriter(tmp_path, flush_rows=100, flush_seconds=60)
    w.put(_batch(["same", "other"], [ts] * 2))
    w.put(_batch(["same"], [ts + timedelta(minutes=1)]))
    w.close()
    log = read_log(day_path(tmp_path, ts.date()))
    assert sorted(log["image_id"]) == ["other", "same"] and w.errors == 0
    assert log.set_index("image_id").loc["same", "timestamp"] == ts + timedelta(minutes=1)  # the later row wins


def test_a_crash_between_rewrite_and_part_deletion_does_not_duplicate_rows(tmp_path):
    from roadwork_ml.monitoring.inference_log import day_path, read_log, write_log
    from roadwork_ml.serving.server.logwriter import PARTS, InferenceLogWriter, to_frame

    ts = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    rows = to_frame(_batch([f"c{j}" for j in range(6)], [ts] * 6))
    final = day_path(tmp_path, ts.date())
    part = final.parent / PARTS / "000-part.parquet"
    part.parent.mkdir(parents=True)
    write_log(part, rows)
    write_log(final, rows)  # as if the rewrite landed and the process died before deleting the part
    w = InferenceLogWriter(tmp_path)
    w.close()
    assert len(read_log(final)) == 6 and not part.exists()


def test_compressed_bodies_inflate_within_the_limit_only():
    import gzip
    import zlib

    from roadwork_ml.serving.server.protocol import DecompressedTooLarge, decompress

    body = b'{"inputs": []}' * 10
    assert decompress(gzip.compress(body), "gzip", 1000) == body
    assert decompress(zlib.compress(body), "deflate", 1000) == body
    bomb = gzip.compress(b"\0" * 10_000_000)  # ~10 KB that inflate to 10 MB
    with pytest.raises(DecompressedTooLarge, match="limit of 1000000"):
        decompress(bomb, "gzip", 1_000_000)
    with pytest.raises(ProtocolError, match="not supported"):
        decompress(body, "br", 1000)
    with pytest.raises(ProtocolError, match="not valid gzip"):
        decompress(b"not gzip", "gzip", 1000)


def test_batcher_never_mixes_shapes_and_does_not_wait_behind_another_shape():
    async def main():
        seen: list[tuple] = []

        def run(_i, x):
            seen.append(x.shape)
            return x[:, 0, 0, 0]

        b = DynamicBatcher(run, lambda out, a, c: out[a:c], 8, (), 2_000_000)  # a 2 s delay
        b.start()
        t0 = time.perf_counter()
        small = [
            asyncio.ensure_future(b.submit(np.zeros((1, 3, 2, 2), np.float32), time.perf_counter() + 10))
            for _ in range(2)
        ]
        large = asyncio.ensure_future(b.submit(np.zeros((1, 3, 4, 4), np.float32), time.perf_counter() + 10))
        first = await asyncio.gather(*small)
        took = time.perf_counter() - t0
        await b.close()  # closing sends the rest without waiting
        await large
        return seen, first, took

    seen, first, took = asyncio.run(main())
    assert seen == [(2, 3, 2, 2), (1, 3, 4, 4)] and took < 1.0 and {r.batch_size for r in first} == {2}


# -- champion sources and the holder ----------------------------------------------------------
def _fake_bundle(d, weights_sha: str):
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({"files": {"model.safetensors": {"sha256": weights_sha}}}))
    return d


def test_watched_bundle_swaps_on_a_new_manifest_and_a_failed_load_keeps_the_old_model(tmp_path):
    from roadwork_ml.export.identity import bundle_identity
    from roadwork_ml.serving.server.swap import FixedBundle, ModelHolder

    src = _fake_bundle(tmp_path / "deployed", "a" * 64)
    va = bundle_identity(src).tag  # the model id the CLI and the inference log use too
    loaded, swaps, failures = [], [], []

    def load(path, cand):
        if (path / "poison").exists():
            raise ValueError("cannot load")
        loaded.append(cand.version)
        return SimpleNamespace(version=cand.version, log_version=cand.log_version, path=path)

    holder = ModelHolder(
        FixedBundle(src, watch=True),
        load,
        tmp_path / "cache",
        on_swap=lambda new, old: swaps.append((new.version, getattr(old, "version", None))),
        on_failure=lambda cand, reason: failures.append(reason),
    )
    holder.load_initial()
    assert va.startswith("sha256:") and holder.model.version == va and not holder.check_once()  # nothing moved
    vb = bundle_identity(_fake_bundle(src, "b" * 64)).tag
    assert holder.check_once() and holder.model.version == vb != va
    assert swaps == [(va, None), (vb, va)]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [holder.model.path.name]  # the old copy is gone
    (src / "poison").write_text("x")
    _fake_bundle(src, "c" * 64)
    assert not holder.check_once() and holder.model.version == vb and failures == ["ValueError: cannot load"]
    assert not holder.check_once() and len(failures) == 1  # a refused candidate is not retried until the source moves
    (src / "poison").unlink()
    vd = bundle_identity(_fake_bundle(src, "d" * 64)).tag
    assert holder.check_once() and holder.model.version == vd
    holder.stop()
    # an unwatched bundle is loaded once and never re-read
    fixed = FixedBundle(_fake_bundle(tmp_path / "fixed", "e" * 64))
    first = fixed.current()
    _fake_bundle(tmp_path / "fixed", "f" * 64)
    assert fixed.current() == first
