"""Synthetic Market-1501: a small dataset in the exact Market layout, for demos and tests.

Identity lives in person-like appearance: clothing colours and patterns, body proportions,
accessories. Each camera changes what that looks like (viewpoint, light, colour cast, background,
scale, blur, occlusion), so matching across cameras is learnable but far from trivial. Colours are
drawn from a small clothing palette on purpose: many identities share a colour and differ only
in pattern, shape or accessories, as in the real dataset.

Every image is drawn from its own seed, so the bytes do not depend on the number of workers.
"""

from __future__ import annotations

import io
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reidpipe.atomic import atomic_dir, write_json
from reidpipe.devices import usable_cpus
from reidpipe.errors import ReidpipeError
from reidpipe.market import (
    DISTRACTOR_PID,
    GALLERY_DIR,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    JUNK_PID,
    MARKET1501_STATS,
    NUM_CAMERAS,
    QUERY_DIR,
    TRAIN_DIR,
    format_name,
)

MARKER_FILE = "synthetic.json"
MIN_IDS = 4
MAX_IDS = 9999  # person ids have four digits in Market names
SUPERSAMPLE = 2
CANVAS_W = IMAGE_WIDTH * SUPERSAMPLE
CANVAS_H = IMAGE_HEIGHT * SUPERSAMPLE

# Gallery extras in the proportions of the real gallery (MARKET1501_STATS): per identity-gallery
# image.
_GALLERY = MARKET1501_STATS["gallery"]
_ID_GALLERY = _GALLERY["images"] - _GALLERY["junk"] - _GALLERY["distractors"]
DISTRACTOR_RATIO = _GALLERY["distractors"] / _ID_GALLERY
JUNK_RATIO = _GALLERY["junk"] / _ID_GALLERY

# Body-part labels of the supersampled label map; the colour of each comes from the identity.
BG, SKIN, HAIR, UPPER, UPPER2, LOWER, SHOES, BAG, BACKPACK, HAT = range(10)

RGB = tuple[int, int, int]
View = Literal["front", "back", "side"]
VIEWS: tuple[View, ...] = ("front", "back", "side")

# Clothing palette with rough frequencies: dark and neutral colours dominate street clothing.
PALETTE: tuple[tuple[RGB, float], ...] = (
    ((35, 35, 40), 4.0),  # black
    ((225, 225, 220), 2.5),  # white
    ((125, 125, 128), 2.0),  # grey
    ((35, 45, 85), 2.0),  # navy
    ((65, 95, 150), 2.0),  # denim blue
    ((150, 185, 225), 1.0),  # light blue
    ((175, 40, 40), 1.0),  # red
    ((110, 30, 45), 0.7),  # burgundy
    ((50, 115, 60), 0.8),  # green
    ((100, 105, 55), 0.6),  # olive
    ((215, 185, 50), 0.6),  # yellow
    ((220, 120, 40), 0.5),  # orange
    ((220, 145, 175), 0.7),  # pink
    ((105, 60, 135), 0.5),  # purple
    ((105, 70, 45), 0.8),  # brown
    ((200, 180, 140), 1.0),  # beige
    ((40, 130, 135), 0.4),  # teal
)
SKIN_TONES: tuple[RGB, ...] = ((235, 200, 170), (215, 170, 130), (180, 130, 95), (120, 80, 55))
HAIR_COLOURS: tuple[RGB, ...] = (
    (20, 18, 18),
    (60, 40, 25),
    (110, 75, 40),
    (190, 160, 100),
    (150, 150, 150),
)
UPPER_PATTERNS = ("plain", "plain", "plain", "hstripes", "vstripes", "checks", "jacket", "logo")
LOWER_KINDS = ("trousers", "trousers", "trousers", "shorts", "skirt")

Kind = Literal["person", "distractor", "junk"]


@dataclass(frozen=True)
class Identity:
    """What stays the same for one person across all cameras."""

    upper: RGB
    upper2: RGB
    upper_pattern: str
    stripe: float  # pattern period, fraction of body height
    long_sleeves: bool
    coat: float  # upper garment length below the hip, fraction of body height
    lower: RGB
    lower_kind: str
    skin: RGB
    hair: RGB
    long_hair: bool
    shoes: RGB
    stature: float  # relative body height
    width: float  # relative body width
    leg: float  # leg length, fraction of body height
    hat: RGB | None
    bag: RGB | None
    bag_side: int  # -1 or 1: the wearer's side the bag hangs on
    backpack: RGB | None


