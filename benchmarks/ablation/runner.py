"""Train and evaluate one ablation run through the normal training path (``fas_tf.train``) and
record it: per-face file, then its row in ``rows.csv``."""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import math
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.machine import cpu
from fas_tf.data import read_attributes, stems_in_sets, steps_per_epoch

from .arms import (
    ARMS,
    BATCH_SIZE,
    DATA,
    REPO,
    RunKey,
    checkpoint_every,
    epochs_for,
    lambda_text,
    schedule_tag,
)
from .collect import (
    RERUNS_CSV,
    SUBSET_FLAGS,
    append_row,
    machine_tag,
    rerun_key,
    row_key,
    run_key,
    run_name,
    write_per_face,
)


@dataclasses.dataclass(frozen=True)
class Setting:
    """What every run of one invocation shares."""

    steps: int  # optimizer steps per run (rounded up to whole epochs)
    student: str  # ALPHA:INPUT:HEAD
    data: Path = DATA
    attributes: Path | None = None  # default: data/attributes.csv
    out: Path = REPO / "benchmarks" / "results"  # run folders (scratch, not committed)
    rows_dir: Path = REPO / "docs" / "ablation"  # rows.csv + per_face/ (committed)
    teacher_cache: int | str = 0  # K views per face, "auto" (see cache_views); 0: teacher online
    verbose: int = 2
    rerun: bool = False  # run rows of rows.csv again, into reruns.csv (one per run and machine)

    @property
    def schedule(self) -> str:
        return schedule_tag(self.steps)

    @property
    def attributes_csv(self) -> Path:
        return self.attributes or self.data / "attributes.csv"


def count_sets(attributes: Path, sets: tuple[str, ...]) -> dict[str, int]:
    """Number of faces per ``image_set`` in the attributes CSV (for the sets asked)."""
    rows = read_attributes(attributes)
    return {s: len(stems_in_sets(rows, [s])) for s in sets}


def cache_views(option: int | str, epochs: int) -> int:
    """``TrainConfig.teacher_cache`` of a run: ``option`` itself, or for ``"auto"`` the fewest
    views that replay none more than ``fas_tf.teacher_cache.MAX_REPLAYS`` times in ``epochs``
    (more replays cost accuracy, see docs/teacher_cache.md "Choose K from the epochs")."""
    if option == "auto":
        from fas_tf.teacher_cache import MAX_REPLAYS

        return math.ceil(epochs / MAX_REPLAYS)
    return int(option)


def arm_config(key: RunKey, run_dir: Path, setting: Setting):
    """The :class:`fas_tf.training.config.TrainConfig` of one run (``--resume`` when
    ``run_dir`` holds a started one); :func:`train_and_evaluate` writes it beside the run as
    ``recipe.yaml``, the format of ``recipes/`` (``python -m fas_tf.train --config=...``)."""
    from fas_tf.student import parse_student_spec
    from fas_tf.training.config import TrainConfig

    arm = ARMS[key.arm]
    n_train = key.n if not key.fold else sum(
        count_sets(setting.attributes_csv, key.train_sets).values())
    epochs = epochs_for(n_train, setting.steps)
    lam = key.lam if key.lam is not None else 1.0
    return TrainConfig(
        output_dir=str(run_dir), data=str(setting.data),
        attributes=str(setting.attributes_csv), train_sets=list(key.train_sets),
        val_sets=[],  # scored once, after training: per-epoch validation would cost small N
        teacher=arm.teacher, teacher_weights=arm.teacher_weights,
        regularizers=arm.regularizers, lambda_cls=lam, lambda_feat=lam, lambda_sa=lam,
        lambda_ca=lam, epochs=epochs, batch_size=BATCH_SIZE, seed=key.seed,
        train_limit=key.n if not key.fold else None,
        resume=(run_dir / "config.json").is_file(), verbose=setting.verbose,
        allow_download=False, student=arm.student, **parse_student_spec(setting.student),
        teacher_cache=cache_views(setting.teacher_cache, epochs) if arm.weighted else 0,
        checkpoint_every=checkpoint_every(n_train),
    )


