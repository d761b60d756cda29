"""Render chest-X-ray-like grayscale images whose findings leave distinct visual signatures.

Pruning studies need a classifier that learns common classes well and rare ones poorly,
and that is neither trivial (every finding a fixed blob) nor hopeless. So the images
carry a frontal-CXR anatomy (body, lungs, heart, mediastinum, diaphragm, ribs, clavicles,
spine, gastric bubble) that varies between patients and, less, between one patient's
images; pose, exposure and noise vary per image. Each of the 19 findings has its own
location, shape, texture and contrast, some deliberately subtle, all scaled by one
``signal`` knob, and large enough to survive downsampling to the 48 px training size.

Coordinates are normalised: ``u`` left to right, ``v`` top to bottom, both in [-1, 1]
before the per-image pose; the image's left is the patient's right (radiological view).
Every drawing step is a handful of vectorised float32 operations on precomputed grids,
and textures are smooth Gaussian random fields made by two small matrix products, so a
128 px image takes about a millisecond or two.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from cxrprune.core.classes import NIH_CXR_LT_CLASSES
from cxrprune.datasets.synth.labels import FINDING_INDICES

DEGRADATIONS = ("blur", "noise", "exposure")
N_GEOMETRY = 8  # per-patient uniforms that fix where and how each finding appears
_F32 = np.float32
_SIDES = (-1, 1)  # -1: image left (patient's right lung), +1: image right


# --------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class Anatomy:
    """One patient's body; images of the patient jitter it slightly (breathing, pose)."""

    body_half_width: float
    lung_x: float  # |centre| of each lung
    lung_half_width: tuple[float, float]  # per side (-1, +1)
    apex: float  # v of the lung apices
    dome: tuple[float, float]  # v of each hemidiaphragm's top
    dome_curve: float  # how far the domes drop towards the costophrenic angles
    heart_x: float
    heart_y: float
    heart_half_width: float
    heart_half_height: float
    mediastinum_half_width: float
    knob_x: float
    knob_y: float
    knob_r: float
    aorta_bulge: float  # lateral bulge of the descending aorta (tortuosity)
    rib_freq: float
    rib_phase: float
    gastric_bubble: float  # size of the normal stomach air under the left dome; 0 = none
    lucency: float  # extra aeration of both lungs (emphysema)
    marking_gain: float  # visibility of the vascular lung markings


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    """A patient's anatomy; spreads are wide enough that no single size is a finding cue."""
    j = lambda scale: float(rng.normal(0.0, scale))  # noqa: E731 - local jitter shorthand
    right_width = 0.27 + j(0.015)
    return Anatomy(
        body_half_width=0.86 + j(0.03),
        lung_x=0.40 + j(0.015),
        lung_half_width=(right_width, right_width - 0.01 + j(0.01)),
        apex=-0.70 + j(0.03),
        dome=(0.42 + j(0.035), 0.47 + j(0.035)),
        dome_curve=0.16 + j(0.02),
        heart_x=0.1 + j(0.02),
        heart_y=0.31 + j(0.02),
        heart_half_width=0.30 + j(0.022),
        heart_half_height=0.27 + j(0.015),
        mediastinum_half_width=0.10 + j(0.01),
        knob_x=0.13 + j(0.01),
        knob_y=-0.30 + j(0.02),
        knob_r=0.065 + j(0.006),
        aorta_bulge=0.0,
        rib_freq=5.2 + j(0.3),
        rib_phase=float(rng.random()),
        gastric_bubble=float(rng.random() < 0.7) * (0.06 + j(0.01)),
        lucency=0.0,
        marking_gain=1.0 + j(0.15),
    )


def jitter_anatomy(anatomy: Anatomy, rng: np.random.Generator) -> Anatomy:
    """Per-image variation of one patient: depth of inspiration, heart phase."""
    breath = float(rng.normal(0.0, 0.02))
    return replace(
        anatomy,
        dome=(anatomy.dome[0] + breath, anatomy.dome[1] + breath),
        heart_half_width=anatomy.heart_half_width * float(1.0 + rng.normal(0.0, 0.015)),
    )


def draw_geometry(rng: np.random.Generator) -> np.ndarray:
    """Per-patient uniforms for every finding, so a finding persists in place across images."""
    return rng.random((len(FINDING_INDICES), N_GEOMETRY))


# --------------------------------------------------------------------------- grids and fields


@functools.lru_cache(maxsize=8)
def _base_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = ((2.0 * np.arange(size) + 1.0) / size - 1.0).astype(_F32)
    x, y = np.meshgrid(c, c)
    for a in (x, y):
        a.setflags(write=False)
    return x, y


@functools.lru_cache(maxsize=32)
def _interpolator(size: int, knots: int) -> np.ndarray:
    """Gaussian interpolation matrix (size, knots) with unit row norm, so fields are N(0, 1)."""
    centres = np.linspace(-1.1, 1.1, knots)
    x = (2.0 * np.arange(size) + 1.0) / size - 1.0
    spacing = centres[1] - centres[0]
    w = np.exp(-0.5 * ((x[:, None] - centres[None, :]) / (0.8 * spacing)) ** 2)
    w /= np.sqrt((w * w).sum(axis=1, keepdims=True))
    w = w.astype(_F32)
    w.setflags(write=False)
    return w


