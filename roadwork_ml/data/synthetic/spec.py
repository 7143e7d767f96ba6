"""Scene specification: the dataclasses that describe a scene in metres and image fractions, and
the constants every stage shares."""

from __future__ import annotations

from dataclasses import dataclass

from roadwork_ml.data.records import time_of_day

Color = tuple[int, int, int]

ROADWORK_KINDS = ("cone", "barrier", "drum", "work_sign", "work_vehicle", "worker", "excavation")

_TAG_CAMERA = 1
_TAG_SEQUENCE = 2
_TAG_FRAME = 3
_NIGHT_HOURS = (20, 21, 22, 23, 0, 1, 2, 3, 4, 5)
_OTHER_HOURS = tuple(range(6, 20))
_MIN_ROADWORK_HEIGHT = 0.09  # nearest roadwork object: fraction of image height (guaranteed per frame)
_MIN_ORANGE_AREA = 0.005  # hard negatives: orange area of the best distractor, fraction of the image
_Z_NEAR = 1.2  # metres: objects closer than this are behind the lens / under the bonnet


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class CameraSpec:
    """One physical camera; frames of a sequence share it."""

    camera_id: str
    horizon: float  # horizon row, fraction of image height
    focal: float  # focal length, fraction of image side
    height_m: float  # lens height above the road
    cast: tuple[float, float, float]  # per-channel gain (colour cast)
    saturation: float
    vignette: float  # 0 = none; darkening at the corners
    hood: float  # fraction of image height covered by the bonnet / dashboard (0 = none)
    hood_color: Color
    roll_deg: float
    jpeg_quality: int  # the camera's base quality; frames jitter around it


@dataclass(frozen=True)
class RoadSpec:
    n_lanes: int
    lane_width: float
    ego_lane: int  # lane the camera drives in, 0 = leftmost
    n_oncoming: int  # leftmost lanes carry oncoming traffic
    curvature: float  # 1/m; lateral offset of the road centre is curvature * z^2 / 2
    shoulder: float  # paved strip beyond the edge line (m)
    sidewalk: float  # 0 = none
    verge: float  # grass strip beyond the sidewalk / shoulder (m)
    dash_period: float
    dash_phase: float
    centre_style: str  # "double_yellow", "white_dashed", "solid_white", "none"
    edge_lines: bool
    crosswalk_z: float  # < 0: none
    guardrail: bool

    @property
    def width(self) -> float:
        return self.n_lanes * self.lane_width

    def lane_center(self, i: int) -> float:
        return -self.width / 2 + (i + 0.5) * self.lane_width

    def lane_left(self, i: int) -> float:
        return -self.width / 2 + i * self.lane_width

    @property
    def edge_right(self) -> float:
        return self.width / 2 + self.shoulder

    @property
    def edge_left(self) -> float:
        return -self.width / 2 - self.shoulder


@dataclass(frozen=True)
class Palette:
    sky_top: Color
    sky_horizon: Color
    road: Color
    sidewalk: Color
    curb: Color
    ground: Color
    marking: Color
    skyline: Color
    clouds: bool


@dataclass(frozen=True)
class Building:
    side: int  # -1 left, +1 right of the road
    x: float  # |lateral| position of the facade (m)
    z0: float
    z1: float
    height: float
    color: Color
    window: Color
    kind: str  # "block" or "house"
    roof: Color
    floor_h: float
    win_spacing: float
    lit: float  # share of windows lit at night


@dataclass(frozen=True)
class SceneObject:
    """An upright (or flat) thing in the world. ``x`` is lateral (m, road centre = 0, right > 0)
    relative to the road (curvature is added when drawn); ``z`` is the depth at frame 0."""

    kind: str
    x: float
    z: float
    role: str = "scenery"  # "roadwork", "distractor" or "scenery"
    tag: str = ""  # name used in the record's tags
    color: Color = (128, 128, 128)
    color2: Color = (240, 240, 240)
    size: float = 1.0  # scale; for barriers/awnings the width or length in metres
    variant: int = 0
    speed: float = 0.0  # m per frame along z, relative to the world
    facing: int = 1  # +1: seen from behind, -1: seen from the front

    @property
    def name(self) -> str:
        return self.tag or self.kind


@dataclass(frozen=True)
class SceneSpec:
    """Everything that defines one frame. Units are metres and image fractions."""

    roadwork: bool
    hard_negative: bool
    hour: int
    weather: str
    layout: str  # "urban", "suburban", "highway"
    camera: CameraSpec
    road: RoadSpec
    palette: Palette
    buildings: tuple[Building, ...] = ()
    objects: tuple[SceneObject, ...] = ()
    skyline: tuple[tuple[float, float, float], ...] = ()  # (centre u, width, height) fractions
    frame: int = 0
    advance: float = 0.0  # metres the camera moved since frame 0
    lateral: float = 0.0  # camera offset from the ego-lane centre (m)
    exposure: float = 1.0
    blur: float = 0.0  # Gaussian radius at 224 px
    noise: float = 0.0  # Gaussian noise std, uint8 units
    jpeg_quality: int = 90
    rain: float = 0.0  # intensity 0..1
    snow: float = 0.0  # intensity 0..1 (flakes and white ground)
    fog_visibility: float = 0.0  # metres; 0 = no fog
    sequence_len: int = 1

    @property
    def time_of_day(self) -> str:
        return time_of_day(self.hour)

    @property
    def camera_x(self) -> float:
        return self.road.lane_center(self.road.ego_lane) + self.lateral

    def object_z(self, o: SceneObject) -> float:
        return o.z - self.advance + o.speed * self.frame