def train_and_evaluate(key: RunKey, run_dir: Path, setting: Setting,
                       log: Callable[[str], None]) -> dict:
    """Train one run into ``run_dir`` (resuming a killed one) and evaluate it.

    Returns ``{"record": config.json, "epochs", "eval": evaluate_model's metrics,
    "seconds", "resumed"}``.
    """
    import json

    import keras

    from fas_tf.cli import atomic_path
    from fas_tf.evaluate import evaluate_model
    from fas_tf.training.config import recipe_text
    from fas_tf.training.loop import train

    arm = ARMS[key.arm]
    config = arm_config(key, run_dir, setting)
    log(f"[{run_dir.name}] training {arm.label}, {config.epochs} epochs"
        + (" (resuming)" if config.resume else ""))
    start = time.time()
    train(config, log=lambda m: log(f"  {m}"))
    with atomic_path(run_dir / "recipe.yaml") as tmp:
        Path(tmp).write_text(recipe_text(config, f"{arm.label}: {command_for(key, setting)}"),
                             encoding="utf-8")
    keras.backend.clear_session()
    metrics, _ = evaluate_model(run_dir / "student.keras", setting.data,
                                str(setting.attributes_csv), list(key.val_sets))
    keras.backend.clear_session()
    record = json.loads((run_dir / "config.json").read_text())
    return {"record": record, "epochs": config.epochs, "eval": metrics,
            "seconds": time.time() - start, "resumed": config.resume}


