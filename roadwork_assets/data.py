"""Data assets: ``source_images`` (one partition per source) and the leakage-proof ``splits``."""


from collections import Counter

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from roadwork_assets.loaders import SPLITS_DIR, load_splits
from roadwork_assets.metadata import image_md, table_md
from roadwork_assets.resources import ArtifactStore, ProfileResource, RunOverrides
from roadwork_ml.artifacts import atomic_path, atomic_write_json, verify_dir, write_manifest
from roadwork_ml.config import SOURCE_NAMES
from roadwork_ml.contracts import Split
from roadwork_ml.data.decode import manifest_row, store_relpath
from roadwork_ml.data.records import MANIFEST_SCHEMA, SPLITS_SCHEMA, Quarantined, quarantine_table, validate_table
from roadwork_ml.data.sources import iter_source
from roadwork_ml.evaluation.plots import thumbnail_grid

source_partitions = dg.StaticPartitionsDefinition(list(SOURCE_NAMES))
SOURCE_DIR = "source_images"


def _thumbnail(data: bytes, label: int, rec) -> tuple[np.ndarray, str]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        img.thumbnail((96, 96))
        return np.asarray(img), f"{'roadwork' if label else 'none'} · {rec.weather} · h{rec.hour}"


@dg.asset(partitions_def=source_partitions, group_name="data", kinds={"parquet", "pillow"})
def source_images(context: dg.AssetExecutionContext, config: RunOverrides, settings: ProfileResource, store: ArtifactStore) -> dg.MaterializeResult:
    """Read one source (its configured real path, or synthetic scenes in its style) through safe
    decoding; write the images, a Parquet manifest and the quarantine list.

    Images stream to disk as they are decoded, so memory stays flat on the 10 GB NATIX set.
    """
    profile = settings.load(config.overrides)
    name = context.partition_key
    if name not in profile.data.sources:
        raise ValueError(f"profile {profile.name!r} configures no source {name!r}; configured: {sorted(profile.data.sources)}")
    scfg = profile.data.sources[name]
    origin = scfg.path or f"synthetic ({scfg.synthetic.n_images} images, seed {profile.data.seed})"
    context.log.info(f"reading source {name} from {origin}")
    stats: dict = {}
    rows: list[dict] = []
    quarantined: list[Quarantined] = []
    thumbs: dict[int, list] = {0: [], 1: []}
    with store.staging(SOURCE_DIR, name) as out:
        for item in iter_source(name, scfg, profile.data, gps_cell_deg=profile.splits.gps_cell_deg, progress=True, stats=stats):
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
        table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        validate_table(table, MANIFEST_SCHEMA)
        with atomic_path(out / "manifest.parquet") as tmp:
            pq.write_table(table, tmp)
        with atomic_path(out / "quarantine.parquet") as tmp:
            pq.write_table(quarantine_table(quarantined), tmp)
        atomic_write_json(out / "stats.json", stats)
        picked = thumbs[1] + thumbs[0]
        if picked:
            thumbnail_grid([t[0] for t in picked], [t[1] for t in picked], out / "thumbnails.png")
        manifest = write_manifest(out, extra={"kind": "source_images", "source": name, "profile": profile.name}, skip=("images",))

    df = table.to_pandas()
    labels = Counter(df["label"].tolist())
    metadata = {
        "path": dg.MetadataValue.path(str(store.path(SOURCE_DIR, name))),
        "origin": origin,
        "images": len(df),
        "positives": int(labels.get(1, 0)),
        "negatives": int(labels.get(0, 0)),
        "quarantined": len(quarantined),
        "quarantine_reasons": dg.MetadataValue.json(stats.get("quarantine_reasons", {})),
        "quarantine": table_md([{"origin": q.origin, "reason": q.reason} for q in quarantined[:50]]) if quarantined else "none",
        "per_time_of_day": dg.MetadataValue.json(df.groupby("time_of_day")["label"].agg(["count", "mean"]).round(4).to_dict("index")),
        "per_weather": dg.MetadataValue.json(df.groupby("weather")["label"].agg(["count", "mean"]).round(4).to_dict("index")),
        "cameras": int(df["camera_id"].nunique()),
        "groups": int(df["group_id"].nunique()),
        "stats": dg.MetadataValue.json(stats),
        "manifest_sha256": manifest["files"]["manifest.parquet"]["sha256"],
    }
    if (store.path(SOURCE_DIR, name) / "thumbnails.png").exists():
        metadata["thumbnails"] = image_md(store.path(SOURCE_DIR, name, "thumbnails.png"), "thumbnails")
    return dg.MaterializeResult(metadata=metadata)


