"""The committed record of finished runs: ``rows.csv`` (one row per run), per-face error files,
the migration of the old ``ablation_runs.csv``, summaries and time estimates.

Layout of a rows folder (``docs/ablation``)::

    rows.csv                 one row per finished run (ROW_COLUMNS)
    per_face/<run name>.csv  stem,nme of every validation face of that run
    reruns.csv               runs of rows.csv run again (``--rerun``), one per run and machine
    per_face/reruns/<run name>.<machine tag>.csv   their per-face errors

A run's per-face file is written before its row; the row is the mark that the run is done.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from collections.abc import Callable
from pathlib import Path

from fas_tf.cli import atomic_path
from fas_tf.data import steps_per_epoch

from .arms import ARMS, BATCH_SIZE, RunKey, epochs_for, lambda_text

RERUNS_CSV = "reruns.csv"  # in the rows folder: rows of rows.csv run again (--rerun)
ROWS_SUBDIR = "ablation"  # under the docs folder: rows.csv, per_face/, summary.csv, plots
SUBSET_FLAGS = ("turned", "occluded", "expressive", "tilted")  # InfAnFace attribute flags
KEY_COLUMNS = ("config", "lambda", "n", "seed", "schedule", "fold", "student")
ROW_COLUMNS = [
    *KEY_COLUMNS, "teacher", "teacher_pretrained", "teacher_sha256", "regularizers",
    "teacher_cache", "epochs", "steps", "num_train", "num_val", "seconds", "nme", "fr_10",
    "auc_10", *(f"nme_{f}" for f in SUBSET_FLAGS), "per_face", "command", "commit",
    "machine", "date", "note",
]
INT_COLUMNS = {"n", "seed", "teacher_cache", "epochs", "steps", "num_train", "num_val"}
FLOAT_COLUMNS = {"lambda", "seconds", "nme", "fr_10", "auc_10",
                 *(f"nme_{f}" for f in SUBSET_FLAGS)}


def run_key(key: RunKey, schedule: str, student: str) -> tuple[str, ...]:
    """The identity of a run as the cells of its row (KEY_COLUMNS, as text)."""
    n = "" if key.n is None or key.fold else str(key.n)
    return (key.arm, lambda_text(key.lam), n, str(key.seed), schedule, key.fold, student)


def row_key(row: dict) -> tuple[str, ...]:
    """KEY_COLUMNS of a row read with :func:`read_rows` (raw text) or built by the runner."""
    return tuple(_cell(row.get(c)) for c in KEY_COLUMNS)


def rerun_key(row: dict) -> tuple[str, ...]:
    """A rerun's identity: its run's key and the machine it ran on."""
    return (*row_key(row), _cell(row.get("machine")))


def machine_tag(machine: str) -> str:
    """8 hex digits naming a machine description in file names."""
    import hashlib

    return hashlib.sha256(machine.encode()).hexdigest()[:8]


def run_name(key: tuple[str, ...]) -> str:
    """File-name form of a run key, e.g. ``facenet_all_l0.1_n40_seed2_s2000_0.5-96-64``."""
    config, lam, n, seed, schedule, fold, student = key
    parts = [config] + ([f"l{lam}"] if lam else []) + ([f"n{n}"] if n else [])
    parts += ([f"test_{fold}"] if fold else []) + [f"seed{seed}", schedule, student]
    return "_".join(parts).replace(":", "-").replace("/", "-")


def _cell(value) -> str:
    """One CSV cell: '' for None/NaN, 6 significant digits for floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of ``rows.csv`` as text (empty list when the file does not exist)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def typed(row: dict[str, str]) -> dict:
    """A row with numbers parsed (empty cells -> None)."""
    out: dict = {}
    for k, v in row.items():
        if v in ("", None):
            out[k] = None
        elif k in INT_COLUMNS:
            out[k] = int(float(v))
        elif k in FLOAT_COLUMNS:
            out[k] = float(v)
        else:
            out[k] = v
    return out


def write_rows(path: Path, rows: list[dict]) -> None:
    """Write the whole CSV atomically: temp file, fsync, rename (a kill leaves the old file)."""
    extra = [c for r in rows for c in r if c not in ROW_COLUMNS]
    columns = ROW_COLUMNS + list(dict.fromkeys(extra))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for r in rows:
                writer.writerow({c: _cell(r.get(c)) for c in columns})
            f.flush()
            os.fsync(f.fileno())


def append_row(path: Path, row: dict, key: Callable[[dict], tuple] = row_key) -> None:
    """Add one row to ``rows.csv`` (replacing a row with the same ``key``); existing rows are
    kept as text, byte for byte. The folder is locked meanwhile, so two processes appending at
    once both keep their row."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rows = [r for r in read_rows(path) if key(r) != key(row)]
        write_rows(path, [*rows, row])
    finally:
        os.close(fd)  # releases the lock


def write_per_face(path: Path, stems: list[str], nmes: list[float]) -> None:
    """``stem,nme`` of every validation face of one run, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["stem", "nme"])
        writer.writerows((s, f"{v:.6g}") for s, v in zip(stems, nmes, strict=True))
        f.flush()
        os.fsync(f.fileno())


