"""Landmarks on whole images: face detection, framing-rule crop, landmark model.

``python -m fas_tf.predict --model=(student.keras|model.tflite) IMAGE_OR_FOLDER...
[--output=DIR] [--detector=blazeface] [--turns] [--min_face_score=S] [--refine=1] [--upright]
[--flip]``

Per image: EXIF orientation applied, every face found by the detector (:mod:`fas_tf.detection`:
BlazeFace by default, searching turned views for tilted heads) is cut by the training framing
rule through the detector's calibrated box->crop mapping (see :mod:`fas_tf.framing`), landmarks
are mapped back to the (upright) image, and ``DIR/<stem>.landmarks.json`` (faces, boxes,
landmarks, confidences, detector, passes) plus an annotated ``DIR/<stem>.landmarks.png`` are
written: never over an input file or a file that is not an earlier output of this tool
(:func:`fas_tf.cli.check_outputs`), even with ``--output`` set to the input folder.
``--upright`` alone means one upright re-crop pass, as in ``evaluate``.
An unreadable image or an image without a face prints one line and the
run goes on; exit status 0 = every image had a face, 1 = some image failed, 2 = bad usage / model.

Python API: ``predict(image, model) -> [{"box", "landmarks", "confidence", "detector_score",
...}]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fas_tf import cli, detection, inference
from fas_tf.data import DataError, list_images, load_image
from fas_tf.inference import load_landmarker

DETECTOR = "blazeface"  # the default face detector (fas_tf.detection.DETECTORS)
FIRST_CROPS = ("box", "eyes", "best")
FIRST_CROP = "best"  # the default first crop (first_squares; docs/end_to_end.md)


def detect_faces(image: np.ndarray, min_score: float | None = None,
                 detector: str | detection.Detector = DETECTOR,
                 turns: bool = True) -> list[detection.Face]:
    """Faces of an RGB uint8 image, best score first (:func:`fas_tf.detection.find_faces`).

    ``min_score`` None: the detector's :data:`fas_tf.detection.MIN_SCORE`; ``turns=False``:
    the upright photo only (no search over turned views).
    """
    if isinstance(detector, str):
        detector = detection.get_detector(detector, min_score)
    return detection.find_faces(image, detector, detection.TURN_ANGLES_DEG if turns else ())


def pipeline_record(detector: str = DETECTOR, turns: bool = True, first_crop: str = FIRST_CROP,
                    refine: int = 1, upright: bool = False, flip: bool = False) -> dict[str, Any]:
    """What a whole-image run used (written into every JSON of ``predict`` and ``measure``)."""
    return {"detector": detector, "turns": bool(turns), "first_crop": first_crop,
            "refine": int(refine), "upright": bool(upright), "flip": bool(flip)}


def first_squares(face: detection.Face, first_crop: str) -> list[tuple[str, tuple[float, ...]]]:
    """Candidate first crops of a face, (name, square): ``box`` its detector square, ``eyes``
    that square turned so the detector's eye points are level, ``best`` both (the landmark
    model's confidence chooses, see :func:`predict`)."""
    if first_crop not in FIRST_CROPS:
        raise cli.UsageError(f"unknown first crop {first_crop!r}; choose from {FIRST_CROPS}")
    return [(name, square) for name, square in (("box", face.square), ("eyes", face.eye_square()))
            if first_crop in (name, "best")]


