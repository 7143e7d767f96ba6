"""The ``roadwork`` command line.

    roadwork predict --bundle DIR PATH... [--format jsonl|csv] [--out FILE]
    roadwork export-hf --bundle DIR OUT [--model-name NAME] [--submitted-by WHO]
    roadwork check-profile NAME|PATH [--set section.key=value ...]
    roadwork serve [--bundle DIR] [--host H] [--port P] [--model-name NAME]   (see roadwork serve -h)

Every error is reported on stderr as ``roadwork <command>: error: ...`` (no traceback), exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from roadwork_ml.policy.uncertainty import FEATURE_NAMES

CSV_COLUMNS = [
    "image",
    "image_path_b64",
    "probability",
    "streetvision_probability",
    "decision",
    "prediction_set",
    "gate_confidence",
    *FEATURE_NAMES,
]
EXIT_OK, EXIT_STRICT, EXIT_ERROR, EXIT_NOTHING = 0, 1, 2, 3
PREDICT_EXIT_CODES = """exit status:
  0  at least one image predicted; files that could not be read are listed on stderr
     (and in --errors) but do not fail the run without --strict
  1  --strict and at least one input could not be read
  2  error: bad arguments, bundle missing or refused (hash mismatch), output not writable
  3  nothing predicted: no image file found, or no input could be read

