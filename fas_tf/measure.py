"""CLI: FAS screening measurements per face, with pictures, CSV and an HTML report.

MEASUREMENT AID, NOT A DIAGNOSIS.

    python -m fas_tf.measure --landmarks IMAGE_OR_FOLDER... --output=DIR
    python -m fas_tf.measure --model=PATH IMAGE_OR_FOLDER... --output=DIR

``--landmarks`` reads the 300-W ``STEM.pts`` next to each image; ``--model`` runs
``fas_tf.predict`` (imported lazily). Per image: ``STEM.measure.json`` and ``STEM.measure.png``
in DIR; for the whole run: ``measurements.csv`` (a row per face, error rows for failed images)
and ``report.html`` (summary, filter and sort by verdict, click a picture for full size;
``report.html#refused`` opens it filtered: all, ok, partial, refused, error). Every
file is written to a temporary file and renamed. DIR must not be a folder holding input images,
and an existing output file is replaced only when it is an earlier output of this tool
(:func:`fas_tf.cli.check_outputs`; one line, exit status 2, before anything is measured).
Landmarks far outside their image (``--landmarks``) fail that image. File names that are not
valid UTF-8 appear with backslash escapes in the CSV and report (the report's links work). A
failing image prints one line ``PATH: problem``, leaves no ``STEM.measure.*`` file, and the run
goes on; the exit status is 1 if any image failed, 2 for usage errors.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np

from fas_tf import cli
from fas_tf import measurements as M
from fas_tf.data import check_points, load_image, read_pts
from fas_tf.errors import DataError, UsageError
from fas_tf.measurement.report import (
    csv_row,
    draw_report,
    href,
    printable,
    write_bytes,
    write_csv,
    write_html,
)

OUTPUT_SUFFIX = ".measure"  # STEM.measure.json / .png: never the name of a user's image
JSON_FORMAT = "fas_tf.measure"
OUTPUTS = {  # how an earlier output of this tool is recognised (fas_tf.cli.check_outputs)
    ".json": cli.json_output(JSON_FORMAT, legacy_keys=("image", "disclaimer", "faces")),
    ".png": cli.png_output(JSON_FORMAT),
    ".csv": cli.file_output("an earlier measurements.csv", b"image,face,face_verdict,"),
    ".html": cli.file_output("an earlier report.html", b"<title>FAS measurement report</title>"),
}






def collect_images(inputs: Sequence[str]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Image files of the arguments as (path, name relative to its input folder), and problems.

    Folders are listed by :func:`fas_tf.data.list_images`; a file argument is named by its
    file name. Problems are one-line ``ITEM: problem`` messages (missing item, empty folder).
    """
    from fas_tf.data import list_images

    images: list[tuple[Path, str]] = []
    problems: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = [q for q in list_images([item]) if q.is_file()]
            if not found:
                problems.append(f"{item}: folder contains no images")
            images += [(q, q.relative_to(p).as_posix()) for q in found]
        elif p.is_file():
            images.append((p, p.name))
        else:
            problems.append(f"{item}: no such file or folder")
    return images, problems