def read_per_face(path: Path) -> dict[str, float]:
    """stem -> NME of one run's per-face file (empty when missing)."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {r["stem"]: float(r["nme"]) for r in csv.DictReader(f)}


def per_face_of(rows_dir: Path, row: dict) -> dict[str, float]:
    """The per-face errors of a row (empty for rows without a per-face file)."""
    return read_per_face(rows_dir / row["per_face"]) if row.get("per_face") else {}


MIGRATED_NOTE = ("migrated from docs/ablation_runs.csv (run folder lost): no teacher sha256, "
                 "per-face errors, subset NMEs, command, commit or date; an epoch schedule "
                 "(steps = epochs x steps per epoch)")


def migrate_old_rows(path: Path) -> list[dict]:
    """Rows of the old ``ablation_runs.csv`` (run-folder era) in the ``rows.csv`` schema.

    What the old file did not record stays empty and the ``note`` says so; the schedule is
    ``e<epochs>`` (an epoch schedule, not a step schedule).
    """
    out = []
    for old in read_rows(path):
        arm = ARMS[old["config"]]
        epochs = int(old["epochs"])
        num_train = int(old["num_train"])
        seconds = old.get("wall_seconds") or old.get("fit_seconds") or ""
        out.append({
            "config": old["config"], "lambda": lambda_text(1.0 if arm.weighted else None),
            "n": old["n"] if not old.get("fold") else "", "seed": old["seed"],
            "schedule": f"e{epochs}", "fold": old.get("fold", ""),
            "student": old["student"].replace("/", ":"),
            "teacher": old["teacher"], "teacher_pretrained": old["teacher_pretrained"],
            "teacher_sha256": "", "regularizers": arm.regularizers, "teacher_cache": "0",
            "epochs": epochs, "steps": epochs * steps_per_epoch(num_train, BATCH_SIZE),
            "num_train": num_train, "num_val": old["num_val"], "seconds": seconds,
            "nme": old["nme"], "fr_10": old["fr_10"], "auc_10": old["auc_10"],
            "per_face": "", "command": "", "commit": "", "date": "", "note": MIGRATED_NOTE,
        })
    return out


def setting_of(row: dict) -> tuple[str, str]:
    """(schedule, student): rows of one setting are comparable."""
    return row["schedule"], row["student"]


def arm_label(row: dict) -> str:
    """``config`` with its weight when it has one, e.g. ``facenet_all λ=0.1``."""
    lam = row.get("lambda")
    return row["config"] + ("" if lam in (None, "") else f" λ={lam:g}" if isinstance(lam, float)
                            else f" λ={lam}")


def mean_sd(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else math.nan)


def arm_order(arm: str) -> int:
    order = list(ARMS)
    return order.index(arm) if arm in order else len(order)


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and sd over seeds per (config, lambda, N) of typed grid rows (one setting)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not r.get("fold"):
            groups.setdefault((r["config"], r["lambda"], r["n"]), []).append(r)
    out = []
    for (arm, lam, n), rs in sorted(groups.items(), key=lambda kv: (
            arm_order(kv[0][0]), kv[0][1] or 0.0, kv[0][2])):
        s = {"config": arm, "lambda": lam, "n": n, "seeds": len(rs),
             "steps": "/".join(str(v) for v in sorted({r["steps"] for r in rs}))}
        for m in ("nme", "fr_10", "auc_10"):
            s[f"{m}_mean"], s[f"{m}_sd"] = mean_sd([r[m] for r in rs])
        out.append(s)
    return out


def seconds_per_step(rows: list[dict]) -> dict[str, float]:
    """Median measured wall seconds per optimizer step (whole run: training, tracing,
    evaluation), per config, from typed rows."""
    per: dict[str, list[float]] = {}
    for r in rows:
        if r.get("seconds") and r.get("steps"):
            per.setdefault(r["config"], []).append(r["seconds"] / r["steps"])
    return {k: statistics.median(v) for k, v in per.items()}


def estimate_seconds(rate: dict[str, float], key: RunKey, steps: int,
                     counts: dict[str, int]) -> float | None:
    """Predicted wall time of one run from the measured rates (None when nothing is measured).

    A config not measured yet takes the slowest rate of its cost class (teacher or transfer
    vs plain student).
    """
    if not rate:
        return None
    if key.arm in rate:
        r = rate[key.arm]
    else:
        heavy = lambda a: ARMS[a].weighted or ARMS[a].transfer  # noqa: E731
        pool = [v for k, v in rate.items() if k in ARMS and heavy(k) == heavy(key.arm)]
        r = max(pool or list(rate.values()))
    n = key.n if not key.fold else sum(counts.get(b, 0) for b in key.train_sets)
    return r * epochs_for(n, steps) * steps_per_epoch(n, BATCH_SIZE)
