"""Local stretches of a face photo with a known answer: a palpebral fissure, the philtrum or the
upper lip made ``f`` times as long, the rest of the face left alone.

A :class:`Stretch` about a centre ``c`` along a unit axis ``u`` moves a point ``p`` by

    d(p) = a * ((p - c) . u) * exp(-|p - c|^2 / (2 sigma^2)) * u

(a smooth stretch with a Gaussian falloff). :func:`stretch_between` chooses ``a`` so that the two
end points of a segment, symmetric about ``c``, end up ``f`` times as far apart along ``u``;
``sigma`` is :data:`SIGMA_FRACTION` times the segment's length. Several stretches add their
displacements (:func:`warp_points`); the image is resampled through the inverse map, found by
damped Newton iteration (:func:`warp_image`), so a pixel and a point move alike. The true new
landmarks are the warp applied to the labelled ones. A single stretch stays one-to-one for
factors up to about 2.7; two overlapping ones (the philtrum's and the upper lip's share point 51)
can fold where their factors pull apart, so the training warp (:func:`stretch_face`) applies its
stretches one after the other, each on the landmarks the previous ones moved.

:func:`measurement_stretches` builds the stretches of one measurement (:data:`STRETCHED`): each eye
along its own axis (corners 36-39 and 42-45), the philtrum (subnasale 33 - labiale superius 51)
and the upper lip (51 - stomion, the mean of 62 and 66) along the face's vertical axis (normal
to the outer-canthus line 36-45).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

SIGMA_FRACTION = 0.8  # Gaussian falloff sigma, in lengths of the stretched segment
INVERSE_ITERATIONS = 30  # Newton steps (each halved up to BACKTRACK times)
BACKTRACK = 6
INVERSE_TOLERANCE = 1e-4  # pixels
AMPLITUDE_ITERATIONS = 8
MAX_STAGE_FACTOR = 2.5  # a single stretch is one-to-one for factors up to about 2.7 (and any < 1)
# measurement -> segments stretched (weighted landmark points a, b) and their axis
STRETCHED: dict[str, tuple[tuple[dict[int, float], dict[int, float]], ...]] = {
    "pfl": (({36: 1.0}, {39: 1.0}), ({42: 1.0}, {45: 1.0})),
    "philtrum": (({33: 1.0}, {51: 1.0}),),
    "upper_lip": (({51: 1.0}, {62: 0.5, 66: 0.5}),),
}
ALONG = {"pfl": "segment", "philtrum": "vertical", "upper_lip": "vertical"}


@dataclass(frozen=True)
class Stretch:
    """A smooth stretch along ``axis`` (unit) about ``centre``; see the module docstring."""

    centre: tuple[float, float]
    axis: tuple[float, float]
    amplitude: float
    sigma: float

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """d(p) for points (..., 2)."""
        return displacement(np.asarray(points, np.float64), [self])


def stretch_between(a, b, factor: float, axis=None,
                    sigma_fraction: float = SIGMA_FRACTION) -> Stretch:
    """The stretch making points ``a`` and ``b`` ``factor`` times as far apart along ``axis``.

    ``axis`` defaults to the direction a -> b (the distance itself then scales by ``factor``);
    the falloff sigma is ``sigma_fraction`` x |b - a|. Raises ValueError for coinciding points
    or a non-positive factor.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    length = float(np.hypot(*(b - a)))
    if not length > 0 or not factor > 0:
        raise ValueError(f"cannot stretch: segment length {length:g}, factor {factor:g}")
    u = (b - a) / length if axis is None else np.asarray(axis, np.float64)
    u = u / np.hypot(*u)
    sigma = sigma_fraction * length
    g_end = math.exp(-((length / 2) ** 2) / (2 * sigma**2))  # falloff at either end point
    centre = (a + b) / 2
    return Stretch((float(centre[0]), float(centre[1])), (float(u[0]), float(u[1])),
                   (factor - 1.0) / g_end, sigma)  # fmt: skip


