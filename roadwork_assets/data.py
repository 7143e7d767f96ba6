"""Data assets: ``source_images`` (one partition per source) and the leakage-proof ``splits``."""

from collections import Counter
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from roadwork_assets.metadata import humane, image_md, profile_md, table
from roadwork_assets.resources import ArtifactStore, ProfileResource
from roadwork_ml.artifacts import (
    atomic_path,
    atomic_write_json,
    sha256_file,
    verify_dir,
    write_manifest,
)
from roadwork_ml.config import SOURCE_NAMES
from roadwork_ml.contracts import Split
from roadwork_ml.data.decode import manifest_row, store_relpath
from roadwork_ml.data.records import MANIFEST_SCHEMA, SPLITS_SCHEMA, Quarantined, quarantine_table, validate_table
from roadwork_ml.data.sources import iter_source

if TYPE_CHECKING:
    from roadwork_ml.training.trainer import TensorSplit

source_partitions = dg.StaticPartitionsDefinition(list(SOURCE_NAMES))
SOURCE_IMAGES = "source_images"
SPLITS = "splits"


def _thumbnail(data: bytes, label: int, rec) -> tuple[np.ndarray, str]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        img.thumbnail((96, 96))
        return np.asarray(img), f"{'roadwork' if label else 'none'} · {rec.weather} · h{rec.hour}"


@dg.asset(partitions_def=source_partitions, group_name="data", kinds={"parquet", "pillow"})
def source_images(
    context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore
) -> dg.MaterializeResult:
    """Read one source (its configured real path, or synthetic scenes in its style) through safe
    decoding; write the images, a Parquet manifest and the quarantine list.

    Images stream to disk as they are decoded, so memory stays flat on the 10 GB NATIX set.
    """
    from roadwork_ml.evaluation.plots import thumbnail_grid

    resolved = settings.resolved()
    profile = resolved.profile
    name = context.partition_key
    if name not in profile.data.sources:
        raise ValueError(
            f"profile {profile.name!r} configures no source {name!r}; configured: {sorted(profile.data.sources)}"
        )
    scfg = profile.data.sources[name]
    origin = scfg.path or f"synthetic ({scfg.synthetic.n_images} images, seed {profile.data.seed})"
    context.log.info(f"reading source {name} from {origin}")
    stats: dict = {}
    rows: list[dict] = []
    quarantined: list[Quarantined] = []
    thumbs: dict[int, list] = {0: [], 1: []}
    with store.staging(SOURCE_IMAGES, name, profile=resolved) as out:
        for item in iter_source(
            name, scfg, profile.data, gps_cell_deg=profile.splits.gps_cell_deg, progress=True, stats=stats
        ):
            if isinstance(item, Quarantined):
                quarantined.append(item)
                continue
            rel = store_relpath(item)
            target = out / rel
            if not target.exists():  # content-addressed: exact duplicates share one file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(item.image_bytes)
            rows.append(manifest_row(item, rel))
            if len(thumbs[item.label]) < 8:
                thumbs[item.label].append(_thumbnail(item.image_bytes, item.label, item.record))
        manifest_table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        validate_table(manifest_table, MANIFEST_SCHEMA)
        with atomic_path(out / "manifest.parquet") as tmp:
            pq.write_table(manifest_table, tmp)
        with atomic_path(out / "quarantine.parquet") as tmp:
            pq.write_table(quarantine_table(quarantined), tmp)
        atomic_write_json(out / "stats.json", stats)
        picked = thumbs[1] + thumbs[0]
        if picked:
            thumbnail_grid([t[0] for t in picked], [t[1] for t in picked], out / "thumbnails.png")
        manifest = write_manifest(
            out, extra={"kind": "source_images", "source": name, "profile": profile.name}, skip=("images",)
        )

    df = manifest_table.to_pandas()
    labels = Counter(df["label"].tolist())
    metadata = {
        "path": dg.MetadataValue.path(str(store.location(SOURCE_IMAGES, name))),
        "origin": origin,
        "images": len(df),
        "positives": int(labels.get(1, 0)),
        "negatives": int(labels.get(0, 0)),
        "quarantined": len(quarantined),
        "quarantine_reasons": dg.MetadataValue.json(stats.get("quarantine_reasons", {})),
        "quarantine": table([{"origin": q.origin, "reason": q.reason} for q in quarantined[:50]])
        if quarantined
        else "none",
        "per_time_of_day": table(_label_shares(df, "time_of_day")),
        "per_weather": table(_label_shares(df, "weather")),
        "cameras": int(df["camera_id"].nunique()),
        "groups": int(df["group_id"].nunique()),
        "stats": dg.MetadataValue.json(stats),
        "manifest_sha256": manifest["files"]["manifest.parquet"]["sha256"],
        **profile_md(resolved),
    }
    thumbs_png = store.location(SOURCE_IMAGES, name) / "thumbnails.png"
    if thumbs_png.exists():
        metadata["thumbnails"] = image_md(thumbs_png, "thumbnails")
    return dg.MaterializeResult(metadata=humane(metadata))


