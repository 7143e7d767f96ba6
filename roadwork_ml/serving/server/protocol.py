"""The Open Inference Protocol (KServe v2, what Triton speaks) over HTTP, with Triton's binary
tensor data extension — exactly what ``tritonclient.http`` sends and parses.

Request body: a JSON header, optionally followed by raw tensor bytes. When binary data
follows, the HTTP header ``Inference-Header-Content-Length`` gives the JSON's length and each
binary input carries ``parameters.binary_data_size``; BYTES elements are serialized as a
4-byte little-endian length followed by the bytes. Responses are JSON, or JSON + binary when
the request asked for binary outputs (request parameter ``binary_data_output`` or per-output
``parameters.binary_data``), in which case the response has the same header.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"

_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


class ProtocolError(ValueError):
    """The request does not follow the protocol (answered with 400 and the message)."""


@dataclass
class Tensor:
    """One named input tensor of a request; ``data`` is a numpy array of ``shape`` (BYTES: object array of ``bytes``)."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    outputs: list[dict[str, Any]] | None  # requested outputs (name + parameters), None = all defaults
    parameters: dict[str, Any]

    def wants_binary(self, name: str) -> bool:
        """Whether output ``name`` is sent as binary data (tritonclient's default)."""
        for out in self.outputs or []:
            if out.get("name") == name:
                return bool(
                    out.get("parameters", {}).get("binary_data", self.parameters.get("binary_data_output", False))
                )
        return bool(self.parameters.get("binary_data_output", False))


class DecompressedTooLarge(ValueError):
    """A compressed body inflates past the size limit (answered with 413)."""


def decompress(body: bytes, content_encoding: str | None, limit: int | None = None) -> bytes:
    """Undo ``Content-Encoding: gzip | deflate`` (tritonclient's request compression); the
    inflated body may not exceed ``limit`` bytes (a compression bomb gets 413, not the RAM)."""
    enc = (content_encoding or "identity").strip().lower()
    if enc == "identity":
        return body
    if enc not in ("gzip", "deflate"):
        raise ProtocolError(f"Content-Encoding {enc!r} is not supported (gzip, deflate, identity)")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS if enc == "gzip" else zlib.MAX_WBITS)
    try:
        out = d.decompress(body, (limit + 1) if limit else 0)
    except zlib.error as exc:
        raise ProtocolError(f"request body is not valid {enc} data: {exc}") from None
    if limit and len(out) > limit:
        raise DecompressedTooLarge(f"the {enc} request body inflates past the server's limit of {limit} bytes")
    if not d.eof:
        raise ProtocolError(f"request body is truncated {enc} data")
    return out


