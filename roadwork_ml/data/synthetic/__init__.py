"""Procedural street scenes: the synthetic stand-in for a source without a configured path.

Each scene is a small 3-D world (a road on a ground plane, buildings along it, vehicles,
trees, poles, people and — for positives — a roadwork zone) seen through a pinhole
camera and painted far-to-near with PIL ``ImageDraw``; lighting, weather and camera
effects are numpy passes. Everything that defines a scene lives in a :class:`SceneSpec`
(in metres and image fractions, independent of the pixel size), so one spec renders at
any ``image_size``.

What makes the task learnable but not trivial:

* positives hold at least one clearly visible roadwork object (nearest at least ~6 % of
  the image height), usually several: cones, striped barriers, drums, orange diamond
  signs, work vehicles with arrow boards, workers in striped hi-vis vests — on or at
  the edge of the road, in perspective;
* hard negatives hold orange things that are *not* roadwork (orange cars and vans,
  orange awnings and shop signs, amber traffic lights, people in plain orange jackets
  on the sidewalk, orange bins and balls, autumn trees), so "any orange pixel" is not the
  answer; roadwork is told apart by shape (cone triangles, stripes, barrier bars) and
  placement on the road. Positives sometimes carry such distractors too.

Scenes come in sequences: frames of a sequence share camera, hour, weather, layout and
roadwork presence, and the camera moves forward a little between frames. A camera
(``<source>-cam-NNN``) fixes horizon height, focal length, colour cast, JPEG quality,
vignette and (for dashcams) a visible bonnet.

Modules: :mod:`.spec` (the scene specification), :mod:`.randomness` (flavours, seeded
streams, colours), :mod:`.layout`, :mod:`.zones` and :mod:`.scene` (scene generation), :mod:`.painter` and
:mod:`.objects` (painting), :mod:`.camera` (camera effects, the frame renderer, JPEG),
:mod:`.records` (:func:`generate_source`).

Determinism: every random choice flows from ``np.random.SeedSequence`` entropy built
from ``(seed, crc32(source), purpose, index...)``. Sequence ``s`` depends on nothing but
the seed, source, style and ``s``, so the first ``k`` records of a run of ``n`` are the
first ``k`` records of any longer run, byte for byte.
"""

from __future__ import annotations

from roadwork_ml.data.synthetic.camera import encode_jpeg, render_scene
from roadwork_ml.data.synthetic.records import generate_source
from roadwork_ml.data.synthetic.scene import make_sequence, roadwork_boxes, visible_objects
from roadwork_ml.data.synthetic.spec import (
    ROADWORK_KINDS,
    Building,
    CameraSpec,
    Palette,
    RoadSpec,
    SceneObject,
    SceneSpec,
)

__all__ = [
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
    "roadwork_boxes",
    "visible_objects",
    "encode_jpeg",
]
