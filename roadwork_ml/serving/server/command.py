"""``roadwork serve``: build the model holder, the inference-log writer and the app, then run
uvicorn until SIGINT / SIGTERM (a clean stop drains the queue and writes the whole log)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("roadwork.serve")


def default_tracking_uri() -> str:
    """The store ``deployed_model`` writes by default (MlflowTracking's default): SQLite under $DAGSTER_HOME."""
    home = Path(os.environ.get("DAGSTER_HOME") or "dagster_home").resolve()
    return f"sqlite:///{home / 'mlflow.db'}"


def add_serve_parser(sub) -> argparse.ArgumentParser:
    """Register ``serve`` on the ``roadwork`` command's subparsers."""
    p = sub.add_parser(
        "serve",
        help="serve a bundle over HTTP (KServe v2 / Triton protocol, /predict, /metrics)",
        description="Serve the champion (the MLflow registry's alias, default) or --bundle DIR. Access needs a bearer token "
        "from $ROADWORK_SERVE_TOKEN or --token-file (or --no-auth); /v2/health/* is open.",
    )
    p.add_argument(
        "--bundle",
        help="serve this bundle directory instead of the registry's champion",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="with --bundle: reload when the directory's manifest changes",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking/registry URI (default sqlite:///$DAGSTER_HOME/mlflow.db)",
    )
    p.add_argument(
        "--registered-model",
        default=None,
        help="registered model name (default: the profile's deploy.registered_model)",
    )
    p.add_argument(
        "--alias",
        default="champion",
        help="registry alias to serve and follow (default champion)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", default="roadwork", help="the model's name in /v2/models/{name}")
    p.add_argument(
        "--profile",
        default=None,
        help="profile with the serving / batching / monitoring settings (default $ROADWORK_PROFILE or demo)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="profile override, e.g. serving.instances=2 (repeatable)",
    )
    p.add_argument("--backend", choices=("auto", "onnx", "torch", "tensorrt"), default="auto")
    p.add_argument(
        "--engine",
        help="TensorRT engine built from this bundle's model.onnx (with --backend tensorrt)",
    )
    p.add_argument("--device", default=None, help="torch device for --backend torch (cpu, cuda)")
    p.add_argument(
        "--reference",
        help="reference_profile directory whose PCA projection the inference log's embeddings use",
    )
    p.add_argument(
        "--log-dir",
        help="write the monitoring inference log here (default: the profile's monitoring.serving_log_dir)",
    )
    p.add_argument(
        "--token-file",
        help="file holding the bearer token (else $ROADWORK_SERVE_TOKEN)",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without a token (only behind something that authenticates)",
    )
    p.add_argument(
        "--escalation-file",
        default=os.environ.get("ROADWORK_ESCALATION_FILE"),
        help="the platform's escalation state ($DAGSTER_HOME/artifacts/audit/escalation.json; default "
        "$ROADWORK_ESCALATION_FILE): while it exists, the SCRC policy decides at its stricter risk",
    )
    p.add_argument(
        "--cache-dir",
        help="where champions are copied before loading (default: a temporary directory)",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_serve)
    return p


def check_backend(backend: str, engine: str | None, from_registry: bool) -> None:
    """Refuse, before anything loads, a TensorRT setup that cannot work here."""
    if backend != "tensorrt":
        if engine:
            raise ValueError("--engine is only used with --backend tensorrt")
        return
    if not engine:
        raise ValueError(
            "--backend tensorrt needs --engine PATH (built from the bundle's model.onnx by the tensorrt_engine asset)"
        )
    if from_registry:
        raise ValueError(
            "--backend tensorrt serves one engine built for one bundle: give --bundle DIR (a registry champion would need its own engine)"
        )
    from roadwork_ml.export.tensorrt_build import (
        TensorRTUnavailable,
        tensorrt_available,
    )

    ok, reason = tensorrt_available()
    if not ok:
        raise TensorRTUnavailable(reason)
    if not Path(engine).is_file():
        raise FileNotFoundError(f"TensorRT engine {engine} does not exist")


def build_server(args: argparse.Namespace):
    """(app, holder, options) from parsed ``serve`` arguments; loads and warms the first champion."""
    from roadwork_ml.config import load_profile
    from roadwork_ml.serving.server.app import ServerOptions, create_app
    from roadwork_ml.serving.server.auth import load_token
    from roadwork_ml.serving.server.logwriter import InferenceLogWriter
    from roadwork_ml.serving.server.metrics import ServerMetrics
    from roadwork_ml.serving.server.model import ServedModel
    from roadwork_ml.serving.server.swap import (
        Candidate,
        FixedBundle,
        ModelHolder,
        RegistryChampion,
    )

    profile = load_profile(args.profile, args.overrides)
    sv, tc = profile.serving, profile.export.triton
    check_backend(args.backend, args.engine, from_registry=not args.bundle)
    token = None if args.no_auth else load_token(args.token_file)
    if token is None and not args.no_auth:
        raise ValueError("no bearer token: set $ROADWORK_SERVE_TOKEN or --token-file (or pass --no-auth deliberately)")
    log_dir = args.log_dir or profile.monitoring.serving_log_dir
    if log_dir and not args.reference:
        raise ValueError(
            f"the inference log ({log_dir}) needs --reference DIR: the reference_profile whose PCA projection its embeddings use"
        )
    if args.bundle:
        source = FixedBundle(args.bundle, watch=args.watch)
    else:
        source = RegistryChampion(
            args.tracking_uri or default_tracking_uri(),
            args.registered_model or profile.deploy.registered_model,
            args.alias,
        )
    # up to max_batch_size: ONNX Runtime's arena reaches its steady size before the first request
    warm = tuple(sorted({1, *tc.preferred_batch_sizes, tc.max_batch_size}))

    def load(bundle: Path, cand: Candidate) -> ServedModel:
        model = ServedModel(
            bundle,
            cand.version,
            cand.log_version,
            backend=args.backend,
            engine=args.engine,
            threads=sv.intra_op_threads,
            instances=sv.instances,
            device=args.device,
            reference_dir=args.reference if log_dir else None,
            escalation_file=args.escalation_file,
        )
        model.warm_up(warm)
        return model

    metrics = ServerMetrics()
    holder = ModelHolder(
        source,
        load,
        args.cache_dir or tempfile.mkdtemp(prefix="roadwork-serve-"),
        on_swap=lambda new, old: metrics.set_model(new.info(), swapped=old is not None),
        on_failure=lambda cand, reason: metrics.swap_failures.inc(),
    )
    holder.load_initial()
    writer = (
        InferenceLogWriter(
            log_dir,
            sv.log_flush_rows,
            sv.log_flush_seconds,
            sv.log_compact_seconds,
            on_rows=metrics.log_rows.inc,
        )
        if log_dir
        else None
    )
    watching = bool(args.watch) or not args.bundle
    options = ServerOptions(
        model_name=args.model_name,
        max_batch_size=tc.max_batch_size,
        preferred_batch_sizes=tuple(tc.preferred_batch_sizes),
        max_queue_delay_us=tc.max_queue_delay_us,
        instances=sv.instances,
        decode_threads=sv.decode_threads,
        request_timeout_s=sv.request_timeout_s,
        max_request_bytes=sv.max_request_bytes,
        champion_poll_seconds=sv.champion_poll_seconds if watching else None,
        token=token,
    )
    return create_app(holder, options, metrics, writer), holder, options


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    app, holder, options = build_server(args)
    m = holder.model
    print(
        f"roadwork serve: {m.log_version} ({m.backend}, bundle manifest {m.bundle_sha256[:12]}) as {options.model_name!r} on http://{args.host}:{args.port}"
        f"{'' if options.token else ' WITHOUT authentication'}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    return 0
