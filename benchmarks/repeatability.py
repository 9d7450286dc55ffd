"""Repeatability of the FAS ratios without labels: the same photo, re-taken.

Every labelled photo of ``--sets`` is shown to the model in ``--views`` (8) versions, each with
independent random changes a clinician re-taking the photo would make: the face re-framed (the
starting square shifted by up to +-5 % of its side and scaled by up to +-10 %), the camera turned
in plane by up to +-15 deg (the whole photo rotated about the face), JPEG quality 50-95,
brightness +-20 grey levels and contrast x0.8-1.2, and every second view mirrored (the
landmarks mapped back with left and right swapped, so the subject's right eye stays the right
eye). The labels only place the starting square (the framing rule of the labelled landmarks, as
a detector would; ``--detector`` runs the default detector, BlazeFace, on each view instead);
then ``--refine`` re-crop passes (default 1, as ``fas_tf.measure``), optionally ``--upright``
and ``--flip``.

Per ratio, over the faces with at least two values: the within-face SD, the SD between faces,
the repeatability ICC = between-face variance / total (one-way random effects,
:func:`fas_tf.agreement.icc_repeatability`) and the within-face SD over the spread between
infants of :mod:`fas_tf.spread`; once over the views the tool measures (verdict ok or
imprecise) and once over every view without gates. A measurement aid, not a diagnosis.

    python benchmarks/repeatability.py --data=../shared/data/infanface-train --sets=google2 \
        --model=runs/x/student.keras [--views=8] [--seed=0] [--output=rep.json]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import clinical_data as C  # noqa: E402
from fas_tf import measurements as M  # noqa: E402
from fas_tf.agreement import icc_repeatability  # noqa: E402
from fas_tf.framing import crop_box  # noqa: E402
from fas_tf.spread import BETWEEN_INFANT_SD  # noqa: E402


@dataclass(frozen=True)
class ViewChange:
    """One re-take: shift (fractions of the square's side), scale, rotation, photometry, mirror."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    degrees: float = 0.0
    jpeg: int = 0  # 0: no re-encoding
    brightness: float = 0.0
    contrast: float = 1.0
    mirror: bool = False


def draw_changes(rng: np.random.Generator, views: int, shift: float = 0.05, scale: float = 0.10,
                 degrees: float = 15.0) -> list[ViewChange]:
    """``views`` random re-takes; every second one mirrored."""
    return [ViewChange(dx=float(rng.uniform(-shift, shift)), dy=float(rng.uniform(-shift, shift)),
                       scale=float(1 + rng.uniform(-scale, scale)),
                       degrees=float(rng.uniform(-degrees, degrees)),
                       jpeg=int(rng.integers(50, 96)),
                       brightness=float(rng.uniform(-20, 20)),
                       contrast=float(rng.uniform(0.8, 1.2)), mirror=bool(v % 2))
            for v in range(views)]  # fmt: skip


def apply_change(image: np.ndarray, gt: np.ndarray, c: ViewChange) -> tuple[np.ndarray, tuple]:
    """The re-taken photo and its starting square (cx, cy, side, 0) around the moved labels."""
    h, w = image.shape[:2]
    cx, cy, side = crop_box(gt)
    rot = cv2.getRotationMatrix2D((cx, cy), c.degrees, 1.0)
    out = cv2.warpAffine(image, rot, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT_101)  # fmt: skip
    out = np.clip(out.astype(np.float32) * c.contrast + c.brightness + 128 * (1 - c.contrast),
                  0, 255).astype(np.uint8)  # fmt: skip
    if c.jpeg:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, c.jpeg])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    if c.mirror:
        out = np.ascontiguousarray(out[:, ::-1])
        cx = w - 1 - cx
    square = (cx + c.dx * side, cy + c.dy * side, side * c.scale, 0.0)
    return np.ascontiguousarray(out), square