def _manifests(store: ArtifactStore):
    """(source, directory, manifest table) of every materialized partition, hashes and schema verified."""
    for name in SOURCE_NAMES:
        directory = store.path(SOURCE_DIR, name)
        if directory.exists():
            verify_dir(directory)
            table = pq.read_table(directory / "manifest.parquet")
            validate_table(table, MANIFEST_SCHEMA)
            yield name, directory, table


@dg.asset_check(asset=source_images, blocking=True, description="the manifest matches its declared schema, every listed image file exists with its recorded sha256")
def manifest_valid(context: dg.AssetCheckExecutionContext, store: ArtifactStore) -> dg.AssetCheckResult:
    from roadwork_ml.artifacts import sha256_file

    results = {}
    for name, directory, table in _manifests(store):
        bad = [p for p, h in zip(table.column("path").to_pylist(), table.column("sha256").to_pylist()) if sha256_file(directory / p) != h]
        results[name] = {"rows": table.num_rows, "hash_mismatches": len(bad)}
    passed = bool(results) and all(r["hash_mismatches"] == 0 for r in results.values())
    return dg.AssetCheckResult(passed=passed, metadata={"sources": dg.MetadataValue.json(results)})


SPLIT_CHECKS = ("splits_disjoint", "no_group_in_two_splits", "both_classes_in_every_split", "class_share_within_tolerance", "no_near_duplicates_across_splits")


def _load_pool(store: ArtifactStore) -> pd.DataFrame:
    frames = []
    for name, _, table in _manifests(store):
        df = table.to_pandas()
        df["manifest_dir"] = f"{SOURCE_DIR}/{name}"
        frames.append(df)
    if not frames:
        raise FileNotFoundError(f"no source_images partition under {store.path(SOURCE_DIR)}: materialize source_images first")
    return pd.concat(frames, ignore_index=True)


