"""CLI: FAS screening measurements per face, with pictures, CSV and an HTML report.

MEASUREMENT AID, NOT A DIAGNOSIS.

    python -m fas_tf.measure --landmarks IMAGE_OR_FOLDER... --output=DIR
    python -m fas_tf.measure --model=PATH IMAGE_OR_FOLDER... --output=DIR

``--landmarks`` reads the 300-W ``STEM.pts`` next to each image; ``--model`` runs
``fas_tf.predict`` (imported lazily). Per image: ``STEM.json`` and ``STEM.png`` in DIR; for the
whole run: ``measurements.csv`` (a row per face, error rows for failed images) and
``report.html``. Every file is written to a temporary file and renamed. A failing image prints one
line ``PATH: problem`` and the run goes on; the exit status is 1 if any image failed, 2 for usage
errors.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
from absl import app, flags

from fas_tf import measurements as M
from fas_tf.data import load_image, read_pts

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SHORT = {
    "pfl_right": "PFL-R", "pfl_left": "PFL-L", "pfl_mean": "PFL-mean", "icd": "ICD",
    "ocd": "OCD", "philtrum": "PHIL", "upper_lip": "UL", "mouth_width": "MW",
    "face_height": "FH",
}  # fmt: skip
# where a segment's label goes: (fraction along a->b, offset along the normal in px)
LABEL_AT = {"icd": (0.5, 14.0), "ocd": (0.5, -16.0), "face_height": (0.85, 14.0),
            "philtrum": (0.5, -14.0), "mouth_width": (0.8, 14.0), "upper_lip": (0.5, 14.0)}
OK_COLOR = (40, 200, 40)
BAD_COLOR = (60, 60, 230)


class ItemError(Exception):
    """A problem with one input item (reported as one line; the run goes on)."""


class FatalError(Exception):
    """A problem that stops the whole run (usage, missing predictor)."""


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def list_images(inputs: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]], bool]:
    """Expand files/folders into image paths; also returns (path, problem) and 'had a folder'."""
    images: list[Path] = []
    problems: list[tuple[str, str]] = []
    had_folder = False
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            had_folder = True
            found = sorted(q for q in p.iterdir()
                           if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)  # fmt: skip
            if not found:
                problems.append((item, "folder contains no images"))
            images.extend(found)
        elif p.is_file():
            images.append(p)
        else:
            problems.append((item, "no such file or folder"))
    return images, problems, had_folder


def faces_from_pts(image_path: Path) -> list[dict]:
    """One face from ``STEM.pts`` next to the image (no confidence: ground-truth mode)."""
    pts_path = image_path.with_suffix(".pts")
    if not pts_path.is_file():
        raise ItemError(f"no landmark file {pts_path.name} next to the image")
    try:
        pts = read_pts(pts_path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ItemError(str(e)) from None
    return [{"box": None, "landmarks": pts, "confidence": None}]


def load_predictor(model_path: str) -> Callable[[Path], list[dict]]:
    """Faces of an image from :func:`fas_tf.predict.predict` (MTCNN + the landmark model).

    Returns a function ``image_path -> [{"box", "landmarks", "confidence", ...}]``; the model
    (``student.keras`` or ``.tflite``) is loaded once. Missing model: one-line FatalError.
    """
    if not Path(model_path).is_file():
        raise FatalError(f"{model_path}: model not found")
    from fas_tf.predict import Landmarker, predict

    try:
        landmarker = Landmarker(model_path)
    except (OSError, ValueError) as e:
        raise FatalError(f"{model_path}: cannot load model: {e}") from None

    def run(image_path: Path) -> list[dict]:
        try:
            faces = predict(image_path, landmarker)
        except (OSError, ValueError) as e:
            raise ItemError(f"prediction failed: {e}") from None
        return [{**f, "landmarks": np.asarray(f["landmarks"], np.float64),
                 "confidence": np.asarray(f["confidence"], np.float64)} for f in faces]

    return run


def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float, color, thick: int = 1,
          outline: bool = True):
    if outline:
        cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2,
                    cv2.LINE_AA)
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _value_line(name: str, entry: dict, ratio: bool, face_reasons: list[str]) -> str:
    if entry["verdict"] != "ok":
        own = [r for r in entry["reasons"] if r not in face_reasons]
        return f"{name}: not measurable" + (f" ({own[0].split(':')[0][:34]})" if own else "")
    if ratio:
        return f"{name}: {entry['value']:.3f} +- {entry['sigma']:.3f}"
    s = f"{name}: {entry['value_px']:.1f} +- {entry['sigma_px']:.1f} px"
    if entry.get("value_mm") is not None:
        s += f" ({entry['value_mm']:.1f} +- {entry['sigma_mm']:.1f} mm)"
    return s


def draw_report(image: np.ndarray, faces: list[dict]) -> np.ndarray:
    """Image with landmarks and labelled segments (green ok, red not measurable) + text panel."""
    h, w = image.shape[:2]
    f = 800.0 / max(h, w) if max(h, w) < 800 else 1.0
    img = cv2.resize(image, (round(w * f), round(h * f))) if f != 1.0 else image.copy()
    lines: list[tuple[str, tuple[int, int, int]]] = [
        ("MEASUREMENT AID - NOT A DIAGNOSIS", (0, 200, 255))]
    for k, face in enumerate(faces, 1):
        pts = np.asarray(face["landmarks"], float) * f
        res = face["result"]
        for p in pts:
            cv2.circle(img, (round(p[0]), round(p[1])), 2, (255, 220, 0), -1, cv2.LINE_AA)
        for name, (a, b, _) in M.SEGMENTS.items():
            pa = M._point_weights(a) @ pts
            pb = M._point_weights(b) @ pts
            ok = res["distances"][name]["verdict"] == "ok"
            color = OK_COLOR if ok else BAD_COLOR
            cv2.line(img, tuple(np.round(pa).astype(int)), tuple(np.round(pb).astype(int)),
                     color, 2 if ok else 1, cv2.LINE_AA)  # fmt: skip
            t, off = LABEL_AT.get(name, (0.5, 12.0))
            d = pb - pa
            n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
            at = pa + t * d + off * n
            _text(img, SHORT[name], (round(at[0]) - 12, round(at[1]) + 4), 0.45, color)
        fr = res["face"]
        tag = f"face {k}" + (f" box {face['box']}" if face.get("box") else "")
        lines.append((f"{tag}: {fr['verdict'].upper()}",
                      OK_COLOR if fr["verdict"] == "ok" else BAD_COLOR))  # fmt: skip
        for r in fr["reasons"]:
            lines.append(("  " + r[:60], BAD_COLOR))
        pose = [f"{n} {fr[n + '_deg']:.0f}" for n in ("yaw", "pitch", "roll")
                if fr.get(n + "_deg") is not None]  # fmt: skip
        lines.append((f"IOD {fr['interocular_px']:.0f}px  " + "  ".join(pose) + " (deg)",
                       (230, 230, 230)))  # fmt: skip
        for name, e in res["distances"].items():
            lines.append((_value_line(SHORT[name], e, False, fr["reasons"]),
                          OK_COLOR if e["verdict"] == "ok" else BAD_COLOR))  # fmt: skip
        for name, e in res["ratios"].items():
            lines.append((_value_line(name, e, True, fr["reasons"]),
                          OK_COLOR if e["verdict"] == "ok" else BAD_COLOR))  # fmt: skip
    panel_w, step = 470, 18
    hh = max(img.shape[0], step * (len(lines) + 2))
    canvas = np.full((hh, img.shape[1] + panel_w, 3), 30, np.uint8)
    canvas[: img.shape[0], : img.shape[1]] = img
    for i, (s, c) in enumerate(lines):
        _text(canvas, s, (img.shape[1] + 8, step * (i + 1) + 4), 0.45, c, outline=False)
    return canvas


def _csv_columns(mm: bool) -> list[str]:
    cols = ["image", "face", "face_verdict", "face_reasons", "interocular_px", "yaw_deg",
            "pitch_deg", "roll_deg"]  # fmt: skip
    for name in M.DISTANCES:
        cols += [f"{name}_px", f"{name}_sigma_px"]
        cols += [f"{name}_mm", f"{name}_sigma_mm"] if mm else []
        cols += [f"{name}_verdict"]
    for name in M.RATIOS:
        cols += [name, f"{name}_sigma", f"{name}_verdict"]
    return cols


def _csv_row(image: str, k: int, res: dict) -> dict:
    fr = res["face"]
    row = {"image": image, "face": k, "face_verdict": fr["verdict"],
           "face_reasons": "; ".join(fr["reasons"]), "interocular_px": fr["interocular_px"],
           "yaw_deg": fr["yaw_deg"], "pitch_deg": fr["pitch_deg"], "roll_deg": fr["roll_deg"]}
    for name, e in res["distances"].items():
        row.update({f"{name}_px": e["value_px"], f"{name}_sigma_px": e["sigma_px"],
                    f"{name}_mm": e.get("value_mm"), f"{name}_sigma_mm": e.get("sigma_mm"),
                    f"{name}_verdict": e["verdict"]})  # fmt: skip
    for name, e in res["ratios"].items():
        row.update({name: e["value"], f"{name}_sigma": e["sigma"], f"{name}_verdict": e["verdict"]})
    return row


def write_csv(path: Path, rows: list[dict], mm: bool) -> None:
    """All faces, one row each; values empty when not measurable."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_csv_columns(mm), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
                         for k, v in row.items()})  # fmt: skip
    atomic_write(path, buf.getvalue().encode("utf-8"))


