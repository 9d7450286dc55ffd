"""Face detection on whole photos: MTCNN and BlazeFace behind one interface, turned views.

- :class:`Detector`: ``detect(image) -> [RawFace]`` (box, score, eye centres) for one view;
  :class:`MTCNNDetector` (weights in the ``mtcnn`` package) and :class:`BlazeFaceDetector`
  (MediaPipe's model, fetched once: :mod:`fas_tf.detection.blazeface`); :func:`get_detector`.
- :func:`turned_view`: the whole image turned by an angle (nothing cut off).
- :class:`Face`: a detection in image pixels with its framing-rule square, estimated through the
  detector's calibrated box->crop constants (:mod:`fas_tf.detection.calibration`) in the view
  it was found in, so a face found in a view turned by ``a`` gets a square turned by ``a``.
- :func:`find_faces`: a detector on the photo and, when it finds no face scoring at least
  ``accept_score``, on the photo turned by each of ``angles``; overlapping faces of different
  views are merged (the best score stays).
- :func:`face_overlap` / :data:`FOUND_IOU`: the one rule for "this detection is that labelled
  face" (benchmarks and calibration use it).
"""

from __future__ import annotations

import abc
import functools
import math
from dataclasses import dataclass, replace

import numpy as np

from fas_tf.framing import crop_box, cut_square, detector_square, to_image

# MTCNN stage thresholds: lower than the package defaults (0.6 / 0.7 / 0.8), which miss many
# infant faces; faces are then kept by their ONet score (min_score).
MTCNN_THRESHOLDS: dict[str, float] = {
    "threshold_pnet": 0.5, "threshold_rnet": 0.5, "threshold_onet": 0.5,
}
DETECTORS = ("mtcnn", "blazeface")
MIN_SCORE = {"mtcnn": 0.7, "blazeface": 0.5}  # a face below this score is not reported
# A detection is the labelled face when its square and the framing-rule square of the face's
# landmarks, both seen in the detection's (turned) frame, overlap by at least this IoU.
FOUND_IOU = 0.4


@dataclass(frozen=True)
class RawFace:
    """One detection in the pixels of the view the detector ran on.

    ``box`` (bx, by, bw, bh); ``eyes`` (2, 2): the eye on the image's left first, or None.
    """

    box: tuple[float, float, float, float]
    score: float
    eyes: np.ndarray | None = None


class Detector(abc.ABC):
    """A face detector on one RGB uint8 view; ``name`` keys its box->crop constants
    (:data:`fas_tf.detection.calibration.BOX_TO_CROP`)."""

    name: str
    min_score: float

    @abc.abstractmethod
    def detect(self, image: np.ndarray) -> list[RawFace]:
        """Every face scoring at least ``min_score``, best first."""


class MTCNNDetector(Detector):
    """MTCNN (``mtcnn`` package, low stage thresholds :data:`MTCNN_THRESHOLDS`)."""

    name = "mtcnn"

    def __init__(self, min_score: float = MIN_SCORE["mtcnn"]):
        from mtcnn import MTCNN

        self.min_score = min_score
        self.mtcnn = MTCNN()

    def detect(self, image: np.ndarray) -> list[RawFace]:
        found = self.mtcnn.detect_faces(image, box_format="xywh", **MTCNN_THRESHOLDS)
        faces = []
        for f in found:
            box = tuple(float(v) for v in f["box"])
            if float(f["confidence"]) < self.min_score or box[2] <= 1 or box[3] <= 1:
                continue
            eyes = np.float64([f["keypoints"]["left_eye"], f["keypoints"]["right_eye"]])
            eyes = eyes[np.argsort(eyes[:, 0])] if eyes[0, 0] > eyes[1, 0] else eyes
            faces.append(RawFace(box, float(f["confidence"]), eyes))
        return sorted(faces, key=lambda f: -f.score)


class BlazeFaceDetector(Detector):
    """MediaPipe BlazeFace short-range (:mod:`fas_tf.detection.blazeface`)."""

    name = "blazeface"

    def __init__(self, min_score: float = MIN_SCORE["blazeface"], path=None):
        from fas_tf.detection.blazeface import BlazeFace

        self.min_score = min_score
        self.model = BlazeFace("short", path, min_score=min_score)

    def detect(self, image: np.ndarray) -> list[RawFace]:
        faces = [RawFace(tuple(float(v) for v in box), score, np.asarray(pts[:2]))
                 for box, score, pts in self.model.detect(image) if box[2] > 1 and box[3] > 1]
        return sorted(faces, key=lambda f: -f.score)


@functools.lru_cache(maxsize=4)
def get_detector(name: str = "mtcnn", min_score: float | None = None) -> Detector:
    """The detector called ``name`` (loaded once per process)."""
    if name not in DETECTORS:
        from fas_tf.errors import UsageError

        raise UsageError(f"unknown face detector {name!r}; choose from {', '.join(DETECTORS)}")
    score = MIN_SCORE[name] if min_score is None else min_score
    return MTCNNDetector(score) if name == "mtcnn" else BlazeFaceDetector(score)


