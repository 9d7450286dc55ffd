"""Calibrate a face detector's box -> crop mapping (``fas_tf.detection.calibration.BOX_TO_CROP``).

``python benchmarks/detector_calibration.py --detector=(mtcnn|blazeface)
[--data=../shared/data/infanface-train] [--exclude=docs/label_errors.txt]
[--cache=/tmp/fas_tf_detections] [--output=/tmp/DETECTOR_calibration.json]``

The detector runs on every labelled photo upright and turned by each of
``fas_tf.detection.TURN_ANGLES_DEG`` (detections cached as in ``benchmarks/end_to_end.py``). Per
photo, the best scoring detection whose box overlaps the ground-truth landmark box by IoU >= 0.3,
both seen in the detection's (turned) frame, is kept. With that box (bx, by, bw, bh) and the
landmark box centre (cx, cy) and larger side L in the same frame:

    dx = (cx - bx - bw / 2) / bw,  dy = (cy - by - bh / 2) / bh,  scale = L / max(bw, bh)

The medians are the detector's ``BOX_TO_CROP`` constants. Also reports the residual framing error
(centre offset in landmark-box sides, side ratio p10-p90).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from end_to_end import DATA, CachedDetector, labelled_photos  # noqa: E402

MATCH_IOU = 0.3


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / max(union, 1e-9)


def in_frame(points: np.ndarray, angle: float) -> np.ndarray:
    """Points turned by -angle (the turned view's axes, up to a shift)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.asarray(points, np.float64) @ np.float64([[c, -s], [s, c]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="blazeface")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--exclude", default=None)
    parser.add_argument("--cache", default="/tmp/fas_tf_detections")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    from fas_tf.data import load_image
    from fas_tf.detection import TURN_ANGLES_DEG, find_faces

    detector = CachedDetector(args.detector, Path(args.cache) / f"{args.detector}.json")
    rows = []
    for stem, path, gt, attrs in labelled_photos(args.data, None, args.exclude):
        faces = find_faces(load_image(path), detector, TURN_ANGLES_DEG, accept_score=math.inf)
        row = {"stem": stem, "set": attrs.get("image_set"), "matched": False}
        for face in faces:  # best score first
            corners, pts = in_frame(face.corners, face.angle), in_frame(gt, face.angle)
            (bx, by), (x1, y1) = corners.min(0), corners.max(0)
            bw, bh = x1 - bx, y1 - by
            lo, hi = pts.min(0), pts.max(0)
            overlap = iou(np.r_[bx, by, x1, y1], np.r_[lo, hi])
            if overlap >= MATCH_IOU:
                cx, cy = (lo + hi) / 2.0
                row.update(matched=True, score=face.score, iou=overlap,
                           turn_deg=math.degrees(face.angle),
                           dx=(cx - bx - bw / 2) / bw, dy=(cy - by - bh / 2) / bh,
                           scale=float(max(hi - lo)) / max(bw, bh))
                break
        rows.append(row)
    detector.save()
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
    summary = {"detector": args.detector, "n_images": len(rows), "n_matched": len(matched),
               "constants": constants, "residual": residual}
    output = args.output or f"/tmp/{args.detector}_calibration.json"
    Path(output).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