def displacement(points: np.ndarray, stretches: list[Stretch]) -> np.ndarray:
    """The sum of the stretches' displacements d(p) at float64 points (..., 2), in one pass."""
    return _displacement(points, stretches)[0]


def _displacement(points: np.ndarray, stretches: list[Stretch],
                  jacobian: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """d(p) at points (..., 2) and, with ``jacobian``, its derivative (..., 2, 2)."""
    if not stretches:
        zero = np.zeros_like(points)
        return zero, (np.zeros(points.shape + (2,)) if jacobian else None)
    centre, axis = (np.array([getattr(s, k) for s in stretches]) for k in ("centre", "axis"))
    amplitude = np.array([s.amplitude for s in stretches])
    falloff = np.array([-0.5 / s.sigma**2 for s in stretches])
    rx, ry = points[..., 0, None] - centre[:, 0], points[..., 1, None] - centre[:, 1]  # (..., k)
    along = rx * axis[:, 0] + ry * axis[:, 1]
    g = amplitude * np.exp((rx * rx + ry * ry) * falloff)
    m = g * along
    d = np.stack([m @ axis[:, 0], m @ axis[:, 1]], axis=-1)
    if not jacobian:
        return d, None
    # dm/dp = g * (u + 2 * falloff * along * r): a row per stretch; J = sum_k u_k (dm_k/dp)^T
    gx = g * (axis[:, 0] + 2 * falloff * along * rx)
    gy = g * (axis[:, 1] + 2 * falloff * along * ry)
    jac = np.stack([np.stack([gx @ axis[:, 0], gy @ axis[:, 0]], axis=-1),
                    np.stack([gx @ axis[:, 1], gy @ axis[:, 1]], axis=-1)], axis=-2)
    return d, jac


def invert(q: np.ndarray, stretches: list[Stretch],
           tolerance: float = INVERSE_TOLERANCE) -> np.ndarray:
    """The points p (..., 2) with p + d(p) = q: damped Newton from p = q, every point's step
    halved until its residual falls. Exact to ``tolerance`` pixel wherever the map is
    one-to-one; plain fixed-point iteration p = q - d(p) diverges where a stretch's amplitude
    exceeds 1 (a factor above about 1.8).
    """
    q = np.asarray(q, np.float64)
    flat = q.reshape(-1, 2)
    p = flat.copy()
    d, jac = _displacement(p, stretches, jacobian=True)
    residual = p + d - flat
    size = np.max(np.abs(residual), axis=-1)
    active = np.flatnonzero(size >= tolerance)  # only these points are still iterated
    for _ in range(INVERSE_ITERATIONS):
        if not active.size:
            break
        r, j, pa = residual[active], jac[active], p[active]
        a, b = 1 + j[:, 0, 0], j[:, 0, 1]
        c, e = j[:, 1, 0], 1 + j[:, 1, 1]
        det = a * e - b * c
        det = np.where(np.abs(det) < 1e-6, 1e-6, det)
        step = np.stack([e * r[:, 0] - b * r[:, 1], a * r[:, 1] - c * r[:, 0]], axis=-1)
        step /= det[:, None]
        scale = np.ones(active.size)
        for _ in range(BACKTRACK + 1):
            trial = pa - scale[:, None] * step
            d_t, jac_t = _displacement(trial, stretches, jacobian=True)
            res_t = trial + d_t - flat[active]
            size_t = np.max(np.abs(res_t), axis=-1)
            better = size_t < size[active]
            if better.all():
                break
            scale = np.where(better, scale, scale / 2)
        moved = active[better]
        p[moved], residual[moved], jac[moved] = trial[better], res_t[better], jac_t[better]
        size[moved] = size_t[better]
        active = active[better & (size_t >= tolerance)]  # a point that cannot improve stops
    return p.reshape(q.shape)


def warp_points(points, stretches: list[Stretch]) -> np.ndarray:
    """Points (..., 2) moved by the sum of the stretches' displacements."""
    p = np.asarray(points, np.float64)
    return p + displacement(p, stretches)


def warp_points_staged(points, stages: Sequence[list[Stretch]]) -> np.ndarray:
    """Points (..., 2) moved by each stage's stretches in turn (:func:`proportion_stages`)."""
    p = np.asarray(points, np.float64)
    for stage in stages:
        p = warp_points(p, stage)
    return p


def warp_image(image: np.ndarray, stretches: list[Stretch], reach: float = 4.0,
               tolerance: float = INVERSE_TOLERANCE) -> np.ndarray:
    """The image resampled so that its content moves as :func:`warp_points` moves points.

    Only the box within ``reach`` sigmas of each centre is resampled (bilinear; beyond, the
    displacement is below 0.002 sigma for any factor in 0.5-2); the inverse map comes from
    :func:`invert`, to ``tolerance`` pixel.
    """
    return _resample(image, [stretches], reach, tolerance)


def _reach_box(stretches: list[Stretch], reach: float) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) corners of the box within ``reach`` sigmas of every stretch's centre."""
    lo = np.min([np.subtract(s.centre, reach * s.sigma) for s in stretches], axis=0)
    hi = np.max([np.add(s.centre, reach * s.sigma) for s in stretches], axis=0)
    return lo, hi