def _label_shares(df: pd.DataFrame, column: str) -> list[dict]:
    g = df.groupby(column)["label"]
    return [
        {column: str(k), "images": int(n), "positive_share": float(m)}
        for (k, n), m in zip(g.count().items(), g.mean(), strict=False)
    ]


def load_source_manifest(store: ArtifactStore, partition: str) -> tuple:
    """(version directory, manifest table) of one source_images partition, hashes and schema verified."""
    directory = store.read(SOURCE_IMAGES, partition)
    verify_dir(directory)
    table_ = pq.read_table(directory / "manifest.parquet")
    validate_table(table_, MANIFEST_SCHEMA)
    return directory, table_


@dg.asset_check(
    asset=source_images,
    blocking=True,
    description="the manifest matches its declared schema, every listed image file exists with its recorded sha256",
)
def manifest_valid(context: dg.AssetCheckExecutionContext, store: ArtifactStore) -> dg.AssetCheckResult:
    partitions = [context.partition_key] if context.has_partition_key else store.partitions(SOURCE_IMAGES)
    rows = []
    for name in partitions:
        directory, table_ = load_source_manifest(store, name)
        bad = [
            p
            for p, h in zip(table_.column("path").to_pylist(), table_.column("sha256").to_pylist(), strict=False)
            if sha256_file(directory / p) != h
        ]
        rows.append({"source": name, "rows": table_.num_rows, "hash_mismatches": len(bad)})
    passed = bool(rows) and all(r["hash_mismatches"] == 0 for r in rows)
    return dg.AssetCheckResult(passed=passed, metadata=humane({"sources": table(rows) if rows else "none"}))


SPLIT_CHECKS = (
    "splits_disjoint",
    "no_group_in_two_splits",
    "both_classes_in_every_split",
    "class_share_within_tolerance",
    "no_near_duplicates_across_splits",
)