@dataclass(frozen=True)
class Camera:
    """What one camera does to every image it takes."""

    gain: tuple[float, float, float]
    brightness: float
    gamma: float
    blur: float
    noise: float
    quality: int
    scale: float  # mean body height, fraction of the crop
    views: tuple[float, float, float]  # probabilities of front / back / side
    light_slope: float  # horizontal illumination gradient
    background: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class Shot:
    """One tracklet: a person walking past one camera."""

    view: View
    mirror: bool
    scale: float
    dx: float  # horizontal offset, fraction of crop width
    light: float
    phase: float  # walking phase of the first frame
    step: float  # walking phase advance per image
    occluder: tuple[str, float, RGB] | None


@dataclass(frozen=True)
class ImageSpec:
    path: str  # relative to the dataset root
    kind: Kind
    camera: int  # index into the camera list (camera id - 1)
    seed: int
    identity: Identity | None = None
    shot: Shot | None = None
    index: int = 0  # position in the tracklet


@dataclass(frozen=True)
class SynthSummary:
    out_dir: Path
    num_ids: int
    seed: int
    train_ids: int
    test_ids: int
    train_images: int
    query_images: int
    gallery_images: int  # every file in bounding_box_test, junk and distractors included
    distractors: int
    junk: int
    seconds: float


# ------------------------------------------------------------------------------------ sampling


def _colour(rng: np.random.Generator, jitter: int = 14) -> RGB:
    weights = np.array([w for _, w in PALETTE])
    base = PALETTE[rng.choice(len(PALETTE), p=weights / weights.sum())][0]
    shifted = np.clip(np.array(base) + rng.integers(-jitter, jitter + 1, 3), 0, 255)
    return (int(shifted[0]), int(shifted[1]), int(shifted[2]))


def _pick(rng: np.random.Generator, options: tuple) -> object:
    return options[int(rng.integers(len(options)))]


def _identity(rng: np.random.Generator) -> Identity:
    upper = _colour(rng)
    upper2 = _colour(rng)
    while sum(abs(a - b) for a, b in zip(upper, upper2)) < 120:
        upper2 = _colour(rng)
    return Identity(
        upper=upper,
        upper2=upper2,
        upper_pattern=str(_pick(rng, UPPER_PATTERNS)),
        stripe=float(rng.uniform(0.04, 0.09)),
        long_sleeves=bool(rng.random() < 0.6),
        coat=float(rng.choice([0.0, 0.0, 0.04, 0.12]) + rng.uniform(0, 0.02)),
        lower=_colour(rng),
        lower_kind=str(_pick(rng, LOWER_KINDS)),
        skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        hair=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
        long_hair=bool(rng.random() < 0.3),
        shoes=_colour(rng, jitter=8) if rng.random() < 0.3 else (30, 30, 30),
        stature=float(rng.uniform(0.88, 1.04)),
        width=float(rng.uniform(0.8, 1.25)),
        leg=float(rng.uniform(0.42, 0.52)),
        hat=_colour(rng) if rng.random() < 0.15 else None,
        bag=_colour(rng) if rng.random() < 0.25 else None,
        bag_side=int(rng.choice([-1, 1])),
        backpack=_colour(rng) if rng.random() < 0.25 else None,
    )


