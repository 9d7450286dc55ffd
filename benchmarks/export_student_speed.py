"""int8 TFLite speed and size of student configurations vs MediaPipe, in one run.

``python benchmarks/export_student_speed.py [--configs=0.5:128:64,0.35:96:32:lite] [--threads=1]``

Each config ``alpha:input_size:head_channels`` (``:lite`` appended: the ``mobilenetv2_lite``
student, without MobileNetV2's 1280-channel top) is built untrained (speed and size do not depend
on the weights), converted exactly as ``python -m export --quantize=int8`` does (random crops for
calibration: enough for timing) and timed by :func:`export.benchmark.benchmark` together with the
reference, interleaved. Prints one line per config and the reference.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT = ("0.5:128:64,0.5:128:32,0.35:128:32,0.5:96:64,0.5:96:32,0.35:96:32,"
           "0.5:128:64:lite,0.5:128:32:lite,0.35:128:32:lite,0.5:96:32:lite,0.35:96:32:lite")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=DEFAULT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--keep", default=None, help="folder to keep the .tflite files in")
    args = parser.parse_args()

    from export.benchmark import DEFAULT_REFERENCE, benchmark
    from export.convert import convert
    from fas_tf.student import build_student, parse_student_spec, split_architecture

    folder = Path(args.keep or tempfile.mkdtemp(prefix="student_speed_"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    specs = []
    for text in args.configs.split(","):
        architecture, spec = split_architecture(text)
        specs.append({**parse_student_spec(spec), "lite": architecture == "mobilenetv2_lite"})
    for spec in specs:
        alpha, size, head = spec["alpha"], spec["input_size"], spec["head_channels"]
        student = build_student(68, **spec)
        crops = rng.uniform(0, 255, (8, size, size, 3)).astype(np.float32)
        with contextlib.redirect_stdout(io.StringIO()):
            data = convert(student, "int8", crops)
        path = folder / f"student_a{alpha:g}_s{size}_h{head}{'_lite' * spec['lite']}.tflite"
        path.write_bytes(data)
        paths.append(str(path))
    rows = benchmark(paths, str(DEFAULT_REFERENCE), args.threads, args.runs)
    print("| student | alpha | input | head | MB | median ms | ratio to MediaPipe |")
    print("|---|---|---|---|---|---|---|")
    for spec, r in zip(specs, rows[: len(specs)], strict=True):  # rows end with MediaPipe
        arch = "mobilenetv2_lite" if spec["lite"] else "mobilenetv2"
        print(f"| {arch} | {spec['alpha']:g} | {spec['input_size']} | {spec['head_channels']} | "
              f"{r['bytes'] / 1e6:.3f} | {r['median_ms']:.3f} | {r['ratio_to_reference']:.2f} |")
    ref = rows[-1]
    print(f"| MediaPipe | - | 192 | - | {ref['bytes'] / 1e6:.3f} | {ref['median_ms']:.3f} | 1.00 |")


if __name__ == "__main__":
    main()