@dg.asset(deps=[source_images], group_name="data", kinds={"parquet"})
def splits(context: dg.AssetExecutionContext, config: RunOverrides, settings: ProfileResource, store: ArtifactStore) -> dg.MaterializeResult:
    """Pool every source, drop exact (sha256) and near (pHash) duplicates, fuse per the profile's
    strategy, and assign group-aware, label-stratified TRAIN / VAL_SELECT / VAL_CALIB / VAL_TEST."""
    from roadwork_ml.data.dedup import deduplicate
    from roadwork_ml.data.fusion import fuse
    from roadwork_ml.data.splitting import assign_splits, split_report

    profile = settings.load(config.overrides)
    scfg = profile.splits
    pool = _load_pool(store)
    kept, removed = deduplicate(pool, scfg.near_duplicate_hamming)
    fused, fusion_report = fuse(kept, scfg.fusion, scfg.source_weights, scfg.mixing_ratios, scfg.seed)
    stratify = "stratum" if "stratum" in fused.columns else None
    fused = fused.assign(split=assign_splits(fused, scfg.ratios, scfg.seed, scfg.class_share_tolerance, stratify_col=stratify).to_numpy())
    out_df = fused[[f.name for f in SPLITS_SCHEMA]].sort_values(["split", "record_id"]).reset_index(drop=True)
    table = pa.Table.from_pandas(out_df, schema=SPLITS_SCHEMA, preserve_index=False)
    report = split_report(out_df, "split")
    with store.staging(SPLITS_DIR) as out:
        with atomic_path(out / "splits.parquet") as tmp:
            pq.write_table(table, tmp)
        with atomic_path(out / "duplicates.parquet") as tmp:
            pq.write_table(pa.Table.from_pandas(removed.astype({c: str for c in removed.columns if removed[c].dtype == object}), preserve_index=False), tmp)
        atomic_write_json(out / "report.json", {"splits": report, "fusion": fusion_report, "profile": profile.name})
        manifest = write_manifest(out, extra={"kind": "splits", "fingerprint": _fingerprint(out_df)})
    kinds = Counter(removed["kind"].tolist()) if len(removed) else Counter()
    rows = [{"split": s.value, "images": int((out_df.split == s.value).sum()), "positive_share": float(out_df.loc[out_df.split == s.value, "label"].mean()), "groups": int(out_df.loc[out_df.split == s.value, "group_id"].nunique())} for s in Split]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.path(SPLITS_DIR, "splits.parquet"))),
            "fingerprint": manifest["fingerprint"],
            "pool": len(pool),
            "kept": len(out_df),
            "exact_duplicates_removed": int(kinds.get("exact", 0)),
            "near_duplicates_removed": int(kinds.get("near", 0)),
            "fusion": scfg.fusion,
            "fusion_report": dg.MetadataValue.json(fusion_report),
            "splits": table_md(rows),
            "pool_positive_share": float(out_df["label"].mean()),
        }
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
    description="leakage and balance checks of the split assignment, measured on the written file",
)
def splits_checks(store: ArtifactStore, settings: ProfileResource):
    from roadwork_ml.data.dedup import near_duplicate_pairs

    profile = settings.load()
    df = load_splits(store)
    tol = profile.splits.class_share_tolerance
    by_split = {s.value: df[df.split == s.value] for s in Split}
    ids = df.groupby("record_id")["split"].nunique()
    yield dg.AssetCheckResult(check_name="splits_disjoint", passed=bool((ids <= 1).all() and df.record_id.is_unique), metadata={"records_in_two_splits": int((ids > 1).sum()), "duplicate_rows": int(df.record_id.duplicated().sum())})
    groups = df.groupby("group_id")["split"].nunique()
    yield dg.AssetCheckResult(check_name="no_group_in_two_splits", passed=bool((groups <= 1).all()), metadata={"groups": len(groups), "groups_in_two_splits": int((groups > 1).sum())})
    classes = {s: sorted(d["label"].unique().tolist()) for s, d in by_split.items()}
    yield dg.AssetCheckResult(check_name="both_classes_in_every_split", passed=all(c == [0, 1] for c in classes.values()), metadata={"classes": dg.MetadataValue.json(classes)})
    pool_share = float(df["label"].mean())
    shares = {s: float(d["label"].mean()) if len(d) else float("nan") for s, d in by_split.items()}
    worst = max(abs(v - pool_share) for v in shares.values())
    yield dg.AssetCheckResult(check_name="class_share_within_tolerance", passed=bool(worst <= tol), metadata={"pool_share": pool_share, "shares": dg.MetadataValue.json(shares), "max_deviation": float(worst), "tolerance": tol})
    pairs = 0
    names = list(by_split)
    hashes = {s: d["phash"].to_numpy(dtype=np.uint64) for s, d in by_split.items()}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pairs += len(near_duplicate_pairs(hashes[a], hashes[b], profile.splits.near_duplicate_hamming))
    yield dg.AssetCheckResult(check_name="no_near_duplicates_across_splits", passed=pairs == 0, metadata={"cross_split_pairs": pairs, "max_hamming": profile.splits.near_duplicate_hamming})
