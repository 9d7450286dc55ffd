"""Known-answer test of the FAS measurements: does a real change of the face show up in full?

For each labelled photo (by default only those whose ground-truth value of the stretched distance
``measure`` calls ``ok``), the photo is warped (:mod:`fas_tf.face_warp`) so that

* ``pfl``: both palpebral fissures are f times as long (each eye along its own axis),
* ``philtrum``: the philtrum (33-51) is f times as long along the face's vertical axis,
* ``upper_lip``: the upper-lip height (51-stomion) is f times as long, likewise,

for f in ``--factors`` (default 0.85 ... 1.15), a smooth stretch with a Gaussian falloff of
sigma = 0.8 x the segment's length about its centre. The true new landmarks are the warp applied
to the labelled ones. The model runs on the same crop (the framing-rule square of the labelled
landmarks, no re-crop) of every warped photo. Per measurement: the least-squares slope of the
predicted log-change (against the prediction at f = 1) on the true log-change, and their Pearson
r; a slope of 1 means a real 12 % shorter eye is measured 12 % shorter. ``point_K`` rows: the
slope of landmark K's predicted move on its true move (pixels, along the true move), for the
end points of the stretched segments: which landmark lags behind. This does not depend on
the labels' noise. A measurement aid, not a diagnosis. ``--output`` also holds each face's own
slope, which ``benchmarks/paired.py --known_answer=MEASUREMENT`` compares between two arms.

    python benchmarks/known_answer.py --data=../shared/data/infanface-train --sets=google2 \
        --model=runs/x/student.keras [--flip] [--all_faces] [--output=ka.json]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import clinical_data as C  # noqa: E402
from fas_tf import measurements as M  # noqa: E402
from fas_tf.agreement import ols_slope, pearson_r  # noqa: E402
from fas_tf.face_warp import (  # noqa: E402
    STRETCHED,
    measurement_stretches,
    warp_image,
    warp_points,
)
from fas_tf.framing import crop_box  # noqa: E402

FACTORS = (0.85, 0.90, 0.95, 1.05, 1.10, 1.15)
# warp -> (the distance whose ground-truth verdict selects the faces, measurements reported)
WARPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pfl": ("pfl_mean", ("pfl_mean", "pfl_right", "pfl_left", "pfl_mean_to_icd",
                         "pfl_mean_to_ocd")),
    "philtrum": ("philtrum", ("philtrum", "philtrum_to_face_height", "philtrum_to_mouth_width")),
    "upper_lip": ("upper_lip", ("upper_lip", "upper_lip_to_face_height",
                                "upper_lip_to_mouth_width")),
}  # fmt: skip


def moved_points(warp: str) -> tuple[int, ...]:
    """The landmarks whose distances ``warp`` stretches (the segments' end points)."""
    return tuple(sorted({k for seg in STRETCHED[warp] for end in seg for k in end}))


def reported(warp: str) -> tuple[str, ...]:
    """What :func:`known_answer` reports for ``warp``: its measurements, then ``point_K`` for
    each of :func:`moved_points`."""
    return WARPS[warp][1] + tuple(f"point_{k}" for k in moved_points(warp))


def face_changes(image: np.ndarray, gt: np.ndarray, model, warp: str,
                 factors=FACTORS) -> dict[str, list[tuple[float, float]]]:
    """(true, predicted) log-changes of each reported measurement of ``warp``, one per factor,
    and, as ``point_K``, landmark K's (true, predicted) move in pixels along its true move at
    the largest factor (which landmark lags behind a measurement's change).

    The model sees the framing-rule square of ``gt`` cut from the photo and from each warped
    photo, in one batch; changes are against the ground truth resp. the prediction at f = 1.
    """
    from fas_tf.inference import landmarks_in_squares

    square = (*crop_box(gt), 0.0)
    stretches = [measurement_stretches(gt, warp, f) for f in factors]
    images = [image] + [warp_image(image, s) for s in stretches]
    pred, _ = landmarks_in_squares(images, model, [square] * len(images))
    truth0, pred0 = M.raw_measurements(gt), M.raw_measurements(pred[0])
    out: dict[str, list[tuple[float, float]]] = {m: [] for m in reported(warp)}
    moves = [warp_points(gt, s) - gt for s in stretches]
    along = moves[int(np.argmax(factors))]  # each point's direction of move, sign-consistent
    along = along / np.maximum(np.linalg.norm(along, axis=-1, keepdims=True), 1e-12)
    for p, true_move in zip(pred[1:], moves, strict=True):
        truth, got = M.raw_measurements(gt + true_move), M.raw_measurements(p)
        for m in WARPS[warp][1]:
            out[m].append((math.log(truth[m] / truth0[m]), math.log(got[m] / pred0[m])))
        for k in moved_points(warp):
            out[f"point_{k}"].append((float(true_move[k] @ along[k]),
                                      float((p[k] - pred[0][k]) @ along[k])))
    return out


def selected(face: C.Face, warp: str) -> bool:
    """Whether the face's ground-truth value of the stretched distance is ``ok``."""
    return M.measure(face.gt)["distances"][WARPS[warp][0]]["verdict"] == "ok"


def known_answer(faces: list[C.Face], model, warps=tuple(WARPS), factors=FACTORS,
                 all_faces: bool = False, log=print) -> dict:
    """Per warp and measurement: faces, slope, intercept and r of predicted on true log-change,
    and ``per_face``: each face's own slope (image stem -> slope)."""
    from fas_tf.data import load_image

    results: dict = {}
    for warp in warps:
        use = [f for f in faces if all_faces or selected(f, warp)]
        pairs: dict[str, list] = {m: [] for m in reported(warp)}
        own: dict[str, dict[str, float]] = {m: {} for m in reported(warp)}
        for face in list(use):
            try:
                changes = face_changes(load_image(face.image), face.gt, model, warp, factors)
            except ValueError as err:  # a zero-length segment cannot be stretched
                log(f"{face.stem}: skipped for {warp} ({err})")
                use.remove(face)
                continue
            for m, v in changes.items():
                pairs[m] += v
                slope = ols_slope(*np.asarray(v).T)[0]
                if math.isfinite(slope):
                    own[m][face.stem] = slope
        results[warp] = {}
        for m, v in pairs.items():
            true, pred = (np.asarray([p[i] for p in v]) for i in (0, 1))
            slope, intercept = ols_slope(true, pred)
            results[warp][m] = {"faces": len(use), "points": len(v), "slope": slope,
                                "intercept": intercept, "r": pearson_r(true, pred),
                                "per_face": own[m]}  # fmt: skip
        log(f"{warp}: {len(use)} faces")
    return results


def markdown(results: dict) -> str:
    rows = [[warp, m, r["faces"], r["slope"], r["r"], r["intercept"]]
            for warp, per in results.items() for m, r in per.items()]  # fmt: skip
    return C.markdown_table(["warp", "measurement", "faces", "slope", "r", "intercept"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_model_flags(ap, recrop=False)
    ap.add_argument("--warps", default=",".join(WARPS), help="comma list of " + ",".join(WARPS))
    ap.add_argument("--factors", default=",".join(f"{f:g}" for f in FACTORS),
                    help="length factors (1 is the reference and is added)")
    ap.add_argument("--all_faces", action="store_true",
                    help="every face, not only those whose ground-truth value is ok")
    args = ap.parse_args(argv)
    warps = [w for w in args.warps.split(",") if w]
    unknown = sorted(set(warps) - set(WARPS))
    if unknown:
        ap.error(f"--warps: unknown {unknown}; one of {list(WARPS)}")
    try:
        factors = tuple(float(f) for f in args.factors.split(",") if float(f) != 1.0)
    except ValueError:
        ap.error(f"--factors: not a comma list of numbers: {args.factors}")
    if not factors or min(factors) <= 0:
        ap.error("--factors: give positive factors other than 1")
    faces = C.labelled_faces(args.data, args.sets, args.limit, args.exclude)
    model = C.load_model(args.model, args.flip, args.decoder)
    results = known_answer(faces, model, warps, factors, args.all_faces,
                           log=lambda s: print(s, file=sys.stderr))  # fmt: skip
    print(markdown(results))
    C.write_json(args.output, {"model": args.model, "decoder": args.decoder,
                               "sets": args.sets, "exclude": args.exclude, "flip": args.flip,
                               "factors": factors, "all_faces": args.all_faces,
                               "results": results})  # fmt: skip
    return 0


if __name__ == "__main__":
    C.run_main(main)
