"""Records: :func:`generate_source` turns sequences of rendered frames into :class:`ImageRecord` s."""

from __future__ import annotations

import json
from collections.abc import Iterator

from roadwork_ml.config import SyntheticStyle
from roadwork_ml.data.records import ImageRecord
from roadwork_ml.data.synthetic.camera import encode_jpeg, render_scene
from roadwork_ml.data.synthetic.randomness import _rng
from roadwork_ml.data.synthetic.scene import _check_style, _max_height, make_sequence, roadwork_boxes, visible_objects
from roadwork_ml.data.synthetic.spec import _TAG_FRAME, SceneSpec


def _tags(spec: SceneSpec, flipped: bool, image_size: int) -> str:
    counts: dict[str, dict[str, int]] = {"roadwork": {}, "distractor": {}, "scenery": {}}
    visible = visible_objects(spec)
    for o, _h in visible:
        bucket = counts[o.role]
        bucket[o.name] = bucket.get(o.name, 0) + 1
    tags = {
        "roadwork": spec.roadwork,
        "hard_negative": spec.hard_negative and bool(counts["distractor"]),
        "roadwork_objects": counts["roadwork"],
        "distractors": counts["distractor"],
        "scenery": counts["scenery"],
        "roadwork_max_height": round(_max_height([(o, h) for o, h in visible if o.role == "roadwork"]), 4),
        # where the roadwork is (image fractions): the trainer's lost-object weighting reads it
        "roadwork_boxes": [
            b for b in ([round(v, 4) for v in box] for box in roadwork_boxes(spec)) if b[0] < b[2] and b[1] < b[3]
        ],
        "layout": spec.layout,
        "time_of_day": spec.time_of_day,
        "frame": spec.frame,
        "frames_in_sequence": spec.sequence_len,
        "jpeg_quality": spec.jpeg_quality,
        "label_flipped": flipped,
        "image_size": image_size,
    }
    return json.dumps(tags, sort_keys=True, separators=(",", ":"))


def generate_source(
    source: str, style: SyntheticStyle, image_size: int, seed: int, n_images: int | None = None
) -> Iterator[ImageRecord]:
    """Yield ``n_images`` (default ``style.n_images``) synthetic records in ``source``'s style.

    Records come sequence by sequence; the last sequence is cut short to hit ``n_images``
    exactly. Same arguments → byte-identical JPEG bytes, and any prefix of a longer run.
    """
    _check_style(source, style)
    n = style.n_images if n_images is None else int(n_images)
    if n < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    index = 0
    seq = 0
    while index < n:
        frames = make_sequence(source, style, seed, seq)
        sequence_id = f"{source}-seq{seq:05d}"
        for spec in frames:
            if index >= n:
                break
            frng = _rng(seed, source, _TAG_FRAME, seq, spec.frame)
            flipped = bool(frng.random() < style.label_noise)
            image = render_scene(spec, image_size, frng)
            true_label = int(spec.roadwork)
            yield ImageRecord(
                record_id=f"{source}-{index:06d}",
                source=source,
                label=true_label ^ int(flipped),
                image_bytes=encode_jpeg(image, spec.jpeg_quality),
                hour=spec.hour,
                weather=spec.weather,
                camera_id=spec.camera.camera_id,
                sequence_id=sequence_id,
                group_id=f"{source}:{sequence_id}",
                true_label=true_label,
                origin=f"synthetic:{source}:{seed}:{index}",
                tags=_tags(spec, flipped, image_size),
            )
            index += 1
        seq += 1
