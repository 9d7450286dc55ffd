"""Speed and size of exported models against MediaPipe's face landmark model, in one run.

``python -m export.benchmark model.tflite [more.tflite ...]
[--reference=../shared/peers/mediapipe_face_landmark.tflite] [--threads=1] [--runs=200]``

Every model runs in ``ai_edge_litert.interpreter.Interpreter`` with the same thread count on a
random input of its own shape and type. After ``--warmup`` invocations the models are timed in
interleaved rounds (so that load from other processes hits all of them alike); the median over
``--runs`` invocations is ms per face (one invocation = one face crop). Prints one line per
model with file size, median and p90 ms and the ratio to the reference.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_REFERENCE = (
    Path(__file__).resolve().parents[2] / "shared" / "peers" / "mediapipe_face_landmark.tflite"
)


class _Timed:
    def __init__(self, path: str, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such model file")
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"{path}: cannot load TFLite model ({err})") from err
        self.path = path
        self.size = os.path.getsize(path)
        rng = np.random.default_rng(0)
        for detail in self.interpreter.get_input_details():
            dtype = np.dtype(detail["dtype"])
            if dtype.kind == "f":
                x = rng.uniform(0, 1, detail["shape"]).astype(dtype)
            else:
                info = np.iinfo(dtype)
                x = rng.integers(info.min, info.max, detail["shape"], endpoint=True).astype(dtype)
            self.interpreter.set_tensor(detail["index"], x)
        self.times: list[float] = []

    def run(self, count: int, record: bool = True) -> None:
        invoke = self.interpreter.invoke
        for _ in range(count):
            start = time.perf_counter()
            invoke()
            if record:
                self.times.append((time.perf_counter() - start) * 1000.0)


def benchmark(
    models: list[str], reference: str | None = str(DEFAULT_REFERENCE), threads: int = 1,
    runs: int = 200, warmup: int = 20, rounds: int = 10,
) -> list[dict]:
    """Median / p90 ms per invocation and file size of each model (reference last)."""
    paths = list(models) + ([reference] if reference else [])
    timed = [_Timed(p, threads) for p in paths]
    for t in timed:
        t.run(warmup, record=False)
    per_round = max(1, -(-runs // rounds))
    for _ in range(rounds):
        for t in timed:
            t.run(per_round)
    ref_ms = float(np.median(timed[-1].times)) if reference else None
    rows = []
    for i, (t, p) in enumerate(zip(timed, paths, strict=True)):
        ms = float(np.median(t.times))
        rows.append({
            "model": p, "bytes": t.size, "runs": len(t.times), "median_ms": ms,
            "p90_ms": float(np.percentile(t.times, 90)),
            "ratio_to_reference": ms / ref_ms if ref_ms else None,
            "reference": bool(reference) and i == len(paths) - 1,
        })
    return rows


def main(argv: list[str]) -> None:
    from absl import flags

    from fas_tf import cli

    f = flags.FLAGS
    if len(argv) < 2:
        raise cli.UsageError("give at least one .tflite model to benchmark")
    if f.runs < 200:
        raise cli.UsageError(f"--runs={f.runs}: at least 200 timed invocations are required")
    try:
        rows = benchmark(argv[1:], f.reference or None, f.threads, f.runs, f.warmup)
    except ValueError as err:
        raise cli.UsageError(str(err)) from err
    print(f"threads={f.threads}, median of {rows[0]['runs']} invocations after {f.warmup} "
          "warm-up, one face per invocation")
    for r in rows:
        ratio = "" if r["ratio_to_reference"] is None or r["reference"] else (
            f"  {r['ratio_to_reference']:.2f}x reference")
        tag = "  (reference)" if r["reference"] else ""
        print(f"{r['model']}: {r['bytes'] / 1e6:.3f} MB  median {r['median_ms']:.3f} ms  "
              f"p90 {r['p90_ms']:.3f} ms{ratio}{tag}")
    sys.stdout.flush()


if __name__ == "__main__":
    from absl import flags

    from fas_tf import cli

    flags.DEFINE_string("reference", str(DEFAULT_REFERENCE), "reference model ('' for none)")
    flags.DEFINE_integer("threads", 1, "interpreter threads")
    flags.DEFINE_integer("runs", 200, "timed invocations per model (>= 200)")
    flags.DEFINE_integer("warmup", 20, "untimed warm-up invocations per model")
    cli.run(main)