def _load_pool(store: ArtifactStore, sources: list[str]) -> pd.DataFrame:
    """Exactly the configured source partitions, each hash-verified; a missing one is an error naming it."""
    missing = [name for name in sources if not store.exists(SOURCE_IMAGES, name)]
    if missing:
        raise FileNotFoundError(
            f"source_images partition(s) {missing} configured by the profile are not materialized under {store.location(SOURCE_IMAGES)}: "
            f"materialize them first (dagster asset materialize --select source_images --partition {missing[0]})"
        )
    frames = []
    for name in sources:
        _, table_ = load_source_manifest(store, name)
        df = table_.to_pandas()
        df["manifest_dir"] = f"{SOURCE_IMAGES}/{name}"
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@dg.asset(deps=[source_images], group_name="data", kinds={"parquet"})
def splits(context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore) -> dg.MaterializeResult:
    """Pool the profile's sources (exactly its configured source_images partitions), drop exact (sha256) and near (pHash) duplicates, fuse per the profile's
    strategy, and assign group-aware, label-stratified TRAIN / VAL_SELECT / VAL_CALIB / VAL_TEST."""
    from roadwork_ml.data.dedup import deduplicate
    from roadwork_ml.data.fusion import fuse
    from roadwork_ml.data.splitting import assign_splits, split_report

    resolved = settings.resolved()
    profile = resolved.profile
    scfg = profile.splits
    pool = _load_pool(store, sorted(profile.data.sources))
    kept, removed = deduplicate(pool, scfg.near_duplicate_hamming)
    fused, fusion_report = fuse(kept, scfg.fusion, scfg.source_weights, scfg.mixing_ratios, scfg.seed)
    stratify = "stratum" if "stratum" in fused.columns else None
    fused = fused.assign(
        split=assign_splits(fused, scfg.ratios, scfg.seed, scfg.class_share_tolerance, stratify_col=stratify).to_numpy()
    )
    out_df = fused[[f.name for f in SPLITS_SCHEMA]].sort_values(["split", "record_id"]).reset_index(drop=True)
    splits_table = pa.Table.from_pandas(out_df, schema=SPLITS_SCHEMA, preserve_index=False)
    report = split_report(out_df, "split")
    with store.staging(SPLITS, profile=resolved) as out:
        with atomic_path(out / "splits.parquet") as tmp:
            pq.write_table(splits_table, tmp)
        with atomic_path(out / "duplicates.parquet") as tmp:
            pq.write_table(
                pa.Table.from_pandas(
                    removed.astype({c: str for c in removed.columns if removed[c].dtype == object}),
                    preserve_index=False,
                ),
                tmp,
            )
        atomic_write_json(out / "report.json", {"splits": report, "fusion": fusion_report, "profile": profile.name})
        manifest = write_manifest(out, extra={"kind": "splits", "fingerprint": _fingerprint(out_df)})
    kinds = Counter(removed["kind"].tolist()) if len(removed) else Counter()
    rows = [
        {
            "split": s.value,
            "images": int((out_df.split == s.value).sum()),
            "positive_share": float(out_df.loc[out_df.split == s.value, "label"].mean()),
            "groups": int(out_df.loc[out_df.split == s.value, "group_id"].nunique()),
        }
        for s in Split
    ]
    return dg.MaterializeResult(
        metadata=humane(
            {
                "path": dg.MetadataValue.path(str(store.location(SPLITS) / "splits.parquet")),
                "fingerprint": manifest["fingerprint"],
                "pool": len(pool),
                "kept": len(out_df),
                "exact_duplicates_removed": int(kinds.get("exact", 0)),
                "near_duplicates_removed": int(kinds.get("near", 0)),
                "fusion": scfg.fusion,
                "fusion_report": dg.MetadataValue.json(fusion_report),
                "splits": table(rows),
                "pool_positive_share": float(out_df["label"].mean()),
                "sources": ", ".join(sorted(profile.data.sources)),
                **profile_md(resolved),
            }
        )
    )


def _fingerprint(df: pd.DataFrame) -> str:
    """sha256 over (record_id, split, sha256) rows: identifies this exact assignment."""
    import hashlib

    h = hashlib.sha256()
    for rid, split, digest in df[["record_id", "split", "sha256"]].itertuples(index=False):
        h.update(f"{rid}\t{split}\t{digest}\n".encode())
    return h.hexdigest()


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=splits, blocking=True) for name in SPLIT_CHECKS],
    description="leakage and balance checks of the split assignment, measured on the written file by roadwork_ml.data.splitting.split_violations",
)
def splits_checks(store: ArtifactStore, settings: ProfileResource):
    from roadwork_ml.data.splitting import split_violations

    scfg = settings.load().splits
    df = load_splits(store)
    found = split_violations(df, scfg.class_share_tolerance, max_hamming=scfg.near_duplicate_hamming)
    pool_share = float(df["label"].mean())
    shares = [
        {
            "split": s.value,
            "rows": int((df.split == s.value).sum()),
            "positive_share": float(df.loc[df.split == s.value, "label"].mean()),
        }
        for s in Split
    ]
    context = {
        "splits_disjoint": {"records": int(df.record_id.nunique())},
        "no_group_in_two_splits": {"groups": int(df.group_id.nunique())},
        "both_classes_in_every_split": {"shares": table(shares)},
        "class_share_within_tolerance": {
            "pool_share": pool_share,
            "max_deviation": max(abs(r["positive_share"] - pool_share) for r in shares),
            "tolerance": scfg.class_share_tolerance,
            "shares": table(shares),
        },
        "no_near_duplicates_across_splits": {"max_hamming": scfg.near_duplicate_hamming},
    }
    for name in SPLIT_CHECKS:
        problems = found[name]
        yield dg.AssetCheckResult(
            check_name=name,
            passed=not problems,
            metadata={"violations": "; ".join(problems) or "none", **context[name]},
        )