def smooth_field(rng: np.random.Generator, size: int, knots_y: int, knots_x: int | None = None) -> np.ndarray:
    """A smooth Gaussian random field; unequal knot counts give streaks along the coarse axis."""
    kx = knots_y if knots_x is None else knots_x
    g = rng.standard_normal((knots_y, kx), dtype=_F32)
    return _interpolator(size, knots_y) @ g @ _interpolator(size, kx).T


def ramp(x: np.ndarray, width: float) -> np.ndarray:
    """A soft step from 0 to 1 over ``width`` around ``x = 0`` (cheaper than a sigmoid)."""
    return np.clip(x * (1.0 / width) + 0.5, 0.0, 1.0)


def ellipse(u: np.ndarray, v: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Squared normalised radius of an axis-aligned ellipse (< 1 inside)."""
    du = (u - cx) * (1.0 / rx)
    dv = (v - cy) * (1.0 / ry)
    return du * du + dv * dv


# --------------------------------------------------------------------------- scene


@dataclass
class Lung:
    mask: np.ndarray  # soft 0..1
    shape: np.ndarray  # superellipse value: 0 centre, 1 lateral wall or apex
    height: np.ndarray  # 0 at the apex, 1 at the dome's top
    u: np.ndarray
    side: int
    x: float
    half_width: float
    top: float
    dome: float

    @functools.cached_property
    def depth(self) -> np.ndarray:
        """0 at the centre to 1 at the wall, about linear in distance (``shape`` is steep there)."""
        return np.sqrt(np.sqrt(self.shape))

    @functools.cached_property
    def lateral(self) -> np.ndarray:
        """1 over the lateral two thirds, 0 at the medial edge (where the mediastinum is)."""
        return ramp(self.side * (self.u - self.x) * (1.0 / self.half_width) + 0.3, 0.4)


@dataclass
class Scene:
    """Everything a finding draws on; findings only add to the three accumulators."""

    u: np.ndarray
    v: np.ndarray
    size: int
    edge: float  # about one and a half pixels in normalised units
    anatomy: Anatomy
    lungs: dict[int, Lung]
    rng: np.random.Generator  # for finding textures only
    opacity: np.ndarray  # fluid or tissue replacing lung air, 0..1
    lucency: np.ndarray  # extra air inside the lungs
    overlay: np.ndarray  # brightness added anywhere (negative = gas outside the lungs)
    marking_mask: np.ndarray  # 1 where vascular markings show, 0 where a finding removes them

    def lung_point(self, side: int, across: float, down: float) -> tuple[float, float]:
        """A point in a lung: ``across`` -1 medial .. 1 lateral, ``down`` 0 apex .. 1 dome."""
        lung = self.lungs[side]
        return lung.x + side * across * lung.half_width, lung.top + down * (lung.dome - lung.top)


def _pose(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x, y = _base_grid(size)
    angle = math.radians(rng.normal(0.0, 2.5))
    scale = 1.0 + float(rng.normal(0.0, 0.03))
    dx, dy = rng.normal(0.0, 0.03, 2).tolist()
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    return c * x + s * y - dx, c * y - s * x - dy


def _lung(u: np.ndarray, v: np.ndarray, a: Anatomy, side: int, edge: float) -> Lung:
    i = (side + 1) // 2
    x, hw, dome = side * a.lung_x, a.lung_half_width[i], a.dome[i]
    round_top = 0.32
    p = (u - x) * (1.0 / hw)
    q = np.minimum(v - (a.apex + round_top), 0.0) * (1.0 / round_top)
    p2 = p * p
    shape = p2 * p2 + q * q  # flat lateral wall, rounded apex
    dome_v = dome + a.dome_curve * p2
    mask = ramp(1.0 - shape, 4.0 * edge / hw) * ramp(dome_v - v, edge)
    height = (v - a.apex) * (1.0 / (dome - a.apex))
    return Lung(mask, shape, height, u, side, x, hw, a.apex, dome)


def _scene(size: int, anatomy: Anatomy, rng: np.random.Generator, textures: np.random.Generator) -> Scene:
    u, v = _pose(size, rng)
    edge = max(1.5 * 2.0 / size, 0.004)
    lungs = {s: _lung(u, v, anatomy, s, edge) for s in _SIDES}
    zeros = lambda: np.zeros_like(u)  # noqa: E731
    return Scene(u, v, size, edge, anatomy, lungs, textures, zeros(), zeros(), zeros(), np.ones_like(u))


# --------------------------------------------------------------------------- findings
# Each finding: an optional anatomy modifier (applied before the scene exists) and an
# optional drawing on the scene. ``g`` holds the patient's uniforms for the finding,
# ``s`` its strength in this image (severity times the signal knob).


def _pick_side(g: float) -> int:
    return -1 if g < 0.55 else 1  # right-sided findings a little more common, as in practice


def _sides(g_side: float, g_both: float, p_both: float) -> tuple[int, ...]:
    return _SIDES if g_both < p_both else (_pick_side(g_side),)


def _infiltration(sc: Scene, g: Sequence[float], s: float) -> None:
    patches = np.maximum(smooth_field(sc.rng, sc.size, 14) - 0.2, 0.0)
    for side in _sides(g[0], g[1], 0.3):
        cx, cy = sc.lung_point(side, g[2] * 1.2 - 0.6, 0.35 + 0.45 * g[3])
        region = np.exp(-0.5 * ellipse(sc.u, sc.v, cx, cy, 0.18 + 0.1 * g[4], 0.22 + 0.1 * g[5]))
        sc.opacity += (0.6 * s) * region * patches * sc.lungs[side].mask


def _effusion(sc: Scene, g: Sequence[float], s: float) -> None:
    for side in _sides(g[0], g[1], 0.3):
        lung = sc.lungs[side]
        lateral = np.clip(side * (sc.u - lung.x) * (1.0 / lung.half_width), 0.0, 1.0)
        # Meniscus: the fluid level climbs towards the lateral wall and blunts the angle.
        level = lung.dome + 0.07 - (0.07 + 0.3 * g[2]) * s * (0.45 + 0.55 * lateral * lateral)
        sc.opacity += 0.75 * s * ramp(sc.v - level, 0.04) * lung.mask


def _atelectasis_anatomy(a: Anatomy, g: Sequence[float], s: float) -> Anatomy:
    i = (_pick_side(g[0]) + 1) // 2
    dome = list(a.dome)
    dome[i] -= 0.04 * s  # volume loss pulls the hemidiaphragm up
    return replace(a, dome=(dome[0], dome[1]))


def _atelectasis(sc: Scene, g: Sequence[float], s: float) -> None:
    side = _pick_side(g[0])
    cx, cy = sc.lung_point(side, g[2] - 0.5, 0.55 + 0.3 * g[3])
    angle = math.radians(-25.0 + 40.0 * g[4]) * side
    du, dv = sc.u - cx, sc.v - cy
    along = du * math.cos(angle) + dv * math.sin(angle)
    across = dv * math.cos(angle) - du * math.sin(angle)
    thick, half_len = 0.022 + 0.025 * g[5], 0.14 + 0.1 * g[6]
    band = ramp(thick - np.abs(across), sc.edge) * ramp(half_len - np.abs(along), 0.06)
    sc.opacity += (0.75 * s) * band * sc.lungs[side].mask


def _round_opacity(sc: Scene, side: int, across: float, down: float, r: float, sharpness: float,
                   strength: float) -> None:
    cx, cy = sc.lung_point(side, across, down)
    d = ellipse(sc.u, sc.v, cx, cy, r, r)
    sc.opacity += strength * ramp(1.0 - d, sharpness) * sc.lungs[side].mask


def _nodule(sc: Scene, g: Sequence[float], s: float) -> None:
    _round_opacity(sc, _pick_side(g[0]), 1.4 * g[1] - 0.7, 0.2 + 0.6 * g[2], 0.05 + 0.035 * g[3], 0.5, 0.85 * s)
    if g[4] < 0.3:  # a second nodule
        _round_opacity(sc, _pick_side(g[5]), 1.4 * g[6] - 0.7, 0.2 + 0.6 * g[7], 0.04 + 0.02 * g[3], 0.5,
                       0.7 * s)


def _mass(sc: Scene, g: Sequence[float], s: float) -> None:
    side, r = _pick_side(g[0]), 0.1 + 0.09 * g[3]
    across, down = 1.2 * g[1] - 0.6, 0.25 + 0.5 * g[2]
    _round_opacity(sc, side, across, down, r, 0.25, 0.9 * s)
    lobe = 0.6 * r / sc.lungs[side].half_width  # a second lobe makes the contour lobulated
    _round_opacity(sc, side, across + lobe * math.cos(6.28 * g[4]), down + 0.5 * lobe * math.sin(6.28 * g[4]),
                   0.7 * r, 0.25, 0.5 * s)


def _consolidation(sc: Scene, g: Sequence[float], s: float) -> None:
    side = _pick_side(g[0])
    lung = sc.lungs[side]
    tilt = (0.3 * g[2] - 0.15) * side * (sc.u - lung.x) * (1.0 / lung.half_width)
    if g[1] < 0.65:  # lower lobe: below a fissure-like straight edge
        lobe = ramp(lung.height - (0.5 + 0.2 * g[3]) - tilt, 0.02)
    else:  # upper lobe
        lobe = ramp((0.3 + 0.2 * g[3]) - lung.height - tilt, 0.02)
    texture = 0.8 + 0.2 * smooth_field(sc.rng, sc.size, 20)
    sc.opacity += (0.85 * s) * lobe * texture * lung.mask


def _pleural_band(lung: Lung, inner: float, outer: float, soft: float) -> np.ndarray:
    """A band along the lateral wall and apex, between two ``depth`` levels."""
    return ramp(lung.depth - inner, soft) * ramp(outer - lung.depth, soft) * lung.lateral


def _pneumothorax(sc: Scene, g: Sequence[float], s: float) -> None:
    lung = sc.lungs[_pick_side(g[0])]
    edge = 0.88 - (0.12 + 0.3 * g[1]) * min(s, 1.2)  # visceral pleura: bigger collapse, wider gas rim
    upper = ramp(0.85 - lung.height, 0.2) * lung.mask
    rim = ramp(lung.depth - edge, 0.02) * upper * lung.lateral
    sc.lucency += (0.5 * s) * rim
    sc.marking_mask *= 1.0 - rim
    sc.overlay += (0.3 * s) * _pleural_band(lung, edge - 0.035, edge, 0.02) * upper


def _pleural_thickening(sc: Scene, g: Sequence[float], s: float) -> None:
    for side in _sides(g[0], g[1], 0.25):
        lung = sc.lungs[side]
        apical = ramp(0.5 + 0.5 * g[2] - lung.height, 0.2)
        band = _pleural_band(lung, 0.92 - (0.08 + 0.1 * g[3]) * s, 1.2, 0.03)
        sc.opacity += (0.9 * s) * band * apical * lung.mask


def _cardiomegaly_anatomy(a: Anatomy, g: Sequence[float], s: float) -> Anatomy:
    grow = 1.0 + (0.28 + 0.17 * g[0]) * s
    return replace(a, heart_half_width=a.heart_half_width * grow,
                   heart_half_height=a.heart_half_height * (1.0 + 0.4 * (grow - 1.0)),
                   heart_x=a.heart_x + 0.3 * (grow - 1.0) * a.heart_half_width)


def _emphysema_anatomy(a: Anatomy, g: Sequence[float], s: float) -> Anatomy:
    drop = (0.06 + 0.05 * g[0]) * s
    return replace(a, dome=(a.dome[0] + drop, a.dome[1] + drop), dome_curve=a.dome_curve * max(0.3, 1.0 - 0.6 * s),
                   lucency=a.lucency + 0.22 * s, marking_gain=a.marking_gain * (1.0 - 0.4 * min(s, 1.0)))


def _emphysema(sc: Scene, g: Sequence[float], s: float) -> None:
    if g[1] < 0.5:  # an apical bulla
        side = _pick_side(g[2])
        cx, cy = sc.lung_point(side, 0.4 * g[3], 0.15 + 0.15 * g[4])
        bulla = ramp(1.0 - ellipse(sc.u, sc.v, cx, cy, 0.08 + 0.05 * g[5], 0.07 + 0.04 * g[5]), 0.3)
        sc.lucency += (0.3 * s) * bulla
        sc.marking_mask *= 1.0 - bulla


def _edema(sc: Scene, g: Sequence[float], s: float) -> None:
    haze = 0.0
    for side in _SIDES:
        cx, cy = sc.lung_point(side, -0.55, 0.5 + 0.1 * g[0])
        haze = haze + np.exp(-0.5 * ellipse(sc.u, sc.v, cx, cy, 0.2 + 0.08 * g[1], 0.24 + 0.08 * g[1]))
    lungs = sc.lungs[-1].mask + sc.lungs[1].mask
    sc.opacity += (0.5 * s) * haze * lungs


def _fibrosis(sc: Scene, g: Sequence[float], s: float) -> None:
    net = ramp(0.5 - np.abs(smooth_field(sc.rng, sc.size, 10)), 0.25)  # zero set of a field: a net
    for side in _sides(g[0], g[1], 0.7):
        lung = sc.lungs[side]
        zone = ramp(lung.depth - 0.35, 0.2) * ramp(0.7 + 0.25 * g[2] - lung.height, 0.2)
        sc.opacity += (0.95 * s) * net * zone * lung.mask


def _subcutaneous_emphysema(sc: Scene, g: Sequence[float], s: float) -> None:
    a = sc.anatomy
    streaks = np.maximum(smooth_field(sc.rng, sc.size, 6, 30) - 0.3, 0.0)
    wall_inner = a.lung_x + max(a.lung_half_width) - 0.03
    outer = np.abs(sc.u)
    wall = ramp(outer - wall_inner, 0.03) * ramp(a.body_half_width - outer, 0.02)
    span = ramp(sc.v - (-0.75 + 0.2 * g[0]), 0.05) * ramp(0.35 + 0.3 * g[1] - sc.v, 0.1)
    if g[2] < 0.5:  # one side only
        wall *= ramp(_pick_side(g[3]) * sc.u, 0.02)
    sc.overlay -= (0.7 * s) * streaks * wall * span


def _pneumonia(sc: Scene, g: Sequence[float], s: float) -> None:
    side = _pick_side(g[0])
    cx, cy = sc.lung_point(side, 1.0 * g[1] - 0.4, 0.45 + 0.4 * g[2])
    r = 0.11 + 0.1 * g[3]
    blob = np.exp(-0.5 * ellipse(sc.u, sc.v, cx, cy, r, 0.85 * r))
    fuzz = 0.75 + 0.25 * smooth_field(sc.rng, sc.size, 18)
    sc.opacity += (0.7 * s) * blob * fuzz * sc.lungs[side].mask


def _tortuous_aorta_anatomy(a: Anatomy, g: Sequence[float], s: float) -> Anatomy:
    return replace(a, knob_r=a.knob_r * (1.0 + (0.5 + 0.3 * g[0]) * s), knob_x=a.knob_x + 0.06 * s,
                   aorta_bulge=(0.11 + 0.07 * g[1]) * s)


def _aortic_calcification(sc: Scene, g: Sequence[float], s: float) -> None:
    a = sc.anatomy
    d = np.sqrt(ellipse(sc.u, sc.v, a.knob_x, a.knob_y, a.knob_r, a.knob_r))
    arc = ramp(0.3 - np.abs(d - 0.9), 0.12) * ramp(a.knob_y + 0.3 * a.knob_r * g[0] - sc.v, 0.03)
    sc.overlay += (0.8 * s) * arc


def _pneumoperitoneum(sc: Scene, g: Sequence[float], s: float) -> None:
    a = sc.anatomy
    for side in _sides(0.0 if g[0] < 0.8 else 1.0, g[1], 0.2):  # mostly under the right dome
        lung = sc.lungs[side]
        p = (sc.u - lung.x) * (1.0 / lung.half_width)
        dome_v = lung.dome + a.dome_curve * p * p
        depth = (0.05 + 0.04 * g[2]) * np.clip(1.0 - p * p, 0.0, 1.0)  # crescent: thick at the top
        below = sc.v - dome_v - 0.012
        sc.overlay -= (0.6 * s) * ramp(below, sc.edge) * ramp(depth - below, sc.edge)


def _hernia(sc: Scene, g: Sequence[float], s: float) -> None:
    a = sc.anatomy
    cx, cy, r = a.heart_x - 0.02 + 0.06 * g[0], a.heart_y + 0.02 + 0.06 * g[1], 0.12 + 0.05 * g[2]
    sac = ramp(1.0 - ellipse(sc.u, sc.v, cx, cy, r, 0.9 * r), 0.2)
    level = cy - (0.1 + 0.3 * g[3]) * r  # air above, fluid below a sharp horizontal level
    air = ramp(level - sc.v, sc.edge)
    sc.overlay += s * sac * (0.15 - 0.55 * air)


def _pneumomediastinum(sc: Scene, g: Sequence[float], s: float) -> None:
    a = sc.anatomy
    heart = np.sqrt(ellipse(sc.u, sc.v, a.heart_x, a.heart_y, a.heart_half_width, a.heart_half_height))
    along_heart = ramp(0.05 - np.abs(heart - 1.05), 0.03) * ramp(a.heart_y - sc.v + 0.05, 0.05)
    border = np.abs(np.abs(sc.u) - (a.mediastinum_half_width + 0.02))
    along_mediastinum = ramp(0.02 - border, sc.edge) * ramp(a.heart_y - 0.1 - sc.v, 0.05)
    sc.overlay -= (0.4 * s) * (along_heart + along_mediastinum * (0.6 + 0.4 * g[0]))


@dataclass(frozen=True)
class Finding:
    """A finding's signature: severity range, optional anatomy change, optional drawing."""

    severity: tuple[float, float]
    anatomy: Callable[[Anatomy, Sequence[float], float], Anatomy] | None = None
    draw: Callable[[Scene, Sequence[float], float], None] | None = None


# Lower severity bounds make part of each class subtle; common classes are not easier by
# design (they are learned better because there are more of them).
FINDINGS: dict[str, Finding] = {
    "Infiltration": Finding((0.45, 1.0), draw=_infiltration),
    "Effusion": Finding((0.45, 1.0), draw=_effusion),
    "Atelectasis": Finding((0.45, 1.0), _atelectasis_anatomy, _atelectasis),
    "Nodule": Finding((0.50, 1.0), draw=_nodule),
    "Mass": Finding((0.55, 1.0), draw=_mass),
    "Consolidation": Finding((0.50, 1.0), draw=_consolidation),
    "Pneumothorax": Finding((0.50, 1.0), draw=_pneumothorax),
    "Pleural Thickening": Finding((0.50, 1.0), draw=_pleural_thickening),
    "Cardiomegaly": Finding((0.45, 1.0), anatomy=_cardiomegaly_anatomy),
    "Emphysema": Finding((0.55, 1.0), _emphysema_anatomy, _emphysema),
    "Edema": Finding((0.50, 1.0), draw=_edema),
    "Fibrosis": Finding((0.50, 1.0), draw=_fibrosis),
    "Subcutaneous Emphysema": Finding((0.55, 1.0), draw=_subcutaneous_emphysema),
    "Pneumonia": Finding((0.45, 1.0), draw=_pneumonia),
    "Tortuous Aorta": Finding((0.55, 1.0), anatomy=_tortuous_aorta_anatomy),
    "Calcification of the Aorta": Finding((0.55, 1.0), draw=_aortic_calcification),
    "Pneumoperitoneum": Finding((0.55, 1.0), draw=_pneumoperitoneum),
    "Hernia": Finding((0.55, 1.0), draw=_hernia),
    "Pneumomediastinum": Finding((0.55, 1.0), draw=_pneumomediastinum),
}
assert tuple(FINDINGS) == tuple(NIH_CXR_LT_CLASSES[i] for i in FINDING_INDICES)
_FINDING_LIST = tuple(FINDINGS.values())
_SEVERITY_LOW = np.array([f.severity[0] for f in _FINDING_LIST])
_SEVERITY_HIGH = np.array([f.severity[1] for f in _FINDING_LIST])


# --------------------------------------------------------------------------- composition


def _body(sc: Scene) -> np.ndarray:
    a, u, v = sc.anatomy, sc.u, sc.v
    widen = 0.06 * np.clip(v, -1.0, 1.0)
    trunk = ramp(a.body_half_width + widen - np.abs(u), 0.04) * ramp(v + 0.9, 0.1)
    neck = ramp(0.2 - np.abs(u), 0.04)
    return np.maximum(trunk, neck)


def _mediastinum(sc: Scene) -> np.ndarray:
    """Heart, mediastinum, aortic knob and descending aorta as one soft-tissue mask."""
    a, u, v = sc.anatomy, sc.u, sc.v
    heart = ramp(1.0 - ellipse(u, v, a.heart_x, a.heart_y, a.heart_half_width, a.heart_half_height), 0.08)
    stem = ramp(a.mediastinum_half_width + 0.04 * ramp(-0.55 - v, 0.3) - np.abs(u), sc.edge) * ramp(a.heart_y - v, 0.1)
    knob = ramp(1.0 - ellipse(u, v, a.knob_x, a.knob_y, a.knob_r, a.knob_r), 0.15)
    tissue = np.maximum(np.maximum(heart, stem), knob)
    if a.aorta_bulge > 0.0:
        centre = a.mediastinum_half_width - 0.02 + a.aorta_bulge * np.exp(-4.0 * (v - a.knob_y - 0.3) ** 2)
        aorta = ramp(0.04 - np.abs(u - centre), sc.edge) * ramp(v - a.knob_y, 0.05) * ramp(a.heart_y - v, 0.1)
        tissue = np.maximum(tissue, aorta)
    return tissue


def _bones(sc: Scene, lungs: np.ndarray) -> np.ndarray:
    a, u, v = sc.anatomy, sc.u, sc.v
    au = np.abs(u)
    phase = (v + 0.15 * au - 0.45 * au * au) * a.rib_freq + a.rib_phase  # arching down laterally
    ribs = 0.5 + 0.5 * np.cos(6.2832 * phase)
    ribs *= ribs
    ribs *= ribs
    ribs *= ramp(a.body_half_width - 0.06 - au, 0.05) * ramp(max(a.dome) + 0.12 - v, 0.1) * ramp(au - 0.08, 0.04)
    clavicle_dist = np.abs(v - (a.apex - 0.02 - 0.25 * (au - 0.1)))
    clavicle = ramp(0.035 - clavicle_dist, sc.edge) * ramp(0.62 - au, 0.05) * ramp(au - 0.04, 0.04)
    spine = ramp(0.065 - au, sc.edge) * (0.7 + 0.3 * np.cos(6.2832 * 6.0 * v))
    return ribs * (0.05 + 0.08 * lungs) + 0.12 * clavicle + 0.06 * spine


def _gastric_bubble(sc: Scene) -> np.ndarray:
    a = sc.anatomy
    if a.gastric_bubble <= 0.0:
        return np.zeros_like(sc.u)
    r = a.gastric_bubble
    return ramp(1.0 - ellipse(sc.u, sc.v, 0.38, a.dome[1] + 0.02 + 1.2 * r, 1.4 * r, r), 0.3)


def _markings(sc: Scene, air: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vascular markings: branching-looking brightness, densest near the hila."""
    vessels = np.maximum(smooth_field(rng, sc.size, 26), 0.0)
    hila = 0.0
    for side in _SIDES:
        cx, cy = sc.lung_point(side, -0.6, 0.5)
        hila = hila + np.exp(-0.5 * ellipse(sc.u, sc.v, cx, cy, 0.3, 0.35))
    return (0.05 * sc.anatomy.marking_gain) * vessels * (0.3 + hila) * air * sc.marking_mask


def _compose(sc: Scene, rng: np.random.Generator) -> np.ndarray:
    lungs = sc.lungs[-1].mask + sc.lungs[1].mask
    soft = _mediastinum(sc)
    air = lungs * (1.0 - soft) * (1.0 + sc.anatomy.lucency + sc.lucency) * np.clip(1.0 - sc.opacity, 0.0, 1.0)
    image = 0.06 + 0.5 * _body(sc) + 0.06 * soft - 0.4 * air
    image += _bones(sc, lungs) + _markings(sc, air, rng) - 0.3 * _gastric_bubble(sc) + sc.overlay
    return image


def _expose(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Per-image exposure (gamma, window) and quantum noise."""
    image = np.clip(image, 0.0, 1.0) ** _F32(rng.uniform(0.8, 1.2))
    image = image * _F32(rng.uniform(0.9, 1.1)) + _F32(rng.normal(0.0, 0.03))
    image += rng.standard_normal((size, size), dtype=_F32) * _F32(rng.uniform(0.008, 0.02))
    return image


def _accumulators(sc: Scene) -> tuple[np.ndarray, ...]:
    return sc.opacity.copy(), sc.lucency.copy(), sc.overlay.copy(), sc.marking_mask.copy()


FOCUS = 0.15  # window width (normalised units, the image is 2 wide) of a finding at extent 1: ~2.4 px at 32 px
SPREAD = 0.3  # width of the halo added to a finding at extent -1 (normalised units: ~5 px at 32 px)
# The halo's peak at extent -1, as a share of the finding's own peak. 2 and not 0.5 with the
# drawing brought back to its own peak (the form before): that halo left "rare classes forgotten
# more" at rho 0.04..0.50 in five draws; a broad halo above the drawing reads from many positions
# (README, Calibration).
HALO = 2.0


def _reshape(sc: Scene, before: tuple[np.ndarray, ...], extent: float, polar: bool = False) -> None:
    """Change the extent of a finding's drawing (what it added to the scene since ``before``):
    ``extent > 0`` keeps it, at the same peak contrast, only under a Gaussian window of width
    ``FOCUS / extent`` around the point where it changed the scene most (focal; a finding drawn
    on both sides keeps that point's side); ``extent < 0`` keeps the drawing and adds a halo, the
    drawing blurred over ``SPREAD`` and scaled to ``-extent * HALO`` of its peak (diffuse: broad
    evidence of the finding's own polarity around it, so a common finding is also more
    conspicuous). ``polar``: the drawing
    also takes the polarity of its side, dark (gas-like) for ``extent > 0``, bright
    (opacity-like) for ``extent < 0``, by exchanging what it adds to lung opacity and lung
    lucency and negating what it overlays, when its net brightness is the other way."""
    names = ("opacity", "lucency", "overlay", "marking_mask")
    deltas = [getattr(sc, n) - b for n, b in zip(names, before)]
    if polar:
        # Net brightness: opacity brightens the lungs, lucency darkens them (image -= 0.4 * air).
        bright = float(0.4 * (deltas[0].sum() - deltas[1].sum()) + deltas[2].sum())
        if bright * extent > 0.0:
            deltas = [deltas[1], deltas[0], -deltas[2], deltas[3]]
    total = np.abs(deltas[0]) + np.abs(deltas[1]) + np.abs(deltas[2]) + np.abs(deltas[3])
    peak = float(total.max())
    if peak <= 0.0:
        return
    if extent > 0.0:
        i = np.unravel_index(int(np.argmax(total)), total.shape)
        width = FOCUS / extent
        window = np.exp(_F32(-0.5 / (width * width)) * ellipse(sc.u, sc.v, float(sc.u[i]), float(sc.v[i]), 1.0, 1.0))
        shaped = [window * d for d in deltas]
    else:
        sigma = SPREAD * sc.size / 2.0
        halos = [gaussian_filter(d, sigma, mode="constant") for d in deltas]
        halo_peak = float((np.abs(halos[0]) + np.abs(halos[1]) + np.abs(halos[2]) + np.abs(halos[3])).max())
        gain = _F32(-extent * HALO * peak / halo_peak) if halo_peak > 0.0 else _F32(0.0)
        shaped = [d + gain * h for d, h in zip(deltas, halos)]
    for n, b, d in zip(names, before, shaped):
        setattr(sc, n, b + d)
    sc.marking_mask = np.clip(sc.marking_mask, 0.0, 1.0)


FAINT = 0.35  # a faint finding's strength, as a fraction of its class's lowest severity


def render(labels: np.ndarray, anatomy: Anatomy, geometry: np.ndarray, rng: np.random.Generator,
           size: int = 128, signal: float = 1.0, faint: int = -1, faint_effect: float = 1.0,
           extent: Sequence[float] | None = None, polarity: float = 0.0, traces: Sequence[int] = (),
           trace_strength: float = 0.0) -> np.ndarray:
    """A float32 image in [0, 1] showing the findings that are 1 in ``labels`` (canonical order).

    ``faint`` (a class index) is drawn, present in ``labels`` or not, at a fraction of its
    lowest severity: the ambiguous trace behind a label-noise flip (a report that names a
    barely visible finding, or misses one). ``faint_effect`` (the ``label_noise`` route of
    :mod:`~cxrprune.datasets.synth.mechanisms`) moves linearly from the truth (0: the class is
    drawn as the true labels say) to that faint trace (1). ``extent`` (the ``frequency`` route)
    gives each finding's drawing a change of extent (:func:`_reshape`):
    focal above 0, diffuse below, untouched at 0; for a share ``polarity`` of patients the
    drawing also takes its side's polarity (focal dark, diffuse bright). ``traces`` (finding positions, canonical
    finding order, absent from ``labels``) are drawn at ``trace_strength`` times their class's
    lowest severity (the ``ambiguity`` route). ``rng`` is consumed identically whatever the
    labels and routes (finding textures come from a child generator), so one seed renders the
    same patient, pose, exposure and noise with or without a finding: the difference is the
    finding's signature alone.
    """
    # Python floats, not NumPy scalars: a float64 scalar would promote every float32 array.
    strength = (rng.uniform(_SEVERITY_LOW, _SEVERITY_HIGH) * signal).tolist()
    if faint >= 0 and faint_effect > 0.0:
        j = FINDING_INDICES.index(faint)
        trace = float(_SEVERITY_LOW[j] * FAINT * signal)
        if faint_effect >= 1.0:
            strength[j] = trace
        else:  # a dropped finding fades from its true strength, an added one grows from nothing
            strength[j] = (1.0 - faint_effect) * strength[j] * float(labels[faint]) + faint_effect * trace
        labels = labels.copy()
        labels[faint] = 1
    if traces and trace_strength > 0.0:
        labels = labels.copy()
        for j in traces:
            strength[j] = float(_SEVERITY_LOW[j] * trace_strength * signal)
            labels[FINDING_INDICES[j]] = 1
    geometry = geometry.tolist()
    textures = np.random.default_rng(rng.integers(2**63))
    present = [j for j, c in enumerate(FINDING_INDICES) if labels[c]]
    anatomy = jitter_anatomy(anatomy, rng)
    for j in present:
        if _FINDING_LIST[j].anatomy is not None:
            anatomy = _FINDING_LIST[j].anatomy(anatomy, geometry[j], strength[j])
    sc = _scene(size, anatomy, rng, textures)
    for j in present:
        if _FINDING_LIST[j].draw is None:
            continue
        shape = 0.0 if extent is None else float(extent[j])
        before = _accumulators(sc) if shape != 0.0 else None
        _FINDING_LIST[j].draw(sc, geometry[j], strength[j])
        if before is not None:
            # The patient's last uniform of the finding decides the polarity, so a share
            # ``polarity`` of patients (linear in the route's effect) gets it.
            _reshape(sc, before, shape, geometry[j][N_GEOMETRY - 1] < polarity)
    return np.clip(_expose(_compose(sc, rng), rng, size), 0.0, 1.0)


# --------------------------------------------------------------------------- degradation


def degrade(image: np.ndarray, rng: np.random.Generator, rate: float, effect: float = 1.0
            ) -> tuple[np.ndarray, float, str]:
    """With probability ``rate`` blur, noise or mis-expose the image; returns (image, quality, kind).

    Severities are sized for the 48 px training resolution, so a degraded image is
    still visibly degraded after downsampling. Quality is 1 for pristine images. ``effect``
    (the ``quality`` route of :mod:`~cxrprune.datasets.synth.mechanisms`) scales the pixel
    change, not the nominal quality and kind: at 0 the image is untouched but still recorded as
    degraded, the negative control. ``rng`` is consumed identically whatever ``effect``.
    """
    original = image
    image, quality, kind = _degrade(image, rng, rate)
    if kind == "none" or effect >= 1.0:
        return image, quality, kind
    blended = original + _F32(effect) * (image - original)
    return np.clip(blended, 0.0, 1.0).astype(_F32, copy=False), quality, kind


def mottle(image: np.ndarray, rng: np.random.Generator, quality: float, amplitude: float) -> np.ndarray:
    """Add a fine structured mottle (the ``mottle`` route) to a degraded image: a smooth random
    field of ``amplitude`` times the degradation's severity (read back from its ``quality``).
    ``rng`` is the route's own stream, so the image's other pixels do not depend on it."""
    severity = (1.0 - quality) / _QUALITY_LOSS
    field = smooth_field(rng, image.shape[0], _MOTTLE_KNOTS) * _F32(amplitude * severity)
    return np.clip(image + field, 0.0, 1.0).astype(_F32, copy=False)


_QUALITY_LOSS = 0.75  # quality of a degradation of severity s: 1 - _QUALITY_LOSS * s
_MOTTLE_KNOTS = 24  # the noise degradation's mottle scale: features of a few pixels at 32 px


def _degrade(image: np.ndarray, rng: np.random.Generator, rate: float) -> tuple[np.ndarray, float, str]:
    if rng.random() >= rate:
        return image, 1.0, "none"
    kind = DEGRADATIONS[int(rng.integers(len(DEGRADATIONS)))]
    severity = float(rng.uniform(0.25, 1.0))
    size = image.shape[0]
    if kind == "blur":
        image = gaussian_filter(image, sigma=severity * 2.0 * size / 48.0, mode="nearest")
    elif kind == "noise":
        speckle = smooth_field(rng, size, _MOTTLE_KNOTS) * _F32(0.05 * severity)
        image = image + rng.standard_normal(image.shape, dtype=_F32) * _F32(0.05 + 0.15 * severity) + speckle
    elif rng.random() < 0.5:  # under-exposed: dark and compressed
        image = image ** _F32(1.0 + 1.2 * severity) * _F32(1.0 - 0.45 * severity)
    else:  # over-exposed: washed out
        image = 1.0 - (1.0 - image) ** _F32(1.0 + 1.2 * severity) * _F32(1.0 - 0.45 * severity)
    return np.clip(image, 0.0, 1.0).astype(_F32, copy=False), round(1.0 - _QUALITY_LOSS * severity, 4), kind


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.rint(image * 255.0).astype(np.uint8)