def predict(
    image: np.ndarray | str | os.PathLike,
    model: inference.Landmarker | str | os.PathLike,
    min_score: float | None = None,
    refine: int = 1,
    upright: bool = False,
    detector: str | detection.Detector = DETECTOR,
    turns: bool = True,
    first_crop: str = FIRST_CROP,
) -> list[dict[str, Any]]:
    """Faces and 68 landmarks of a whole image.

    Args:
        image: (H, W, 3) uint8 RGB (already upright) or an image path (EXIF honoured).
        model: a ``.keras`` / ``.tflite`` path, a :class:`fas_tf.inference.Landmarker`, or any
            object with ``input_size`` and ``predict(crops) -> (landmarks, confidence)``.
        min_score: minimum detector score of a face (None: the detector's default).
        refine: extra passes re-cropping with the framing rule around the predicted landmarks
            (the exact training framing; 0 = detector crop only).
        upright: the re-crop passes turn the square so the predicted eyes are level
            (:func:`fas_tf.inference.recrop`); with ``refine=0`` one pass (as ``evaluate``).
        detector: ``"blazeface"`` or ``"mtcnn"`` (:mod:`fas_tf.detection`).
        turns: also search the photo turned by :data:`fas_tf.detection.TURN_ANGLES_DEG` when
            the upright photo gives no confident face.
        first_crop: :func:`first_squares`; with several candidates, the one whose final
            landmarks have the highest mean confidence is kept.

    Returns:
        one dict per face, best detector score first: ``box`` [x0, y0, x1, y1] (detector box,
        image pixels; the hull of its corners when found in a turned view), ``landmarks``
        (N, 2) and ``confidence`` (N,) lists, ``detector_score``, ``detector``, ``turn_deg``
        (the view's turn), ``crop`` (cx, cy, side, angle: the detector's framing-rule square)
        and ``first_crop`` (the candidate used: ``box`` that square, ``eyes`` it turned).
    """
    if not isinstance(image, np.ndarray):
        image = load_image(image)
    if isinstance(model, (str, os.PathLike)):
        model = load_landmarker(model)
    faces = []
    for face in detect_faces(image, min_score, detector, turns):
        names, squares = zip(*first_squares(face, first_crop), strict=True)
        pts, conf = inference.landmarks_in_squares([image] * len(squares), model, list(squares))
        passes = refine_passes(refine, upright)
        if passes:
            pts, conf = inference.recrop([image] * len(squares), model, pts, passes, upright)
        best = int(np.argmax(np.mean(conf, axis=1)))
        pts, conf = pts[best], conf[best]
        faces.append({
            "box": [round(v, 2) for v in face.box],
            "landmarks": np.round(pts, 3).tolist(),
            "confidence": np.round(conf, 4).tolist(),
            "detector_score": face.score,
            "detector": face.detector,
            "turn_deg": round(float(np.degrees(face.angle)), 1),
            "crop": [round(float(v), 4) for v in face.square],
            "first_crop": names[best],
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
    min_score: float | None = None,
    refine: int = 1,
    log=print,
    flip: bool = False,
    upright: bool = False,
    detector: str = DETECTOR,
    turns: bool = True,
) -> int:
    """Predict every image, write JSON + PNG per image; returns the number of failed images.

    ``flip``: test-time flip (:class:`fas_tf.inference.FlipAveraged`); ``upright``: the
    re-crop passes level the predicted eyes (:func:`fas_tf.inference.recrop`); ``detector``,
    ``turns``: see :func:`predict`.
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
    detection.get_detector(detector, min_score)  # a missing detector model fails before output
    cli.check_writable_dir(out)
    failed = 0
    for path, stem in zip(paths, names, strict=True):
        try:
            image = load_image(path)
        except DataError as err:
            log(f"{err}")
            failed += 1
            continue
        faces = predict(image, landmarker, min_score, refine, upright, detector, turns)
        record = {"format": JSON_FORMAT, "image": str(path), "width": int(image.shape[1]),
                  "height": int(image.shape[0]), "model": str(model),
                  **pipeline_record(detector, turns, FIRST_CROP, refine_passes(refine, upright),
                                     upright, flip),
                  "faces": faces}
        cli.write_json(out / f"{stem}.json", record)
        ok, png = cv2.imencode(".png", cv2.cvtColor(annotate(image, faces), cv2.COLOR_RGB2BGR))
        cli.write_png(out / f"{stem}.png", png.tobytes(), PNG_SOFTWARE)
        if faces:
            log(f"{path}: {len(faces)} face(s)")
        else:
            log(f"{path}: no face found ({detector})")
            failed += 1
    return failed


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("model", None, "student.keras or an exported model.tflite")
    flags.DEFINE_string(
        "output", "predictions", "folder for <stem>.landmarks.json and <stem>.landmarks.png"
    )
    flags.DEFINE_enum("detector", DETECTOR, list(detection.DETECTORS), "face detector")
    flags.DEFINE_bool("turns", True, "also search the photo turned by +-30/60/90 degrees when "
                      "the upright photo gives no confident face")
    cli.define_float("min_face_score", None, "minimum detector face score, 0..1 (default: the "
                     "detector's own, fas_tf.detection.MIN_SCORE)", lower=0.0, upper=1.0)
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
                 upright=f.upright, detector=f.detector, turns=f.turns)
    if failed:
        print(f"{failed} image(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
