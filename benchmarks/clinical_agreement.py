"""Agreement of the FAS ratios with the labels, end to end from the photos, and the labels' ceiling.

For every labelled photo of ``--sets``: landmarks from the default face detector (BlazeFace,
``fas_tf.predict.DETECTOR``) + the model (``fas_tf.predict``,
the face nearest the labels; ``--gt_crops``: the model on the framing-rule square of the labels
instead, then the re-crop passes), ``fas_tf.measurements.measure`` on them, and per ratio,
compared with the same ratio of the ground-truth landmarks (ungated):

* **measured**: the faces whose own verdict is ``ok`` or ``imprecise`` (what the tool shows;
  ``imprecise`` counted apart): n, SD between infants (of the labels' values), MAE, Pearson r,
  ICC(A,1), Bland-Altman bias and 95 % limits of agreement (``--plot`` draws them);
* **every detected face** (no gates): the same, to see what the gates buy.

The labels' own consistency is the ceiling any model can show against them: on the faces whose
ground-truth PFL/ICD of each eye is measurable (so also |yaw| <= 9.5 deg: turning the head
shortens one eye and lengthens the other), the right eye's PFL/ICD against the left eye's (and
PFL/OCD), with the same statistics (``--ceiling_plot``), and the same for the model's landmarks.
By Spearman-Brown, the mean of two eyes whose values correlate rho has reliability
2 rho / (1 + rho); the square root of that is the largest r of the labels' mean PFL with any
error-free measurement. Without ``--model`` only the labels' checks are computed.
``--spread`` prints the spread between infants of
:mod:`fas_tf.spread` recomputed on the calibration sets (no model needed). A measurement aid,
not a diagnosis.

    python benchmarks/clinical_agreement.py --data=../shared/data/infanface-train \
        --sets=google2 --model=runs/x/student.keras --plot=ba.png --ceiling_plot=lr.png
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
from fas_tf import spread  # noqa: E402
from fas_tf.agreement import agreement, between_infant_sd, plot_bland_altman  # noqa: E402
from fas_tf.framing import crop_box  # noqa: E402
from fas_tf.predict import DETECTOR  # noqa: E402

# label consistency checks: name -> (right-eye ratio, left-eye ratio)
SIDES = {"PFL/ICD right vs left": ("pfl_right_to_icd", "pfl_left_to_icd"),
         "PFL/OCD right vs left": ("pfl_right_to_ocd", "pfl_left_to_ocd")}  # fmt: skip
STATS = ("sd_between", "mae", "r", "icc_a1", "bias", "loa_low", "loa_high")


def predictions(faces: list[C.Face], model, gt_crops: bool = False, refine: int = 1,
                upright: bool = False, log=print) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """stem -> (landmarks, confidence) of the model on each photo (faces not found are left out)."""
    from fas_tf.data import load_image

    out = {}
    for face in faces:
        image = load_image(face.image)
        if gt_crops:
            pts, conf = C.in_square([image], model, [(*crop_box(face.gt), 0.0)], refine, upright)
            out[face.stem] = (pts[0], conf[0])
            continue
        found = C.end_to_end(image, model, face.gt, refine, upright)
        if found is None:
            log(f"{face.stem}: no face found")
        else:
            out[face.stem] = found
    return out


def _row(stats: dict, extra: list | None = None) -> list:
    return [stats["n"], *(extra or []), *(stats[k] for k in STATS)]


def _add_sides(pairs: dict, res: dict, raw: dict) -> None:
    """Add a face's right and left values of each check where ``measure`` gives both."""
    for k, (right, left) in SIDES.items():
        if res["ratios"][right]["value"] is not None and res["ratios"][left]["value"] is not None:
            pairs[k][0].append(raw[right])
            pairs[k][1].append(raw[left])


def evaluate(faces: list[C.Face], preds: dict, ratios=C.RATIOS) -> dict:
    """Agreement per ratio (measured and ungated), the labels' and the model's right vs left."""
    measured: dict[str, tuple[list, list]] = {r: ([], []) for r in ratios}
    ungated: dict[str, tuple[list, list]] = {r: ([], []) for r in ratios}
    imprecise = dict.fromkeys(ratios, 0)
    sides = {who: {k: ([], []) for k in SIDES} for who in ("labels", "model")}
    for face in faces:
        truth = M.raw_measurements(face.gt)
        _add_sides(sides["labels"], M.measure(face.gt), truth)
        if face.stem not in preds:
            continue
        pts, conf = preds[face.stem]
        res, raw = M.measure(pts, conf), M.raw_measurements(pts)
        for r in ratios:
            ungated[r][0].append(truth[r])
            ungated[r][1].append(raw[r])
            e = res["ratios"][r]
            if e["value"] is not None:
                measured[r][0].append(truth[r])
                measured[r][1].append(e["value"])
                imprecise[r] += e["verdict"] == "imprecise"
        _add_sides(sides["model"], res, raw)
    out = {"faces": len(faces), "detected": len(preds), "measured": {}, "ungated": {},
           "sides": {}, "pairs": {"measured": measured, "labels_sides": sides["labels"]}}
    for r in ratios:
        out["measured"][r] = {**agreement(*measured[r]), "imprecise": imprecise[r]}
        out["ungated"][r] = agreement(*ungated[r])
    for who, checks in sides.items():
        for k, pair in checks.items():
            st = agreement(*pair)
            rho = st["r"]
            st["ceiling_r_of_mean"] = (math.sqrt(2 * rho / (1 + rho))
                                       if math.isfinite(rho) and rho > 0 else float("nan"))
            out["sides"][f"{who}: {k}"] = st
    return out


