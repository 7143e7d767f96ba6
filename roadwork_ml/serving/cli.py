"""The ``roadwork`` command line.

    roadwork predict --bundle DIR PATH... [--format jsonl|csv] [--out FILE]
    roadwork export-hf --bundle DIR OUT [--model-name NAME] [--submitted-by WHO]
    roadwork serve [--bundle DIR] [--host H] [--port P] [--model-name NAME]   (see roadwork serve -h)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TextIO

from roadwork_ml.policy.uncertainty import FEATURE_NAMES

CSV_COLUMNS = ["image", "probability", "streetvision_probability", "decision", "prediction_set", "gate_confidence", *FEATURE_NAMES]


def _write_rows(records: list[dict], fmt: str, out: TextIO, writer) -> None:
    for rec in records:
        if fmt == "jsonl":
            out.write(json.dumps(rec) + "\n")
        else:
            writer.writerow({**{k: rec.get(k, "") for k in CSV_COLUMNS[:6]}, "prediction_set": "|".join(rec["prediction_set"]), **rec["features"]})


def cmd_predict(args: argparse.Namespace) -> int:
    from roadwork_ml.serving.predictor import BundlePredictor

    if args.backend == "tensorrt" or args.engine:
        from roadwork_ml.serving.server.command import check_backend

        check_backend(args.backend, args.engine, from_registry=False)
    predictor = BundlePredictor(args.bundle, backend=args.backend, threads=args.threads, engine=args.engine)
    projection = None
    if args.log_dir:
        from roadwork_ml.monitoring.reference import ReferenceProfile

        if not args.reference:
            raise ValueError("--log-dir needs --reference DIR (the reference_profile whose projection the log's embeddings use)")
        projection = ReferenceProfile.load(args.reference).projection
    log_parts = []
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS) if args.format == "csv" else None
    if writer:
        writer.writeheader()
    n_good, bad = 0, []
    try:
        for res in predictor.predict_paths(args.paths, batch_size=args.batch_size, progress=not args.no_progress, keep_outputs=projection is not None):
            _write_rows(res.records, args.format, out, writer)
            if projection is not None and res.outputs is not None:
                log_parts.append(predictor.inference_log(res.outputs, [r["image"] for r in res.records], projection))
            n_good += len(res.records)
            bad.extend(res.errors)
    finally:
        if args.out:
            out.close()
    print(f"roadwork predict: {n_good} image(s) predicted with {predictor.backend} (bundle {predictor.model_version}), {len(bad)} could not be read", file=sys.stderr)
    for b in bad:
        print(f"  BAD {b.image}: {b.reason}", file=sys.stderr)
    if log_parts:
        import pandas as pd

        from roadwork_ml.serving.predictor import append_day_logs

        for path in append_day_logs(args.log_dir, pd.concat(log_parts, ignore_index=True)):
            print(f"  inference log: {path}", file=sys.stderr)
    if args.errors:
        Path(args.errors).write_text("".join(json.dumps({"image": b.image, "reason": b.reason}) + "\n" for b in bad))
    return 1 if (args.strict and bad) or n_good == 0 and not bad else 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    from roadwork_ml.export.huggingface import export_hf

    card = export_hf(args.bundle, args.out, model_name=args.model_name, description=args.description, submitted_by=args.submitted_by, version=args.version)
    print(json.dumps(card, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roadwork", description="Predict with and export roadwork bundles.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="predict image files and folders with a bundle")
    p.add_argument("--bundle", required=True, help="bundle directory (hashes are verified)")
    p.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--out", help="output file (default: stdout)")
    p.add_argument("--errors", help="also write the unreadable files as JSON lines here")
    p.add_argument("--backend", choices=("auto", "onnx", "torch", "tensorrt"), default="auto")
    p.add_argument("--engine", help="TensorRT engine built from the bundle's model.onnx (with --backend tensorrt)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--strict", action="store_true", help="exit 1 when any file could not be read")
    p.add_argument("--log-dir", help="also append the monitoring inference log here (day=YYYY-MM-DD/log.parquet), for production_traffic's serving_log_dir")
    p.add_argument("--reference", help="reference_profile directory whose PCA projection the logged embeddings use")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)
    e = sub.add_parser("export-hf", help="write a Hugging Face model folder with StreetVision's model_card.json")
    e.add_argument("--bundle", required=True)
    e.add_argument("out")
    e.add_argument("--model-name", default="roadwork-classifier")
    e.add_argument("--description", default="Roadwork-present classifier (roadwork bundle: ONNX + safetensors, calibrated, folded at 0.5)")
    e.add_argument("--submitted-by", default="roadwork")
    e.add_argument("--version", default=None, help="default: the bundle's roadwork version + weights hash")
    e.set_defaults(func=cmd_export_hf)
    from roadwork_ml.serving.server import add_serve_parser

    add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"roadwork {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
