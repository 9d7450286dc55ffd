"""Teacher forward speed on this machine: FaceNet (random weights) and dlib's ResNet.

``python benchmarks/teacher_speed.py [--batch=16] [--warmup=3] [--runs=10] [--dlib_reference]
[--crop_size=96] [--facenet=PATH]``

Prints images/s (median over ``--runs`` timed batches after ``--warmup`` untimed ones, each
batch at the teacher's own input size through its compiled ``tf.function`` forward) and the
time to read and parse ``dlib_face_recognition_resnet_model_v1.dat`` (median of 5).
``--dlib_reference`` also times dlib's own C++ network on the same batch size.

Then the two forwards the teacher cache can compute its rows with, in one run on
``--crop_size`` student crops (resize included): TensorFlow (``tf.function`` of the teacher)
and LiteRT (:meth:`fas_tf.teachers.Teacher.litert_forward`, all cores): images/s of each,
the conversion time and the largest difference of their outputs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def images_per_second(teacher, batch: int, warmup: int, runs: int) -> float:
    """Median images/s of the teacher's forward on random RGB batches."""
    import numpy as np
    import tensorflow as tf

    size = teacher.input_size
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)), tf.float32)
    forward = tf.function(lambda t: teacher.model(t, training=False))
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), forward(x))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), forward(x))
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def cache_forwards(teacher, crop_size: int, batch: int, warmup: int, runs: int) -> str:
    """One line: TensorFlow vs LiteRT forward of the teacher cache on ``crop_size`` crops."""
    import numpy as np
    import tensorflow as tf

    x = np.random.default_rng(0).uniform(0, 255, (batch, crop_size, crop_size, 3))
    x = x.astype(np.float32)
    fn = tf.function(teacher.__call__)

    def tf_forward(images):
        return {k: v.numpy() for k, v in fn(tf.constant(images)).items()}

    start = time.perf_counter()
    lite_forward = teacher.litert_forward(batch, crop_size)
    convert_s = time.perf_counter() - start
    speeds = {}
    for name, forward in (("tensorflow", tf_forward), ("litert", lite_forward)):
        for _ in range(warmup):
            forward(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            forward(x)
            times.append(time.perf_counter() - start)
        speeds[name] = batch / statistics.median(times)
    expected, found = tf_forward(x), lite_forward(x)
    diff = max(float(np.abs(expected[k] - found[k]).max()) for k in expected)
    return (f"{crop_size} px crops, batch {batch}: tensorflow {speeds['tensorflow']:.1f} "
            f"images/s, litert {speeds['litert']:.1f} images/s "
            f"({speeds['litert'] / speeds['tensorflow']:.2f}x; conversion {convert_s:.1f} s, "
            f"max output difference {diff:.1e})")


def dlib_reference_images_per_second(path: str, batch: int, runs: int) -> float:
    """Median images/s of dlib's own network (dlib-bin) on random aligned 150x150 chips."""
    import dlib
    import numpy as np

    net = dlib.face_recognition_model_v1(str(path))
    chips = list(np.random.default_rng(0).integers(0, 256, (batch, 150, 150, 3), np.uint8))
    net.compute_face_descriptor(chips)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        net.compute_face_descriptor(chips)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0,
                        help="TF intra/inter-op threads (0: TF default)")
    parser.add_argument("--dlib_reference", action="store_true",
                        help="also time dlib's own C++ network (needs dlib-bin)")
    parser.add_argument("--crop_size", type=int, default=96,
                        help="student crop size for the teacher cache's forwards")
    parser.add_argument("--facenet", default=None,
                        help="FaceNet weights for the cache forwards (default: random weights)")
    args = parser.parse_args()

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from fas_tf import dlib_resnet
    from fas_tf.teachers import build_dlib, build_facenet

    path = dlib_resnet.dlib_model_path()
    loads = []
    for _ in range(5):
        start = time.perf_counter()
        dlib_resnet.load_dlib_resnet(path)
        loads.append(time.perf_counter() - start)
    start = time.perf_counter()
    dlib = build_dlib()
    build_s = time.perf_counter() - start
    print(f"dlib .dat parse: {statistics.median(loads) * 1000:.0f} ms (median of 5, "
          f"{os.path.getsize(path) / 1e6:.1f} MB); parse + Keras build: {build_s:.2f} s")
    random_facenet = build_facenet("random")
    for name, teacher in (("facenet (random weights)", random_facenet), ("dlib", dlib)):
        ips = images_per_second(teacher, args.batch, args.warmup, args.runs)
        print(f"{name}: {teacher.input_size}x{teacher.input_size}, batch {args.batch}: "
              f"{ips:.1f} images/s")
    if args.dlib_reference:
        ips = dlib_reference_images_per_second(path, args.batch, min(args.runs, 3))
        print(f"dlib C++ reference (dlib-bin), batch {args.batch}: {ips:.1f} images/s")
    facenet = build_facenet(args.facenet) if args.facenet else random_facenet
    for name, teacher in (("facenet", facenet), ("dlib", dlib)):
        line = cache_forwards(teacher, args.crop_size, args.batch, args.warmup, args.runs)
        print(f"teacher cache forward, {name}: {line}")


if __name__ == "__main__":
    main()
