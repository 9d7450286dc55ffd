"""From a photo, not a labelled box: faces found and landmark error of the whole pipeline.

``python benchmarks/end_to_end.py --data=../shared/data/infanface-train [--sets=google2]
[--model=student.keras] [--detector=blazeface] [--noturns] [--first_crop=box] [--refine=1]
[--upright] [--exclude=docs/label_errors.txt] [--cache=/tmp/fas_tf_detections] [--time=10]
[--output=JSON]``

Every labelled photo goes through :func:`fas_tf.predict.predict` (detector, turned views, first
crop, re-crop passes), exactly as ``python -m fas_tf.predict`` runs it. A face is *found* when
one of the returned faces is the labelled one (:func:`fas_tf.detection.face_overlap` >=
:data:`fas_tf.detection.FOUND_IOU`; with several, the best overlap is scored). Reported per
batch and per subset (attribute flags; ``challenging`` = any flag): faces found, NME
(inter-ocular) and FR@0.10 over the found faces, NME and FR@0.10 over all faces (a miss counts as
a failure and as NME :data:`MISS_NME`), and, for the same model and faces, the NME of the
ground-truth framing-rule crops (``python -m fas_tf.evaluate``'s number). Without ``--model``
only detection is measured.

``--cache``: raw detections are kept in ``DIR/<detector>.json`` keyed by the view's pixels, so
re-runs with other first crops, passes or models do not detect again. ``--time=N``: seconds per
photo of the full pipeline (detection and landmarks, no cache) on the first N photos.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fas_tf import detection  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "infanface-train"
MISS_NME = 1.0  # NME given to a missed face in the all-faces mean (one inter-ocular distance)


class CachedDetector(detection.Detector):
    """A detector whose raw answers are kept in a JSON file, keyed by the view's pixels."""

    def __init__(self, name: str, path: str | os.PathLike):
        self.name = name
        self.min_score = detection.MIN_SCORE[name]
        self.path = Path(path)
        self.rows: dict[str, list[dict]] = (
            json.loads(self.path.read_text()) if self.path.is_file() else {})
        self.misses = 0

    def detect(self, image: np.ndarray) -> list[detection.RawFace]:
        key = hashlib.sha1(image.tobytes()).hexdigest() + f"-{image.shape[0]}x{image.shape[1]}"
        if key not in self.rows:
            self.misses += 1
            self.rows[key] = [
                {"box": list(f.box), "score": f.score,
                 "eyes": None if f.eyes is None else np.asarray(f.eyes).tolist()}
                for f in detection.get_detector(self.name).detect(image)]
        return [detection.RawFace(tuple(r["box"]), r["score"],
                                  None if r["eyes"] is None else np.float64(r["eyes"]))
                for r in self.rows[key]]

    def save(self) -> None:
        if self.misses:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".part")
            tmp.write_text(json.dumps(self.rows))
            tmp.replace(self.path)


def labelled_photos(data: str | os.PathLike, sets: list[str] | None, exclude: str | None = None):
    """(stem, image path, landmarks, attribute row) of every labelled photo in ``sets``, less
    the stems listed in the ``exclude`` file."""
    from fas_tf.data import list_folder, read_attributes, read_exclusions, read_pts

    attrs = read_attributes(Path(data) / "attributes.csv")
    left_out = read_exclusions(exclude) if exclude else frozenset()
    out = []
    for image_path, pts_path in list_folder(data):
        stem = Path(image_path).stem
        if stem in left_out or (sets and attrs.get(stem, {}).get("image_set") not in sets):
            continue
        out.append((stem, image_path, read_pts(pts_path), attrs.get(stem, {})))
    return out


def matched_face(faces: list[dict], gt: np.ndarray) -> tuple[dict | None, float]:
    """The returned face that is the labelled one (best overlap >= FOUND_IOU) or None, and
    that overlap."""
    best, best_iou = None, 0.0
    for face in faces:
        iou = detection.face_overlap(face["crop"], gt)
        if iou >= max(best_iou, detection.FOUND_IOU):
            best, best_iou = face, iou
    return best, best_iou


def groups_of(rows: list[dict]) -> dict[str, list[int]]:
    """Indices per batch, per attribute flag and ``challenging`` (any flag)."""
    from fas_tf.evaluate import subset_groups

    attrs = {r["stem"]: r["attributes"] for r in rows}
    groups = {"all": list(range(len(rows)))}
    groups.update(subset_groups([r["stem"] + ".jpg" for r in rows], attrs))
    flags = [k for k in groups if k not in ("all",) and "=" not in k]
    groups["challenging"] = [i for i in range(len(rows)) if any(i in groups[k] for k in flags)]
    return groups


