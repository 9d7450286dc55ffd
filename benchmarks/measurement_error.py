"""Error of the FAS screening ratios against ground truth (a measurement aid, not a diagnosis).

For every face with a ground-truth ``STEM.pts`` in ``--data``, predicted landmarks come from
(first that applies):

* ``--pred=FILE.json``: ``{stem: {"landmarks": [[x, y], ...68], "confidence": [...68]}}`` (or
  ``{stem: [[x, y], ...]}``);
* ``--model=PATH``: ``fas_tf.predict`` via the adapter in ``fas_tf.measure`` (face nearest to the
  ground truth);
* ``--noise=F``: ground truth + Gaussian noise of F * IOD per coordinate (no confidence);
  with ``--noise_from_confidence`` a confidence c ~ U(0.5, 1) is drawn per landmark and the noise
  follows the documented model sigma = IOD * (sigma_floor + k (1 - c)), which checks the
  uncertainty propagation (|z| should have a median of ~0.67);
* otherwise ground truth itself (the "GT vs GT" sanity mode: errors are 0).

Reported per ratio: the share of faces called not measurable, the mean absolute error (MAE) of
the ratio on the faces called ``ok`` (prediction vs ground truth computed without gates), the
MAE without any gating for comparison, and the median |z| = |error| / sigma. Face level: the
share called not measurable, and (with ``attributes.csv``) split by the InfAnFace "turned" flag.

    python benchmarks/measurement_error.py --data=../shared/data/infanface-train --noise=0.03
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fas_tf import measurements as M
from fas_tf.data import read_attributes, read_pts, stems_in_sets


def load_predictions(args, gts: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
    """stem -> (landmarks (68, 2), confidence (68,) or None)."""
    preds: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    if args.pred:
        raw = json.loads(Path(args.pred).read_text())
        for stem, v in raw.items():
            if isinstance(v, dict):
                preds[stem] = (np.asarray(v["landmarks"], float), v.get("confidence"))
            else:
                preds[stem] = (np.asarray(v, float), None)
        return preds
    if args.model:
        from fas_tf.measure import load_predictor

        predictor = load_predictor(args.model)
        for stem, gt in gts.items():
            image = next((p for p in Path(args.data).glob(f"{stem}.*") if p.suffix != ".pts"),
                         None)  # fmt: skip
            faces = predictor(image) if image else []
            if faces:
                best = min(faces, key=lambda f: np.linalg.norm(
                    np.mean(f["landmarks"], axis=0) - gt.mean(axis=0)))  # fmt: skip
                preds[stem] = (np.asarray(best["landmarks"], float), best.get("confidence"))
        return preds
    th = M.Thresholds()
    for stem, gt in gts.items():
        iod = float(np.linalg.norm(gt[45] - gt[36]))
        if args.noise_from_confidence:
            conf = rng.uniform(0.5, 1.0, size=68)
            sigma = iod * (th.sigma_floor + th.k * (1 - conf))
            preds[stem] = (gt + rng.normal(size=gt.shape) * sigma[:, None], conf)
        elif args.noise:
            preds[stem] = (gt + rng.normal(size=gt.shape) * args.noise * iod, None)
        else:
            preds[stem] = (gt.copy(), None)
    return preds


def evaluate(gts: dict, preds: dict, attributes: dict | None = None) -> dict:
    """Per-ratio MAE / not-measurable share / |z|, and face-level not-measurable shares."""
    per = {r: {"err": [], "err_all": [], "z": [], "nm": 0} for r in M.RATIOS}
    faces_nm, missing, turned = 0, 0, {"0": [0, 0], "1": [0, 0]}
    for stem, gt in gts.items():
        if stem not in preds:
            missing += 1
            faces_nm += 1
            for r in per.values():
                r["nm"] += 1
            continue
        pts, conf = preds[stem]
        truth = M.raw_measurements(gt)
        res = M.measure(pts, conf)
        raw = M.raw_measurements(pts)
        bad = res["face"]["verdict"] != "ok"
        faces_nm += bad
        if attributes and stem in attributes:
            flag = str(int(float(attributes[stem].get("turned", 0) or 0)))
            turned[flag][0] += bad
            turned[flag][1] += 1
        for name, acc in per.items():
            acc["err_all"].append(abs(raw[name] - truth[name]))
            e = res["ratios"][name]
            if e["verdict"] != "ok":
                acc["nm"] += 1
                continue
            err = abs(e["value"] - truth[name])
            acc["err"].append(err)
            acc["z"].append(err / e["sigma"] if e["sigma"] else np.inf)
    n = len(gts)
    share = faces_nm / n if n else float("nan")
    out = {"faces": n, "missing_predictions": missing, "face_not_measurable_share": share,
           "ratios": {}}  # fmt: skip
    if attributes:
        out["face_not_measurable_share_by_turned_flag"] = {
            k: (v[0] / v[1] if v[1] else None) for k, v in turned.items()}  # fmt: skip
    for name, acc in per.items():
        out["ratios"][name] = {
            "not_measurable_share": acc["nm"] / n if n else float("nan"),
            "n_ok": len(acc["err"]),
            "mae_ok": float(np.mean(acc["err"])) if acc["err"] else None,
            "mae_ungated": float(np.mean(acc["err_all"])) if acc["err_all"] else None,
            "median_abs_z": float(np.median(acc["z"])) if acc["z"] else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder with STEM.pts (and images)")
    ap.add_argument("--pred", help="JSON of predicted landmarks per stem")
    ap.add_argument("--model", help="trained model for fas_tf.predict")
    ap.add_argument("--noise", type=float, default=0.0, help="synthetic noise, fraction of IOD")
    ap.add_argument("--noise_from_confidence", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", default="", help="comma list of image_set values of "
                    "attributes.csv to keep (e.g. google2); default: all faces")
    ap.add_argument("--output", help="write the results as JSON here")
    args = ap.parse_args(argv)
    data = Path(args.data)
    gts = {}
    for p in sorted(data.glob("*.pts")):
        try:
            gt = read_pts(p)
            M.check_landmarks(gt)
        except (OSError, ValueError) as e:
            print(f"{p}: {e}", file=sys.stderr)
            continue
        gts[p.stem] = gt
    if not gts:
        print(f"{data}: no usable .pts files", file=sys.stderr)
        return 1
    attributes = None
    if (data / "attributes.csv").is_file():
        attributes = read_attributes(data / "attributes.csv")
    if args.sets:
        if attributes is None:
            print(f"{data}: --sets needs attributes.csv with an image_set column", file=sys.stderr)
            return 1
        keep = stems_in_sets(attributes, args.sets)
        gts = {s: g for s, g in gts.items() if s in keep}
        if not gts:
            print(f"{data}: no faces in sets {args.sets}", file=sys.stderr)
            return 1
    try:
        preds = load_predictions(args, gts, np.random.default_rng(args.seed))
    except Exception as e:  # e.g. the predictor is missing: one line, non-zero exit
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = evaluate(gts, preds, attributes)
    mode = ("pred " + args.pred if args.pred else "model " + args.model if args.model else
            "noise from confidence model" if args.noise_from_confidence else
            f"GT + noise {args.noise:g} IOD" if args.noise else "GT vs GT")  # fmt: skip
    print(f"{M.DISCLAIMER}\nmode: {mode}; faces: {res['faces']}; "
          f"missing predictions: {res['missing_predictions']}; face not measurable: "
          f"{100 * res['face_not_measurable_share']:.1f} %")  # fmt: skip
    if attributes:
        by = res["face_not_measurable_share_by_turned_flag"]
        print("  not measurable by InfAnFace 'turned' flag: " + ", ".join(
            f"turned={k}: {100 * v:.1f} %" for k, v in by.items() if v is not None))  # fmt: skip
    print(f"{'ratio':28s} {'not meas.':>9s} {'n ok':>5s} {'MAE ok':>8s} {'MAE ungated':>11s} "
          f"{'med |z|':>7s}")  # fmt: skip
    for name, r in res["ratios"].items():
        def f(v, w, p=4):
            return f"{v:{w}.{p}f}" if v is not None else f"{'-':>{w}s}"

        print(f"{name:28s} {100 * r['not_measurable_share']:8.1f}% {r['n_ok']:5d} "
              f"{f(r['mae_ok'], 8)} {f(r['mae_ungated'], 11)} {f(r['median_abs_z'], 7, 2)}")
    if args.output:
        Path(args.output).write_text(json.dumps({"mode": mode, **res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