def markdown(result: dict) -> str:
    head = ["n", "SD between infants", "MAE", "r", "ICC(A,1)", "bias", "LoA low", "LoA high"]
    parts = [f"{result['detected']} of {result['faces']} faces found.", "",
             "Measured by the tool (verdict ok or imprecise):", "",
             C.markdown_table(["ratio", "n measured", "of them imprecise", *head[1:]],
                            [[r, *_row(s, [s["imprecise"]])]
                             for r, s in result["measured"].items()]),
             "", "Every found face, no gates:", "",
             C.markdown_table(["ratio", *head],
                            [[r, *_row(s)] for r, s in result["ungated"].items()]),
             "", "Right vs left eye (labels: the ceiling; model: its own consistency):", "",
             C.markdown_table(["check", *head, "ceiling r of the 2-eye mean"],
                            [[k, *_row(s), s["ceiling_r_of_mean"]]
                             for k, s in result["sides"].items()])]  # fmt: skip
    return "\n".join(parts)


def print_spread(data: str) -> int:
    faces = C.labelled_faces(data, ",".join(spread.CALIBRATION_SETS))
    got = between_infant_sd(f.gt for f in faces)
    print(f"robust SD between infants, {len(faces)} faces of {','.join(spread.CALIBRATION_SETS)}")
    print(C.markdown_table(["ratio", "SD", "in fas_tf.spread"],
                         [[r, v, spread.BETWEEN_INFANT_SD.get(r)] for r, v in got.items()], 4))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_model_flags(ap)
    ap.add_argument("--gt_crops", action="store_true",
                    help="the model on the labels' framing-rule square instead of the detector")
    ap.add_argument("--plot", help="Bland-Altman PNG of the measured ratios vs the labels")
    ap.add_argument("--ceiling_plot", help="Bland-Altman PNG of the labels' right vs left eye")
    ap.add_argument("--spread", action="store_true",
                    help="print the spread between infants on the calibration sets and exit")
    args = ap.parse_args(argv)
    if args.spread:
        return print_spread(args.data)
    faces = C.labelled_faces(args.data, args.sets, args.limit, args.exclude)
    preds = {}
    if args.model:
        preds = predictions(faces, C.load_model(args.model, args.flip, args.decoder), args.gt_crops,
                            args.refine, args.upright, log=lambda s: print(s, file=sys.stderr))
    result = evaluate(faces, preds)
    print(markdown(result) if args.model else C.markdown_table(
        ["labels' check", "n", "SD between infants", "MAE", "r", "ICC(A,1)", "bias", "LoA low",
         "LoA high", "ceiling r of the 2-eye mean"],
        [[k, *_row(s), s["ceiling_r_of_mean"]] for k, s in result["sides"].items()
         if k.startswith("labels")]))  # fmt: skip
    source = "labels' crops" if args.gt_crops else f"photos ({DETECTOR})"
    levers = ", ".join(n for n, on in (("flip", args.flip), ("upright", args.upright)) if on)
    if args.plot and args.model:
        plot_bland_altman(result["pairs"]["measured"], args.plot,
                          f"{'/'.join(Path(args.model).parts[-2:])}"
                          f"{f' ({levers})' if levers else ''} on {args.sets}, from "
                          f"{source}: model - labels",
                          ("labels", "model"))  # fmt: skip
    if args.ceiling_plot:
        plot_bland_altman(result["pairs"]["labels_sides"], args.ceiling_plot,
                          f"labels of {args.sets}: left eye - right eye",
                          ("right eye", "left eye"))  # fmt: skip
    pairs = result.pop("pairs")
    del pairs
    C.write_json(args.output, {"model": args.model, "sets": args.sets, "exclude": args.exclude,
                             "gt_crops": args.gt_crops, "flip": args.flip, "refine": args.refine,
                             "upright": args.upright, **result})  # fmt: skip
    return 0


if __name__ == "__main__":
    C.run_main(main)
