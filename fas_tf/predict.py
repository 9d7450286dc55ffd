"""Landmarks on whole images: MTCNN face detection, framing-rule crop, landmark model.

``python -m fas_tf.predict --model=(student.keras|model.tflite) IMAGE_OR_FOLDER...
[--output=DIR] [--min_face_score=0.7] [--refine=1] [--upright] [--flip]``

Per image: EXIF orientation applied, every face found by MTCNN (on a copy at most
``DETECT_MAX_SIDE`` pixels wide and high) is cut by the training framing rule (see
:mod:`fas_tf.framing`) from the full image, landmarks are mapped back to the (upright) image, and
``DIR/<stem>.landmarks.json`` (faces, boxes, landmarks, confidences) plus an annotated
``DIR/<stem>.landmarks.png`` are written: never over an input file or a file that is not an
earlier output of this tool (:func:`fas_tf.cli.check_outputs`), even with ``--output`` set to
the input folder. ``--upright`` alone means one upright re-crop pass, as in ``evaluate``.
An unreadable image or an image without a face prints one line and the run goes on; exit
status 0 = every image had a face, 1 = some image failed, 2 = bad usage / model.

Python API: ``predict(image, model) -> [{"box", "landmarks", "confidence", "detector_score"}]``.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fas_tf import cli, inference
from fas_tf.data import DataError, list_images, load_image
from fas_tf.framing import detector_square
from fas_tf.inference import load_landmarker

# MTCNN stage thresholds: lower than the package defaults (0.6 / 0.7 / 0.8), which miss many
# infant faces; faces are then kept by their ONet score (--min_face_score). On the training
# images, a matching face is found in 85% of them at score >= 0.7 (88% at 0.5, 75% at 0.9).
DETECTOR_THRESHOLDS: dict[str, float] = {
    "threshold_pnet": 0.5, "threshold_rnet": 0.5, "threshold_onet": 0.5,
}
MIN_FACE_SCORE = 0.7
# MTCNN runs on a copy whose longer side is at most this (its image pyramid on an 8000x8000
# photo took 85 s and 9.4 GB); the boxes are scaled back, the landmark crops come from the
# full image.
DETECT_MAX_SIDE = 1600


@functools.lru_cache(maxsize=1)
def get_detector():
    """The MTCNN detector (weights ship with the ``mtcnn`` package; no network)."""
    from mtcnn import MTCNN

    return MTCNN()


def detect_faces(image: np.ndarray, min_score: float = MIN_FACE_SCORE) -> list[dict[str, Any]]:
    """MTCNN faces of an RGB uint8 image: ``[{"box": (bx, by, bw, bh), "score": s}]``.

    The detector sees the image shrunk to at most :data:`DETECT_MAX_SIDE` pixels a side; the
    boxes are in ``image``'s pixels.
    """
    import cv2

    h, w = image.shape[:2]
    sx = sy = 1.0
    if max(h, w) > DETECT_MAX_SIDE:
        scale = DETECT_MAX_SIDE / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        sx, sy = size[0] / w, size[1] / h
    found = get_detector().detect_faces(image, box_format="xywh", **DETECTOR_THRESHOLDS)
    faces = [
        {"box": tuple(float(v) / s for v, s in zip(f["box"], (sx, sy, sx, sy), strict=True)),
         "score": float(f["confidence"])}
        for f in found
        if float(f["confidence"]) >= min_score and f["box"][2] > 1 and f["box"][3] > 1
    ]
    return sorted(faces, key=lambda f: -f["score"])


def predict(
    image: np.ndarray | str | os.PathLike,
    model: inference.Landmarker | str | os.PathLike,
    min_score: float = MIN_FACE_SCORE,
    refine: int = 1,
    upright: bool = False,
) -> list[dict[str, Any]]:
    """Faces and 68 landmarks of a whole image.

    Args:
        image: (H, W, 3) uint8 RGB (already upright) or an image path (EXIF honoured).
        model: a ``.keras`` / ``.tflite`` path, a :class:`fas_tf.inference.Landmarker`, or any
            object with ``input_size`` and ``predict(crops) -> (landmarks, confidence)``.
        min_score: minimum MTCNN score of a face.
        refine: extra passes re-cropping with the framing rule around the predicted landmarks
            (the exact training framing; 0 = detector crop only).
        upright: the re-crop passes turn the square so the predicted eyes are level
            (:func:`fas_tf.inference.recrop`); with ``refine=0`` one pass (as ``evaluate``).

    Returns:
        one dict per face, best detector score first: ``box`` [x0, y0, x1, y1] (detector box,
        image pixels), ``landmarks`` (N, 2) and ``confidence`` (N,) lists, ``detector_score``.
    """
    if not isinstance(image, np.ndarray):
        image = load_image(image)
    if isinstance(model, (str, os.PathLike)):
        model = load_landmarker(model)
    faces = []
    for face in detect_faces(image, min_score):
        pts, conf = inference.landmarks_in_squares(
            [image], model, [(*detector_square(face["box"]), 0.0)]
        )
        passes = refine_passes(refine, upright)
        if passes:
            pts, conf = inference.recrop([image], model, pts, passes, upright)
        pts, conf = pts[0], conf[0]
        bx, by, bw, bh = face["box"]
        faces.append({
            "box": [bx, by, bx + bw, by + bh],
            "landmarks": np.round(pts, 3).tolist(),
            "confidence": np.round(conf, 4).tolist(),
            "detector_score": face["score"],
        })
    return faces


def refine_passes(refine: int, upright: bool) -> int:
    """Re-crop passes of ``--refine``/``--upright``: ``--upright`` alone means one pass."""
    return max(refine, 1 if upright else 0)


def annotate(image: np.ndarray, faces: list[dict[str, Any]]) -> np.ndarray:
    """A copy of the RGB image with boxes and landmarks (green = confident, red = not)."""
    import cv2

    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 500))
    for face in faces:
        x0, y0, x1, y1 = (round(v) for v in face["box"])
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 200, 0), thick)
        radius = max(1, round(max(x1 - x0, y1 - y0) / 80))
        for (x, y), c in zip(face["landmarks"], face["confidence"], strict=True):
            colour = (int(255 * (1 - c)), int(255 * c), 0)
            cv2.circle(out, (round(x), round(y)), radius, colour, -1, cv2.LINE_AA)
    return out


# Outputs are DIR/<stem>.landmarks.json and DIR/<stem>.landmarks.png: never the name of an input
# image, even with --output set to the input folder (run() also refuses any collision).
OUTPUT_SUFFIX = ".landmarks"


def input_images(inputs: list[str]) -> list[Path]:
    """:func:`fas_tf.data.list_images`, leaving out earlier ``*.landmarks.png`` outputs found in
    folders (a file named directly is always kept, so a collision with it is refused)."""
    paths: list[Path] = []
    for item in inputs:
        found = list_images([item])
        if Path(item).is_dir():
            found = [p for p in found if not p.stem.endswith(OUTPUT_SUFFIX)]
        paths += found
    return paths


def output_names(paths: list[Path]) -> list[str]:
    """Unique output stems ``<stem>.landmarks`` (``<stem>_1.landmarks``, ... on repeats)."""
    used: set[str] = set()
    names = []
    for path in paths:
        stem, k = path.stem, 1
        while stem in used:
            stem, k = f"{path.stem}_{k}", k + 1
        used.add(stem)
        names.append(stem + OUTPUT_SUFFIX)
    return names


JSON_FORMAT = "fas_tf.predict.landmarks"
PNG_SOFTWARE = "fas_tf.predict"
JSON_OUTPUT = cli.json_output(JSON_FORMAT, legacy_keys=("image", "faces", "model"))
PNG_OUTPUT = cli.png_output(PNG_SOFTWARE)


def run(
    inputs: list[str],
    model: str | os.PathLike,
    output: str | os.PathLike,
    min_score: float = MIN_FACE_SCORE,
    refine: int = 1,
    log=print,
    flip: bool = False,
    upright: bool = False,
) -> int:
    """Predict every image, write JSON + PNG per image; returns the number of failed images.

    ``flip``: test-time flip (:class:`fas_tf.inference.FlipAveraged`); ``upright``: the
    re-crop passes level the predicted eyes (:func:`fas_tf.inference.recrop`).
    """
    import cv2

    paths = input_images(inputs)
    if not paths:
        raise cli.UsageError("no images given (arguments: image files or folders)")
    out = Path(output)
    names = output_names(paths)
    if out.exists() and not out.is_dir():
        raise cli.UsageError(f"{out}: output path exists and is not a directory")
    outputs = {}
    for name in names:
        outputs.update({out / f"{name}.json": JSON_OUTPUT, out / f"{name}.png": PNG_OUTPUT})
    cli.check_outputs(outputs, inputs=[*paths, model])
    landmarker = load_landmarker(model, flip=flip)
    cli.check_writable_dir(out)
    failed = 0
    for path, stem in zip(paths, names, strict=True):
        try:
            image = load_image(path)
        except DataError as err:
            log(f"{err}")
            failed += 1
            continue
        faces = predict(image, landmarker, min_score, refine, upright)
        record = {"format": JSON_FORMAT, "image": str(path), "width": int(image.shape[1]),
                  "height": int(image.shape[0]), "model": str(model), "flip": bool(flip),
                  "refine": refine_passes(refine, upright), "upright": bool(upright),
                  "faces": faces}
        cli.write_json(out / f"{stem}.json", record)
        ok, png = cv2.imencode(".png", cv2.cvtColor(annotate(image, faces), cv2.COLOR_RGB2BGR))
        cli.write_png(out / f"{stem}.png", png.tobytes(), PNG_SOFTWARE)
        if faces:
            log(f"{path}: {len(faces)} face(s)")
        else:
            log(f"{path}: no face found (MTCNN score >= {min_score})")
            failed += 1
    return failed


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("model", None, "student.keras or an exported model.tflite")
    flags.DEFINE_string(
        "output", "predictions", "folder for <stem>.landmarks.json and <stem>.landmarks.png"
    )
    flags.DEFINE_float("min_face_score", MIN_FACE_SCORE, "minimum MTCNN face score")
    flags.DEFINE_integer("refine", 1, "re-crop passes around the predicted landmarks",
                         lower_bound=0)
    flags.DEFINE_bool("flip", False, "test-time flip: average with the mirrored crop's prediction")
    flags.DEFINE_bool("upright", False, "re-crop passes level the predicted eyes (>= 1 pass)")


def main(argv: list[str]) -> None:
    from absl import flags

    f = flags.FLAGS
    if not f.model:
        raise cli.UsageError("--model is required (student.keras or model.tflite)")
    failed = run(argv[1:], f.model, f.output, f.min_face_score, f.refine, flip=f.flip,
                 upright=f.upright)
    if failed:
        print(f"{failed} image(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
