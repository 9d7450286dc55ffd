"""Framing: how a face becomes the square crop the landmark model sees.

Every crop rule lives here:

- :func:`crop_box`: the *framing rule* on landmarks: a square of side ``FRAMING_SCALE`` times the
  larger side of the landmark bounding box, centred on that box (training, evaluation, export
  calibration and the re-crop pass of prediction all use it);
- :func:`detector_square`: the same square estimated from a face detector's box through that
  detector's calibrated constants (:data:`fas_tf.detection.calibration.BOX_TO_CROP`);
- :func:`upright_square`: the framing-rule square in the frame where the face's eyes are level
  (the re-crop of ``--upright`` passes);
- :func:`cut_square`: cut a (centre, side[, angle]) square out of an image at the network input
  size.
"""

from __future__ import annotations

import cv2
import numpy as np

# Framing rule: the crop is the square of side FRAMING_SCALE * max(box width, box height) centred
# on the landmark bounding box.
FRAMING_SCALE = 1.4

def crop_box(landmarks: np.ndarray, scale: float = FRAMING_SCALE) -> tuple[float, float, float]:
    """The framing rule: (centre x, centre y, side) of the square crop around a face.

    The square is centred on the landmarks' bounding box and its side is ``scale`` times the
    box's larger side.
    """
    lo = landmarks.min(axis=0)
    hi = landmarks.max(axis=0)
    cx, cy = (lo + hi) / 2.0
    side = float(max(hi - lo)) * scale
    return float(cx), float(cy), max(side, 1.0)


def upright_square(
    landmarks: np.ndarray, eyes: tuple[int, int], scale: float = FRAMING_SCALE
) -> tuple[float, float, float, float]:
    """(centre x, centre y, side, angle) of the framing rule applied with the eyes level.

    ``angle`` (radians) is the direction from landmark ``eyes[0]`` to ``eyes[1]`` (the outer
    eye corners); the square is the framing rule of the landmarks turned by ``-angle`` about
    their box centre, turned back. :func:`cut_square` with this angle gives an upright face.
    """
    pts = np.asarray(landmarks, np.float64)
    dx, dy = pts[eyes[1]] - pts[eyes[0]]
    angle = float(np.arctan2(dy, dx))
    cx, cy, _ = crop_box(pts, scale)
    rot = _rotation(-angle)
    ux, uy, side = crop_box((pts - (cx, cy)) @ rot.T, scale)
    centre = rot.T @ (ux, uy) + (cx, cy)
    return float(centre[0]), float(centre[1]), side, angle


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def detector_square(box: tuple[float, float, float, float], detector: str = "mtcnn"
                    ) -> tuple[float, float, float]:
    """(cx, cy, side) of the framing-rule crop for a detector box (bx, by, bw, bh), via the
    detector's :data:`fas_tf.detection.calibration.BOX_TO_CROP` constants."""
    from fas_tf.detection.calibration import BOX_TO_CROP

    bx, by, bw, bh = box
    m = BOX_TO_CROP[detector]
    return (bx + bw * (0.5 + m["dx"]), by + bh * (0.5 + m["dy"]),
            FRAMING_SCALE * m["scale"] * max(bw, bh))


def cut_square(
    image: np.ndarray, cx: float, cy: float, side: float, out_size: int, angle: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the square (centre, side) from ``image`` resized to ``out_size`` (black outside).

    ``angle`` (radians) turns the square: a line at that angle in the image is level in the
    patch. Returns the patch and the 2x3 affine matrix mapping image pixels to patch pixels
    (:func:`to_image` maps patch points back).
    """
    s = out_size / side
    # patch = s * R(-angle) (image - c) + (out_size - 1) / 2, pixel centres at integers
    linear = s * _rotation(-angle)
    shift = (out_size - 1) / 2.0 - linear @ (cx, cy)
    matrix = np.hstack([linear, shift[:, None]]).astype(np.float64)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    patch = cv2.warpAffine(
        image, matrix, (out_size, out_size), flags=interp, borderMode=cv2.BORDER_CONSTANT
    )
    return patch, matrix


def to_image(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Patch points (..., 2) back to image pixels through the inverse of ``matrix`` (2x3)."""
    return (np.asarray(points, np.float64) - matrix[:, 2]) @ np.linalg.inv(matrix[:, :2]).T