def deserialize_bytes(buf: bytes, count: int) -> list[bytes]:
    """``count`` length-prefixed elements (uint32 LE length + bytes) from ``buf``."""
    out, pos, n = [], 0, len(buf)
    for _ in range(count):
        if pos + 4 > n:
            raise ProtocolError(f"BYTES tensor data ends after {len(out)} of {count} elements")
        (size,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + size > n:
            raise ProtocolError(f"BYTES element {len(out)} claims {size} bytes, only {n - pos} left")
        out.append(bytes(buf[pos : pos + size]))
        pos += size
    if pos != n:
        raise ProtocolError(f"BYTES tensor data has {n - pos} trailing bytes after {count} elements")
    return out


def serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and d >= 0 for d in value):
        raise ProtocolError(f"input {name!r}: shape must be a list of non-negative integers, got {value!r}")
    return value


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse a v2 ``/infer`` body (JSON, or JSON + binary tensors) into an :class:`InferRequest`."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < n <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {n} is outside the body's {len(body)} bytes")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    try:
        req = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the request header is not valid JSON: {exc}") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise ProtocolError("the request must be a JSON object with a non-empty 'inputs' list")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("'parameters' must be an object")
    inputs: dict[str, Tensor] = {}
    pos = 0
    for spec in req["inputs"]:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ProtocolError("every input needs a 'name'")
        name, dtype = spec["name"], spec.get("datatype")
        if dtype not in _DTYPES:
            raise ProtocolError(f"input {name!r}: datatype {dtype!r} is not one of {sorted(_DTYPES)}")
        if name in inputs:
            raise ProtocolError(f"input {name!r} is given twice")
        shape = _shape(spec.get("shape"), name)
        count = int(np.prod(shape)) if shape else 1
        iparams = spec.get("parameters") or {}
        size = iparams.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or pos + size > len(binary):
                raise ProtocolError(
                    f"input {name!r}: binary_data_size {size!r} does not fit the {len(binary) - pos} binary bytes left"
                )
            chunk = binary[pos : pos + size]
            pos += size
            if dtype == "BYTES":
                arr = np.empty(count, dtype=object)
                arr[:] = deserialize_bytes(chunk, count)
            else:
                item = np.dtype(_DTYPES[dtype]).itemsize
                if size != count * item:
                    raise ProtocolError(
                        f"input {name!r}: {size} bytes for shape {shape} of {dtype} (expected {count * item})"
                    )
                arr = np.frombuffer(chunk, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<")).astype(
                    _DTYPES[dtype], copy=False
                )
        else:
            if "data" not in spec:
                raise ProtocolError(f"input {name!r} has neither 'data' nor binary_data_size")
            flat = np.asarray(spec["data"], dtype=object).reshape(-1) if dtype == "BYTES" else None
            if dtype == "BYTES":
                arr = np.empty(len(flat), dtype=object)
                arr[:] = [x.encode() if isinstance(x, str) else x for x in flat]
                if any(not isinstance(x, bytes) for x in arr):
                    raise ProtocolError(f"input {name!r}: BYTES data in JSON must be strings")
            else:
                try:
                    arr = np.asarray(spec["data"], dtype=_DTYPES[dtype]).reshape(-1)
                except (TypeError, ValueError) as exc:
                    raise ProtocolError(f"input {name!r}: data is not {dtype}: {exc}") from None
            if arr.size != count:
                raise ProtocolError(f"input {name!r}: {arr.size} values for shape {shape}")
        inputs[name] = Tensor(name, dtype, shape, arr.reshape(shape), iparams)
    if pos != len(binary):
        raise ProtocolError(
            f"{len(binary) - pos} binary bytes after the last input are not claimed by any binary_data_size"
        )
    outputs = req.get("outputs")
    if outputs is not None and (
        not isinstance(outputs, list)
        or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise ProtocolError("'outputs' must be a list of objects with a 'name'")
    rid = req.get("id")
    return InferRequest(
        id=str(rid) if rid is not None else None,
        inputs=inputs,
        outputs=outputs,
        parameters=params,
    )


def encode_infer_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: dict[str, tuple[str, np.ndarray]],
) -> tuple[bytes, int | None]:
    """Body of an infer response: ``outputs`` {name: (datatype, array)} in the order given.
    Returns (body, json_length) — json_length is None when the body is JSON only."""
    head: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": [],
    }
    if request.id is not None:
        head["id"] = request.id
    blobs = []
    for name, (dtype, arr) in outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": dtype,
            "shape": [int(d) for d in arr.shape],
        }
        if request.wants_binary(name):
            raw = (
                serialize_bytes([_as_bytes(x) for x in arr.reshape(-1)])
                if dtype == "BYTES"
                else np.ascontiguousarray(arr, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<")).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif dtype == "BYTES":
            entry["data"] = [_as_bytes(x).decode("utf-8", "replace") for x in arr.reshape(-1)]
        else:
            entry["data"] = [
                None if isinstance(v, float) and not np.isfinite(v) else v for v in arr.reshape(-1).tolist()
            ]
        head["outputs"].append(entry)
    text = json.dumps(head, separators=(",", ":")).encode()
    if not blobs:
        return text, None
    return text + b"".join(blobs), len(text)


def _as_bytes(x: Any) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()
