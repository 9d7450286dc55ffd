"""Upright re-crop passes by a second model: the first pass of one model, upright passes of another.

``python benchmarks/upright_second_model.py FIRST/student.keras SECOND/student.keras
[--data=../shared/data/infanface-train] [--sets=google2]``

Measures the "train on upright crops" lever of the accuracy work: a model trained with
``--upright`` (true eyes level, small rotation) cannot find a tilted face's angle itself, so its
crops come from the first pass of a rotation-robust model (as in an app's two-pass loop).
Prints NME and FR@0.10 for 1 and 2 upright passes, without and with test-time flip.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "infanface-train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--sets", default="google2")
    args = parser.parse_args()

    from fas_tf.augment import center_crop_offset
    from fas_tf.data import framed_crops, load_faces, read_attributes, stems_in_sets
    from fas_tf.evaluate import evaluate_predictions
    from fas_tf.inference import load_landmarker, recrop

    attrs = read_attributes(Path(args.data) / "attributes.csv")
    first = load_landmarker(args.first)
    faces = load_faces(args.data, input_size=first.input_size,
                       stems=stems_in_sets(attrs, args.sets.split(",")))
    crops, gt = framed_crops(faces, first.input_size)
    pred, _ = first.predict(crops)
    off = center_crop_offset(first.input_size)
    for flip in (False, True):
        second = load_landmarker(args.second, flip=flip)
        for passes in (1, 2):
            found, _ = recrop(list(faces.canvases), second, pred + off, passes, True)
            m = evaluate_predictions(found - off, gt, "interocular", {})
            print(f"{passes} upright pass(es){' + flip' if flip else ''}: NME "
                  f"{100 * m['nme']:.2f}% FR@0.10 {100 * m['fr_10']:.1f}% n={m['n']}")


if __name__ == "__main__":
    main()
