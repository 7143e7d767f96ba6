"""The HTTP app: Open Inference Protocol (KServe v2) endpoints, ``POST /predict`` for curl
users, ``/metrics``; errors are JSON ``{"error": ...}`` and never carry a stack trace.

Inputs of ``/v2/models/{name}/infer`` (exactly one of the first two):

* ``image_bytes`` BYTES ``[N]`` — encoded images (JPEG, PNG, WebP, ...), decoded by the
  ingestion decoder off the event loop;
* ``images`` FP32 ``[N, 3, S, S]`` in [0, 1] — the exported graph's input, as Triton takes it;
* optional per-image metadata for the inference log: ``image_id``, ``source``, ``camera_id``,
  ``weather``, ``timestamp`` (ISO 8601 with offset) as BYTES ``[N]``, ``hour`` INT32 ``[N]``;
  the same names as request ``parameters`` apply to every image.

Outputs (``[N]`` unless noted): ``probability`` FP32 (calibrated P(roadwork)),
``streetvision_probability`` FP32, ``decision`` BYTES (roadwork / no_roadwork / defer, or
``error`` for an image that could not be used), ``prediction_set`` BYTES (``a|b``),
``model_version`` BYTES, ``error`` BYTES (the reason, empty when fine), ``logits`` FP32
``[N, C]``, and ``features`` FP32 ``[N, 7]`` only when asked for by name. A request whose
images are all unusable gets 422 with the reasons; otherwise the good ones are answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from roadwork_ml.policy.uncertainty import FEATURE_NAMES
from roadwork_ml.serving.server.auth import BearerAuth, BodyLimit, BodyTooLarge
from roadwork_ml.serving.server.batching import (
    BatchTooLarge,
    DynamicBatcher,
    RequestTimeout,
    ShuttingDown,
)
from roadwork_ml.serving.server.logwriter import InferenceLogWriter, LogBatch
from roadwork_ml.serving.server.metrics import ObserveRequests, ServerMetrics
from roadwork_ml.serving.server.protocol import (
    HEADER_LENGTH,
    DecompressedTooLarge,
    ProtocolError,
    decompress,
    encode_infer_response,
    parse_infer_request,
)
from roadwork_ml.serving.server.schema import META_TEXT, ClientError, Scored, fill_rows, model_metadata, parse_metadata
from roadwork_ml.serving.server.swap import ModelHolder

log = logging.getLogger("roadwork.serve")
INFER_CONTENT_TYPES = ("", "application/json", "application/octet-stream")


@dataclass
class ServerOptions:
    """What the app needs besides the model. Durations in seconds, sizes in bytes / images."""

    model_name: str = "roadwork"
    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 2000
    instances: int = 1
    decode_threads: int = 2
    request_timeout_s: float = 10.0
    max_request_bytes: int = 32 << 20
    champion_poll_seconds: float | None = None  # None = never re-check the source
    token: str | None = None
    warm_up_sizes: tuple[int, ...] = field(default=(1,))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    holder: ModelHolder,
    options: ServerOptions,
    metrics: ServerMetrics | None = None,
    log_writer: InferenceLogWriter | None = None,
) -> Any:
    """The ASGI app serving ``holder``'s model (already loaded). Starting it (lifespan) starts
    the batcher and the champion watch; stopping it drains the queue, waits for running
    batches and writes the whole inference log."""
    metrics = metrics or ServerMetrics()
    decode_pool = ThreadPoolExecutor(options.decode_threads, thread_name_prefix="roadwork-decode")
    state: dict[str, Any] = {"ready": False}

    def run_batch(instance: int, images: np.ndarray):
        model = holder.model  # the model current *now*: a swap never changes a running batch
        if images.shape[-1] != model.input_size:  # decoded for a champion of another input size just before a swap
            import torch

            images = torch.nn.functional.interpolate(
                torch.from_numpy(images), size=(model.input_size,) * 2, mode="bilinear", antialias=True
            ).numpy()
        return model.run(instance, images)

    def on_batch(size: int, seconds: float) -> None:
        metrics.batch_size.observe(size)
        metrics.inference_seconds.observe(seconds)

    @asynccontextmanager
    async def lifespan(_app):
        batcher = DynamicBatcher(
            run_batch,
            lambda out, a, b: out.rows(a, b),
            options.max_batch_size,
            options.preferred_batch_sizes,
            options.max_queue_delay_us,
            options.instances,
            on_batch,
        )
        batcher.start()
        state["batcher"] = batcher
        if options.champion_poll_seconds:
            holder.start_watching(options.champion_poll_seconds)
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.close()
            holder.stop()
            decode_pool.shutdown(wait=True)
            if log_writer is not None:
                await asyncio.get_running_loop().run_in_executor(None, log_writer.close)

    app = FastAPI(
        title="roadwork model server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(ClientError)
    async def _client_error(_r, exc: ClientError):
        return _error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def _http_error(_r, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_r, _exc):
        return _error(
            413,
            f"request body larger than the server's limit of {options.max_request_bytes} bytes",
        )

    @app.exception_handler(Exception)
    async def _unexpected(_r, exc: Exception):
        log.error("unhandled %s while serving a request", type(exc).__name__, exc_info=exc)
        return _error(500, "internal server error (details are in the server log)")

    def _check_model(name: str, version: str | None = None):
        model = holder.model
        if name != options.model_name:
            raise ClientError(
                404,
                f"unknown model {name!r}; this server serves {options.model_name!r}",
            )
        if version not in (None, "", model.version):
            raise ClientError(
                404,
                f"model {name!r} version {version!r} is not loaded (serving version {model.version!r})",
            )
        return model

    async def _decode_all(model, blobs: list[bytes], deadline: float) -> tuple[list[np.ndarray | None], list[str]]:
        from roadwork_ml.data.decode import DecodeError, reason_code

        def one(data: bytes):
            t0 = time.perf_counter()
            try:
                return model.decode(data), ""
            except DecodeError as exc:
                return None, str(exc)
            except Exception as exc:  # noqa: BLE001 - any undecodable image is that image's error only
                return None, f"decode_failed: {type(exc).__name__}: {exc}"
            finally:
                metrics.decode_seconds.observe(time.perf_counter() - t0)

        loop = asyncio.get_running_loop()
        futs = [loop.run_in_executor(decode_pool, one, b) for b in blobs]
        try:
            done = await asyncio.wait_for(asyncio.gather(*futs), max(0.0, deadline - time.perf_counter()))
        except TimeoutError:
            raise RequestTimeout("decoding did not finish within the request's timeout") from None
        for _, err in done:
            if err:
                metrics.decode_failures.labels(reason_code(err)).inc()
        return [a for a, _ in done], [e for _, e in done]

    async def _score(model, blobs: list[bytes] | None, tensor: np.ndarray | None, deadline: float) -> Scored:
        if blobs is not None:
            arrays, errors = await _decode_all(model, blobs, deadline)
        else:
            s = model.input_size
            if tensor.ndim != 4 or tuple(tensor.shape[1:]) != (3, s, s):
                raise ClientError(
                    400,
                    f"input 'images' must be FP32 [N, 3, {s}, {s}], got shape {list(tensor.shape)}",
                )
            arrays, errors = [], []
            for img in tensor:
                ok = bool(np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1)
                arrays.append(img if ok else None)
                errors.append("" if ok else "bad_values: pixels must be finite and in [0, 1]")
        n = len(errors)
        if n == 0:
            raise ClientError(400, "the request holds no image")
        good = np.array([i for i, e in enumerate(errors) if not e], dtype=np.int64)
        if len(good) == 0:
            raise ClientError(
                422,
                "no usable image: " + "; ".join(f"[{i}] {e}" for i, e in enumerate(errors)),
            )
        batch = np.ascontiguousarray(np.stack([arrays[i] for i in good]), dtype=np.float32)
        result = await state["batcher"].submit(batch, deadline)
        metrics.queue_seconds.observe(result.queue_seconds)
        metrics.observe_outputs(result.value)
        return Scored(n, errors, result.value, good)

    def _log(
        scored: Scored,
        meta: dict[str, list],
        blobs: list[bytes] | None,
        tensor: np.ndarray | None,
    ) -> None:
        if log_writer is None:
            return
        g = scored.good
        ids = []
        for i in g:
            given = meta["image_id"][i]
            if given:
                ids.append(given.decode() if isinstance(given, bytes) else str(given))
            else:
                payload = blobs[i] if blobs is not None else np.ascontiguousarray(tensor[i]).tobytes()
                ids.append("sha256:" + hashlib.sha256(payload).hexdigest()[:24])

        def text(key, default="unknown"):
            return [
                (meta[key][i].decode() if isinstance(meta[key][i], bytes) else str(meta[key][i]))
                if meta[key][i] not in (None, b"", "")
                else default
                for i in g
            ]

        log_writer.put(
            LogBatch(
                scored.outputs,
                ids,
                [meta["timestamp"][i] for i in g],
                text("source"),
                text("camera_id"),
                [int(meta["hour"][i]) for i in g],
                text("weather"),
            )
        )

    # -- KServe v2 -------------------------------------------------------------------------
    @app.get("/v2/health/live")
    async def live():
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready():
        return Response(status_code=200 if state["ready"] and holder.model is not None else 503)

    @app.get("/v2")
    async def server_metadata():
        from roadwork_ml.export.bundle import roadwork_version

        return {
            "name": "roadwork",
            "version": roadwork_version(),
            "extensions": ["binary_tensor_data", "model_configuration"],
        }

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def get_model_metadata(name: str, version: str | None = None):
        return model_metadata(_check_model(name, version), options.model_name)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None):
        _check_model(name, version)
        return Response(status_code=200 if state["ready"] else 503)

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str | None = None):
        model = _check_model(name, version)
        md = model_metadata(model, options.model_name)
        tensor = lambda t: {
            "name": t["name"],
            "data_type": f"TYPE_{'STRING' if t['datatype'] == 'BYTES' else t['datatype']}",
            "dims": t["shape"][1:] or [1],
        }
        return {
            "name": options.model_name,
            "platform": md["platform"],
            "max_batch_size": options.max_batch_size,
            "input": [tensor(t) for t in md["inputs"]],
            "output": [tensor(t) for t in md["outputs"]],
            "dynamic_batching": {
                "preferred_batch_size": list(options.preferred_batch_sizes),
                "max_queue_delay_microseconds": options.max_queue_delay_us,
            },
            "instance_group": [
                {
                    "count": options.instances,
                    "kind": "KIND_GPU" if model.backend in ("tensorrt",) else "KIND_CPU",
                }
            ],
        }

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None):
        t0 = time.perf_counter()
        model = _check_model(name, version)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in INFER_CONTENT_TYPES:
            raise ClientError(
                415,
                f"content type {ctype!r} is not accepted here: send application/json (with the binary tensor extension's Inference-Header-Content-Length for binary data)",
            )
        try:
            body = decompress(await request.body(), request.headers.get("content-encoding"), options.max_request_bytes)
        except DecompressedTooLarge as exc:
            raise ClientError(413, str(exc)) from None
        except ProtocolError as exc:
            raise ClientError(400, str(exc)) from None
        try:
            req = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        except ProtocolError as exc:
            raise ClientError(400, str(exc)) from None
        timeout = options.request_timeout_s
        if "timeout" in req.parameters:  # Triton's per-request timeout, microseconds
            timeout = min(timeout, max(0, int(req.parameters["timeout"])) / 1e6)
        deadline = t0 + timeout
        has_bytes, has_tensor = "image_bytes" in req.inputs, "images" in req.inputs
        if has_bytes == has_tensor:
            raise ClientError(
                400,
                "send exactly one of the inputs 'image_bytes' (BYTES [N], encoded images) and 'images' (FP32 [N, 3, S, S])",
            )
        known = {"image_bytes", "images", "hour", *META_TEXT}
        if set(req.inputs) - known:
            raise ClientError(
                400,
                f"unknown inputs {sorted(set(req.inputs) - known)}; this model takes {sorted(known)}",
            )
        if has_bytes:
            t = req.inputs["image_bytes"]
            if t.datatype != "BYTES" or t.data.ndim != 1:
                raise ClientError(
                    400,
                    f"input 'image_bytes' must be BYTES [N], got {t.datatype} {t.shape}",
                )
            blobs, tensor = list(t.data), None
            n = len(blobs)
        else:
            t = req.inputs["images"]
            if t.datatype != "FP32":
                raise ClientError(400, f"input 'images' must be FP32, got {t.datatype}")
            blobs, tensor = None, t.data
            n = int(tensor.shape[0]) if tensor.ndim else 0
        values = {k: v for k, v in req.parameters.items() if k in known}
        for k in ("hour", *META_TEXT):
            if k in req.inputs:
                values[k] = list(req.inputs[k].data.reshape(-1))
        meta = parse_metadata(values, n)
        scored = await _score(model, blobs, tensor, deadline)
        _log(scored, meta, blobs, tensor)
        o = scored.outputs
        version_name = o.model.version
        outs = {
            "probability": ("FP32", fill_rows(scored, o.probability, np.nan)),
            "streetvision_probability": ("FP32", fill_rows(scored, o.streetvision, np.nan)),
            "decision": ("BYTES", fill_rows(scored, o.decision, "error")),
            "prediction_set": (
                "BYTES",
                fill_rows(scored, np.array(o.prediction_set_names(), dtype=object), ""),
            ),
            "model_version": (
                "BYTES",
                np.array([o.model.log_version] * scored.n, dtype=object),
            ),
            "error": ("BYTES", np.array(scored.errors, dtype=object)),
            "logits": ("FP32", fill_rows(scored, o.logits, np.nan)),
            "features": ("FP32", fill_rows(scored, o.features, np.nan)),
        }
        wanted = [x["name"] for x in req.outputs] if req.outputs else [k for k in outs if k != "features"]
        if set(wanted) - set(outs):
            raise ClientError(
                400,
                f"unknown outputs {sorted(set(wanted) - set(outs))}; this model gives {sorted(outs)}",
            )
        body, json_len = encode_infer_response(options.model_name, version_name, req, {k: outs[k] for k in wanted})
        headers = {HEADER_LENGTH: str(json_len)} if json_len is not None else {}
        return Response(
            body,
            media_type="application/octet-stream" if json_len is not None else "application/json",
            headers=headers,
        )

    # -- curl ------------------------------------------------------------------------------
    @app.post("/predict")
    async def predict(request: Request):
        """``curl -F file=@a.jpg -F file=@b.png [-F source=natix] URL/predict[?features=true]``."""
        t0 = time.perf_counter()
        model = holder.model
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "multipart/form-data":
            raise ClientError(
                415,
                f"content type {ctype!r} is not accepted here: send multipart/form-data (curl -F file=@image.jpg)",
            )
        form = await request.form(max_files=options.max_batch_size, max_fields=50)
        files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
        if not files:
            raise ClientError(
                400,
                "no file in the form: send one or more images as file fields (curl -F file=@image.jpg)",
            )
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        values = {k: fields[k] for k in ("hour", *META_TEXT) if k in fields and k != "image_id"}
        meta = parse_metadata(values, len(files))
        scored = await _score(model, [b for _, b in files], None, t0 + options.request_timeout_s)
        _log(scored, meta, [b for _, b in files], None)
        with_features = request.query_params.get("features", "").lower() in (
            "1",
            "true",
            "yes",
        )
        o, pos = scored.outputs, {int(g): j for j, g in enumerate(scored.good)}
        sets = o.prediction_set_names()
        results = []
        for i, (fname, _) in enumerate(files):
            if i not in pos:
                results.append({"image": fname, "error": scored.errors[i]})
                continue
            j = pos[i]
            rec = {
                "image": fname,
                "probability": float(o.probability[j]),
                "decision": str(o.decision[j]),
                "prediction_set": sets[j].split("|") if sets[j] else [],
                "streetvision_probability": float(o.streetvision[j]),
                "model_version": o.model.log_version,
            }
            if with_features:
                rec["features"] = {k: float(v) for k, v in zip(FEATURE_NAMES, o.features[j], strict=False)}
            results.append(rec)
        return {
            "model_name": options.model_name,
            "model_version": o.model.version,
            "results": results,
        }

    @app.get("/metrics")
    async def prometheus_metrics():
        metrics.queue_depth.set(state["batcher"].queued_images if "batcher" in state else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # timeouts and refusals from the batcher become client-visible errors, never 500s
    @app.exception_handler(RequestTimeout)
    async def _timeout(_r, exc: RequestTimeout):
        return _error(504, f"request timed out: {exc}")

    @app.exception_handler(BatchTooLarge)
    async def _batch_too_large(_r, exc: BatchTooLarge):
        return _error(400, str(exc))

    @app.exception_handler(ShuttingDown)
    async def _closing(_r, exc: ShuttingDown):
        return _error(503, str(exc))

    app.state.metrics = metrics
    app.state.holder = holder
    return ObserveRequests(BearerAuth(BodyLimit(app, options.max_request_bytes), options.token), metrics)