HTML_RATIOS = ("pfl_mean_to_icd", "pfl_mean_to_ocd", "icd_to_ocd", "philtrum_to_face_height",
               "upper_lip_to_face_height")  # fmt: skip


def write_html(path: Path, items: list[dict]) -> None:
    """One page: disclaimer, then per face a thumbnail (relative link) and the key ratios."""
    esc = html.escape
    head = "".join(f"<th>{esc(r)}</th>" for r in HTML_RATIOS)
    rows = []
    for it in items:
        if it.get("error"):
            rows.append(f"<tr><td></td><td>{esc(it['image'])}</td><td class=bad>error</td>"
                        f"<td colspan={len(HTML_RATIOS) + 1}>{esc(it['error'])}</td></tr>")
            continue
        for k, res in enumerate(it["results"], 1):
            fr = res["face"]
            cls = "ok" if fr["verdict"] == "ok" else "bad"
            cells = []
            for r in HTML_RATIOS:
                e = res["ratios"][r]
                cells.append(f"<td>{e['value']:.3f} &plusmn; {e['sigma']:.3f}</td>"
                             if e["verdict"] == "ok" else
                             f"<td class=bad title='{esc('; '.join(e['reasons']), quote=True)}'>"
                             "not measurable</td>")  # fmt: skip
            png = esc(it["png"], quote=True)
            rows.append(
                f"<tr><td><a href='{png}'><img src='{png}' width=260></a></td>"
                f"<td>{esc(it['image'])} (face {k})</td><td class={cls}>{esc(fr['verdict'])}</td>"
                f"<td>{esc('; '.join(fr['reasons']))}</td>{''.join(cells)}</tr>"
            )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>FAS measurement report</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}} .ok{{color:#080}}
.bad{{color:#b00}} .disc{{background:#fff3cd;padding:8px;border:1px solid #e0c060}}</style>
</head><body><h1>FAS measurement report</h1>
<p class=disc><b>{esc(M.DISCLAIMER)}</b><br>{esc(M.SIDE_CONVENTION)}. Values are shown
&plusmn; one propagated standard deviation; "not measurable" means the tool refused to give a
number (hover for the reason). Full values: measurements.csv and the per-image JSON files.</p>
<table><tr><th>picture</th><th>image</th><th>verdict</th><th>reasons</th>{head}</tr>
{chr(10).join(rows)}
</table></body></html>
"""
    atomic_write(path, page.encode("utf-8"))


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(f"not JSON serializable: {type(x)}")


def process_image(image_path: Path, get_faces: Callable[[Path], list[dict]],
                  mm_per_pixel: float | None, thresholds: M.Thresholds) -> tuple[np.ndarray, list]:
    """Read the image, get faces, measure each; raises ItemError on bad input."""
    try:  # EXIF orientation, truncation checks and colour modes as in training
        image = cv2.cvtColor(load_image(image_path), cv2.COLOR_RGB2BGR)
    except ValueError as e:
        raise ItemError(str(e)) from None
    faces = get_faces(image_path)
    out = []
    for face in faces:
        try:
            res = M.measure(face["landmarks"], face.get("confidence"), mm_per_pixel, thresholds)
        except (ValueError, KeyError, TypeError) as e:
            raise ItemError(f"bad landmarks: {e}") from None
        out.append({**face, "result": res})
    return image, out


def run(inputs: Sequence[str], output: str | os.PathLike, model: str | None = None,
        use_landmarks: bool = False, mm_per_pixel: float | None = None,
        thresholds: M.Thresholds | None = None, log=sys.stderr) -> int:
    """Process all inputs; returns the number of failed items (each reported in one line)."""
    if bool(model) == bool(use_landmarks):
        raise FatalError("give exactly one of --model=PATH or --landmarks")
    if mm_per_pixel is not None and not (mm_per_pixel > 0 and math.isfinite(mm_per_pixel)):
        raise FatalError(f"--mm_per_pixel must be a positive number, got {mm_per_pixel}")
    thresholds = thresholds or M.Thresholds()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    get_faces = load_predictor(model) if model else faces_from_pts
    images, problems, _ = list_images(inputs)
    for item, problem in problems:
        print(f"{item}: {problem}", file=log)
    if not images and problems:
        return len(problems)
    failures = len(problems)
    items, rows, used = [], [], set()
    for image_path in images:
        stem, n = image_path.stem, 2
        while stem in used:
            stem, n = f"{image_path.stem}_{n}", n + 1
        try:
            image, faces = process_image(image_path, get_faces, mm_per_pixel, thresholds)
            if not faces:
                raise ItemError("no face found")
            record = {"image": str(image_path), "disclaimer": M.DISCLAIMER,
                      "faces": [{"box": f.get("box"), "landmarks": f["landmarks"],
                                 "confidence": f.get("confidence"), **f["result"]}
                                for f in faces]}  # fmt: skip
            data = json.dumps(record, indent=1, default=_jsonable, allow_nan=False).encode("utf-8")
            ok, png = cv2.imencode(".png", draw_report(image, faces))
            if not ok:
                raise ItemError("cannot encode the PNG picture")
            used.add(stem)
            atomic_write(out / f"{stem}.json", data)
            atomic_write(out / f"{stem}.png", png.tobytes())
        except Exception as e:  # one bad item must not stop the run
            failures += 1
            if not isinstance(e, ItemError):
                e = ItemError(f"{type(e).__name__}: {e}")
            print(f"{image_path}: {e}", file=log)
            items.append({"image": str(image_path), "error": str(e)})
            rows.append({"image": str(image_path), "face": "", "face_verdict": "error",
                         "face_reasons": str(e)})  # fmt: skip
            continue
        items.append({"image": str(image_path), "png": f"{stem}.png",
                      "results": [f["result"] for f in faces]})  # fmt: skip
        for k, f in enumerate(faces, 1):
            rows.append(_csv_row(str(image_path), k, f["result"]))
    write_csv(out / "measurements.csv", rows, mm_per_pixel is not None)
    write_html(out / "report.html", items)
    return failures


FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Trained landmark model (uses fas_tf.predict).")
flags.DEFINE_bool("landmarks", False, "Read STEM.pts next to each image instead of a model.")
flags.DEFINE_string("output", None, "Output folder (created if missing).")
flags.DEFINE_float("mm_per_pixel", None, "Physical scale at the face; adds millimetre values.")
_DEFAULTS = M.Thresholds()
for _f in fields(M.Thresholds):
    flags.DEFINE_float(_f.name, getattr(_DEFAULTS, _f.name),
                       "Threshold/uncertainty parameter (see fas_tf.measurements).")  # fmt: skip


def main(argv: list[str]) -> int:
    inputs = argv[1:]
    try:
        if not inputs:
            raise FatalError("give at least one IMAGE_OR_FOLDER")
        if not FLAGS.output:
            raise FatalError("--output=DIR is required")
        th = M.Thresholds(**{f.name: getattr(FLAGS, f.name) for f in fields(M.Thresholds)})
        failures = run(inputs, FLAGS.output, FLAGS.model, FLAGS.landmarks, FLAGS.mm_per_pixel,
                       th)  # fmt: skip
    except FatalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote results to {FLAGS.output} ({failures} failed item(s)). {M.DISCLAIMER}")
    return 1 if failures else 0


if __name__ == "__main__":
    app.run(main)
