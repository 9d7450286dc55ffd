"""Local stretches of a face photo with a known answer: a palpebral fissure, the philtrum or the
upper lip made ``f`` times as long, the rest of the face left alone.

A :class:`Stretch` about a centre ``c`` along a unit axis ``u`` moves a point ``p`` by

    d(p) = a * ((p - c) . u) * exp(-|p - c|^2 / (2 sigma^2)) * u

(a smooth stretch with a Gaussian falloff). :func:`stretch_between` chooses ``a`` so that the two
end points of a segment, symmetric about ``c``, end up ``f`` times as far apart along ``u``;
``sigma`` is :data:`SIGMA_FRACTION` times the segment's length. Several stretches add their
displacements (:func:`warp_points`); the image is resampled through the inverse map, found by
fixed-point iteration (:func:`warp_image`), so a pixel and a point move alike. The true new
landmarks are the warp applied to the labelled ones.

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
INVERSE_ITERATIONS = 30
INVERSE_TOLERANCE = 1e-4  # pixels
AMPLITUDE_ITERATIONS = 8
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
    if not stretches:
        return np.zeros_like(points)
    centre, axis = (np.array([getattr(s, k) for s in stretches]) for k in ("centre", "axis"))
    amplitude = np.array([s.amplitude for s in stretches])
    falloff = np.array([-0.5 / s.sigma**2 for s in stretches])
    rx, ry = points[..., 0, None] - centre[:, 0], points[..., 1, None] - centre[:, 1]  # (..., k)
    m = amplitude * (rx * axis[:, 0] + ry * axis[:, 1]) * np.exp((rx * rx + ry * ry) * falloff)
    return np.stack([m @ axis[:, 0], m @ axis[:, 1]], axis=-1)


def warp_points(points, stretches: list[Stretch]) -> np.ndarray:
    """Points (..., 2) moved by the sum of the stretches' displacements."""
    p = np.asarray(points, np.float64)
    return p + displacement(p, stretches)


def warp_image(image: np.ndarray, stretches: list[Stretch], reach: float = 4.0,
               tolerance: float = INVERSE_TOLERANCE) -> np.ndarray:
    """The image resampled so that its content moves as :func:`warp_points` moves points.

    Only the box within ``reach`` sigmas of each centre is resampled (bilinear; beyond, the
    displacement is below 0.002 sigma for any factor in 0.5-1.5); the inverse map comes from
    fixed-point iteration p = q - d(p), to ``tolerance`` pixel.
    """
    out = image.copy()
    if not stretches:
        return out
    h, w = image.shape[:2]
    lo = np.min([np.subtract(s.centre, reach * s.sigma) for s in stretches], axis=0)
    hi = np.max([np.add(s.centre, reach * s.sigma) for s in stretches], axis=0)
    x0, y0 = max(int(math.floor(lo[0])), 0), max(int(math.floor(lo[1])), 0)
    x1, y1 = min(int(math.ceil(hi[0])) + 1, w), min(int(math.ceil(hi[1])) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return out
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    q = np.stack([gx, gy], axis=-1)
    p = q.copy()
    for _ in range(INVERSE_ITERATIONS):
        new = q - displacement(p, stretches)
        done = float(np.max(np.abs(new - p))) < tolerance
        p = new
        if done:
            break
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


def proportion_stretches(landmarks, factors: Sequence[float]) -> list[Stretch]:
    """The stretches making each of :data:`PROPORTIONS` its factor times as long (68-point
    layout): each eye along its own axis, philtrum and upper lip along the face's vertical axis.
    The philtrum and upper-lip stretches share the point 51 and add up there, so only the eyes
    reach their factors exactly; image and landmarks still move alike (:func:`stretch_face`).
    """
    eyes, philtrum, lip = factors[:2], factors[2], factors[3]
    return (measurement_stretches(landmarks, "pfl", eyes)
            + measurement_stretches(landmarks, "philtrum", philtrum)
            + measurement_stretches(landmarks, "upper_lip", lip))  # fmt: skip


def stretch_face(image: np.ndarray, landmarks: np.ndarray, factors: Sequence[float],
                 tolerance: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``landmarks`` (68, 2) warped alike by :func:`proportion_stretches` (the
    inverse map to ``tolerance`` pixel); both unchanged when the face cannot be stretched (a
    zero-length segment, or non-finite input).
    """
    try:
        stretches = proportion_stretches(landmarks, factors)
    except ValueError:
        return image, landmarks
    points = warp_points(landmarks, stretches)
    if not np.all(np.isfinite(points)):
        return image, landmarks
    dtype = np.asarray(landmarks).dtype
    return warp_image(image, stretches, tolerance=tolerance), points.astype(dtype)
