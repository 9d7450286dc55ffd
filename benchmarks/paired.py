"""Paired difference of two arms from ``python -m fas_tf.evaluate --output`` files, one per seed.

    python benchmarks/paired.py --a=lever_s0.json,lever_s1.json,lever_s2.json \
        --b=default_s0.json,default_s1.json,default_s2.json

The i-th file of ``--a`` pairs with the i-th of ``--b`` (the same seed); faces pair by image.
Prints each arm's mean NME per seed and over seeds, and the paired difference a - b in NME points
with its 95 % bootstrap interval over seeds and faces (``benchmarks/ablation/stats.bootstrap``).

With ``--known_answer=pfl_mean`` (any measurement of ``benchmarks/known_answer.py``) the files are
that benchmark's ``--output`` files and the per-face value is each face's sensitivity slope.
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
flags.DEFINE_string("known_answer", None, "compare this measurement's per-face sensitivity "
                    "slopes in known_answer.py --output files instead of the NME")
FLAGS = flags.FLAGS


def per_face(path: str, measurement: str | None = None) -> dict[str, float]:
    """Image -> NME of one ``evaluate --output`` file, or image -> sensitivity slope of
    ``measurement`` in one ``benchmarks/known_answer.py --output`` file."""
    kind = "an evaluate --output file" if measurement is None else (
        f"a known_answer.py --output file with per-face slopes of {measurement}")
    try:
        data = json.loads(Path(path).read_text())
        if measurement is None:
            return dict(zip(data["images"], map(float, data["per_face"]), strict=True))
        found = [per[measurement]["per_face"] for per in data["results"].values()
                 if measurement in per]  # fmt: skip
        return {k: float(v) for k, v in found[0].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise app.UsageError(f"{path}: not {kind} ({err})") from err


def main(argv: list[str]) -> None:
    if not FLAGS.a or not FLAGS.b or len(FLAGS.a) != len(FLAGS.b):
        raise app.UsageError("--a and --b need the same number of files (one per seed)")
    a = {i: per_face(p, FLAGS.known_answer) for i, p in enumerate(FLAGS.a)}
    b = {i: per_face(p, FLAGS.known_answer) for i, p in enumerate(FLAGS.b)}
    scale, unit, diff_unit = (100, " %", " points") if FLAGS.known_answer is None else (1, "", "")
    diff, seeds, stems = paired_matrix(a, b)
    if not stems:
        raise app.UsageError("the two arms share no faces")
    for name, arm in (("a", a), ("b", b)):
        means = [scale * sum(arm[s][k] for k in stems) / len(stems) for s in seeds]
        print(f"{name}: " + ", ".join(f"{m:.2f}" for m in means)
              + f"; mean {sum(means) / len(means):.2f}{unit}")
    iv = bootstrap(scale * diff)
    print(f"a - b: {iv.mean:+.2f}{diff_unit} [{iv.lo:+.2f}, {iv.hi:+.2f}] (95 %, {iv.seeds} seeds "
          f"x {iv.faces} faces)")


if __name__ == "__main__":
    app.run(main)