def summarize(rows: list[dict], idx: list[int]) -> dict:
    found = [rows[i] for i in idx if rows[i]["found"]]
    out = {"n": len(idx), "found": len(found), "found_pct": 100.0 * len(found) / max(len(idx), 1),
           "first_crop_iou_p10": float(np.percentile([r["overlap"] for r in found], 10))
           if found else None}
    if rows and "nme" in rows[0]:
        nme_found = np.array([r["nme"] for r in found])
        nme_all = np.array([rows[i]["nme"] if rows[i]["found"] else MISS_NME for i in idx])
        gt_crop = np.array([rows[i]["gt_crop_nme"] for i in idx])
        out.update(
            nme_found=100 * float(nme_found.mean()) if len(found) else None,
            fr10_found=100 * float(np.mean(nme_found > 0.10)) if len(found) else None,
            nme_all=100 * float(nme_all.mean()), fr10_all=100 * float(np.mean(nme_all > 0.10)),
            gt_crop_nme=100 * float(gt_crop.mean()),
            gt_crop_nme_found=100 * float(np.mean([r["gt_crop_nme"] for r in found]))
            if found else None,
        )
    return out


def gt_crop_nmes(model_path: str, data: str, sets: str | None, exclude: str | None
                 ) -> dict[str, float]:
    """Stem -> NME from the ground-truth framing-rule crop (``fas_tf.evaluate``, no pass)."""
    from fas_tf.evaluate import evaluate_model

    metrics, _ = evaluate_model(model_path, data, str(Path(data) / "attributes.csv"),
                                sets.split(",") if sets else None, exclude=exclude)
    return dict(zip(metrics["images"], metrics["per_face"], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--sets", default=None, help="comma-separated batches (default: all)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--detector", default="blazeface", choices=detection.DETECTORS)
    parser.add_argument("--noturns", action="store_true", help="upright photo only")
    parser.add_argument("--first_crop", default="best", choices=("box", "eyes", "best"))
    parser.add_argument("--refine", type=int, default=1)
    parser.add_argument("--upright", action="store_true")
    parser.add_argument("--exclude", default=None,
                        help="file of stems to leave out (docs/label_errors.txt)")
    parser.add_argument("--cache", default="/tmp/fas_tf_detections")
    parser.add_argument("--time", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    from fas_tf.data import load_image
    from fas_tf.metrics import point_errors
    from fas_tf.predict import detect_faces, predict

    photos = labelled_photos(args.data, args.sets.split(",") if args.sets else None,
                             args.exclude)
    cached = CachedDetector(args.detector, Path(args.cache) / f"{args.detector}.json")
    model = None
    if args.model:
        from fas_tf.inference import load_landmarker

        model = load_landmarker(args.model)
        gt_nme = gt_crop_nmes(args.model, args.data, args.sets, args.exclude)
    rows = []
    for stem, path, gt, attrs in photos:
        image = load_image(path)
        if model is None:
            faces = [{"crop": f.square, "detector_score": f.score, "turn_deg": np.degrees(f.angle)}
                     for f in detect_faces(image, None, cached, not args.noturns)]
        else:
            faces = predict(image, model, None, args.refine, args.upright, cached,
                            not args.noturns, args.first_crop)
        face, overlap = matched_face(faces, gt)
        row = {"stem": stem, "attributes": attrs, "faces": len(faces), "found": face is not None,
               "overlap": overlap, "turn_deg": None if face is None else float(face["turn_deg"])}
        if model is not None:
            row["gt_crop_nme"] = float(gt_nme[stem])
            if face is not None:
                row["nme"] = float(np.asarray(point_errors(
                    np.float32(face["landmarks"])[None], gt[None])).mean())
        rows.append(row)
    cached.save()
    groups = groups_of(rows)
    summary = {name: summarize(rows, idx) for name, idx in groups.items() if idx}
    pipeline = {"detector": args.detector, "turns": not args.noturns,
                "first_crop": args.first_crop, "refine": args.refine, "upright": args.upright,
                "model": args.model, "sets": args.sets, "exclude": args.exclude}
    if args.time:
        model_or_none = model
        started = time.perf_counter()
        for _, path, _, _ in photos[: args.time]:
            image = load_image(path)
            if model_or_none is None:
                detect_faces(image, None, args.detector, not args.noturns)
            else:
                predict(image, model, None, args.refine, args.upright, args.detector,
                        not args.noturns, args.first_crop)
        pipeline["seconds_per_photo"] = (time.perf_counter() - started) / args.time
    for name, s in summary.items():
        line = (f"{name:20s} found {s['found']:3d}/{s['n']:3d} ({s['found_pct']:5.1f}%)"
                f" crop IoU p10 {s['first_crop_iou_p10'] or 0:.2f}")
        if "nme_all" in s:
            line += (f"  NME found {s['nme_found']:.2f}%  all {s['nme_all']:.2f}%  "
                     f"FR@0.10 found {s['fr10_found']:.1f}% all {s['fr10_all']:.1f}%  "
                     f"GT-crop NME {s['gt_crop_nme']:.2f}% (found {s['gt_crop_nme_found']:.2f}%)")
        print(line)
    print(json.dumps(pipeline))
    missed = [r["stem"] for r in rows if not r["found"]]
    print("missed:", " ".join(missed) if missed else "none")
    if args.output:
        Path(args.output).write_text(json.dumps(
            {"pipeline": pipeline, "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
