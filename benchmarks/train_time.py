"""Wall time of a training recipe on this machine, from a short run of it.

    python benchmarks/train_time.py --epochs=20 --full_epochs=200 -- \
        --config=recipes/default.yaml [more fas_tf.train flags]

Runs ``python -m fas_tf.train FLAGS --epochs=N --verbose=2`` into a temporary folder (deleted
afterwards), time-stamps the start of every epoch as its line arrives, and prints the start-up
(process start to the end of the first epoch, which builds the graph), the median seconds of
the later epochs, and the time extrapolated to ``--full_epochs``, with the machine
(:func:`machine.cpu`). Run it with nothing else on the machine: the time is the machine's.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu  # noqa: E402

flags.DEFINE_integer("epochs", 20, "epochs of the timed run (>= 3)")
flags.DEFINE_integer("full_epochs", 200, "epochs of the run whose time is extrapolated")
FLAGS = flags.FLAGS

EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+)")


def epoch_starts(command: list[str]) -> tuple[float, list[float]]:
    """Run ``command``; (its total seconds, the seconds at which each ``Epoch k/N`` line came).

    Raises RuntimeError with the last output lines when the command fails."""
    start = time.monotonic()
    starts: list[float] = []
    tail: list[str] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as proc:
        for line in proc.stdout:
            if EPOCH_LINE.match(line):
                starts.append(time.monotonic() - start)
            tail = (tail + [line.rstrip()])[-5:]
    if proc.returncode:
        raise RuntimeError("training failed:\n" + "\n".join(tail))
    return time.monotonic() - start, starts


def main(argv: list[str]) -> None:
    if FLAGS.epochs < 3:
        raise app.UsageError("--epochs must be >= 3 (the first epoch builds the graph)")
    with tempfile.TemporaryDirectory(prefix="train_time_") as tmp:
        command = [sys.executable, "-m", "fas_tf.train", *argv[1:], f"--epochs={FLAGS.epochs}",
                   "--verbose=2", f"--output_dir={Path(tmp) / 'run'}"]
        try:
            total, starts = epoch_starts(command)
        except RuntimeError as err:
            raise app.UsageError(str(err)) from err
    if len(starts) != FLAGS.epochs:
        raise app.UsageError(f"saw {len(starts)} epoch lines, expected {FLAGS.epochs}")
    # epoch k (1-based) runs from starts[k-1] to starts[k]; the last ends with the process,
    # after the final validation and saving, so it is left out of the median.
    later = [b - a for a, b in zip(starts[1:-1], starts[2:], strict=True)]
    per_epoch = statistics.median(later)
    startup = starts[1]
    tail = total - starts[-1] - per_epoch  # final validation, saving, exit
    full = startup + per_epoch * (FLAGS.full_epochs - 1) + tail
    print(f"machine: {cpu()}")
    print(f"flags: {' '.join(argv[1:])}")
    print(f"start-up and first epoch: {startup:.1f} s; later epochs: median {per_epoch:.2f} s "
          f"(min {min(later):.2f}, max {max(later):.2f}, n {len(later)}); after the last: "
          f"{tail:.1f} s")
    print(f"{FLAGS.full_epochs} epochs: about {full / 60:.1f} min "
          f"({int(full // 60)}:{int(full % 60):02d})")


if __name__ == "__main__":
    app.run(main)
