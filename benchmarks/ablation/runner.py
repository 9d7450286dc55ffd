"""Train and evaluate one ablation run through the normal training path (``fas_tf.train``)."""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from fas_tf.data import read_attributes, stems_in_sets

from .arms import ARMS, BATCH_SIZE, RunKey, epochs_for


def epoch_times(log_dir: Path) -> list[float]:
    """Wall-clock durations of epochs 2.. (train + validation) from the TensorBoard events."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    ends: dict[int, float] = {}
    for path in sorted((log_dir / "train").glob("events.out.tfevents.*")):
        try:
            for raw in tf.data.TFRecordDataset(str(path)):
                event = event_pb2.Event.FromString(raw.numpy())
                if any(v.tag == "epoch_loss" for v in event.summary.value):
                    ends[int(event.step)] = float(event.wall_time)
        except Exception:  # a truncated event file after a kill
            continue
    steps = sorted(ends)
    return [ends[b] - ends[a] for a, b in itertools.pairwise(steps) if b == a + 1]


def evaluate_run(run_dir: Path, key: RunKey, data: Path, attributes: Path) -> dict:
    """Per-face validation NMEs of a finished run, written to ``eval.json``."""
    import fas_tf.transfer  # noqa: F401  (registers the layers a transfer model needs)
    from fas_tf import cli
    from fas_tf.evaluate import evaluate_model

    metrics, _ = evaluate_model(run_dir / "student.keras", data, str(attributes),
                                list(key.val_sets))
    keep = ("nme", "fr_08", "fr_10", "auc_10", "n", "normalization", "per_face", "images")
    result = {k: metrics[k] for k in keep if k in metrics}
    cli.write_json(run_dir / "eval.json", result)
    return result


def run_one(key: RunKey, root: Path, args: argparse.Namespace, log: Callable[[str], None]) -> str:
    """Train and evaluate one run unless its ``metrics.json`` exists; returns what was done."""
    import keras

    from fas_tf import cli
    from fas_tf.train import TrainConfig, train

    arm = ARMS[key.arm]
    run_dir = root / key.rel_dir()
    done = (run_dir / "metrics.json").is_file()
    status = "skipped (done)"
    if not done:
        n_train = key.n if key.n is not None else 0
        if key.fold is not None:  # all faces of the two training batches
            n_train = sum(count_sets(args.attributes, key.train_sets).values())
        epochs = epochs_for(n_train, args.epochs, args.min_steps)
        config = TrainConfig(
            output_dir=str(run_dir), data=str(args.data), attributes=str(args.attributes),
            train_sets=list(key.train_sets), val_sets=list(key.val_sets), teacher=arm.teacher,
            teacher_weights=arm.teacher_weights, regularizers=arm.regularizers, epochs=epochs,
            batch_size=BATCH_SIZE, seed=key.seed, train_limit=key.n,
            resume=(run_dir / "config.json").is_file(), verbose=args.verbose,
            allow_download=False, student=arm.student, **(args.student or {}),
        )
        log(f"[{key.rel_dir()}] training {arm.label}, {epochs} epochs"
            + (" (resuming)" if config.resume else ""))
        start = time.time()
        metrics = train(config, log=lambda m: log(f"  {m}"))
        wall = time.time() - start
        durations = epoch_times(run_dir / "logs")
        record = {
            "arm": key.arm, "n": key.n, "seed": key.seed, "fold": key.fold,
            "epochs": metrics["epochs"], "wall_seconds": wall,
            "fit_seconds": metrics["fit_seconds_this_process"],
            "epoch_seconds": statistics.median(durations) if durations else None,
            "resumed": config.resume,
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        cli.write_json(run_dir / "run.json", record)
        keras.backend.clear_session()
        status = f"trained in {wall / 60:.1f} min"
    if not (run_dir / "eval.json").is_file():
        evaluate_run(run_dir, key, args.data, args.attributes)
        keras.backend.clear_session()
    ev = json.loads((run_dir / "eval.json").read_text())
    log(f"[{key.rel_dir()}] {status}: NME {ev['nme'] * 100:.2f}% FR@0.10 "
        f"{ev['fr_10'] * 100:.1f}% AUC@0.10 {ev['auc_10']:.3f} n={ev['n']}")
    return status


def count_sets(attributes: Path, sets: tuple[str, ...]) -> dict[str, int]:
    """Number of faces per ``image_set`` in the attributes CSV (for the sets asked)."""
    rows = read_attributes(attributes)
    return {s: len(stems_in_sets(rows, [s])) for s in sets}