def _resample(image: np.ndarray, stages: Sequence[list[Stretch]], reach: float,
              tolerance: float) -> np.ndarray:
    """The image moved by the stages' maps applied in turn (one bilinear resampling)."""
    out = image.copy()
    used = [s for stage in stages for s in stage]
    if not used:
        return out
    h, w = image.shape[:2]
    lo, hi = _reach_box(used, reach)
    x0, y0 = max(int(math.floor(lo[0])), 0), max(int(math.floor(lo[1])), 0)
    x1, y1 = min(int(math.ceil(hi[0])) + 1, w), min(int(math.ceil(hi[1])) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return out
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    p = np.stack([gx, gy], axis=-1)
    for stage in reversed(stages):  # undo the last map first, each where it reaches
        if not stage:
            continue
        lo, hi = _reach_box(stage, reach)
        near = np.all((p >= lo) & (p <= hi), axis=-1)
        p[near] = invert(p[near], stage, tolerance)
    out[y0:y1, x0:x1] = cv2.remap(image, p[..., 0].astype(np.float32),
                                  p[..., 1].astype(np.float32), cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    return out


def vertical_axis(landmarks: np.ndarray) -> np.ndarray:
    """The face's downward vertical: the normal of the outer-canthus line 36 -> 45."""
    e = np.asarray(landmarks, np.float64)[45] - np.asarray(landmarks, np.float64)[36]
    e = e / np.hypot(*e)
    return np.array([-e[1], e[0]])


def measurement_stretches(landmarks, measurement: str,
                          factor: float | Sequence[float]) -> list[Stretch]:
    """The stretches making ``measurement`` (a key of :data:`STRETCHED`) ``factor`` times as long.

    ``pfl``: both eyes, each along its own corner-to-corner axis (amplitudes corrected for the
    small reach of one eye's stretch into the other eye); ``philtrum``/``upper_lip``: along the
    face's vertical axis (the segment's extent along that axis scales by ``factor``).
    ``factor`` may also be one factor per segment of :data:`STRETCHED` (e.g. each eye its own).
    """
    if measurement not in STRETCHED:
        raise ValueError(f"unknown measurement {measurement!r}; one of {sorted(STRETCHED)}")
    pts = np.asarray(landmarks, np.float64)
    axis = vertical_axis(pts) if ALONG[measurement] == "vertical" else None

    def at(weights: dict[int, float]) -> np.ndarray:
        return sum(w * pts[i] for i, w in weights.items())

    ends = [(at(a), at(b)) for a, b in STRETCHED[measurement]]
    factors = [float(f) for f in np.broadcast_to(np.asarray(factor, np.float64), len(ends))]
    stretches = [stretch_between(a, b, f, axis) for (a, b), f in zip(ends, factors, strict=True)]
    # the stretches of the two eyes reach each other's inner corners a little: correct the
    # amplitudes until every segment is ``factor`` times as long along its axis
    for _ in range(AMPLITUDE_ITERATIONS if len(stretches) > 1 else 0):
        for k, ((a, b), s, f) in enumerate(zip(ends, stretches, factors, strict=True)):
            na, nb = warp_points(np.stack([a, b]), stretches)
            u = np.asarray(s.axis)
            got = ((nb - na) @ u) / ((b - a) @ u)
            g_end = math.exp(-float(np.sum((a - b) ** 2)) / (8 * s.sigma**2))
            stretches[k] = replace(s, amplitude=s.amplitude + (f - got) / g_end)
    return stretches


# The proportion warp (training augmentation, :func:`fas_tf.augment.augment_sample`): one length
# factor each, in this order.
PROPORTIONS = ("eye_36_39", "eye_42_45", "philtrum", "upper_lip")


def proportion_stages(landmarks, factors: Sequence[float]) -> list[list[Stretch]]:
    """The stretches making each of :data:`PROPORTIONS` its factor times as long (68-point
    layout), as stages applied in turn, each one stretch built on the landmarks the previous
    stages moved: the upper lip, the philtrum (both along the face's vertical axis), then each
    eye along its own axis. One stretch is one-to-one for factors in 1/2.5-2.5, so their
    composition is (two stretches added, as the known-answer test's two eyes, can fold on a
    turned face where the eyes overlap); a factor beyond that range is applied as equal
    stretches one after the other. The stages' factors are corrected until the philtrum and
    each eye are their factor times as long at the end, as far as corrected factors within
    1/2.5-2.5 (or the factor itself, beyond) allow (both eyes, or the philtrum and the lip,
    stretched near 2 fall short, most on a turned face); the upper lip is changed again by the
    philtrum's stretch at their shared point 51.
    """
    base = np.asarray(landmarks, np.float64)
    up = vertical_axis(base)

    def build(fs):
        pts, stages = base, []
        for kind, f in zip(("upper_lip", "philtrum", (36, 39), (42, 45)), fs, strict=True):
            # beyond one stretch's one-to-one range: equal stretches one after the other
            n = max(1, math.ceil(abs(math.log(f)) / math.log(MAX_STAGE_FACTOR) - 1e-9))
            for _ in range(n):
                stage = (measurement_stretches(pts, kind, f ** (1 / n)) if isinstance(kind, str)
                         else [stretch_between(pts[kind[0]], pts[kind[1]], f ** (1 / n))])
                pts = warp_points(pts, stage)
                stages.append(stage)
        return stages, pts

    def lengths(pts):
        return np.array([(pts[51] - pts[33]) @ up, np.hypot(*(pts[39] - pts[36])),
                         np.hypot(*(pts[45] - pts[42]))])

    target = np.array([factors[2], factors[0], factors[1]], np.float64)
    fs = np.array([factors[3], *target], np.float64)
    bound = np.maximum(MAX_STAGE_FACTOR, np.maximum(target, 1 / target))  # of the corrections
    stages, pts = build(fs)
    for _ in range(AMPLITUDE_ITERATIONS):
        got = lengths(pts) / lengths(base)
        if np.allclose(got, target, rtol=1e-5):
            break
        fs[1:] = np.clip(fs[1:] * target / got, 1 / bound, bound)
        stages, pts = build(fs)
    return stages


def stretch_face(image: np.ndarray, landmarks: np.ndarray, factors: Sequence[float],
                 tolerance: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``landmarks`` (68, 2) warped alike by :func:`proportion_stages` (the
    inverse map to ``tolerance`` pixel, one resampling); both unchanged when the face cannot be
    stretched (a zero-length segment, or non-finite input).
    """
    try:
        stages = proportion_stages(landmarks, factors)
    except ValueError:
        return image, landmarks
    points = warp_points_staged(landmarks, stages)
    if not np.all(np.isfinite(points)):
        return image, landmarks
    dtype = np.asarray(landmarks).dtype
    return _resample(image, stages, 4.0, tolerance), points.astype(dtype)