def code_commit() -> str:
    """``git rev-parse HEAD`` of the repository (+ ``-dirty`` when code outside docs/ has
    uncommitted changes); '' without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":(exclude)docs"],
                               cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head + ("-dirty" if dirty.strip() else "")


# Environment variables that change which float kernels TensorFlow runs.
KERNEL_ENV = ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")


def machine() -> str:
    """Where a run trained: CPU (model, count, vector flags), TensorFlow's version and any
    :data:`KERNEL_ENV` setting. A row's command gives the same numbers bit for bit on a machine
    that matches; on another CPU the training drifts (other kernels and blocking), as another
    seed would (docs/results.md, reruns)."""
    import tensorflow as tf

    env = [f"{k}={os.environ[k]}" for k in KERNEL_ENV if os.environ.get(k)]
    return ", ".join([cpu(), f"tensorflow {tf.__version__}", *env])


def command_for(key: RunKey, setting: Setting) -> str:
    """The command that runs exactly this run (with ``--rerun`` it runs it again, into
    ``reruns.csv``, even when the row exists)."""
    parts = ["python", "benchmarks/ablation"]
    if key.fold:
        parts += [f"--cv={key.arm}", f"--cv_seeds={key.seed}", f"--cv_folds={key.fold}"]
    else:
        parts += [f"--configs={key.arm}", f"--sizes={key.n}", f"--seeds={key.seed}"]
    parts += [f"--steps={setting.steps}", f"--student={setting.student}"]
    if key.lam is not None:
        parts.append(f"--lambdas={lambda_text(key.lam)}")
    if setting.teacher_cache and ARMS[key.arm].weighted:
        parts.append(f"--teacher_cache={setting.teacher_cache}")
    if Path(setting.data) != DATA:
        parts.append(f"--data={setting.data}")
    if setting.attributes is not None:
        parts.append(f"--attributes={setting.attributes}")
    if setting.rerun:
        parts.append("--rerun")
    return shlex.join(parts)


def build_row(key: RunKey, setting: Setting, result: dict, per_face: str) -> dict:
    """The ``rows.csv`` row of a finished run (see :data:`.collect.ROW_COLUMNS`)."""
    cells = run_key(key, setting.schedule, setting.student)
    record, ev = result["record"], result["eval"]
    teacher = record.get("teacher") or {}
    subsets = ev.get("subsets") or {}
    num_train = record.get("num_train")
    return {
        **dict(zip(("config", "lambda", "n", "seed", "schedule", "fold", "student"), cells,
                   strict=True)),
        "teacher": teacher.get("name", "none"),
        "teacher_pretrained": teacher.get("pretrained", ""),
        "teacher_sha256": teacher.get("sha256") or "",
        "regularizers": ",".join(record.get("regularizers_active") or []) or "none",
        "teacher_cache": (record.get("teacher_cache") or {}).get("views_per_face", 0),
        "epochs": result["epochs"],
        "steps": result["epochs"] * steps_per_epoch(num_train, BATCH_SIZE) if num_train else "",
        "num_train": num_train, "num_val": ev.get("n"),
        "seconds": float(result["seconds"]),
        "nme": float(ev["nme"]), "fr_10": float(ev["fr_10"]), "auc_10": float(ev["auc_10"]),
        **{f"nme_{f}": float(subsets[f]["nme"]) if f in subsets else None
           for f in SUBSET_FLAGS},
        "per_face": per_face, "command": command_for(key, setting), "commit": code_commit(),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "note": "resumed after a kill: seconds are of the last part only"
        if result.get("resumed") else "",
    }


def run_one(key: RunKey, setting: Setting, log: Callable[[str], None]) -> dict:
    """Train and evaluate one run, write its per-face file, then append its row (to
    ``reruns.csv`` with ``setting.rerun``, in a run folder and per-face file of its own);
    returns the row."""
    name = run_name(run_key(key, setting.schedule, setting.student))
    tag = machine_tag(machine()) if setting.rerun else ""
    folder, per_face, csv_name = (
        (f"{name}.rerun.{tag}", f"per_face/reruns/{name}.{tag}.csv", RERUNS_CSV)
        if setting.rerun else (name, f"per_face/{name}.csv", "rows.csv"))
    result = train_and_evaluate(key, setting.out / folder, setting, log)
    ev = result["eval"]
    write_per_face(setting.rows_dir / per_face, list(ev["images"]), list(ev["per_face"]))
    row = build_row(key, setting, result, per_face)
    append_row(setting.rows_dir / csv_name, row, rerun_key if setting.rerun else row_key)
    log(f"[{name}] NME {row['nme'] * 100:.2f}% FR@0.10 {row['fr_10'] * 100:.1f}% "
        f"AUC@0.10 {row['auc_10']:.3f} n={row['num_val']}, {row['seconds'] / 60:.1f} min: "
        f"row added to {setting.rows_dir / csv_name}")
    return row


def print_log(message: str) -> None:
    """The runner's log line (stdout, flushed); picklable, for :func:`run_in_child`."""
    print(message, flush=True)


def _die_with(parent: int) -> None:
    """In a child process: be killed (SIGTERM) when the runner ``parent`` dies, whatever killed
    it (Linux ``PR_SET_PDEATHSIG``; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the runner died before the call
            os._exit(1)


def child_pool() -> ProcessPoolExecutor:
    """One spawned worker process that dies with this one (a killed runner leaves no training
    behind)."""
    context = multiprocessing.get_context("spawn")  # no fork of a process holding TF threads
    return ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_die_with,
                               initargs=(os.getpid(),))


def run_in_child(key: RunKey, setting: Setting) -> dict:
    """:func:`run_one` in a fresh process (:func:`child_pool`); returns its row, re-raises its
    error.

    Keras keeps each training's traced step, and with it the teacher cache's constants, alive
    in the process for good (``clear_session`` does not free them), so one process training
    run after run grows by a cache per run until the OS kills it. A process per run gives the
    memory back when the run ends; a run that dies (out of memory) fails alone
    (``BrokenProcessPool``) and the invocation goes on with the next one.
    """
    with child_pool() as pool:
        return pool.submit(run_one, key, setting, print_log).result()
