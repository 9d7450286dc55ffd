"""Calibrate the measurement gates of fas_tf.measurements on labelled infant faces.

A measurement aid, not a diagnosis. InfAnFace-train's ``attributes.csv`` flags each face as
``turned``, ``tilted``, ``occluded`` and ``expressive``; with the ground-truth ``.pts`` landmarks
this script

* fits the generic infant 3D head of :data:`fas_tf.measurement.pose.HEAD_MODEL` (``--fit_head``:
  rigid structure from motion over the calibration faces, printed as Python);
* sweeps every gate threshold and writes, per gate, the share of faces kept among the faces
  labelled all-false (turned = tilted = occluded = expressive = 0) and the share refused among the
  faces carrying the flag the gate is for (an ROC over the threshold);
* reports the shares at the chosen operating point (the defaults of
  :class:`fas_tf.measurements.Thresholds`) on the calibration faces (image sets ads + youtube2)
  and on the held-out faces (google2), which were not used to fit the head model or pick any
  threshold;
* optionally (``--contact_sheet=DIR``) draws a contact sheet of the all-false faces that are
  refused, with their reasons, OUTSIDE the repository (the photos are licensed; never commit it).

    python benchmarks/measure_calibration.py --data=../shared/data/infanface-train \
        --out_png=docs/measure_calibration.png --out_md=docs/measure_calibration.md \
        [--model=student.keras] [--contact_sheet=/outside/the/repo]

With ``--model``, the held-out faces are also measured with that model's predicted landmarks
(through ``fas_tf.predict``, as benchmarks/measurement_error.py does).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fas_tf import measurements as M
from fas_tf.data import read_attributes, read_pts
from fas_tf.landmarks import layout_for
from fas_tf.measurement import pose as P

FLAGS = ("turned", "tilted", "occluded", "expressive")
CALIBRATION_SETS = ("ads", "youtube2")
HELD_OUT_SETS = ("google2",)
KEEP_TARGET = 0.95  # an operating point keeps at least this share of all-false faces per gate


@dataclass
class Face:
    stem: str
    image_set: str
    flags: dict[str, bool]
    pts: np.ndarray

    @property
    def all_false(self) -> bool:
        return not any(self.flags.values())


def load_faces(data: Path) -> list[Face]:
    """Every face of attributes.csv with its ground-truth landmarks."""
    attrs = read_attributes(data / "attributes.csv")
    faces = []
    for stem, row in sorted(attrs.items()):
        pts_path = data / f"{stem}.pts"
        if not pts_path.is_file():
            print(f"{pts_path}: missing, skipped", file=sys.stderr)
            continue
        flags = {k: bool(float(row.get(k) or 0)) for k in FLAGS}
        faces.append(Face(stem, row["image_set"], flags, read_pts(pts_path)))
    return faces


def fit_head_model(shapes: list[np.ndarray]) -> np.ndarray:
    """Mean 3D head (68, 3) in IODs from 2D shapes: rigid structure from motion.

    Tomasi-Kanade: the roll-normalized, centred, IOD-scaled 2D shapes are stacked into a
    (2F, 68) matrix whose rank-3 factorization gives affine cameras and a shape up to an
    affine transform; the metric upgrade finds the 3x3 Q making every camera's two rows
    orthogonal with equal norms; the shape is then rotated to the mean frontal view,
    oriented with the nose tip in front, mirror-symmetrized and scaled to IOD = 1.
    """
    rows = []
    for p in shapes:
        p = p - p.mean(axis=0)
        e = p[45] - p[36]
        s = float(np.hypot(*e))
        c, si = e / s
        rows.append((p @ np.array([[c, -si], [si, c]]) / s).T)
    w = np.concatenate(rows, axis=0)
    u, sv, vt = np.linalg.svd(w, full_matrices=False)
    motion, shape = u[:, :3] * sv[:3], vt[:3]

    def sym(a, b):  # coefficients of a^T L b in the 6 unknowns of the symmetric L
        return np.array([a[0] * b[0], a[0] * b[1] + a[1] * b[0], a[0] * b[2] + a[2] * b[0],
                         a[1] * b[1], a[1] * b[2] + a[2] * b[1], a[2] * b[2]])  # fmt: skip

    lhs, rhs = [], []
    for a, b in zip(motion[0::2], motion[1::2], strict=True):
        lhs += [sym(a, a) - sym(b, b), sym(a, b)]
        rhs += [0.0, 0.0]
    lhs.append(sym(motion[0], motion[0]))
    rhs.append(1.0)
    x = np.linalg.lstsq(np.array(lhs), np.array(rhs), rcond=None)[0]
    big_l = np.array([[x[0], x[1], x[2]], [x[1], x[3], x[4]], [x[2], x[4], x[5]]])
    ev, vec = np.linalg.eigh(big_l)
    head = np.linalg.inv(vec @ np.diag(np.sqrt(np.clip(ev, 1e-12, None)))) @ shape
    view = w.reshape(-1, 2, w.shape[1]).mean(axis=0) @ np.linalg.pinv(head)
    a = view[0] / np.linalg.norm(view[0])
    b = view[1] - a * (a @ view[1])
    b /= np.linalg.norm(b)
    head = (np.stack([a, b, np.cross(a, b)]) @ head).T
    if head[30, 2] < head[0, 2]:  # the nose tip is in front of the jaw
        head[:, 2] *= -1
    perm = layout_for(68).flip_permutation()
    head = (head + head[perm] * np.array([-1.0, 1.0, 1.0])) / 2
    head -= head.mean(axis=0)
    return head / np.linalg.norm(head[45] - head[36])


def cues(face: Face, th: M.Thresholds) -> dict[str, float]:
    """The quantities the gates threshold (ground truth: no confidences)."""
    pose = M.estimate_pose(face.pts, None, th.min_confidence, th.sigma_floor, th.k,
                           th.camera_distance)  # fmt: skip
    eyes = M.eye_opening(face.pts)
    expr = M.expression(face.pts)
    return {"yaw": abs(pose["yaw_deg"]), "pitch": abs(pose["pitch_deg"]),
            "eye_opening": min(eyes.values()), "mouth_open": expr["mouth_open"],
            "brow_raise": expr["brow_raise"]}  # fmt: skip


# gate -> (cue, threshold field, refused when the cue is above (True) or below (False), the flag
# whose faces should be refused, sweep)
GATES = {
    "yaw": ("yaw", "max_yaw_deg", True, "turned", np.arange(0.0, 60.5, 0.5)),
    "pitch": ("pitch", "max_pitch_deg", True, "tilted", np.arange(0.0, 60.5, 0.5)),
    "eyes": ("eye_opening", "min_eye_opening", False, "expressive", np.arange(0.0, 0.5, 0.005)),
    "mouth": ("mouth_open", "max_mouth_open", True, "expressive", np.arange(0.0, 1.0, 0.005)),
    "brows": ("brow_raise", "max_brow_raise", True, "expressive", np.arange(0.1, 0.8, 0.005)),
}


def roc(faces: list[Face], table: list[dict], gate: str) -> tuple[np.ndarray, np.ndarray]:
    """Kept share among all-false faces and refused share among flagged faces, per threshold."""
    cue, _, above, flag, sweep = GATES[gate]
    neg = np.array([c[cue] for f, c in zip(faces, table, strict=True) if f.all_false])
    pos = np.array([c[cue] for f, c in zip(faces, table, strict=True) if f.flags[flag]])
    if above:
        kept = np.array([np.mean(neg <= t) for t in sweep])
        refused = np.array([np.mean(pos > t) for t in sweep])
    else:
        kept = np.array([np.mean(neg >= t) for t in sweep])
        refused = np.array([np.mean(pos < t) for t in sweep])
    return kept, refused


def suggest(kept: np.ndarray, refused: np.ndarray, sweep: np.ndarray, above: bool) -> float:
    """The threshold refusing the most flagged faces while keeping >= KEEP_TARGET all-false."""
    ok = np.flatnonzero(kept >= KEEP_TARGET)
    best = ok[np.argmax(refused[ok])] if len(ok) else int(np.argmax(kept))
    # among ties, the most lenient threshold
    ties = ok[refused[ok] == refused[best]] if len(ok) else [best]
    return float(sweep[max(ties)] if above else sweep[min(ties)])


def camera_distance_auc(faces: list[Face], th: M.Thresholds) -> dict[float, float]:
    """ROC AUC of |yaw| (all-false vs turned) for a few camera distances (IODs)."""
    out = {}
    for dist in (2.0, 4.0, 8.0, 1000.0):
        t = M.Thresholds(**{**asdict(th), "camera_distance": dist})
        neg = [cues(f, t)["yaw"] for f in faces if f.all_false]
        pos = [cues(f, t)["yaw"] for f in faces if f.flags["turned"]]
        out[dist] = float(np.mean([[p > n for n in neg] for p in pos]))
    return out


def model_yaw_limit(ratio: str, max_error: float = 0.05) -> float:
    """Largest yaw (deg, 0.5 steps) at which ``ratio`` on HEAD_MODEL is off by <= max_error."""
    def view(yaw):
        y = math.radians(yaw)
        rot = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
        return M.raw_measurements((rot @ P.HEAD_MODEL.T).T[:, :2] * 100)

    ref = view(0.0)[ratio]
    for yaw in np.arange(0.0, 45.0, 0.5):
        if abs(view(yaw)[ratio] / ref - 1) > max_error:
            return float(yaw - 0.5)
    return 45.0


def outcome(faces: list[Face], th: M.Thresholds, preds: dict | None = None) -> dict:
    """Verdicts at the operating point: shares among all-false and flagged faces, reasons.

    ``preds`` (stem -> (landmarks, confidence)) replaces the ground truth; a face without a
    prediction (no face detected) counts as refused with the code ``no_face``.
    """
    if preds is None:
        res = {f.stem: M.measure(f.pts, thresholds=th) for f in faces}
    else:
        missing = M.measure(np.zeros((68, 2)))  # every value refused (degenerate)
        missing["face"]["reason_codes"] = ["no_face"]
        res = {f.stem: M.measure(*preds[f.stem], thresholds=th) if f.stem in preds else missing
               for f in faces}  # fmt: skip
    af = [f for f in faces if f.all_false]
    out: dict = {"faces": len(faces), "all_false": len(af)}
    for name in ("pfl_mean_to_icd", "pfl_mean_to_ocd", "icd_to_ocd", "philtrum_to_face_height",
                 "upper_lip_to_mouth_width"):  # fmt: skip
        out[f"ok_{name}"] = (sum(res[f.stem]["ratios"][name]["verdict"] == "ok" for f in af),
                             len(af))  # fmt: skip
    for flag in FLAGS:
        flagged = [f for f in faces if f.flags[flag]]
        pose = sum(bool(M.POSE_CODES & set(res[f.stem]["face"]["reason_codes"]))
                   for f in flagged)  # fmt: skip
        pfl = sum(res[f.stem]["ratios"]["pfl_mean_to_icd"]["verdict"] != "ok" for f in flagged)
        out[f"{flag}_pose_refused"] = (pose, len(flagged))
        out[f"{flag}_pfl_refused"] = (pfl, len(flagged))
    reasons: dict[str, int] = {}
    for f in af:
        for code in res[f.stem]["ratios"]["pfl_mean_to_icd"]["reason_codes"]:
            reasons[code] = reasons.get(code, 0) + 1
    out["all_false_pfl_reasons"] = reasons
    out["refused_all_false"] = [(f.stem, res[f.stem]["ratios"]["pfl_mean_to_icd"]["reasons"])
                                for f in af
                                if res[f.stem]["ratios"]["pfl_mean_to_icd"]["verdict"] != "ok"]
    out["results"] = res
    return out


def plot(faces, tables, th, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(GATES), figsize=(3.1 * len(GATES), 3.3))
    for ax, (gate, (_, field, _, flag, sweep)) in zip(axes, GATES.items(), strict=True):
        for split, style in (("calibration", "-"), ("held-out", "--")):
            fs, tab = faces[split], tables[split]
            kept, refused = roc(fs, tab, gate)
            ax.plot(1 - kept, refused, style, label=f"{split} (n={sum(f.all_false for f in fs)}"
                    f"/{sum(f.flags[flag] for f in fs)})")  # fmt: skip
            i = int(np.argmin(np.abs(sweep - getattr(th, field))))
            ax.plot(1 - kept[i], refused[i], "o", color=ax.lines[-1].get_color())
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set_title(f"{gate}: {field} = {getattr(th, field):g}", fontsize=9)
        ax.set_xlabel("refused among all-false faces", fontsize=8)
        ax.set_ylabel(f"refused among '{flag}' faces", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def pct(pair: tuple[int, int]) -> str:
    n, d = pair
    return f"{100 * n / d:.0f} % ({n}/{d})" if d else "-"


def markdown(faces, tables, outcomes, th, cam_auc) -> str:
    lines = [
        "# Measurement gates calibrated on labelled infant faces",
        "",
        "Regenerate: `python benchmarks/measure_calibration.py "
        "--data=../shared/data/infanface-train --out_png=docs/measure_calibration.png "
        "--out_md=docs/measure_calibration.md [--model=student.keras]` (the last section "
        "needs a model; see docs/measure.md for the one used). "
        "**A measurement aid, not a diagnosis.**",
        "",
        "Data: InfAnFace-train, ground-truth 68-point landmarks and the annotators' flags "
        "(`turned`, `tilted`, `occluded`, `expressive`). *All-false* = none of the four flags. "
        f"Calibration faces: image sets {', '.join(CALIBRATION_SETS)} "
        f"({len(faces['calibration'])} faces); the 3D head model and every threshold were "
        f"chosen on them only. Held-out faces: {', '.join(HELD_OUT_SETS)} "
        f"({len(faces['held-out'])} faces), not used for any choice. (The quick landmark model "
        "used for the predicted-landmark check is trained on the calibration sets too, so "
        "google2 is held out for both.)",
        "",
        "Rule for each operating point: the threshold refusing the most flagged faces while "
        f"keeping at least {100 * KEEP_TARGET:.0f} % of the all-false calibration faces at that "
        "gate (among ties, the most lenient).",
        "",
        "![ROC per gate](measure_calibration.png)",
        "",
        "| gate | cue | flag refused | threshold (default) | suggested by the rule | "
        "all-false kept, calib. | flagged refused, calib. | all-false kept, held-out | "
        "flagged refused, held-out |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for gate, (cue, field, above, flag, sweep) in GATES.items():
        k_c, r_c = roc(faces["calibration"], tables["calibration"], gate)
        k_h, r_h = roc(faces["held-out"], tables["held-out"], gate)
        i = int(np.argmin(np.abs(sweep - getattr(th, field))))
        lines.append(
            f"| {gate} | {cue} | {flag} | `{field}` = {getattr(th, field):g} | "
            f"{suggest(k_c, r_c, sweep, above):g} | {100 * k_c[i]:.0f} % | {100 * r_c[i]:.0f} % |"
            f" {100 * k_h[i]:.0f} % | {100 * r_h[i]:.0f} % |"
        )
    lines += [
        "",
        f"Other parameters: `camera_distance` = {th.camera_distance:g} IODs (ROC AUC of |yaw|, "
        "all-false vs turned, all 210 faces: "
        + ", ".join(f"{d:g}: {a:.3f}" for d, a in cam_auc.items())
        + f"); `max_yaw_unilateral_deg` = {th.max_yaw_unilateral_deg:g} and "
        f"`max_yaw_mixed_deg` = {th.max_yaw_mixed_deg:g}: from the head model, not from a flag "
        "(the yaw at which a single eye's PFL/ICD, resp. upper lip / mouth width, is off by 5 % "
        f"in an orthographic view of HEAD_MODEL: {model_yaw_limit('pfl_right_to_icd'):g} and "
        f"{model_yaw_limit('upper_lip_to_mouth_width'):g} deg); "
        f"`min_interocular_px` = {th.min_interocular_px:g} and the uncertainty gate are not "
        "label-calibrated (pixels and the noise model).",
        "",
        "## Verdicts at the operating point (ground-truth landmarks)",
        "",
        "| | calibration | held-out | all 210 |",
        "|---|---|---|---|",
    ]
    keys = [("all-false faces with `ok` pfl_mean_to_icd", "ok_pfl_mean_to_icd"),
            ("all-false faces with `ok` pfl_mean_to_ocd", "ok_pfl_mean_to_ocd"),
            ("all-false faces with `ok` icd_to_ocd", "ok_icd_to_ocd"),
            ("all-false faces with `ok` philtrum_to_face_height", "ok_philtrum_to_face_height"),
            ("all-false faces with `ok` upper_lip_to_mouth_width", "ok_upper_lip_to_mouth_width"),
            ("turned faces refused with a pose reason", "turned_pose_refused"),
            ("tilted faces refused with a pose reason", "tilted_pose_refused"),
            ("expressive faces: pfl_mean_to_icd refused", "expressive_pfl_refused"),
            ("occluded faces: pfl_mean_to_icd refused", "occluded_pfl_refused")]  # fmt: skip
    for label, key in keys:
        lines.append(f"| {label} | " + " | ".join(
            pct(outcomes[s][key]) for s in ("calibration", "held-out", "all")) + " |")  # fmt: skip
    lines += ["", "Reasons given for the all-false faces whose pfl_mean_to_icd is refused (all "
              "210): " + (", ".join(f"{k} {v}" for k, v in
                                    sorted(outcomes["all"]["all_false_pfl_reasons"].items()))
                          or "none") + ".", ""]  # fmt: skip
    return "\n".join(lines)


def predicted_markdown(p: dict) -> str:
    """The held-out verdicts with predicted landmarks, as a markdown section."""
    mae = p["mae_pfl_mean_to_icd"]
    return "\n".join([
        f"## Verdicts with predicted landmarks (held-out {', '.join(HELD_OUT_SETS)})", "",
        f"Model `{p['model']}` through `fas_tf.predict` (MTCNN + landmarks, the face nearest to "
        f"the ground truth); a matching face was found in {p['detected'][0]} of "
        f"{p['detected'][1]} images (the others count as refused).", "",
        "| | predicted landmarks |", "|---|---|",
        f"| all-false faces with `ok` pfl_mean_to_icd | {pct(p['ok_pfl_mean_to_icd'])} |",
        f"| all-false faces with `ok` icd_to_ocd | {pct(p['ok_icd_to_ocd'])} |",
        f"| turned faces refused with a pose reason | {pct(p['turned_pose_refused'])} |",
        f"| MAE of the `ok` pfl_mean_to_icd vs ground truth (all held-out faces) | "
        f"{'-' if mae is None else f'{mae:.3f}'} |", ""])  # fmt: skip


def contact_sheet(data: Path, entries: list[tuple[str, list[str]]], path: Path) -> None:
    """Faces with their reasons, one tile each (licensed photos: write OUTSIDE the repository)."""
    import cv2

    from fas_tf.data import load_image

    tiles = []
    for stem, reasons in entries:
        image = next((p for p in data.glob(f"{stem}.*") if p.suffix.lower() != ".pts"), None)
        if image is None:
            continue
        img = cv2.cvtColor(load_image(image), cv2.COLOR_RGB2BGR)
        pts = read_pts(data / f"{stem}.pts")
        x0, y0 = np.maximum(pts.min(0) - 20, 0).astype(int)
        x1, y1 = pts.max(0).astype(int) + 20
        crop = img[y0:y1, x0:x1]
        for p in pts - [x0, y0]:
            cv2.circle(crop, (round(p[0]), round(p[1])), 1, (0, 255, 255), -1)
        crop = cv2.resize(crop, (240, round(240 * crop.shape[0] / max(crop.shape[1], 1))))[:240]
        tile = np.full((330, 240, 3), 255, np.uint8)
        tile[: crop.shape[0]] = crop
        cv2.putText(tile, stem[:30], (2, 254), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        for i, r in enumerate(reasons[:4]):
            cv2.putText(tile, r[:40], (2, 272 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                        (0, 0, 180), 1)  # fmt: skip
        tiles.append(tile)
    if not tiles:
        return
    cols = 5
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    sheet = np.vstack([np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="InfAnFace folder: images, .pts, attributes.csv")
    ap.add_argument("--out_png", help="ROC figure (e.g. docs/measure_calibration.png)")
    ap.add_argument("--out_md", help="markdown table (e.g. docs/measure_calibration.md)")
    ap.add_argument("--fit_head", action="store_true",
                    help="print HEAD_MODEL fitted on the calibration faces and exit")
    ap.add_argument("--model", help="also report verdicts with this model's predicted "
                    "landmarks (fas_tf.predict) on the held-out faces")
    ap.add_argument("--contact_sheet", help="folder OUTSIDE the repository for contact sheets "
                    "of refused all-false faces and of the faces with the least open eyes")
    args = ap.parse_args(argv)
    data = Path(args.data)
    faces_all = load_faces(data)
    faces = {"calibration": [f for f in faces_all if f.image_set in CALIBRATION_SETS],
             "held-out": [f for f in faces_all if f.image_set in HELD_OUT_SETS],
             "all": faces_all}  # fmt: skip
    if args.fit_head:
        head = fit_head_model([f.pts for f in faces["calibration"]])
        print("HEAD_MODEL = np.array([")
        for i in range(0, 68, 3):
            row = head[i : i + 3]
            print("    " + " ".join(f"({x:+.3f}, {y:+.3f}, {z:+.3f})," for x, y, z in row))
        print("])")
        return 0
    th = M.Thresholds()
    tables = {k: [cues(f, th) for f in fs] for k, fs in faces.items()}
    outcomes = {k: outcome(fs, th) for k, fs in faces.items()}
    for gate, (_, field, above, _, sweep) in GATES.items():
        kept, refused = roc(faces["calibration"], tables["calibration"], gate)
        print(f"{gate}: {field} = {getattr(th, field):g} (rule suggests "
              f"{suggest(kept, refused, sweep, above):g})")  # fmt: skip
    for k, o in outcomes.items():
        print(k, {key: v for key, v in o.items() if key not in ("results", "refused_all_false")})
    for stem, reasons in outcomes["all"]["refused_all_false"]:
        print("refused all-false:", stem, "|", "; ".join(reasons))
    predicted = None
    if args.model:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from measurement_error import load_predictions

        held = {f.stem: f.pts for f in faces["held-out"]}
        ns = argparse.Namespace(pred=None, model=args.model, data=str(data))
        preds = load_predictions(ns, held, np.random.default_rng(0))
        predicted = outcome(faces["held-out"], th, preds)
        errors = [abs(predicted["results"][s]["ratios"]["pfl_mean_to_icd"]["value"]
                      - M.raw_measurements(held[s])["pfl_mean_to_icd"])
                  for s in preds
                  if predicted["results"][s]["ratios"]["pfl_mean_to_icd"]["verdict"] == "ok"]
        predicted["model"] = args.model
        predicted["detected"] = (len(preds), len(held))
        predicted["mae_pfl_mean_to_icd"] = float(np.mean(errors)) if errors else None
        print("predicted (held-out)", {k: v for k, v in predicted.items()
                                       if k not in ("results", "refused_all_false")})  # fmt: skip
    if args.out_png:
        plot(faces, tables, th, Path(args.out_png))
    if args.out_md:
        md = markdown(faces, tables, outcomes, th, camera_distance_auc(faces_all, th))
        if predicted:
            md += predicted_markdown(predicted)
        Path(args.out_md).write_text(md)
    if args.contact_sheet:
        out = Path(args.contact_sheet)
        contact_sheet(data, outcomes["all"]["refused_all_false"], out / "refused_all_false.png")
        by_eye = sorted(faces_all, key=lambda f: min(M.eye_opening(f.pts).values()))[:20]
        res = outcomes["all"]["results"]
        contact_sheet(data, [(f.stem, [f"EAR {min(M.eye_opening(f.pts).values()):.2f}",
                                       "pfl_mean_to_icd: " + res[f.stem]["ratios"]
                                       ["pfl_mean_to_icd"]["verdict"]]
                                      + res[f.stem]["ratios"]["pfl_mean_to_icd"]["reasons"])
                             for f in by_eye], out / "least_open_eyes.png")  # fmt: skip
        ok = [f for f in faces_all if res[f.stem]["ratios"]["pfl_mean_to_icd"]["verdict"] == "ok"]
        ok = sorted(ok, key=lambda f: min(M.eye_opening(f.pts).values()))[:15]
        contact_sheet(data, [(f.stem, [f"EAR {min(M.eye_opening(f.pts).values()):.2f}",
                                       "pfl_mean_to_icd: ok"]) for f in ok],
                      out / "ok_least_open_eyes.png")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
