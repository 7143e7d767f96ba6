"""``roadwork_ml.data.synthetic`` became a package (scene specification, painters, camera effects,
records); its output must be byte-identical to the 2,000-line module it replaced.

The digests below were computed with that module (commit bafe89d, ``roadwork_ml/data/synthetic.py``)
in the runtime environment of ``constraints.txt`` (numpy 2, Pillow 13), by running this file as a
script before the split: ``python tests/test_synthetic_package.py``. Three digests, so a failure
says where output moved: the scene specifications, the rendered pixels (before JPEG) and the full
records (JPEG bytes and every field).
"""

from __future__ import annotations

import hashlib
import sys

from tests.fixtures_data import MAPILLARY, NATIX, ROADWORK

STYLES = {"natix": NATIX, "roadwork": ROADWORK, "mapillary": MAPILLARY}
SEED = 20260
N_IMAGES = 40  # per source: covers day/night, every weather and both labels
N_SEQUENCES = 6  # per source, for the spec and pixel digests
SIZES = (64, 96)

# sha256 digests of the pre-split module's output (see the module docstring)
EXPECTED = {
    "specs": "51b85b519f709067e37f6358d215178c183292b3069362078254a8c584155cd2",
    "pixels": "e429daf0ed7dfb39c660d92d85a34605b6939ff513728d7723205cc5c2e88421",
    "records": "e0940976b4d8dc04b9d28c734df3f433daee9abeacb3562f67d3757d42bc032e",
}
# For the record, the same module under the old pins (numpy 1.26.4, Pillow 10.4.0) gave the same specs
# but pixels 3fc2b1e5…, records d6ee4d5b…: Pillow's drawing/filters changed between 10 and 13, so the
# move to a current Pillow changes the synthetic images (not the scenes) and the demo's numbers with them.


def _old_tags(tags: str) -> str:
    """The tags as the old module wrote them: without ``roadwork_boxes``, added since (where the
    roadwork is, for the trainer's lost-object weighting; ``test_synthetic.py`` checks its values)."""
    import json

    d = json.loads(tags)
    d.pop("roadwork_boxes")
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def digests() -> dict[str, str]:
    """sha256 of (a) the scene specs, (b) the raw RGB pixels, (c) the full records, over all styles."""
    import numpy as np

    from roadwork_ml.data.synthetic import generate_source, make_sequence, render_scene

    specs, pixels, records = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    for source, style in STYLES.items():
        for seq in range(N_SEQUENCES):
            for spec in make_sequence(source, style, SEED, seq):
                specs.update(repr(spec).encode())
                for size in SIZES:
                    rng = np.random.default_rng([SEED, seq, spec.frame, size])
                    im = render_scene(spec, size, rng)
                    pixels.update(f"{im.mode}{im.size}".encode() + im.tobytes())
        for size in SIZES:
            for rec in generate_source(source, style, size, SEED, n_images=N_IMAGES):
                fields = (
                    rec.record_id,
                    rec.source,
                    rec.label,
                    rec.hour,
                    rec.weather,
                    rec.camera_id,
                    rec.sequence_id,
                    rec.group_id,
                    rec.true_label,
                    rec.origin,
                    _old_tags(rec.tags),
                )
                records.update(repr(fields).encode() + rec.image_bytes)
    return {"specs": specs.hexdigest(), "pixels": pixels.hexdigest(), "records": records.hexdigest()}


def test_package_output_is_byte_identical_to_the_old_module() -> None:
    assert digests() == EXPECTED


def test_public_api_is_unchanged() -> None:
    import roadwork_ml.data.synthetic as synthetic

    for name in (
        "CameraSpec",
        "RoadSpec",
        "Palette",
        "Building",
        "SceneObject",
        "SceneSpec",
        "ROADWORK_KINDS",
        "generate_source",
        "make_sequence",
        "render_scene",
        "encode_jpeg",
        "visible_objects",
    ):
        assert hasattr(synthetic, name), name
    assert set(synthetic.__all__) <= set(dir(synthetic))


if __name__ == "__main__":
    for k, v in digests().items():
        print(f'    "{k}": "{v}",')
    sys.exit(0)