def check_output(output: str | os.PathLike, images: list[tuple[Path, str]]) -> Path:
    """The output folder, refused (UsageError) when it holds an input image (nothing created)."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: output path exists and is not a directory")
    target = out.resolve()
    if any(p.resolve().parent == target for p, _ in images):
        raise UsageError(f"{out}: the output folder holds input images; choose another --output "
                         "so that no user file can be replaced")  # fmt: skip
    return out


def faces_from_pts(image_path: Path) -> list[dict]:
    """One face from ``STEM.pts`` next to the image (no confidence: ground-truth mode)."""
    pts_path = image_path.with_suffix(".pts")
    if not pts_path.is_file():
        raise DataError(f"{image_path}: no landmark file {pts_path.name} next to the image")
    return [{"box": None, "landmarks": read_pts(pts_path).astype(np.float64), "confidence": None}]


def load_predictor(model_path: str, flip: bool = True) -> Callable[[Path], list[dict]]:
    """Faces of an image from :func:`fas_tf.predict.predict` (detector + the landmark model).

    Returns a function ``image_path -> [{"box", "landmarks", "confidence", ...}]``; the model
    (``student.keras`` or ``.tflite``) is loaded once. ``flip``: test-time flip (each crop's
    prediction averaged with its mirror's: the ratios of a re-taken photo scatter about half as
    much, docs/clinical.md). Missing model: UsageError.
    """
    if not Path(model_path).is_file():
        raise UsageError(f"{model_path}: model not found")
    from fas_tf.inference import exported_with_flip, load_landmarker
    from fas_tf.predict import pipeline_record, predict

    built_in = exported_with_flip(model_path)  # a .tflite exported with --flip flips itself
    try:
        landmarker = load_landmarker(model_path, flip=flip and not built_in)
    except UsageError:
        raise  # already one line naming the file
    except (OSError, ValueError) as e:
        raise UsageError(f"{model_path}: cannot load model: {e}") from None

    def run(image_path: Path) -> list[dict]:
        try:
            faces = predict(image_path, landmarker)
        except DataError:
            raise
        except (OSError, ValueError) as e:
            raise DataError(f"{image_path}: prediction failed: {e}") from None
        return [{**f, "landmarks": np.asarray(f["landmarks"], np.float64),
                 "confidence": np.asarray(f["confidence"], np.float64)} for f in faces]

    run.pipeline = pipeline_record(flip=flip or built_in)  # type: ignore[attr-defined]
    return run


























def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(f"not JSON serializable: {type(x)}")


def process_image(image_path: Path, get_faces: Callable[[Path], list[dict]],
                  mm_per_pixel: float | None, thresholds: M.Thresholds) -> tuple[np.ndarray, list]:
    """Read the image, get faces, measure each; raises DataError (naming the file) on bad input."""
    # EXIF orientation, truncation checks and colour modes as in training
    image = cv2.cvtColor(load_image(image_path), cv2.COLOR_RGB2BGR)
    faces = get_faces(image_path)
    if not faces:
        raise DataError(f"{image_path}: no face found")
    out = []
    for face in faces:
        points = np.asarray(face["landmarks"], np.float64)
        if points.ndim == 2 and points.shape[1] == 2:  # other shapes: M.measure says why
            check_points(str(image_path), points, image.shape, None)
        try:
            res = M.measure(face["landmarks"], face.get("confidence"), mm_per_pixel, thresholds)
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{image_path}: bad landmarks: {e}") from None
        out.append({**face, "result": res})
    return image, out


def output_stems(names: Sequence[str]) -> list[str]:
    """A unique output stem per image name (``a/b.jpg`` -> ``a__b``, repeats ``_2``, ``_3``...)."""
    stems, used = [], set()
    for name in names:
        stem = Path(name).with_suffix("").as_posix().replace("/", "__")
        base, n = stem, 2
        while stem in used:
            stem, n = f"{base}_{n}", n + 1
        used.add(stem)
        stems.append(stem)
    return stems


def run(inputs: Sequence[str], output: str | os.PathLike, model: str | None = None,
        use_landmarks: bool = False, mm_per_pixel: float | None = None,
        thresholds: M.Thresholds | None = None, log=sys.stderr, flip: bool = True) -> int:
    """Process all inputs; returns the number of failed items (each reported in one line).

    ``flip``: the model's test-time flip (:func:`load_predictor`; recorded in each JSON's
    ``pipeline``).

    Raises UsageError (before writing anything) for bad usage: both or neither of
    ``model``/``use_landmarks``, a bad scale, a missing model, or an output folder that holds
    input images.
    """
    if bool(model) == bool(use_landmarks):
        raise UsageError("give exactly one of --model=PATH or --landmarks")
    if mm_per_pixel is not None and not (mm_per_pixel > 0 and math.isfinite(mm_per_pixel)):
        raise UsageError(f"--mm_per_pixel must be a positive number, got {mm_per_pixel}")
    thresholds = thresholds or M.Thresholds()
    images, problems = collect_images(inputs)
    if not images and not problems:
        raise UsageError("give at least one IMAGE_OR_FOLDER")
    out = check_output(output, images)
    stems = output_stems([name for _, name in images])
    outputs = {out / f"{stem}{OUTPUT_SUFFIX}{ext}": OUTPUTS[ext]
               for stem in stems for ext in (".json", ".png")}
    outputs.update({out / "measurements.csv": OUTPUTS[".csv"],
                    out / "report.html": OUTPUTS[".html"]})
    cli.check_outputs(outputs, inputs=[p for p, _ in images] + [model])
    get_faces = load_predictor(model, flip) if model else faces_from_pts
    cli.check_writable_dir(out)
    for problem in problems:
        print(problem, file=log)
    failures = len(problems)
    items, rows = [], []
    for (image_path, name), stem in zip(images, stems, strict=True):
        written = []
        try:
            image, faces = process_image(image_path, get_faces, mm_per_pixel, thresholds)
            record = {"format": JSON_FORMAT, "image": str(image_path), "disclaimer": M.DISCLAIMER,
                      "pipeline": getattr(get_faces, "pipeline", None),
                      "faces": [{"box": f.get("box"), "landmarks": f["landmarks"],
                                 "confidence": f.get("confidence"),
                                 **{k: f[k] for k in ("detector", "turn_deg", "first_crop")
                                    if k in f},
                                 **f["result"]}
                                for f in faces]}  # fmt: skip
            data = json.dumps(record, indent=1, default=_jsonable, allow_nan=False).encode("utf-8")
            ok, png = cv2.imencode(".png", draw_report(image, faces))
            if not ok:
                raise DataError(f"{image_path}: cannot encode the PNG picture")
            written.append(out / f"{stem}{OUTPUT_SUFFIX}.png")
            cli.write_png(written[-1], png.tobytes(), JSON_FORMAT)
            written.append(out / f"{stem}{OUTPUT_SUFFIX}.json")
            write_bytes(written[-1], data)
        except Exception as e:  # one bad item must not stop the run
            for path in written:  # a failed item leaves no output of its own
                with contextlib.suppress(OSError):
                    path.unlink()
            failures += 1
            msg = str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}"
            if not msg.startswith(str(image_path)):
                msg = f"{image_path}: {msg}"
            print(msg, file=log)
            problem = printable(msg[len(str(image_path)) + 2:])
            items.append({"image": str(image_path), "name": printable(name), "error": problem})
            rows.append({"image": printable(name), "face": "", "face_verdict": "error",
                         "face_reasons": problem})  # fmt: skip
            continue
        items.append({"image": str(image_path), "name": printable(name),
                      "png": href(f"{stem}{OUTPUT_SUFFIX}.png"),
                      "results": [f["result"] for f in faces]})  # fmt: skip
        for k, f in enumerate(faces, 1):
            rows.append(csv_row(printable(name), k, f["result"]))
    write_csv(out / "measurements.csv", rows, mm_per_pixel is not None)
    write_html(out / "report.html", items)
    return failures


def define_flags() -> None:
    """The command-line flags (only when run as a program)."""
    from absl import flags

    flags.DEFINE_string("model", None, "Trained landmark model (uses fas_tf.predict).")
    flags.DEFINE_bool("landmarks", False, "Read STEM.pts next to each image instead of a model.")
    flags.DEFINE_bool("flip", True, "Test-time flip: average each crop's landmarks with its "
                      "mirror's (halves the scatter of a re-taken photo's ratios; --noflip: "
                      "one pass, half the time).")
    flags.DEFINE_string("output", None, "Output folder (created if missing; not an input folder).")
    flags.DEFINE_float("mm_per_pixel", None, "Physical scale at the face; adds millimetre values.")
    defaults = M.Thresholds()
    for f in fields(M.Thresholds):
        cli.define_float(f.name, getattr(defaults, f.name),
                         "Gate/uncertainty parameter (see fas_tf.measurements and "
                         "docs/measure_calibration.md).", lower=0.0)  # fmt: skip


def main(argv: list[str]) -> None:
    from absl import flags

    f = flags.FLAGS
    if not f.output:
        raise UsageError("--output=DIR is required")
    th = M.Thresholds(**{x.name: getattr(f, x.name) for x in fields(M.Thresholds)})
    failures = run(argv[1:], f.output, f.model, f.landmarks, f.mm_per_pixel, th, flip=f.flip)
    print(f"wrote results to {f.output} ({failures} failed item(s)). {M.DISCLAIMER}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
