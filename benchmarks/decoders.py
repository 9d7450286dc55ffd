"""Heatmap decoders compared on one trained model: the same heatmaps, decoded several ways.

``python benchmarks/decoders.py --model=RUN/student.keras --data=DIR --attributes=CSV
--sets=google2`` prints the one-pass NME (ground-truth framing, as ``fas_tf.evaluate``) of:

- ``taylor``: :func:`fas_tf.heatmaps.decode_heatmaps` (argmax + per-axis log-Taylor step);
- ``dark``: the same after blurring each heatmap with a Gaussian of ``--blur`` cells
  (DARK's modulation: a trained heatmap is not one clean Gaussian);
- ``local_mean``: mean of cell centres weighted by the heatmap in a ``--window`` square about
  the argmax (values below ``--floor`` x peak ignored).

No retraining: it answers whether decoding, rather than the network, limits a model.
``--ensemble=B.keras,C.keras`` averages those models' heatmaps with ``--model``'s first.
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags

flags.DEFINE_string("model", None, "student.keras", required=True)
flags.DEFINE_string("data", None, "labelled faces", required=True)
flags.DEFINE_string("attributes", None, "attributes CSV")
flags.DEFINE_string("sets", None, "comma list of image_set values")
flags.DEFINE_list("blur", ["0.5", "1.0", "1.5"], "DARK blur sigmas, in heatmap cells")
flags.DEFINE_list("window", ["3", "5", "7"], "local-mean windows, in heatmap cells (odd)")
flags.DEFINE_list("ensemble", [], "more student.keras files of the same geometry: their "
                  "heatmaps are averaged with --model's before decoding")
flags.DEFINE_float("floor", 0.1, "local mean: ignore cells below this fraction of the peak")
FLAGS = flags.FLAGS


def blurred(heatmaps: np.ndarray, sigma: float) -> np.ndarray:
    """(B, H, W, N) heatmaps blurred per channel with a Gaussian of ``sigma`` cells."""
    import cv2

    out = np.empty_like(heatmaps)
    for b in range(heatmaps.shape[0]):
        for k in range(heatmaps.shape[-1]):
            out[b, :, :, k] = cv2.GaussianBlur(heatmaps[b, :, :, k], (0, 0), sigma)
    return out


def local_mean(heatmaps: np.ndarray, stride: int, window: int, floor: float) -> np.ndarray:
    """(B, N, 2) crop-pixel points: heatmap-weighted cell centres about each argmax."""
    b, h, w, n = heatmaps.shape
    flat = heatmaps.reshape(b, h * w, n)
    idx = flat.argmax(axis=1)
    r = window // 2
    points = np.zeros((b, n, 2), np.float32)
    for i in range(b):
        for k in range(n):
            y0, x0 = divmod(int(idx[i, k]), w)
            ys = slice(max(y0 - r, 0), min(y0 + r + 1, h))
            xs = slice(max(x0 - r, 0), min(x0 + r + 1, w))
            patch = heatmaps[i, ys, xs, k]
            weight = np.where(patch >= floor * patch.max(), patch, 0.0)
            gy, gx = np.mgrid[ys, xs]
            total = weight.sum()
            points[i, k] = (weight * gx).sum() / total, (weight * gy).sum() / total
    return (points + 0.5) * stride - 0.5


def main(argv: list[str]) -> None:
    del argv
    import keras

    from fas_tf.data import load_faces, parse_sets, read_attributes, stems_in_sets
    from fas_tf.evaluate import evaluate_predictions
    from fas_tf.framing import framed_crops
    from fas_tf.heatmaps import decode_heatmaps
    from fas_tf.inference import load_student
    from fas_tf.student import student_geometry

    student = load_student(FLAGS.model)
    size, stride, _ = student_geometry(student)
    stems = None
    if FLAGS.sets:
        stems = stems_in_sets(read_attributes(FLAGS.attributes), parse_sets(FLAGS.sets))
    faces = load_faces(FLAGS.data, input_size=size, stems=stems)
    crops, gt = framed_crops(faces, size)
    maps = []
    for model in [student, *(load_student(path) for path in FLAGS.ensemble)]:
        if student_geometry(model) != student_geometry(student):
            raise app.UsageError("--ensemble models must share --model's input and stride")
        net = keras.Model(model.input, model.output["heatmaps"])
        maps.append(np.asarray(net.predict(crops, batch_size=16, verbose=0), np.float32))
    heatmaps = np.mean(maps, axis=0)

    def taylor(maps: np.ndarray) -> np.ndarray:
        return np.asarray(decode_heatmaps(maps, stride)[0])

    results = {"taylor": taylor(heatmaps)}
    for s in FLAGS.blur:
        results[f"dark_blur{s}"] = taylor(blurred(heatmaps, float(s)))
    for win in FLAGS.window:
        results[f"local_mean{win}"] = local_mean(heatmaps, stride, int(win), FLAGS.floor)
    rows = {}
    for name, pred in results.items():
        m = evaluate_predictions(pred, gt)
        rows[name] = {"nme": m["nme"], "fr_10": m["fr_10"], "per_face": m["per_face"]}
        print(f"{name:16s} NME {m['nme'] * 100:.2f}%  FR@0.10 {m['fr_10'] * 100:.1f}%  "
              f"n={m['n']}")
    print(json.dumps({k: round(v["nme"] * 100, 3) for k, v in rows.items()}))


if __name__ == "__main__":
    app.run(main)
