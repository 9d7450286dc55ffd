"""Steady-state training speed (images/s) of the real input pipeline + step, online vs cached
teacher, and the teacher cache's build time and size.

    python benchmarks/train_pipeline_throughput.py [--data=../shared/data/infanface-train]
        [--train_sets=ads,youtube2] [--input_size=96] [--batch_size=16] [--epochs=4]
        [--views=16] [--build_views=16,64] [--arms=plain,facenet,facenet_cached,dlib,dlib_cached]
        [--facenet_weights=PATH] [--student=mobilenetv2] [--rounds=1] [--proportion_warp=0.5]

Each arm trains the student (``--student``: MobileNetV2 0.5 with head 64, the 96 px mobile
student, or ``dlib_transfer``, the default of ``fas_tf.train``) with ``model.fit`` on the
training pipeline of :mod:`fas_tf.train` (:func:`fas_tf.data.make_dataset`, all four
regularizers with a teacher) for ``--epochs`` epochs; the first epoch (tracing) is dropped and
images/s is faces / median epoch time of the others. Cached arms replay ``--views`` views per
face. An online arm with ``_warp`` appended (``plain_warp``, ``facenet_warp``, ``dlib_warp``)
is that arm with the proportion warp at ``--proportion_warp`` (:mod:`fas_tf.augment`). Builds
the caches of ``--build_views`` per teacher first (timed; in a temporary root, removed at the
end) and reuses the ``--views`` one. Real weights: FaceNet 20170512-110547
(``python -m fas_tf.teachers fetch facenet`` or ``--facenet_weights``) and dlib's ResNet.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np
from absl import app, flags

from fas_tf.augment import AugmentConfig
from fas_tf.data import load_faces, make_dataset, read_attributes, stems_in_sets, steps_per_epoch
from fas_tf.landmarks import layout_for
from fas_tf.model import RegularizedLandmarkModel
from fas_tf.regularizers import NAMES
from fas_tf.student import ARCHITECTURES, build_architecture
from fas_tf.teacher_cache import load_or_build
from fas_tf.teachers import build_teacher

flags.DEFINE_string("data", "../shared/data/infanface-train", "training faces")
flags.DEFINE_string("train_sets", "ads,youtube2", "image_set values (attributes.csv)")
flags.DEFINE_integer("input_size", 96, "student input size")
flags.DEFINE_integer("batch_size", 16, "batch size")
flags.DEFINE_integer("epochs", 4, "epochs per arm (the first is not timed)")
flags.DEFINE_integer("rounds", 1, "times the arms run, in turn (each arm's images/s is the median "
                     "over rounds, so a drift of the machine's speed reaches every arm alike)")
flags.DEFINE_integer("views", 16, "views per face of the cached arms")
flags.DEFINE_string("build_views", "16,64", "cache sizes whose build is timed, per teacher")
flags.DEFINE_string("arms", "plain,facenet,facenet_cached,dlib,dlib_cached", "arms to time")
flags.DEFINE_string("facenet_weights", None, "FaceNet .h5 (default: the fetched 128-D one)")
flags.DEFINE_integer("seed", 0, "seed")
flags.DEFINE_float("proportion_warp", 0.5, "proportion-warp probability of the *_warp arms")
flags.DEFINE_enum("student", "mobilenetv2", list(ARCHITECTURES), "student network of every arm")
FLAGS = flags.FLAGS


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)

    def on_train_begin(self, logs=None):
        self.times = []


def measure(name, teacher, cache, faces, layout, augment) -> dict:
    keras.utils.set_random_seed(FLAGS.seed)
    student = build_architecture(FLAGS.student, layout.num_landmarks, FLAGS.input_size, 0.5, 64)
    model = RegularizedLandmarkModel(student, teacher)
    model.compile(keras.optimizers.AdamW(1e-3), regularizers=NAMES if teacher else None)
    views = cache.views if cache else 0
    ds = make_dataset(faces, layout, FLAGS.input_size, batch_size=FLAGS.batch_size,
                      seed=FLAGS.seed, epochs=FLAGS.epochs, views=views, augment=augment)
    if cache is not None:
        ds = cache.attach(ds)
    timer = EpochTimer()
    model.fit(ds, epochs=FLAGS.epochs, steps_per_epoch=steps_per_epoch(len(faces),
              FLAGS.batch_size), callbacks=[timer], verbose=0)
    steady = float(np.median(timer.times[1:]))
    return {"arm": name, "regularizers": list(model.regularizers), "views": views,
            "epoch_s": [round(t, 2) for t in timer.times], "images_per_s": len(faces) / steady}


def main(argv):
    del argv
    attrs = read_attributes(os.path.join(FLAGS.data, "attributes.csv"))
    faces = load_faces(FLAGS.data, FLAGS.input_size, stems=stems_in_sets(attrs, FLAGS.train_sets))
    layout = layout_for(faces.num_landmarks)
    augment = AugmentConfig()
    arms = [a for a in FLAGS.arms.split(",") if a]
    if any(a.endswith("_cached_warp") for a in arms):
        raise app.UsageError("--arms: a cache holds unwarped views; _warp is for online arms")
    root = tempfile.mkdtemp(prefix="fas_tf-cache-bench-")
    builds, rows = [], []
    try:
        teachers = {}
        for name in ("facenet", "dlib"):
            if any(a.startswith(name) for a in arms):
                weights = FLAGS.facenet_weights if name == "facenet" else None
                teachers[name] = build_teacher(name, weights, allow_download=False)
        caches = {}
        for name, teacher in teachers.items():
            sizes = sorted({int(k) for k in FLAGS.build_views.split(",") if k}
                           | ({FLAGS.views} if f"{name}_cached" in arms else set()))
            for k in sizes:
                cache = load_or_build(teacher, faces, layout, FLAGS.input_size, augment, k,
                                      FLAGS.seed, root=root)
                builds.append({"teacher": name, "views": k, "faces": len(faces),
                               "build_s": round(cache.compute_seconds, 1),
                               "MiB": round(cache.nbytes / 2**20, 1)})
                if k == FLAGS.views:
                    caches[name] = cache
                else:
                    shutil.rmtree(cache.path)
        for round_ in range(FLAGS.rounds):
            for arm in arms:
                warped = arm.endswith("_warp")
                base = arm.removesuffix("_warp").removesuffix("_cached")
                teacher = teachers.get(base)
                cache = caches.get(base) if arm.endswith("_cached") else None
                arm_augment = (AugmentConfig(proportion_warp=FLAGS.proportion_warp) if warped
                               else augment)
                rows.append({**measure(arm, teacher, cache, faces, layout, arm_augment),
                             "round": round_})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    speed = {a: float(np.median([r["images_per_s"] for r in rows if r["arm"] == a]))
             for a in arms}
    plain = speed.get("plain")
    print(f"\n{FLAGS.student} student, {len(faces)} faces, input {FLAGS.input_size}, "
          f"batch {FLAGS.batch_size}, {FLAGS.epochs - 1} timed epochs per arm, "
          f"{FLAGS.rounds} round(s)")
    print(f"{'arm':16s} {'views':>5s} {'images/s':>9s} {'vs plain':>9s}  per round")
    for a in arms:
        ratio = f"{speed[a] / plain:.2f}x" if plain else "-"
        each = " ".join(f"{r['images_per_s']:.1f}" for r in rows if r["arm"] == a)
        views = next(r["views"] for r in rows if r["arm"] == a)
        print(f"{a:16s} {views:5d} {speed[a]:9.1f} {ratio:>9s}  {each}")
    print(f"\n{'cache build':16s} {'views':>5s} {'seconds':>9s} {'MiB':>9s}")
    for b in builds:
        print(f"{b['teacher']:16s} {b['views']:5d} {b['build_s']:9.1f} {b['MiB']:9.1f}")
    print(json.dumps({"arms": rows, "builds": builds}))


if __name__ == "__main__":
    app.run(main)
