"""Is the training's proportion warp one-to-one, and does its image land where its labels go?

For every labelled face of ``--data`` (scaled so its landmarks span ``--size`` x 0.7 px, as in a
128 px training crop) and ``--draws`` factor draws each (log-uniform in [1/S, S], S =
``--stretch``, the training's distribution): the smallest Jacobian determinant of the warp's
map on a 1 px grid over the face (<= 0: the map folds, no image can match its labels) and the
largest residual |p + d(p) - q| of the inverse that resamples the image, for two constructions:

* ``stages``: :func:`fas_tf.face_warp.proportion_stages` inverted by :func:`fas_tf.face_warp.invert`
  (what training does since commit 387cb09);
* ``summed``: the four stretches added into one map (eyes amplitude-corrected together) and
  inverted by fixed-point iteration p = q - d(p), 30 steps (what it did before).

    python benchmarks/proportion_warp_check.py --data=../shared/data/infanface-train --draws=10
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fas_tf import face_warp as W  # noqa: E402
from fas_tf.data.faces import read_pts  # noqa: E402


def min_det(grid: np.ndarray, stages) -> float:
    moved = W.warp_points_staged(grid, stages)
    dx, dy = np.gradient(moved, axis=1), np.gradient(moved, axis=0)
    return float((dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0]).min())


def residual(grid: np.ndarray, stages, fixed_point: bool) -> float:
    p = grid
    for stage in reversed(stages):
        if fixed_point:
            q, p = p, p.copy()
            for _ in range(30):
                p = q - W.displacement(p, stage)
        else:
            p = W.invert(p, stage)
    return float(np.abs(W.warp_points_staged(p, stages) - grid).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--stretch", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = {"stages": [], "summed": []}
    for path in sorted(Path(args.data).glob("*.pts")):
        pts = read_pts(path).astype(np.float64)
        centre, span = pts.mean(0), np.ptp(pts, axis=0).max()
        pts = (pts - centre) * (0.7 * args.size / span) + args.size / 2
        axis = np.arange(0.0, args.size)
        grid = np.stack(np.meshgrid(axis, axis), axis=-1)
        for _ in range(args.draws):
            f = np.exp(rng.uniform(-math.log(args.stretch), math.log(args.stretch), 4))
            try:
                summed = [W.measurement_stretches(pts, "pfl", f[:2])
                          + W.measurement_stretches(pts, "philtrum", f[2])
                          + W.measurement_stretches(pts, "upper_lip", f[3])]
                stages = W.proportion_stages(pts, f)
            except ValueError:
                continue
            rows["stages"].append((min_det(grid, stages), residual(grid, stages, False)))
            rows["summed"].append((min_det(grid, summed), residual(grid, summed, True)))
    print(f"{len(rows['stages'])} views ({args.draws} draws per face of {args.data}), "
          f"factors in [1/{args.stretch:g}, {args.stretch:g}], {args.size} px")
    for name, vals in rows.items():
        det, res = np.array(vals).T
        print(f"{name}: folds (min det <= 0) in {np.mean(det <= 0):.1%} of views; inverse "
              f"off by > 0.5 px in {np.mean(res > 0.5):.1%} (> 0.05 px: {np.mean(res > 0.05):.1%});"
              f" worst min det {det.min():.3f}, worst residual {res.max():.2f} px")


if __name__ == "__main__":
    main()