def turned_view(image: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The whole image turned so that a line at ``angle`` (radians) becomes level, on a canvas
    of the image's diagonal (black corners), and the 2x3 image->view matrix."""
    h, w = image.shape[:2]
    if angle == 0.0:
        return image, np.float64([[1, 0, 0], [0, 1, 0]])
    diag = int(math.ceil(math.hypot(h, w)))
    return cut_square(image, (w - 1) / 2.0, (h - 1) / 2.0, diag, diag, angle)


@dataclass(frozen=True)
class Face:
    """A detection in image pixels.

    Attributes:
        detector: its detector's name.
        score: its detector score.
        angle: radians; the view it was found in was the photo turned by this angle.
        square: (cx, cy, side, angle) of the estimated framing-rule crop (for
            :func:`fas_tf.framing.cut_square`).
        corners: (4, 2) the detector box's corners in image pixels.
        eyes: (2, 2) the detector's eye centres in image pixels (image-left eye first), or None.
    """

    detector: str
    score: float
    angle: float
    square: tuple[float, float, float, float]
    corners: np.ndarray
    eyes: np.ndarray | None

    @property
    def box(self) -> list[float]:
        """[x0, y0, x1, y1]: the axis-aligned hull of the box corners, image pixels."""
        lo, hi = self.corners.min(0), self.corners.max(0)
        return [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])]

    def eye_square(self) -> tuple[float, float, float, float]:
        """The square turned so that the detector's eye points are level (same centre, side)."""
        if self.eyes is None:
            return self.square
        dx, dy = self.eyes[1] - self.eyes[0]
        return (*self.square[:3], float(math.atan2(dy, dx)))


def detect_view(image: np.ndarray, detector: Detector, angle: float = 0.0) -> list[Face]:
    """``detector`` on the photo turned by ``angle``; faces mapped back to image pixels."""
    view, matrix = turned_view(image, angle)
    faces = []
    for raw in detector.detect(view):
        bx, by, bw, bh = raw.box
        cx, cy, side = detector_square(raw.box, detector.name)
        centre = to_image(np.float64([cx, cy]), matrix)
        corners = to_image(np.float64([[bx, by], [bx + bw, by], [bx + bw, by + bh],
                                       [bx, by + bh]]), matrix)
        eyes = None if raw.eyes is None else to_image(raw.eyes, matrix)
        faces.append(Face(detector.name, raw.score, angle,
                          (float(centre[0]), float(centre[1]), side, angle), corners, eyes))
    return faces


def same_face(a: Face, b: Face) -> bool:
    """Squares whose centres are closer than half the smaller side (any angles)."""
    dist = math.hypot(a.square[0] - b.square[0], a.square[1] - b.square[1])
    return dist < 0.5 * min(a.square[2], b.square[2])


def merge_faces(faces: list[Face]) -> list[Face]:
    """One face per group of :func:`same_face` detections: the best scoring one, best first."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: -f.score):
        if not any(same_face(face, k) for k in kept):
            kept.append(face)
    return kept


# Turns tried when the upright photo gives no face scoring ACCEPT_SCORE (degrees: tilted infant
# heads lie at any roll; a clockwise and a counter-clockwise turn of each size).
TURN_ANGLES_DEG = (30.0, -30.0, 60.0, -60.0, 90.0, -90.0)
ACCEPT_SCORE = {"mtcnn": 0.95, "blazeface": 0.75}


# Detection runs on a copy whose longer side is at most this (MTCNN's image pyramid on an
# 8000x8000 photo took 85 s and 9.4 GB); faces are mapped back to the full photo, from which the
# landmark crops are cut.
DETECT_MAX_SIDE = 1600


def scaled_face(face: Face, factor: float) -> Face:
    """``face`` with every position and size multiplied by ``factor``."""
    cx, cy, side, angle = face.square
    eyes = None if face.eyes is None else face.eyes * factor
    return replace(face, square=(cx * factor, cy * factor, side * factor, angle),
                               corners=face.corners * factor, eyes=eyes)


def find_faces(
    image: np.ndarray, detector: Detector | str = "mtcnn",
    angles_deg: tuple[float, ...] = TURN_ANGLES_DEG, accept_score: float | None = None,
) -> list[Face]:
    """Faces of an RGB uint8 photo, best score first (see the module docstring).

    ``angles_deg=()``: the upright photo only. ``accept_score`` None: :data:`ACCEPT_SCORE`.
    A photo larger than :data:`DETECT_MAX_SIDE` is searched shrunk; faces are in its pixels.
    """
    if isinstance(detector, str):
        detector = get_detector(detector)
    h, w = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    if scale < 1.0:
        import cv2

        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    accept = ACCEPT_SCORE.get(detector.name, 1.0) if accept_score is None else accept_score
    faces = detect_view(image, detector)
    if not faces or faces[0].score < accept:
        for a in angles_deg:
            faces += detect_view(image, detector, math.radians(a))
    return [scaled_face(f, 1.0 / scale) if scale < 1.0 else f for f in merge_faces(faces)]


def face_overlap(square: tuple[float, float, float, float], landmarks: np.ndarray) -> float:
    """IoU of a crop square (cx, cy, side, angle) and the framing-rule square of ``landmarks``
    (N, 2), both in the square's turned frame: >= :data:`FOUND_IOU` means found."""
    cx, cy, side, angle = square
    c, s = math.cos(angle), math.sin(angle)
    pts = (np.asarray(landmarks, np.float64) - (cx, cy)) @ np.float64([[c, -s], [s, c]])
    gx, gy, gside = crop_box(pts)
    ix = max(0.0, min(side / 2, gx + gside / 2) - max(-side / 2, gx - gside / 2))
    iy = max(0.0, min(side / 2, gy + gside / 2) - max(-side / 2, gy - gside / 2))
    inter = ix * iy
    return inter / (side * side + gside * gside - inter)
