"""What the clinical benchmarks share: labelled faces of image sets, a model, landmarks on a photo.

Used by benchmarks/known_answer.py, clinical_agreement.py and repeatability.py (a measurement
aid, not a diagnosis). Landmarks come either from a square around the face (the framing rule of
:func:`fas_tf.framing.crop_box`, optionally followed by re-crop passes, as ``fas_tf.predict``
does after the detector) or end to end from the photo (the default detector,
:func:`fas_tf.predict.predict`).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fas_tf.data import list_folder, read_attributes, read_exclusions, read_pts, stems_in_sets
from fas_tf.errors import DataError, UsageError

# the ratios the clinical benchmarks report (those of issue 42's tables)
RATIOS = ("pfl_mean_to_icd", "pfl_mean_to_ocd", "icd_to_ocd", "philtrum_to_face_height",
          "philtrum_to_mouth_width", "upper_lip_to_mouth_width")  # fmt: skip


@dataclass(frozen=True)
class Face:
    """A labelled photo: its stem, image path and ground-truth landmarks (68, 2)."""

    stem: str
    image: Path
    gt: np.ndarray


def labelled_faces(data: str | Path, sets: str = "", limit: int | None = None,
                   exclude: str | Path | None = None) -> list[Face]:
    """Faces with an image and a ``.pts`` in ``data``, of the comma list ``sets`` of image sets
    (``attributes.csv`` in ``data``; empty: all), sorted by stem, without the stems listed in
    the file ``exclude`` (:func:`fas_tf.data.read_exclusions`); UsageError when none."""
    folder = Path(data)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such data folder")
    keep = None
    if sets:
        attributes = folder / "attributes.csv"
        if not attributes.is_file():
            raise UsageError(f"{attributes}: needed for --sets, not found")
        keep = stems_in_sets(read_attributes(attributes), sets.split(","))
    drop = read_exclusions(exclude) if exclude else frozenset()
    faces = []
    for image, pts in list_folder(folder):
        stem = Path(image).stem
        if Path(pts).is_file() and (keep is None or stem in keep) and stem not in drop:
            faces.append(Face(stem, Path(image), read_pts(pts).astype(np.float64)))
    if not faces:
        raise UsageError(f"{folder}: no labelled faces" + (f" in sets {sets}" if sets else ""))
    return faces[:limit] if limit else faces


def add_model_flags(ap: argparse.ArgumentParser, recrop: bool = True) -> None:
    """The flags every clinical benchmark takes: data, sets, model and inference options
    (``recrop``: also ``--refine`` and ``--upright``)."""
    ap.add_argument("--data", required=True, help="folder of images + .pts (+ attributes.csv)")
    ap.add_argument("--sets", default="google2", help="comma list of image sets ('' = all)")
    ap.add_argument("--model", help="student.keras or .tflite (fas_tf.inference)")
    ap.add_argument("--flip", action="store_true", help="test-time flip")
    from fas_tf.training.config import DECODER_CHOICES

    ap.add_argument("--decoder", choices=DECODER_CHOICES,
                    help="decode a .keras model's heatmaps this way instead of its own")
    if recrop:
        ap.add_argument("--refine", type=int, default=1, help="re-crop passes (fas_tf.predict)")
        ap.add_argument("--upright", action="store_true", help="re-crop passes level the eyes")
    ap.add_argument("--limit", type=int, help="first N faces only (quick runs)")
    ap.add_argument("--exclude", help="text file of image stems to leave out, one per line "
                    "(e.g. docs/label_errors.txt)")
    ap.add_argument("--output", help="write the results as JSON here")


def load_model(path: str | None, flip: bool = False, decoder: str | None = None):
    """The :class:`fas_tf.inference.Landmarker` of ``path`` (``decoder``: see
    :func:`fas_tf.inference.load_landmarker`); UsageError when missing."""
    if not path:
        raise UsageError("--model=PATH is required")
    from fas_tf.inference import load_landmarker

    return load_landmarker(path, flip=flip, decoder=decoder)


def in_square(images: list[np.ndarray], model, squares: list, refine: int = 0,
              upright: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``model`` on a square (cx, cy, side, angle) of each image, then ``refine`` re-crop
    passes; landmarks (M, N, 2) in image pixels and confidences (M, N)."""
    from fas_tf.inference import landmarks_in_squares, recrop

    pts, conf = landmarks_in_squares(images, model, squares)
    if refine > 0:
        pts, conf = recrop(images, model, pts, refine, upright)
    return pts, conf


def end_to_end(image: np.ndarray, model, near: np.ndarray, refine: int = 1,
               upright: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """The default detector + ``model`` on a whole photo: the face whose landmarks' centroid is
    nearest to ``near`` (68, 2), or None when no face is found."""
    from fas_tf.predict import predict

    faces = predict(image, model, refine=refine, upright=upright)
    if not faces:
        return None
    best = min(faces, key=lambda f: np.linalg.norm(np.mean(f["landmarks"], 0) - near.mean(0)))
    return np.asarray(best["landmarks"], np.float64), np.asarray(best["confidence"], np.float64)


def fmt(x, digits: int = 3) -> str:
    """A table cell: a number with ``digits`` decimals, '-' when missing or not finite."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown_table(header: list[str], rows: list[list], digits: int = 3) -> str:
    """A markdown table of ``rows`` under ``header`` (cells through :func:`fmt`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c, digits) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | None, data: dict) -> None:
    """``data`` as JSON at ``path`` (NaN as null), when a path is given."""
    if path:
        from fas_tf import cli

        cli.write_json(path, _finite(data))


def _finite(x):
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def run_main(main: Callable[[list[str] | None], int]) -> None:
    """Run a benchmark's ``main``: bad input is one line on stderr and exit status 2."""
    try:
        sys.exit(main(None))
    except (UsageError, DataError) as err:
        print(err, file=sys.stderr)
        sys.exit(2)
