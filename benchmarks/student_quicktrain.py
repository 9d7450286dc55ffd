"""Short plain-MSE heatmap training of a student configuration (export development / trade-offs).

Not the real training (that is ``python -m fas_tf.train`` with the teacher regularizers): this
fits the bare student on heatmaps only, for a fixed wall-clock budget, so that export, int8
parity and the speed/accuracy trade-off of student sizes can be measured on a trained network.

``python benchmarks/student_quicktrain.py --out=/tmp/run_a05_128_64 --alpha=0.5 --input_size=128
--head_channels=64 --minutes=4``

Trains on the ``ads`` + ``youtube2`` InfAnFace images, validates on ``google2``; writes
``student.keras``, ``config.json`` and ``metrics.json`` (validation NME, interocular) to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "infanface-train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--input_size", type=int, default=128)
    parser.add_argument("--head_channels", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps "
                        "(the learning rate drops 10x for the last quarter)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--sigma", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from fas_tf.augment import AugmentConfig
    from fas_tf.data import load_faces, make_dataset, read_attributes
    from fas_tf.framing import framed_crops
    from fas_tf.landmarks import layout_for
    from fas_tf.metrics import per_sample_nme
    from fas_tf.student import build_student, inference_model

    keras.utils.set_random_seed(args.seed)
    attrs = read_attributes(Path(args.data) / "attributes.csv")
    train_stems = {s for s, r in attrs.items() if r["image_set"] != "google2"}
    val_stems = {s for s, r in attrs.items() if r["image_set"] == "google2"}
    train = load_faces(args.data, args.input_size, stems=train_stems)
    val = load_faces(args.data, args.input_size, stems=val_stems)
    layout = layout_for(68)
    ds = make_dataset(
        train, layout, args.input_size, sigma=args.sigma, batch_size=args.batch_size,
        training=True, augment=AugmentConfig(rotation=30.0), seed=args.seed, repeat=True,
    )
    student = build_student(68, args.input_size, args.alpha, args.head_channels)
    net = keras.Model(student.input, student.output["heatmaps"])
    opt = keras.optimizers.Adam(args.learning_rate)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(net(x, training=True) - y)) * 1000.0
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables))
        return loss

    start = time.time()
    budget = args.minutes * 60.0
    steps = 0
    for x, y in ds:
        loss = step(x, y["heatmaps"])
        steps += 1
        elapsed = time.time() - start
        if steps % 50 == 0:
            print(f"step {steps} loss {float(loss):.4f} {elapsed:.0f}s", flush=True)
        late = elapsed > budget * 0.75 or (args.steps and steps > args.steps * 0.75)
        if late and opt.learning_rate > args.learning_rate * 0.2:
            opt.learning_rate.assign(args.learning_rate * 0.1)
        if elapsed > budget or (args.steps and steps >= args.steps):
            break
    crops, gt = framed_crops(val, args.input_size)
    pred = inference_model(student).predict(crops, verbose=0, batch_size=32)["landmarks"]
    nme = float(np.mean(per_sample_nme(pred, gt)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    student.save(out / "student.keras")
    config = {k: v for k, v in vars(args).items() if k not in ("out", "data")}
    (out / "config.json").write_text(json.dumps({"config": config, "quicktrain": True}, indent=2))
    metrics = {"val_nme_google2": nme, "steps": steps, "seconds": time.time() - start}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps({**config, **metrics}))


if __name__ == "__main__":
    main()
