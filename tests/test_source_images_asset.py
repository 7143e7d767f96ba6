"""source_images on a real image folder full of broken files: the asset materializes, good
images are kept, every bad one is quarantined with its reason, counts are in the metadata."""

import dagster as dg
import pyarrow.parquet as pq
from fixtures_data import make_corrupt_image_folder

from roadwork_assets.data import source_images
from roadwork_assets.resources import ArtifactStore, ProfileResource
from roadwork_ml.data.decode import reason_code


def test_corrupt_files_are_quarantined_and_the_rest_kept(tmp_path):
    fixture = make_corrupt_image_folder(tmp_path)
    bad = {rel: why for rel, why in fixture.expected.items() if why}
    good = [rel for rel, why in fixture.expected.items() if not why]
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    overrides = [f"data.sources.natix.path={fixture.root}", "data.sources.natix.kind=image_folder"]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [source_images],
            partition_key="natix",
            resources={"settings": ProfileResource.bound("tiny"), "store": store},
            run_config={"resources": {"settings": {"config": {"overrides": overrides}}}},
            instance=instance,
        )
    assert result.success
    meta = result.asset_materializations_for_node("source_images")[0].metadata
    assert meta["images"].value == len(good) == 9
    assert meta["quarantined"].value == len(bad) == 6
    assert meta["quarantine_reasons"].value == {r: 1 for r in bad.values()}
    from tests.metadata_scan import bad_numbers

    assert isinstance(meta["images"], dg.IntMetadataValue) and not bad_numbers(meta), bad_numbers(meta)

    out = store.read("source_images", "natix")
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    got = {row["origin"].split("corrupt_folder/")[-1]: reason_code(row["reason"]) for row in quarantine}
    assert got == bad
    manifest = pq.read_table(out / "manifest.parquet").to_pandas()
    assert sorted(o.split("corrupt_folder/")[-1] for o in manifest["origin"]) == sorted(good)
    assert all((out / p).exists() for p in manifest["path"])
    assert set(manifest["label"]) == {0, 1}
    # the manifest records the run's profile, overrides included
    import json

    recorded = json.loads((out / "MANIFEST.json").read_text())["profile"]
    assert recorded["name"] == "tiny" and recorded["overrides"] == overrides
