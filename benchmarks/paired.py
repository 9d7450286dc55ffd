"""Paired difference of two arms from ``python -m fas_tf.evaluate --output`` files, one per seed.

    python benchmarks/paired.py --a=lever_s0.json,lever_s1.json,lever_s2.json \
        --b=default_s0.json,default_s1.json,default_s2.json

The i-th file of ``--a`` pairs with the i-th of ``--b`` (the same seed); faces pair by image.
Prints each arm's mean NME per seed and over seeds, and the paired difference a - b in NME points
with its 95 % bootstrap interval over seeds and faces (``benchmarks/ablation/stats.bootstrap``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation.stats import bootstrap, paired_matrix  # noqa: E402

flags.DEFINE_list("a", None, "evaluate --output JSON files of arm a, one per seed")
flags.DEFINE_list("b", None, "evaluate --output JSON files of arm b, the same seeds in order")
FLAGS = flags.FLAGS


def per_face(path: str) -> dict[str, float]:
    """Image -> NME of one ``evaluate --output`` file."""
    try:
        data = json.loads(Path(path).read_text())
        return dict(zip(data["images"], map(float, data["per_face"]), strict=True))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise app.UsageError(f"{path}: not an evaluate --output file ({err})") from err


def main(argv: list[str]) -> None:
    if not FLAGS.a or not FLAGS.b or len(FLAGS.a) != len(FLAGS.b):
        raise app.UsageError("--a and --b need the same number of files (one per seed)")
    a = {i: per_face(p) for i, p in enumerate(FLAGS.a)}
    b = {i: per_face(p) for i, p in enumerate(FLAGS.b)}
    diff, seeds, stems = paired_matrix(a, b)
    if not stems:
        raise app.UsageError("the two arms share no faces")
    for name, arm in (("a", a), ("b", b)):
        means = [100 * sum(arm[s][k] for k in stems) / len(stems) for s in seeds]
        print(f"{name}: " + ", ".join(f"{m:.2f}" for m in means)
              + f"; mean {sum(means) / len(means):.2f} %")
    iv = bootstrap(100 * diff)
    print(f"a - b: {iv.mean:+.2f} points [{iv.lo:+.2f}, {iv.hi:+.2f}] (95 %, {iv.seeds} seeds x "
          f"{iv.faces} faces)")


if __name__ == "__main__":
    app.run(main)