# --- loaders of the splits artifact (and of the images it points at) ----------------------------


def load_splits(store: ArtifactStore) -> pd.DataFrame:
    """The splits table (one row per kept image, with its split), hash-verified. Every split's
    rows, VAL_TEST's included: only the splits checks read it whole."""
    directory = store.read(SPLITS)
    verify_dir(directory)
    table_ = pq.read_table(directory / "splits.parquet")
    validate_table(table_, SPLITS_SCHEMA)
    return table_.to_pandas()


def split_rows(df: pd.DataFrame, split: Split) -> pd.DataFrame:
    """Rows of one split in their canonical order (by record_id)."""
    return df[df["split"] == Split(split).value].sort_values("record_id", kind="stable").reset_index(drop=True)


def load_split_rows(store: ArtifactStore, split: Split) -> pd.DataFrame:
    """Rows of one split from the splits artifact; the read is logged with the split's name."""
    store.log_read(SPLITS, split=Split(split).value)
    return split_rows(load_splits(store), split)


def load_split_tensors(
    store: ArtifactStore, rows: pd.DataFrame, split: Split, size: int, verify: bool = True, progress: bool = False
) -> "TensorSplit":
    """Decode the images of ``rows`` (from their source_images partitions) to ``[N, 3, size, size]``
    uint8, checking each file's sha256 first."""
    import torch

    from roadwork_ml.data.transforms import load_image_batch, load_verified_batch
    from roadwork_ml.training.trainer import TensorSplit

    paths = split_image_paths(store, rows, split)
    if verify:
        images = load_verified_batch(paths, list(rows["sha256"]), size, progress=progress)
    else:
        images = load_image_batch(paths, size, progress=progress)
    labels = torch.from_numpy(rows["label"].to_numpy().astype(np.int64))
    return TensorSplit(images, labels, Split(split))


def split_image_paths(store: ArtifactStore, rows: pd.DataFrame, split: Split) -> list:
    """Absolute paths of the images of ``rows`` in their source_images partitions (each read logged with ``split``)."""
    dirs = {
        m: store.read(SOURCE_IMAGES, m.rsplit("/", 1)[-1], split=Split(split).value)
        for m in rows["manifest_dir"].unique()
    }
    return [dirs[m] / p for m, p in zip(rows["manifest_dir"], rows["path"], strict=True)]


def load_split_dataset(
    store: ArtifactStore, rows: pd.DataFrame, split: Split, size: int, profile, cache_side: int | None = None
):
    """The streaming dataset of ``rows`` (:func:`roadwork_ml.training.dataset.open_split_dataset`):
    decoded in the profile's DataLoader workers, each file's sha256 checked against the manifest,
    kept decoded in memory only when it fits ``data.loader.in_memory_max_gb``."""
    from roadwork_ml.training.dataset import open_rows_dataset

    paths = split_image_paths(store, rows, split)
    return open_rows_dataset(paths, rows, Split(split), size, profile.data.decode, profile.data.loader, cache_side)


def load_train_rows(store: ArtifactStore, profile) -> pd.DataFrame:
    """TRAIN rows phase 1 trains on: all, or ``train.max_train_images`` drawn with ``train.seed``
    (the same rows for phase 1, its hard-negative folds and each HPO trial)."""
    rows = load_split_rows(store, Split.TRAIN)
    if profile.train.max_train_images:
        rows = (
            rows.sample(n=min(len(rows), profile.train.max_train_images), random_state=profile.train.seed)
            .sort_values("record_id")
            .reset_index(drop=True)
        )
    return rows