def _background(rng: np.random.Generator) -> np.ndarray:
    """A street-like backdrop three crops wide: wall with clutter above, ground below."""
    height, width = CANVAS_H, 3 * CANVAS_W
    wall = np.clip(rng.integers(70, 190) + rng.integers(-25, 26, 3), 0, 255)
    ground = np.clip(rng.integers(60, 150) + rng.integers(-20, 21, 3), 0, 255)
    horizon = int(height * rng.uniform(0.5, 0.75))
    img = Image.new("RGB", (width, height), tuple(int(v) for v in wall))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, horizon, width, height), fill=tuple(int(v) for v in ground))
    for _ in range(int(rng.integers(10, 22))):
        x0 = float(rng.uniform(0, width))
        y0 = float(rng.uniform(0, horizon * 0.9))
        w = float(rng.uniform(8, 90))
        h = float(rng.uniform(8, horizon - y0 + 10))
        tint = rng.integers(-60, 61) + rng.integers(-20, 21, 3)
        fill = tuple(int(v) for v in np.clip(wall + tint, 0, 255))
        draw.rectangle((x0, y0, x0 + w, y0 + h), fill=fill)
    for _ in range(int(rng.integers(2, 6))):
        x = float(rng.uniform(0, width))
        draw.line(
            (x, 0, x + rng.uniform(-20, 20), horizon),
            fill=tuple(int(v) for v in rng.integers(20, 120, 3)),
            width=int(rng.integers(2, 6)),
        )
    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0.0, 6.0, arr.shape).astype(np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _camera(rng: np.random.Generator) -> Camera:
    views = rng.dirichlet([1.5, 1.5, 1.5])
    gain = rng.uniform(0.8, 1.2, 3)
    return Camera(
        gain=(float(gain[0]), float(gain[1]), float(gain[2])),
        brightness=float(rng.uniform(0.7, 1.25)),
        gamma=float(rng.uniform(0.8, 1.25)),
        blur=float(rng.uniform(0.0, 0.9)),
        noise=float(rng.uniform(1.0, 5.0)),
        quality=int(rng.integers(70, 96)),
        scale=float(rng.uniform(0.8, 0.92)),
        views=(float(views[0]), float(views[1]), float(views[2])),
        light_slope=float(rng.uniform(-0.25, 0.25)),
        background=_background(rng),
    )


def _shot(rng: np.random.Generator, camera: Camera) -> Shot:
    occluder = None
    if rng.random() < 0.2:
        occluder = (
            str(_pick(rng, ("bottom", "left", "right"))),
            float(rng.uniform(0.15, 0.35)),
            _colour(rng),
        )
    return Shot(
        view=VIEWS[int(rng.choice(3, p=np.array(camera.views)))],
        mirror=bool(rng.random() < 0.5),
        scale=float(camera.scale * rng.uniform(0.93, 1.07)),
        dx=float(rng.uniform(-0.08, 0.08)),
        light=float(rng.uniform(0.9, 1.1)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        step=float(rng.uniform(0.5, 1.6)),
        occluder=occluder,
    )


class _Names:
    """Hands out Market names that are unique over the whole dataset."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: set[tuple[int, int, int, int, int]] = set()

    def track(self, pid: int, camid: int, count: int) -> list[str]:
        """Names of ``count`` images of one tracklet: one sequence, increasing frames."""
        seq = int(self.rng.integers(1, 7))
        frame = int(self.rng.integers(1, 150_000))
        names = []
        for _ in range(count):
            box = 1 if self.rng.random() < 0.8 else int(self.rng.integers(2, 5))
            while (pid, camid, seq, frame, box) in self.used:
                frame += 1
            self.used.add((pid, camid, seq, frame, box))
            names.append(format_name(pid, camid, seq, frame, box))
            frame += int(self.rng.integers(5, 40))
        return names


def _plan(num_ids: int, seed: int) -> tuple[list[Camera], list[ImageSpec], dict[str, int]]:
    """Decide every image (who, which camera, which tracklet, its file name and seed)."""
    rng = np.random.default_rng(seed)
    cameras = [_camera(rng) for _ in range(NUM_CAMERAS)]
    names = _Names(rng)
    pids = rng.permutation(np.arange(1, num_ids + 1))
    num_train = num_ids // 2
    train_pids = sorted(int(p) for p in pids[:num_train])
    test_pids = sorted(int(p) for p in pids[num_train:])
    specs: list[ImageSpec] = []

    def new_seed() -> int:
        return int(rng.integers(2**63))

    def tracklets(pid: int) -> list[tuple[int, Identity, Shot, list[str]]]:
        identity = _identity(rng)
        num_cams = int(rng.choice([2, 3, 4, 5, 6], p=[0.25, 0.25, 0.2, 0.15, 0.15]))
        cams = sorted(int(c) for c in rng.choice(NUM_CAMERAS, size=num_cams, replace=False))
        return [
            (
                cam,
                identity,
                _shot(rng, cameras[cam]),
                names.track(pid, cam + 1, 2 + int(rng.poisson(3))),
            )
            for cam in cams
        ]

    for pid in train_pids:
        for cam, identity, shot, track in tracklets(pid):
            specs += [
                ImageSpec(f"{TRAIN_DIR}/{n}", "person", cam, new_seed(), identity, shot, i)
                for i, n in enumerate(track)
            ]
    id_gallery = 0
    for pid in test_pids:
        for cam, identity, shot, track in tracklets(pid):
            num_query = 2 if len(track) >= 6 and rng.random() < 0.2 else 1
            query = set(int(i) for i in rng.choice(len(track), size=num_query, replace=False))
            for i, n in enumerate(track):
                folder = QUERY_DIR if i in query else GALLERY_DIR
                id_gallery += folder == GALLERY_DIR
                specs.append(
                    ImageSpec(f"{folder}/{n}", "person", cam, new_seed(), identity, shot, i)
                )
    extras = {
        "distractor": round(id_gallery * DISTRACTOR_RATIO),
        "junk": round(id_gallery * JUNK_RATIO),
    }
    extra_kinds: tuple[tuple[Kind, int], ...] = (("distractor", DISTRACTOR_PID), ("junk", JUNK_PID))
    for kind, pid in extra_kinds:
        for _ in range(extras[kind]):
            cam = int(rng.integers(NUM_CAMERAS))
            (name,) = names.track(pid, cam + 1, 1)
            specs.append(ImageSpec(f"{GALLERY_DIR}/{name}", kind, cam, new_seed()))
    counts = {"train_ids": len(train_pids), "test_ids": len(test_pids), **extras}
    return cameras, specs, counts


# ----------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Body:
    """Where one person's parts go on the label map (pixels, y downwards), from its identity,
    view, position, height and walking phase."""

    who: Identity
    view: View
    cx: float
    foot: float
    height: float
    head_r: float
    head_y: float
    shoulder_y: float
    hip_y: float
    hem_y: float  # lower edge of the upper garment
    shoulder_w: float  # half widths
    waist_w: float
    leg_w: float
    ankle_w: float
    arm_w: float
    swing: float  # sin(phase): -1..1 through a stride
    pack_bottom: float
    hand_y: float

    @property
    def side(self) -> bool:
        return self.view == "side"


def _body(who: Identity, view: View, cx: float, foot: float, height: float, phase: float) -> _Body:
    H = height
    r = 0.062 * H
    top = foot - H
    sh_y = top + 2 * r + 0.025 * H
    hip_y = foot - who.leg * H
    sw = (0.075 if view == "side" else 0.12) * H * who.width
    return _Body(
        who=who,
        view=view,
        cx=cx,
        foot=foot,
        height=H,
        head_r=r,
        head_y=top + r,
        shoulder_y=sh_y,
        hip_y=hip_y,
        hem_y=hip_y + who.coat * H,
        shoulder_w=sw,
        waist_w=0.85 * sw,
        leg_w=0.048 * H * who.width,
        ankle_w=0.028 * H,
        arm_w=0.033 * H * who.width,
        swing=math.sin(phase),
        pack_bottom=sh_y + 0.6 * (hip_y - sh_y),
        hand_y=hip_y + 0.07 * H,
    )


def _draw_leg(
    draw: ImageDraw.ImageDraw, b: _Body, hip_x: float, foot_x: float, lift: float
) -> None:
    H, hip_y, leg_w, ankle_w = b.height, b.hip_y, b.leg_w, b.ankle_w
    y_end = b.foot - lift
    knee_y = hip_y + 0.5 * (y_end - hip_y)
    full = [
        (hip_x - leg_w, hip_y),
        (hip_x + leg_w, hip_y),
        (foot_x + ankle_w, y_end),
        (foot_x - ankle_w, y_end),
    ]
    if b.who.lower_kind == "trousers":
        draw.polygon(full, fill=LOWER)
    else:
        draw.polygon(full, fill=SKIN)
        if b.who.lower_kind == "shorts":
            mid_x = hip_x + 0.45 * (foot_x - hip_x)
            draw.polygon(
                [
                    (hip_x - leg_w, hip_y),
                    (hip_x + leg_w, hip_y),
                    (mid_x + leg_w, knee_y - 0.02 * H),
                    (mid_x - leg_w, knee_y - 0.02 * H),
                ],
                fill=LOWER,
            )
    toe = 0.07 * H if b.side else 0.035 * H
    draw.ellipse((foot_x - 0.035 * H, y_end - 0.03 * H, foot_x + toe, y_end), fill=SHOES)


def _draw_arm(
    draw: ImageDraw.ImageDraw, b: _Body, shoulder_x: float, hand_x: float, hand_y: float
) -> None:
    H, sh_y, arm_w = b.height, b.shoulder_y, b.arm_w
    pts = [
        (shoulder_x - arm_w, sh_y + 0.01 * H),
        (shoulder_x + arm_w, sh_y + 0.01 * H),
        (hand_x + 0.8 * arm_w, hand_y),
        (hand_x - 0.8 * arm_w, hand_y),
    ]
    draw.polygon(pts, fill=SKIN)
    cut = 1.0 if b.who.long_sleeves else 0.35
    ex, ey = shoulder_x + cut * (hand_x - shoulder_x), sh_y + cut * (hand_y - sh_y)
    draw.polygon([pts[0], pts[1], (ex + 0.9 * arm_w, ey), (ex - 0.9 * arm_w, ey)], fill=UPPER)
    draw.ellipse((hand_x - arm_w, hand_y - arm_w, hand_x + arm_w, hand_y + arm_w), fill=SKIN)


def _draw_behind_torso(draw: ImageDraw.ImageDraw, b: _Body) -> None:
    """The legs and, seen from the side, the far arm and the backpack."""
    H, cx, swing = b.height, b.cx, b.swing
    if b.side:
        stride = 0.16 * H
        _draw_arm(draw, b, cx, cx - 0.12 * H * swing, b.hand_y - 0.02 * H)  # far arm
        if b.who.backpack is not None:
            sw = b.shoulder_w
            draw.rectangle(
                (cx - sw - 0.08 * H, b.shoulder_y + 0.02 * H, cx - sw + 0.02 * H, b.pack_bottom),
                fill=BACKPACK,
            )
        _draw_leg(draw, b, cx, cx - stride * swing, 0.0)
        _draw_leg(draw, b, cx, cx + stride * swing, 0.0)
    else:
        ww = b.waist_w
        lift = 0.025 * H
        _draw_leg(draw, b, cx - 0.5 * ww, cx - 0.55 * ww, lift * max(0.0, swing))
        _draw_leg(draw, b, cx + 0.5 * ww, cx + 0.55 * ww, lift * max(0.0, -swing))


def _draw_torso(draw: ImageDraw.ImageDraw, b: _Body) -> None:
    """Skirt or waistband, the upper garment and its front pattern (jacket, logo)."""
    H, cx, ww, sw = b.height, b.cx, b.waist_w, b.shoulder_w
    hip_y, sh_y, hem_y = b.hip_y, b.shoulder_y, b.hem_y
    if b.who.lower_kind == "skirt":
        skirt_y = hip_y + 0.45 * (b.foot - hip_y)
        draw.polygon(
            [
                (cx - ww * 1.05, hip_y - 0.02 * H),
                (cx + ww * 1.05, hip_y - 0.02 * H),
                (cx + ww * 1.5, skirt_y),
                (cx - ww * 1.5, skirt_y),
            ],
            fill=LOWER,
        )
    else:
        draw.rectangle((cx - ww, hip_y - 0.02 * H, cx + ww, hip_y + 0.05 * H), fill=LOWER)
    draw.polygon(
        [
            (cx - sw * 0.8, sh_y - 0.012 * H),
            (cx + sw * 0.8, sh_y - 0.012 * H),
            (cx + sw, sh_y + 0.03 * H),
            (cx + ww, hem_y),
            (cx - ww, hem_y),
            (cx - sw, sh_y + 0.03 * H),
        ],
        fill=UPPER,
    )
    if b.view == "front" and b.who.upper_pattern == "jacket":
        draw.rectangle((cx - 0.3 * sw, sh_y, cx + 0.3 * sw, hem_y), fill=UPPER2)
    if b.view == "front" and b.who.upper_pattern == "logo":
        draw.rectangle(
            (cx - 0.45 * sw, sh_y + 0.05 * H, cx + 0.45 * sw, sh_y + 0.13 * H), fill=UPPER2
        )


def _draw_carried(draw: ImageDraw.ImageDraw, b: _Body) -> None:
    """The backpack seen from the back (whole) or the front (straps), and the shoulder bag."""
    H, cx, ww, sw = b.height, b.cx, b.waist_w, b.shoulder_w
    hip_y, sh_y = b.hip_y, b.shoulder_y
    if b.who.backpack is not None:
        if b.view == "back":
            draw.rectangle(
                (cx - 0.75 * sw, sh_y + 0.03 * H, cx + 0.75 * sw, b.pack_bottom), fill=BACKPACK
            )
        elif b.view == "front":
            for s in (-1, 1):
                draw.line(
                    (cx + s * 0.55 * sw, sh_y, cx + s * 0.6 * sw, b.pack_bottom),
                    fill=BACKPACK,
                    width=max(1, int(0.02 * H)),
                )
    if b.who.bag is not None:
        # Seen from the back, the wearer's left is on the viewer's left.
        s = 0 if b.side else (b.who.bag_side if b.view == "back" else -b.who.bag_side)
        bx = cx + s * (ww + 0.03 * H)
        draw.line(
            (cx - s * sw * 0.7, sh_y, bx, hip_y - 0.04 * H), fill=BAG, width=max(1, int(0.012 * H))
        )
        draw.rectangle(
            (bx - 0.055 * H, hip_y - 0.04 * H, bx + 0.055 * H, hip_y + 0.05 * H), fill=BAG
        )


def _draw_near_arms(draw: ImageDraw.ImageDraw, b: _Body) -> None:
    """The arms in front of the torso: the near one from the side, both from front or back."""
    H, cx, sw, arm_w = b.height, b.cx, b.shoulder_w, b.arm_w
    if b.side:
        _draw_arm(draw, b, cx, cx + 0.12 * H * b.swing, b.hand_y)
    else:
        _draw_arm(draw, b, cx - sw + arm_w, cx - sw - 0.2 * arm_w, b.hand_y)
        _draw_arm(draw, b, cx + sw - arm_w, cx + sw + 0.2 * arm_w, b.hand_y)


def _draw_head(draw: ImageDraw.ImageDraw, b: _Body) -> None:
    """Neck, head and hair as the view shows them, and the hat."""
    H, cx, r, head_y, sh_y = b.height, b.cx, b.head_r, b.head_y, b.shoulder_y
    draw.rectangle((cx - 0.35 * r, head_y + 0.8 * r, cx + 0.35 * r, sh_y), fill=SKIN)
    head = (cx - 0.85 * r, head_y - r, cx + 0.85 * r, head_y + r)
    if b.view == "back":
        draw.ellipse(head, fill=HAIR)
        if b.who.long_hair:
            draw.rectangle((cx - 0.8 * r, head_y, cx + 0.8 * r, sh_y + 0.09 * H), fill=HAIR)
    elif b.view == "front":
        if b.who.long_hair:
            draw.rectangle((cx - 0.95 * r, head_y, cx + 0.95 * r, sh_y + 0.04 * H), fill=HAIR)
        draw.ellipse(head, fill=SKIN)
        draw.chord(head, 180, 360, fill=HAIR)
    else:
        if b.who.long_hair:
            draw.rectangle((cx - 0.85 * r, head_y, cx, sh_y + 0.06 * H), fill=HAIR)
        draw.ellipse(head, fill=SKIN)
        draw.pieslice(head, 90, 300, fill=HAIR)
    if b.who.hat is not None:
        draw.chord(
            (cx - 0.95 * r, head_y - 1.1 * r, cx + 0.95 * r, head_y + 0.3 * r), 180, 360, fill=HAT
        )
        brim = (cx - 0.5 * r, cx + 1.4 * r) if b.side else (cx - 1.1 * r, cx + 1.1 * r)
        draw.rectangle((brim[0], head_y - 0.45 * r, brim[1], head_y - 0.25 * r), fill=HAT)


def _draw_person(
    draw: ImageDraw.ImageDraw,
    who: Identity,
    view: View,
    cx: float,
    foot: float,
    height: float,
    phase: float,
) -> tuple[float, float]:
    """Draw body-part labels facing right (side view), back to front; returns (shoulder y, half
    width)."""
    body = _body(who, view, cx, foot, height, phase)
    for draw_part in (_draw_behind_torso, _draw_torso, _draw_carried, _draw_near_arms, _draw_head):
        draw_part(draw, body)
    return body.shoulder_y, body.shoulder_w


def _palette(who: Identity) -> bytes:
    """The palette mapping body-part labels to the identity's colours."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for label, colour in (
        (SKIN, who.skin),
        (HAIR, who.hair),
        (UPPER, who.upper),
        (UPPER2, who.upper2),
        (LOWER, who.lower),
        (SHOES, who.shoes),
        (BAG, who.bag),
        (BACKPACK, who.backpack),
        (HAT, who.hat),
    ):
        if colour is not None:
            table[label] = colour
    return table.tobytes()


def _paint_person(
    canvas: Image.Image,
    who: Identity,
    view: View,
    cx: float,
    foot: float,
    height: float,
    phase: float,
) -> Image.Image:
    """``canvas`` with one person drawn over it."""
    labels = Image.new("P", canvas.size, BG)
    sh_y, sw = _draw_person(ImageDraw.Draw(labels), who, view, cx, foot, height, phase)
    arr = np.asarray(labels)
    if who.upper_pattern in ("hstripes", "vstripes", "checks"):
        half = max(2.0, who.stripe * height / 2)
        rows = ((np.arange(CANVAS_H) - sh_y) // half).astype(np.int64)[:, None] % 2 == 1
        cols = ((np.arange(CANVAS_W) - cx + 1000) // half).astype(np.int64)[None, :] % 2 == 1
        on = {"hstripes": rows, "vstripes": cols, "checks": rows ^ cols}[who.upper_pattern]
        arr = np.where((arr == UPPER) & on, UPPER2, arr).astype(np.uint8)
        labels = Image.frombuffer("P", canvas.size, arr.tobytes(), "raw", "P", 0, 1)
    labels.putpalette(_palette(who))
    # Rounded-body shading: darker towards the silhouette's sides.
    x = np.arange(CANVAS_W, dtype=np.float32)
    shade = 1.0 - 0.3 * np.clip(((x - cx) / (1.4 * sw)) ** 2, 0.0, 1.0)
    person = np.asarray(labels.convert("RGB"), dtype=np.float32) * shade[None, :, None]
    mask = Image.fromarray(((arr != BG) * 255).astype(np.uint8))
    return Image.composite(Image.fromarray(person.astype(np.uint8)), canvas, mask)


def _backdrop(camera: Camera, rng: np.random.Generator) -> Image.Image:
    x0 = int(rng.integers(0, camera.background.shape[1] - CANVAS_W + 1))
    crop = camera.background[:, x0 : x0 + CANVAS_W]
    return Image.fromarray(np.roll(crop, int(rng.integers(-12, 13)), axis=0))


def _occlude(
    canvas: Image.Image, occluder: tuple[str, float, RGB], rng: np.random.Generator
) -> None:
    where, size, colour = occluder
    size *= rng.uniform(0.85, 1.15)
    width = int(CANVAS_W * size * 1.3)
    box = {
        "bottom": (0, int(CANVAS_H * (1 - size)), CANVAS_W, CANVAS_H),
        "left": (0, 0, width, CANVAS_H),
        "right": (CANVAS_W - width, 0, CANVAS_W, CANVAS_H),
    }[where]
    ImageDraw.Draw(canvas).rectangle(box, fill=colour)


def _finish(
    canvas: Image.Image, camera: Camera, light: float, rng: np.random.Generator, mirror: bool
) -> bytes:
    """Apply the camera (downsampling, light, colour cast, noise, blur) and encode a JPEG."""
    img = canvas.resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.Resampling.BOX)
    if mirror:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # Gamma, gain and colour cast as one lookup table per channel.
    levels = (np.arange(256) / 255.0) ** camera.gamma * 255.0
    lut = (levels[None, :] * (np.array(camera.gain)[:, None] * camera.brightness * light)).astype(
        np.float32
    )
    pixels = np.asarray(img)
    arr = np.stack([lut[c][pixels[:, :, c]] for c in range(3)], axis=-1)
    ramp = 1.0 + camera.light_slope * np.linspace(-1.0, 1.0, IMAGE_WIDTH, dtype=np.float32)
    arr *= ramp[None, :, None]
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * camera.noise
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    blur = camera.blur * rng.uniform(0.7, 1.3)
    if blur > 0.1:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=camera.quality)
    return buf.getvalue()


def render(spec: ImageSpec, cameras: list[Camera]) -> bytes:
    """The JPEG bytes of one planned image."""
    rng = np.random.default_rng(spec.seed)
    camera = cameras[spec.camera]
    canvas = _backdrop(camera, rng)
    mirror = bool(rng.random() < 0.5)
    light = float(rng.uniform(0.85, 1.15))
    if spec.kind == "person":
        assert spec.identity is not None and spec.shot is not None
        shot = spec.shot
        height = CANVAS_H * shot.scale * spec.identity.stature * rng.uniform(0.97, 1.03)
        cx = CANVAS_W * (0.5 + shot.dx) + rng.uniform(-3, 3)
        foot = CANVAS_H - 0.5 * (CANVAS_H - height) + rng.uniform(-4, 4)
        canvas = _paint_person(
            canvas, spec.identity, shot.view, cx, foot, height, shot.phase + shot.step * spec.index
        )
        if shot.occluder is not None and rng.random() < 0.7:
            _occlude(canvas, shot.occluder, rng)
        mirror, light = shot.mirror, shot.light * rng.uniform(0.95, 1.05)
    elif spec.kind == "distractor" or rng.random() < 0.6:
        # Distractors: people outside every identity, half of them in badly fitted boxes;
        # junk: fragments of people (too close or cut off) or plain background.
        bad = spec.kind == "junk" or rng.random() < 0.5
        scale = (
            float(rng.choice([rng.uniform(0.35, 0.6), rng.uniform(1.3, 2.2)]))
            if bad
            else camera.scale * rng.uniform(0.93, 1.07)
        )
        height = CANVAS_H * scale
        cx = CANVAS_W * (0.5 + (rng.uniform(-0.45, 0.45) if bad else rng.uniform(-0.08, 0.08)))
        foot = (
            CANVAS_H - 0.5 * (CANVAS_H - height) + (rng.uniform(-0.3, 0.3) * height if bad else 0.0)
        )
        canvas = _paint_person(
            canvas,
            _identity(rng),
            VIEWS[int(rng.integers(3))],
            cx,
            foot,
            height,
            float(rng.uniform(0, 2 * math.pi)),
        )
    return _finish(canvas, camera, light, rng, mirror)


# ---------------------------------------------------------------------------------- generation


def _write_images(root: str, cameras: list[Camera], specs: list[ImageSpec]) -> None:
    for spec in specs:
        Path(root, spec.path).write_bytes(render(spec, cameras))


def check_replaceable(out: Path) -> None:
    """Only an empty folder or an earlier synthetic dataset may be replaced: never a download."""
    if not out.exists():
        return
    if out.is_dir() and (not any(out.iterdir()) or (out / MARKER_FILE).is_file()):
        return
    raise ReidpipeError(
        f"{out}: exists and is not a synthetic dataset (no {MARKER_FILE}); "
        "refusing to replace it (remove it or choose another --out)"
    )


def generate_synthetic_market(
    out_dir: str | os.PathLike[str], num_ids: int, seed: int, workers: int | None = None
) -> SynthSummary:
    """Write a Market-1501-layout dataset of ``num_ids`` identities to ``out_dir``, atomically.

    Half the identities (rounded down) are for training, the rest are query/gallery identities;
    the gallery also gets junk (pid -1) and distractor (pid 0) images in Market's proportions.
    Next to the three image folders, ``synthetic.json`` records how it was made (Market's own
    archive also has files beside them). An earlier synthetic dataset at ``out_dir`` is
    replaced whole; any other non-empty path is refused.
    """
    workers = _checked_arguments(num_ids, seed, workers)
    out = Path(out_dir)
    check_replaceable(out)
    start = time.perf_counter()
    cameras, specs, counts = _plan(num_ids, seed)
    summary = _summarize(out, num_ids, seed, specs, counts)
    _write_dataset(out, cameras, specs, summary, workers)
    return replace(summary, seconds=time.perf_counter() - start)


def _checked_arguments(num_ids: int, seed: int, workers: int | None) -> int:
    """Refuse an id count, seed or worker count out of range; returns the worker count
    (default: the usable CPUs)."""
    if not MIN_IDS <= num_ids <= MAX_IDS:
        raise ReidpipeError(
            f"synthetic ids: got {num_ids}, expected {MIN_IDS} to {MAX_IDS} "
            "(at least two train and two test identities, four-digit ids)"
        )
    if seed < 0:
        raise ReidpipeError(f"synthetic seed: got {seed}, expected a non-negative integer")
    workers = usable_cpus() if workers is None else workers
    if workers < 1:
        raise ReidpipeError(f"synthetic workers: got {workers}, expected at least 1")
    return workers


def _summarize(
    out: Path, num_ids: int, seed: int, specs: list[ImageSpec], counts: dict[str, int]
) -> SynthSummary:
    """The planned dataset's counts (its time not yet taken)."""
    in_folder = {
        folder: sum(s.path.startswith(folder + "/") for s in specs)
        for folder in (TRAIN_DIR, GALLERY_DIR, QUERY_DIR)
    }
    return SynthSummary(
        out_dir=out,
        num_ids=num_ids,
        seed=seed,
        train_ids=counts["train_ids"],
        test_ids=counts["test_ids"],
        train_images=in_folder[TRAIN_DIR],
        query_images=in_folder[QUERY_DIR],
        gallery_images=in_folder[GALLERY_DIR],
        distractors=counts["distractor"],
        junk=counts["junk"],
        seconds=0.0,
    )


def _write_dataset(
    out: Path, cameras: list[Camera], specs: list[ImageSpec], summary: SynthSummary, workers: int
) -> None:
    """Render the planned images into ``out``'s three folders, with ``MARKER_FILE`` recording
    ``summary``, all or nothing; over ``workers`` processes when more than one."""
    record = {
        "generator": "reidpipe synth",
        **{
            key: value
            for key, value in asdict(summary).items()
            if key not in ("out_dir", "seconds")
        },
    }
    with atomic_dir(out, owned_by=(MARKER_FILE,)) as tmp:
        for folder in (TRAIN_DIR, GALLERY_DIR, QUERY_DIR):
            (tmp / folder).mkdir()
        if workers == 1:
            _write_images(str(tmp), cameras, specs)
        else:
            chunks = [specs[i :: workers * 4] for i in range(workers * 4)]
            with ProcessPoolExecutor(workers) as pool:
                list(
                    pool.map(
                        _write_images, [str(tmp)] * len(chunks), [cameras] * len(chunks), chunks
                    )
                )
        write_json(tmp / MARKER_FILE, record)