file names: "image" is the name as UTF-8 text; bytes that are not UTF-8 appear as \\xNN
and a backslash as \\\\; whenever "image" is not the exact name, "image_path_b64" holds the
name's raw bytes in base64 (CSV, JSON lines, --errors); --log-dir's image_id is "image"."""


def _name_fields(path: str) -> dict:
    from roadwork_ml.serving.inputs import escape_path, path_b64

    return {"image": escape_path(path), "image_path_b64": path_b64(path)}


def _write_rows(records: list[dict], fmt: str, out: TextIO, writer) -> None:
    for rec in records:
        rec = {**_name_fields(rec["image"]), **{k: v for k, v in rec.items() if k != "image"}}
        if fmt == "jsonl":
            out.write(json.dumps(rec) + "\n")
        else:
            writer.writerow(
                {
                    **{k: "" if rec.get(k) is None else rec[k] for k in CSV_COLUMNS[:7]},
                    "prediction_set": "|".join(rec["prediction_set"]),
                    **rec["features"],
                }
            )


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """UTF-8 text to ``path`` (a regular file is written to a temporary sibling and renamed
    into place only when the run finishes, so a failed run never leaves half a file) or to stdout."""
    if not path:
        out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
        try:
            yield out
        finally:
            out.detach()
        return
    target = Path(path)
    if target.exists() and not target.is_file():  # /dev/stdout, a fifo: write through, never replace it
        with open(target, "w", encoding="utf-8", newline="") as f:
            yield f
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        f = open(tmp, "x", encoding="utf-8", newline="")  # noqa: SIM115 - closed and renamed below
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {target}: {exc.strerror}") from exc
    try:
        yield f
        f.close()
        os.replace(tmp, target)
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise


def _nothing_found_message(paths: list[str], scan) -> str:
    from roadwork_ml.serving.inputs import describe_search, escape_path

    where = ", ".join(escape_path(p) for p in paths)
    msg = f"roadwork predict: no image found in {where}: looked for {describe_search()}"
    if scan.skipped:
        msg += f"; {len(scan.skipped)} other file(s) skipped, e.g. {escape_path(scan.skipped[0])}"
    return msg


def cmd_predict(args: argparse.Namespace) -> int:
    from roadwork_ml.serving.inputs import escape_path, scan_inputs
    from roadwork_ml.serving.predictor import BundlePredictor

    if args.backend == "tensorrt" or args.engine:
        from roadwork_ml.serving.server.command import check_backend

        check_backend(args.backend, args.engine, from_registry=False)
    predictor = BundlePredictor(args.bundle, backend=args.backend, threads=args.threads, engine=args.engine)
    projection = None
    if args.log_dir:
        from roadwork_ml.monitoring.reference import ReferenceProfile

        if not args.reference:
            raise ValueError(
                "--log-dir needs --reference DIR (the reference_profile whose projection the log's embeddings use)"
            )
        projection = ReferenceProfile.load(args.reference).projection
    scan = scan_inputs(args.paths)
    if not scan.files and not scan.problems:
        print(_nothing_found_message(args.paths, scan), file=sys.stderr)
        return EXIT_NOTHING
    log_parts = []
    n_good, bad = 0, []
    with _output(args.out) as out:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS) if args.format == "csv" else None
        if writer:
            writer.writeheader()
        for res in predictor.predict_paths(
            args.paths,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            keep_outputs=projection is not None,
            scan=scan,
        ):
            _write_rows(res.records, args.format, out, writer)
            if projection is not None and res.outputs is not None:
                log_parts.append(
                    predictor.inference_log(res.outputs, [escape_path(r["image"]) for r in res.records], projection)
                )
            n_good += len(res.records)
            bad.extend(res.errors)
    if args.errors:
        with _output(args.errors) as err:
            err.write("".join(json.dumps({**_name_fields(b.image), "reason": b.reason}) + "\n" for b in bad))
    if log_parts:
        import pandas as pd

        from roadwork_ml.serving.predictor import append_day_logs

        for path in append_day_logs(args.log_dir, pd.concat(log_parts, ignore_index=True)):
            print(f"  inference log: {path}", file=sys.stderr)
    print(
        f"roadwork predict: {n_good} image(s) predicted with {predictor.backend}, model {predictor.identity.label}; {len(bad)} could not be read; "
        f"{len(scan.skipped)} file(s) skipped (suffix not an image suffix)",
        file=sys.stderr,
    )
    for b in bad:
        print(f"  BAD {escape_path(b.image)}: {b.reason}", file=sys.stderr)
    for path in scan.skipped[:10]:
        print(f"  SKIPPED {escape_path(path)}: not one of the image suffixes", file=sys.stderr)
    if len(scan.skipped) > 10:
        print(f"  ... and {len(scan.skipped) - 10} more skipped", file=sys.stderr)
    if n_good == 0:
        print("roadwork predict: no image could be read", file=sys.stderr)
        return EXIT_NOTHING
    return EXIT_STRICT if args.strict and bad else EXIT_OK


def cmd_export_hf(args: argparse.Namespace) -> int:
    from roadwork_ml.export.huggingface import export_hf

    card = export_hf(
        args.bundle,
        args.out,
        model_name=args.model_name,
        description=args.description,
        submitted_by=args.submitted_by,
        version=args.version,
    )
    print(json.dumps(card, indent=2))
    return EXIT_OK


def cmd_check_profile(args: argparse.Namespace) -> int:
    from roadwork_ml.config import describe_profile, load_profile

    profile = load_profile(args.profile, args.set)
    print(describe_profile(args.profile, profile))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roadwork",
        description="Predict with and export roadwork bundles; check profiles.",
        epilog="Errors are reported on stderr without a traceback, exit status 2; `roadwork predict --help` lists its exit codes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "predict",
        help="predict image files and folders with a bundle",
        epilog=PREDICT_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", required=True, help="bundle directory (hashes are verified)")
    p.add_argument(
        "paths", nargs="+", help="image files and/or folders (searched recursively, symlinked folders followed once)"
    )
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--out", help="output file, UTF-8, written when the run ends (default: stdout)")
    p.add_argument(
        "--errors",
        help="also write the files that could not be read as JSON lines (image, image_path_b64, reason) here",
    )
    p.add_argument("--backend", choices=("auto", "onnx", "torch", "tensorrt"), default="auto")
    p.add_argument("--engine", help="TensorRT engine built from the bundle's model.onnx (with --backend tensorrt)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--strict", action="store_true", help="exit 1 when any file could not be read")
    p.add_argument(
        "--log-dir",
        help="also append the monitoring inference log here (day=YYYY-MM-DD/log.parquet), for production_traffic's serving_log_dir",
    )
    p.add_argument("--reference", help="reference_profile directory whose PCA projection the logged embeddings use")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)
    e = sub.add_parser(
        "export-hf",
        help="write a Hugging Face model folder with StreetVision's model_card.json",
        epilog="exit status: 0 written; 2 error (bundle refused, OUT exists and is not empty, not writable)",
    )
    e.add_argument("--bundle", required=True)
    e.add_argument("out", help="a new or empty folder")
    e.add_argument("--model-name", default="roadwork-classifier")
    e.add_argument(
        "--description",
        default="Roadwork-present classifier (roadwork bundle: ONNX + safetensors, calibrated, folded at 0.5)",
    )
    e.add_argument("--submitted-by", default="roadwork")
    e.add_argument(
        "--version", default=None, help="default: the roadwork version + the model's registry version and manifest hash"
    )
    e.set_defaults(func=cmd_export_hf)
    c = sub.add_parser(
        "check-profile",
        help="validate a profile (name or YAML path) without starting Dagster",
        epilog="exit status: 0 valid; 2 invalid (each problem on its own line: key, what is allowed, the closest valid key)",
    )
    c.add_argument("profile", help="a shipped profile name (demo, production, tiny) or a YAML path")
    c.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override, as the Dagster launchpad does (repeatable)",
    )
    c.set_defaults(func=cmd_check_profile)
    from roadwork_ml.serving.server import add_serve_parser

    add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, RuntimeError) as exc:  # IntegrityError, ProfileError, ValidationError are among these
        from roadwork_ml.serving.inputs import safe_text

        print(safe_text(f"roadwork {args.command}: error: {exc}"), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"roadwork {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
