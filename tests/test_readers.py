"""Source readers on fixtures in the real layouts, and the read_source dispatch."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures_data import (  # tests/ is on sys.path: pytest prepends the dir of an __init__-less test module
    jpeg_bytes,
    make_corrupt_image_folder,
    make_image_folder,
    make_manifest,
    make_natix,
    make_roadwork,
    make_vistas,
    natix_rows,
)

from roadwork_ml.config import DataConfig, DecodeConfig, SourceConfig, SyntheticStyle
from roadwork_ml.data.decode import ingest, reason_code
from roadwork_ml.data.readers import (
    find_natix_parquet,
    natix_rows_to_records,
    read_image_folder,
    read_manifest,
    read_mapillary_vistas,
    read_natix,
    read_roadwork_coco,
)
from roadwork_ml.data.readers.natix import consistency_violation, map_daytime, map_weather, parse_gps, parse_tag_list
from roadwork_ml.data.readers.roadwork_coco import object_boxes, sequence_from_name
from roadwork_ml.data.records import ImageRecord, Quarantined, time_of_day
from roadwork_ml.data.sources import SourceResult, read_source

DECODE = DecodeConfig(max_pixels=89_478_485, min_side=16, store_max_side=1024, store_jpeg_quality=95)
STYLE = SyntheticStyle(
    n_images=6,
    positive_rate=0.5,
    label_noise=0.0,
    hard_negative_rate=0.0,
    jpeg_quality=(80, 90),
    blur_max=0.0,
    noise_std=0.0,
    n_cameras=2,
    frames_per_sequence=(1, 3),
    night_rate=0.0,
    weather_probs={"clear": 1.0},
)


def source_cfg(kind: str, path: Path | str | None, **kw) -> SourceConfig:
    return SourceConfig(kind=kind, path=None if path is None else str(path), synthetic=STYLE, **kw)


def data_cfg(**sources: SourceConfig) -> DataConfig:
    return DataConfig(seed=7, image_size=64, sources=sources, decode=DECODE)


def split(items):
    recs = [i for i in items if isinstance(i, ImageRecord)]
    quar = [i for i in items if isinstance(i, Quarantined)]
    return recs, quar


# ---------------------------------------------------------------------------------------
# image folder


def test_image_folder_labels_and_aliases(tmp_path):
    fx = make_image_folder(tmp_path, n_pos=3, n_neg=2, class_names=("1", "neg"))
    recs, quar = split(list(read_image_folder(fx.root, "mapillary")))
    assert not quar and len(recs) == 5
    assert sorted(r.label for r in recs) == [0, 0, 1, 1, 1]
    assert all(r.record_id.startswith("mapillary:") and r.image_bytes for r in recs)
    assert len({r.group_id for r in recs}) == 5  # flat class dirs: one group per image


def test_image_folder_unknown_class_dir_is_a_clear_error(tmp_path):
    fx = make_image_folder(tmp_path)
    (fx.root / "maybe_roadwork").mkdir()
    with pytest.raises(ValueError, match="maybe_roadwork.*not a known class"):
        read_image_folder(fx.root, "natix")


def test_image_folder_max_images_and_streaming(tmp_path):
    fx = make_corrupt_image_folder(tmp_path)
    cfg = source_cfg("image_folder", fx.root, max_images=4)
    it = read_image_folder(fx.root, "natix", cfg)
    assert iter(it) is it  # an iterator, not a list
    assert len(list(it)) == 4


def test_image_folder_sequences_group_across_classes(tmp_path):
    root = tmp_path / "seq_folder"
    for cls, i in (("roadwork", 1), ("no_roadwork", 2)):
        (root / cls / "drive_07").mkdir(parents=True)
        (root / cls / "drive_07" / f"f{i}.jpg").write_bytes(jpeg_bytes(seed=i))
    recs, _ = split(list(read_image_folder(root, "natix")))
    assert {r.sequence_id for r in recs} == {"drive_07"}
    assert len({r.group_id for r in recs}) == 1  # one drive never straddles two splits


# ---------------------------------------------------------------------------------------
# manifest


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_reader(tmp_path, fmt):
    fx = make_manifest(tmp_path, fmt)
    stats: dict = {}
    recs, quar = split(list(read_manifest(fx.path, "natix", stats=stats)))
    assert len(recs) == fx.n_records and len(quar) == fx.n_rows - fx.n_records
    assert {reason_code(q.reason) for q in quar} == set(fx.quarantine_reasons)
    a, b, c = recs
    assert (a.label, a.hour, a.weather, a.camera_id, a.sequence_id) == (1, 14, "rain", "cam1", "s1")
    assert (b.label, b.hour, b.weather, b.camera_id) == (0, -1, "fog", "unknown")
    assert (c.label, c.hour) == (0, -1)  # hour 99 is not an hour
    assert a.group_id == c.group_id == "natix:s1"
    # a directory holding manifest.<fmt> works too
    assert len(split(list(read_manifest(fx.path.parent, "natix")))[0]) == fx.n_records


def test_manifest_missing_columns(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("file,label\na.jpg,1\n")
    with pytest.raises(ValueError, match="lacks column"):
        list(read_manifest(path, "natix"))


# ---------------------------------------------------------------------------------------
# NATIX


def test_tag_parsing_is_literal_only():
    assert parse_tag_list("['Sunny']") == ["Sunny"]
    assert parse_tag_list("['Snowy', 'Cloudy']") == ["Snowy", "Cloudy"]
    assert parse_tag_list("[]") == [] and parse_tag_list(None) == [] and parse_tag_list(float("nan")) == []
    assert parse_tag_list(["Rainy"]) == ["Rainy"]
    assert parse_tag_list("Sunny") == ["Sunny"]
    assert parse_tag_list("['Day'") == ["Day"]  # malformed: best effort, no exception
    hostile = parse_tag_list("[__import__('os').system('echo pwned')]")  # literal_eval refuses; never executed
    assert all(isinstance(t, str) for t in hostile) and map_weather(hostile) == "unknown"
    assert map_weather(["Rainy"]) == "rain" and map_weather(["Sunny"]) == "clear" and map_weather(["Cloudy"]) == "clear"
    assert (
        map_weather(["Snowy", "Cloudy"]) == "snow"
        and map_weather(["Foggy"]) == "fog"
        and map_weather(["Alien"]) == "unknown"
    )
    hours = {t: map_daytime([t]) for t in ("Day", "Night", "Dawn", "Dusk", "Eclipse")}
    assert {t: time_of_day(h) for t, h in hours.items()} == {
        "Day": "day",
        "Night": "night",
        "Dawn": "dawn",
        "Dusk": "dusk",
        "Eclipse": "unknown",
    }


def test_gps_parsing():
    assert parse_gps("40.4406, -79.9959") == (40.4406, -79.9959)
    assert parse_gps("[40.4406, -79.9959]") == (40.4406, -79.9959)
    assert parse_gps({"lat": 1.5, "lon": 2.5}) == (1.5, 2.5)
    assert parse_gps("{'latitude': 1.5, 'longitude': 2.5}") == (1.5, 2.5)
    assert parse_gps([-122.4194, 37.7749]) == (37.7749, -122.4194)  # unambiguous (lon, lat) order detected
    assert parse_gps("") is None and parse_gps("n/a") is None and parse_gps("[0, 0]") is None


def test_consistency_rule():
    assert consistency_violation("cones", 0) == "description_label0"
    assert consistency_violation("", 1) == "empty_description_label1"
    assert consistency_violation(None, 1) == "empty_description_label1"
    assert consistency_violation("   ", 0) is None and consistency_violation("cones", 1) is None


@pytest.mark.parametrize(("image_as", "layout"), [("struct", "data"), ("bytes", "flat"), ("struct", "hf_cache")])
def test_natix_parquet_reader(tmp_path, image_as, layout):
    fx = make_natix(tmp_path, image_as=image_as, layout=layout)
    shards = find_natix_parquet(fx.root)
    assert [p.name.split("-")[0] for p in shards] == ["train", "train", "test"]
    stats: dict = {}
    recs, quar = split(
        list(read_natix(fx.root, "natix", source_cfg("natix_parquet", fx.root), stats=stats, gps_cell_deg=0.01))
    )
    assert not quar
    assert len(recs) == fx.n_records
    assert stats["rows"] == fx.n_rows
    assert stats["consistency_dropped"] == fx.n_dropped
    assert (
        stats["consistency_dropped_description_label0"] == 1
        and stats["consistency_dropped_empty_description_label1"] == 1
    )
    by_id = {r.record_id: r for r in recs}
    assert set(by_id) == {
        "natix:train:1",
        "natix:train:2",
        "natix:train:3",
        "natix:train:6",
        "natix:test:7",
        "natix:test:8",
    }
    r1, r2, r3, r6 = (by_id[f"natix:train:{i}"] for i in (1, 2, 3, 6))
    assert (r1.label, r1.hour, r1.weather) == (1, 23, "rain")
    assert r1.group_id == r2.group_id == "natix:pittsburgh/seq5"  # one drive, one group
    assert (r3.label, r3.hour, r3.weather) == (0, 19, "snow")
    assert r3.group_id == r6.group_id == "natix:pittsburgh:gps:0.01:4044:-8000"  # city + GPS cell
    assert (r6.hour, r6.weather) == (12, "unknown")  # "['Day'" parsed best effort; "[]" → unknown
    r8 = by_id["natix:test:8"]
    assert (r8.hour, r8.weather, r8.group_id) == (7, "fog", "natix:vid77")
    tags = json.loads(r1.tags)
    assert (
        tags["daytime"] == ["Night"] and tags["scene_description"].startswith("Cones") and tags["hf_split"] == "train"
    )
    assert by_id["natix:train:1"].image_bytes == fx.rows[0]["image"]
    # the corrupt row is yielded with its bytes and quarantined by ingest
    result = ingest(recs, DECODE)
    assert len(result.records) == fx.n_records - fx.n_corrupt
    assert [reason_code(q.reason) for q in result.quarantined] == ["not_an_image"]
    assert result.quarantined[0].origin.endswith("test-00000-of-00001.parquet#row=0")


def test_natix_filter_off_and_max_images(tmp_path):
    fx = make_natix(tmp_path)
    stats: dict = {}
    recs = list(
        read_natix(fx.root, "natix", source_cfg("natix_parquet", fx.root, natix_consistency_filter=False), stats=stats)
    )
    assert len(recs) == fx.n_rows and stats.get("consistency_dropped", 0) == 0
    capped = list(read_natix(fx.root, "natix", source_cfg("natix_parquet", fx.root, max_images=2)))
    assert len(capped) == 2


def test_natix_reads_in_batches_not_whole_files(tmp_path, monkeypatch):
    fx = make_natix(tmp_path)
    calls = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("batch_size"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("read_table loads a whole file"))
    assert len(list(read_natix(fx.root, "natix"))) == fx.n_records
    assert calls and all(c is not None for c in calls)


def test_natix_rows_accept_pil_images_and_missing_bytes():
    from PIL import Image

    train, _ = natix_rows()
    rows = [
        dict(train[0], image=Image.new("RGB", (32, 32), (1, 2, 3)), hf_split="train"),
        dict(train[1], image={"bytes": None, "path": None}, hf_split="train"),
    ]
    stats: dict = {}
    recs, quar = split(list(natix_rows_to_records([("r0", rows[0]), ("r1", rows[1])], "natix", True, stats)))
    assert len(recs) == 1 and recs[0].image_bytes[:4] == b"\x89PNG"
    assert reason_code(quar[0].reason) == "no_image_bytes"


def test_natix_wrong_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="data/train"):
        find_natix_parquet(tmp_path)


# ---------------------------------------------------------------------------------------
# ROADWork


def test_sequence_from_name():
    assert sequence_from_name("pgh12_0034.jpg") == ("pgh12", "pgh")
    assert sequence_from_name("boston_3_7_0042.jpg") == ("boston_3", "boston")
    assert sequence_from_name("whatever.jpg") is None


def test_roadwork_object_boxes_leave_out_scene_classes_and_clip():
    coco = {
        "categories": [{"id": 1, "name": "Cone"}, {"id": 2, "name": "Road"}, {"id": 3, "name": "Bike Lane"}],
        "images": [{"id": 7, "width": 200, "height": 100}, {"id": 8}, {"id": 9, "width": 50, "height": 50}],
        "annotations": [
            {"image_id": 7, "category_id": 1, "bbox": [150, 50, 100, 20]},  # runs off the right edge
            {"image_id": 7, "category_id": 2, "bbox": [0, 60, 200, 40]},  # the road: not roadwork
            {"image_id": 7, "category_id": 3, "bbox": [0, 60, 20, 40]},
            {"image_id": 7, "category_id": 1, "bbox": "bad"},
            {"image_id": 8, "category_id": 1, "bbox": [1, 1, 5, 5]},  # no size: unknown
            {"image_id": 9, "category_id": 1, "bbox": [10, 10, 0, 5]},  # empty
        ],
    }
    assert object_boxes(coco) == {7: [[0.75, 0.5, 1.0, 0.7]], 9: []}


def test_roadwork_coco_reader(tmp_path):
    fx = make_roadwork(tmp_path)
    stats: dict = {}
    recs, quar = split(list(read_roadwork_coco(fx.root, "roadwork", source_cfg("roadwork_coco", fx.root), stats=stats)))
    assert len(recs) == fx.n_records and len(quar) == fx.n_missing
    assert stats["duplicate_entries"] == fx.n_duplicates and stats["missing_files"] == 1
    assert reason_code(quar[0].reason) == "missing_file" and "pgh09_0099.jpg" in quar[0].reason
    assert all(r.label == 1 for r in recs)
    by_name = {r.record_id.split(":", 1)[1]: r for r in recs}
    assert set(by_name) == {
        "pgh01_0001.jpg",
        "pgh01_0002.jpg",
        "boston_3_7_0042.jpg",
        "boston_3_7_0043.jpg",
    }  # not pgh02 (unconfigured file)
    assert by_name["pgh01_0001.jpg"].group_id == by_name["pgh01_0002.jpg"].group_id == "roadwork:pgh01"
    assert by_name["boston_3_7_0042.jpg"].group_id == "roadwork:boston_3"
    assert json.loads(by_name["pgh01_0001.jpg"].tags)["scene_description"] == "work zone 1"
    # each image's work-zone boxes, in fractions of its 80 x 60 frame (the trainer's lost-object weighting)
    assert json.loads(by_name["pgh01_0001.jpg"].tags)["roadwork_boxes"] == [[0.0125, 0.0333, 0.05, 0.1]]
    # the scene dir itself is accepted; a missing annotation file is a clear error
    assert len(list(read_roadwork_coco(fx.root / "scene", "roadwork"))) == fx.n_records + fx.n_missing
    with pytest.raises(FileNotFoundError, match="instances_nope.json"):
        read_roadwork_coco(
            fx.root, "roadwork", source_cfg("roadwork_coco", fx.root, roadwork_annotation_files=["instances_nope.json"])
        )
    three = source_cfg(
        "roadwork_coco",
        fx.root,
        roadwork_annotation_files=[
            "instances_train_gps_split.json",
            "instances_val_gps_split.json",
            "instances_geographic_da_test.json",
        ],
        max_images=10,
    )
    assert len(list(read_roadwork_coco(fx.root, "roadwork", three))) == fx.n_unique_listed + 1  # + pgh02_0001
    assert len(list(read_roadwork_coco(fx.root, "roadwork", source_cfg("roadwork_coco", fx.root, max_images=2)))) == 2


# ---------------------------------------------------------------------------------------
# Mapillary Vistas


def test_vistas_reader_uses_config_ids_and_pixel_threshold(tmp_path):
    fx = make_vistas(tmp_path, min_pixels=400)
    assert fx.ids["object--traffic-cone"] == 9  # not where a hard-coded id would look
    stats: dict = {}
    recs, quar = split(
        list(
            read_mapillary_vistas(
                fx.root, "mapillary", source_cfg("mapillary_vistas", fx.root, mapillary_min_pixels=400), stats=stats
            )
        )
    )
    assert not quar
    got = {r.record_id.split(":", 1)[1]: r.label for r in recs}
    assert got == fx.expected_labels
    assert stats["skipped_unlabeled"] == fx.skipped_unlabeled
    tags = json.loads(next(r for r in recs if r.record_id.endswith("va_mixed16")).tags)
    assert tags["roadwork_pixels"] == 450 and set(tags["class_pixels"]) == {
        "construction--barrier--temporary",
        "object--traffic-sign--temporary-front",
    }
    # the threshold comes from the config
    strict = list(
        read_mapillary_vistas(
            fx.root, "mapillary", source_cfg("mapillary_vistas", fx.root, mapillary_min_pixels=10_000)
        )
    )
    assert {r.label for r in strict} == {0}
    assert (
        len(list(read_mapillary_vistas(fx.root, "mapillary", source_cfg("mapillary_vistas", fx.root, max_images=2))))
        == 2
    )


def test_vistas_bad_label_png_is_quarantined(tmp_path):
    fx = make_vistas(tmp_path)
    (fx.root / "training" / "v2.0" / "labels" / "tr_cones.png").write_bytes(b"not a png")
    recs, quar = split(list(read_mapillary_vistas(fx.root, "mapillary")))
    assert len(recs) == len(fx.expected_labels) - 1
    assert reason_code(quar[0].reason) == "bad_label_map"


def test_vistas_without_config_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config_v2.0.json"):
        read_mapillary_vistas(tmp_path, "mapillary")


# ---------------------------------------------------------------------------------------
# read_source


def test_read_source_real_paths(tmp_path):
    natix = make_natix(tmp_path)
    folder = make_corrupt_image_folder(tmp_path)
    cfg = data_cfg(natix=source_cfg("natix_parquet", natix.root), roadwork=source_cfg("image_folder", folder.root))
    res = read_source("natix", cfg.sources["natix"], cfg, gps_cell_deg=0.01)
    assert isinstance(res, SourceResult)
    assert len(res.records) == natix.n_records - natix.n_corrupt and len(res.quarantined) == natix.n_corrupt
    s = res.stats
    assert (s["read"], s["kept"], s["quarantined"], s["consistency_dropped"]) == (
        natix.n_records,
        5,
        1,
        natix.n_dropped,
    )
    assert s["quarantine_reasons"] == {"not_an_image": 1} and s["kind"] == "natix_parquet" and not s["synthetic"]
    assert s["positives"] + s["negatives"] == s["kept"]
    json.dumps(s)  # metadata-ready
    res = read_source("roadwork", cfg.sources["roadwork"], cfg, progress=True)
    assert (len(res.records), len(res.quarantined)) == (folder.n_kept, folder.n_quarantined)
    assert res.stats["reader"]["skipped_non_image"] == 1


def test_read_source_missing_path_is_clear(tmp_path):
    cfg = data_cfg(natix=source_cfg("natix_parquet", tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="data.sources.natix.path"):
        read_source("natix", cfg.sources["natix"], cfg)


def test_read_source_synthetic_branch(monkeypatch):
    """Without a path the synthetic generator stands in (stubbed here: the contract, not the scenes)."""
    calls = []

    def generate_source(source, style, image_size, seed, n_images=None):
        calls.append((source, style.n_images, image_size, seed))
        for i in range(style.n_images):
            data = jpeg_bytes(image_size, image_size, seed=i) if i != 3 else b"\xff\xd8broken"
            yield ImageRecord(
                record_id=f"{source}:syn{i}", source=source, label=i % 2, image_bytes=data, true_label=i % 2
            )

    try:
        import roadwork_ml.data.synthetic as real  # noqa: F401

        monkeypatch.setattr("roadwork_ml.data.synthetic.generate_source", generate_source)
    except ImportError:
        stub = types.ModuleType("roadwork_ml.data.synthetic")
        stub.generate_source = generate_source
        monkeypatch.setitem(sys.modules, "roadwork_ml.data.synthetic", stub)
    cfg = data_cfg(mapillary=source_cfg("mapillary_vistas", None))
    res = read_source("mapillary", cfg.sources["mapillary"], cfg)
    assert calls == [("mapillary", STYLE.n_images, 64, 7)]
    assert len(res.records) == 5 and len(res.quarantined) == 1
    assert res.stats["synthetic"] and res.stats["kind"] == "synthetic" and res.stats["read"] == 6
    first = res.records[0]
    assert first.image_bytes[:2] == b"\xff\xd8" and (first.width, first.height) == (64, 64)


def test_read_source_with_the_real_synthetic_generator():
    pytest.importorskip("roadwork_ml.data.synthetic")
    cfg = data_cfg(natix=source_cfg("natix_parquet", None))
    res = read_source("natix", cfg.sources["natix"], cfg)
    assert len(res.records) == STYLE.n_images and not res.quarantined
    assert all(r.image_bytes[:2] == b"\xff\xd8" and (r.width, r.height) == (64, 64) for r in res.records)
    again = read_source("natix", cfg.sources["natix"], cfg, workers=0)
    assert [(r.record_id, r.sha256, r.phash) for r in res.records] == [
        (r.record_id, r.sha256, r.phash) for r in again.records
    ]