def view_landmarks(image: np.ndarray, gt: np.ndarray, model, changes: list[ViewChange],
                   refine: int = 1, upright: bool = False, detector: bool = False) -> list:
    """(landmarks, confidence) per view in the subject's convention (mirrors swapped back);
    None for a view where ``detector`` finds no face."""
    from fas_tf.inference import mirror_permutation, mirrored_back

    perm = mirror_permutation(M.NUM_LANDMARKS)
    views = [apply_change(image, gt, c) for c in changes]
    if detector:
        got = []
        for (im, _), c in zip(views, changes, strict=True):
            near = gt.copy()
            if c.mirror:
                near[:, 0] = im.shape[1] - 1 - near[:, 0]
            got.append(C.end_to_end(im, model, near, refine, upright))
    else:
        pts, conf = C.in_square([v[0] for v in views], model, [v[1] for v in views], refine,
                              upright)  # fmt: skip
        got = list(zip(pts, conf, strict=True))
    out = []
    for (im, _), c, g in zip(views, changes, got, strict=True):
        if g is not None and c.mirror:
            p, q = mirrored_back(np.asarray(g[0])[None], np.asarray(g[1])[None], perm, im.shape[1])
            g = (p[0], q[0])
        out.append(g)
    return out


def repeatability(faces: list[C.Face], model, views: int = 8, seed: int = 0, refine: int = 1,
                  upright: bool = False, detector: bool = False, ratios=C.RATIOS) -> dict:
    """Per ratio: within/between-face SD and ICC over measured views and over every view."""
    from fas_tf.data import load_image

    measured: dict[str, list] = {r: [] for r in ratios}
    ungated: dict[str, list] = {r: [] for r in ratios}
    imprecise = dict.fromkeys(ratios, 0)
    rng = np.random.default_rng(seed)
    changes_used = []
    for face in faces:
        changes = draw_changes(rng, views)
        changes_used.append([asdict(c) for c in changes])
        got = view_landmarks(load_image(face.image), face.gt, model, changes, refine, upright,
                             detector)  # fmt: skip
        per_m = {r: [] for r in ratios}
        per_u = {r: [] for r in ratios}
        for g in got:
            if g is None:
                continue
            res, raw = M.measure(*g), M.raw_measurements(g[0])
            for r in ratios:
                per_u[r].append(raw[r])
                e = res["ratios"][r]
                if e["value"] is not None:
                    per_m[r].append(e["value"])
                    imprecise[r] += e["verdict"] == "imprecise"
        for r in ratios:
            measured[r].append(per_m[r])
            ungated[r].append(per_u[r])
    out: dict = {"faces": len(faces), "views": views, "measured": {}, "ungated": {}}
    for r in ratios:
        for key, groups in (("measured", measured[r]), ("ungated", ungated[r])):
            st = icc_repeatability(groups)
            st["within_sd_over_spread"] = st["within_sd"] / BETWEEN_INFANT_SD[r]
            out[key][r] = st
        out["measured"][r]["imprecise_views"] = imprecise[r]
    out["changes"] = changes_used
    return out


def markdown(result: dict) -> str:
    head = ["faces", "views", "within-face SD", "between-face SD", "ICC",
            "within SD / spread between infants"]  # fmt: skip
    keys = ("subjects", "values", "within_sd", "between_sd", "icc", "within_sd_over_spread")
    parts = []
    for key, title in (("measured", "Views the tool measures (verdict ok or imprecise):"),
                       ("ungated", "Every view, no gates:")):  # fmt: skip
        rows = [[r, *(s[k] for k in keys)] for r, s in result[key].items()]
        parts += [title, "", C.markdown_table(["ratio", *head], rows), ""]
    return "\n".join(parts).rstrip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_model_flags(ap)
    ap.add_argument("--views", type=int, default=8, help="re-takes per face")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random changes")
    ap.add_argument("--detector", action="store_true",
                    help="the default face detector (BlazeFace) on every view")
    args = ap.parse_args(argv)
    if args.views < 2:
        ap.error("--views: at least 2")
    faces = C.labelled_faces(args.data, args.sets, args.limit, args.exclude)
    model = C.load_model(args.model, args.flip, args.decoder)
    result = repeatability(faces, model, args.views, args.seed, args.refine, args.upright,
                           args.detector)  # fmt: skip
    print(markdown(result))
    C.write_json(args.output, {"model": args.model, "sets": args.sets, "exclude": args.exclude,
                             "flip": args.flip, "refine": args.refine, "upright": args.upright,
                             "detector": args.detector, "seed": args.seed, **result})  # fmt: skip
    return 0


if __name__ == "__main__":
    C.run_main(main)
