"""Calibrate the MTCNN box -> landmark-box mapping used by ``fas_tf.predict``.

``python benchmarks/export_mtcnn_calibration.py [--data=../shared/data/infanface-train]
[--output=/tmp/mtcnn_calibration.json]``

For every labelled image, MTCNN (low stage thresholds, so that weak infant-face detections are
kept with their ONet score) is matched to the ground-truth landmark box (highest IoU, >= 0.3).
With detector box (bx, by, bw, bh) and landmark box centre (cx, cy), larger side L:

    dx = (cx - bx - bw / 2) / bw,  dy = (cy - by - bh / 2) / bh,  scale = L / max(bw, bh)

The medians are ``fas_tf.framing.DETECTOR_MAPPING``. Also reports the detection rate per ONet
score threshold and the residual framing error (centre offset and side ratio vs the true crop).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "infanface-train"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / max(union, 1e-9)


def match(faces: list[tuple[tuple[float, float, float, float], float]], pts: np.ndarray) -> dict:
    """The detection ``(box xywh, score)`` matching the landmark box best (IoU >= 0.3), as a row.

    Row: ``matched``, and when matched ``score``, ``iou``, ``dx``, ``dy``, ``scale``.
    """
    lo, hi = pts.min(0), pts.max(0)
    gt = np.array([lo[0], lo[1], hi[0], hi[1]])
    best, best_iou = None, 0.3
    for (bx, by, bw, bh), score in faces:
        overlap = iou(np.array([bx, by, bx + bw, by + bh]), gt)
        if overlap >= best_iou:
            best, best_iou = ((bx, by, bw, bh), score), overlap
    row = {"detections": len(faces), "matched": best is not None}
    if best is not None:
        (bx, by, bw, bh), score = best
        cx, cy = (lo + hi) / 2.0
        row.update(
            score=float(score), iou=float(best_iou),
            dx=float((cx - bx - bw / 2) / bw), dy=float((cy - by - bh / 2) / bh),
            scale=float(max(hi - lo)) / max(bw, bh),
        )
    return row


def summarize(rows: list[dict], score_thresholds=(0.5, 0.7, 0.8, 0.9)) -> dict:
    """Median constants of the matched rows, residual framing error, detection rate per score."""
    matched = [r for r in rows if r["matched"]]
    constants = {k: round(float(np.median([r[k] for r in matched])), 4)
                 for k in ("dx", "dy", "scale")}
    residual = {
        "centre_error_median_of_side": float(np.median([
            np.hypot(r["dx"] - constants["dx"], r["dy"] - constants["dy"]) / constants["scale"]
            for r in matched])),
        "side_ratio_p10_p90": [float(np.percentile([r["scale"] / constants["scale"]
                                                    for r in matched], q)) for q in (10, 90)],
    }
    rates = {str(t): float(np.mean([r["matched"] and r["score"] >= t for r in rows]))
             for t in score_thresholds}
    return {"n_images": len(rows), "n_matched": len(matched), "constants": constants,
            "residual": residual, "detection_rate_by_score": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--output", default="/tmp/mtcnn_calibration.json")
    args = parser.parse_args()

    from fas_tf.data import list_folder, load_image, read_attributes, read_pts
    from fas_tf.predict import DETECTOR_THRESHOLDS, get_detector

    attrs = read_attributes(Path(args.data) / "attributes.csv")
    detector = get_detector()
    rows = []
    for image_path, pts_path in list_folder(args.data):
        found = detector.detect_faces(load_image(image_path), box_format="xywh",
                                      **DETECTOR_THRESHOLDS)
        faces = [(tuple(float(v) for v in f["box"]), float(f["confidence"])) for f in found]
        row = {"stem": Path(image_path).stem, "set": attrs[Path(image_path).stem]["image_set"],
               **match(faces, read_pts(pts_path))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {**summarize(rows), "thresholds": DETECTOR_THRESHOLDS}
    Path(args.output).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
