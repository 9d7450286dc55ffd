"""Limited-data ablation of the teacher regularizers on InfAnFace (issue 5).

Protocol: train on the InfAnFace batches ``ads`` + ``youtube2`` (159 faces), validate on
``google2`` (51 faces), with seeded training subsets of N in {20, 40, 80, 159} faces
(``TrainConfig.train_limit``; the subset and the initialization both follow the seed) and
seeds 0, 1, 2. Every configuration uses the same student, schedule and augmentation
(``fas_tf.train.train``); only the teacher / regularizers change:

- ``none``: heatmap loss only;
- ``cls``, ``feat``, ``sa``, ``ca``: one regularizer with the pretrained dlib teacher;
- ``dlib_all``: all four with the pretrained dlib teacher;
- ``dlib_random``: all four with a randomly initialized dlib-architecture teacher (control);
- ``transfer``: dlib's pretrained trunk fine-tuned with a heatmap head (``fas_tf.transfer``),
  the "adjusting the pre-trained weights" baseline;
- ``facenet_random``: all four with a *random* FaceNet (code-path check only).

Optionally (``--cv=CONFIG[,CONFIG]``) 3-fold cross-validation by batch: train on two batches
(all their faces), test on the third.

Each (config, N, seed) run writes its own directory under ``--out`` (``student.keras``,
``config.json``, ``metrics.json``, ``history.csv``, ``eval.json`` with per-face NMEs and
``run.json`` with timings) and is skipped when its ``metrics.json`` exists, so the grid can be
run in pieces (an interrupted run is resumed from its last epoch). The report (``--docs``:
``results.md``, CSVs, PNGs) is written after every invocation; ``--report_only`` only writes it.

Quick reduced grid (about 20 minutes on 2 idle CPU cores)::

    python benchmarks/ablation.py --quick

Full grid (can be split with --configs / --sizes / --seeds, e.g. one config per invocation)::

    python benchmarks/ablation.py
    python benchmarks/ablation.py --cv=none,dlib_all
    python benchmarks/ablation.py --report_only
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import math
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "infanface-train"
TRAIN_SETS = ("ads", "youtube2")
VAL_SETS = ("google2",)
BATCHES = ("ads", "youtube2", "google2")
SIZES = (20, 40, 80, 159)
SEEDS = (0, 1, 2)
EPOCHS = 200  # fas_tf.train.DEFAULT_EPOCHS for real data
BATCH_SIZE = 16
QUICK_CONFIGS = ("none", "dlib_all", "dlib_random")
QUICK_SIZES = (20, 159)
QUICK_SEEDS = (0,)
QUICK_EPOCHS = 20
DEFAULT_RUN_OVERHEAD_S = 30.0  # data loading, model building, tracing, evaluation


@dataclass(frozen=True)
class Arm:
    """One configuration of the ablation."""

    name: str
    label: str
    teacher: str  # "none", "dlib", "facenet"
    teacher_weights: str | None
    regularizers: str
    transfer: bool = False
    note: str = ""


ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("none", "no teacher", "none", None, "none"),
        Arm("cls", "dlib: cls only", "dlib", None, "cls"),
        Arm("feat", "dlib: feat only", "dlib", None, "feat"),
        Arm("sa", "dlib: sa only", "dlib", None, "sa"),
        Arm("ca", "dlib: ca only", "dlib", None, "ca"),
        Arm("dlib_all", "dlib: cls+feat+sa+ca", "dlib", None, "cls,feat,sa,ca"),
        Arm("dlib_random", "random dlib: cls+feat+sa+ca", "dlib", "random", "cls,feat,sa,ca",
            note="control: dlib architecture, random weights"),
        Arm("transfer", "transfer: dlib trunk fine-tuned", "none", None, "none", transfer=True,
            note="pretrained dlib trunk + heatmap head, all weights trained, heatmap loss only"),
        Arm("facenet_random", "random FaceNet: all four (code-path check only)", "facenet",
            "random", "cls,feat,sa,ca",
            note="code-path check only: random weights, not a result"),
    )
}


@dataclass(frozen=True)
class RunKey:
    """One training run: a grid cell (``fold`` None) or a cross-validation fold."""

    arm: str
    n: int | None  # training-set size (None: all faces of the training batches)
    seed: int
    fold: str | None = None  # the held-out batch of a CV run

    @property
    def train_sets(self) -> tuple[str, ...]:
        return TRAIN_SETS if self.fold is None else tuple(b for b in BATCHES if b != self.fold)

    @property
    def val_sets(self) -> tuple[str, ...]:
        return VAL_SETS if self.fold is None else (self.fold,)

    def rel_dir(self) -> Path:
        if self.fold is None:
            return Path("grid") / self.arm / f"n{self.n}" / f"seed{self.seed}"
        return Path("cv") / self.arm / f"test_{self.fold}" / f"seed{self.seed}"


# ------------------------------------------------------------------------------ schedule


def steps_for(count: int, batch_size: int = BATCH_SIZE) -> int:
    return max(1, math.ceil(count / batch_size))


def epochs_for(n_train: int, epochs: int, min_steps: int) -> int:
    """Epochs of a run: ``epochs``, raised so that small sets get at least ``min_steps`` steps."""
    if min_steps <= 0:
        return epochs
    return max(epochs, math.ceil(min_steps / steps_for(n_train)))


def schedule_tag(epochs: int, min_steps: int) -> str:
    return f"e{epochs}" + (f"_min{min_steps}" if min_steps > 0 else "")


# ------------------------------------------------------------------------------ running


@contextlib.contextmanager
def transfer_student() -> Iterator[None]:
    """Make ``fas_tf.train`` build the transfer model where it builds the student.

    ``fas_tf.train._fit`` imports ``build_student`` from :mod:`fas_tf.student` at call time, so
    swapping the module attribute keeps data, schedule, loss, checkpoints and evaluation
    identical to the other configurations.
    """
    import fas_tf.student
    from fas_tf.transfer import build_transfer_model

    original = fas_tf.student.build_student
    fas_tf.student.build_student = build_transfer_model
    try:
        yield
    finally:
        fas_tf.student.build_student = original


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
    return [ends[b] - ends[a] for a, b in zip(steps, steps[1:]) if b == a + 1]


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
            allow_download=False, **(args.student or {}),
        )
        log(f"[{key.rel_dir()}] training {arm.label}, {epochs} epochs"
            + (" (resuming)" if config.resume else ""))
        start = time.time()
        with transfer_student() if arm.transfer else contextlib.nullcontext():
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
    counts = dict.fromkeys(sets, 0)
    with open(attributes, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("image_set") in counts:
                counts[row["image_set"]] += 1
    return counts


# ------------------------------------------------------------------------------ collecting


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _student_label(cfg: dict) -> str:
    """``alpha/input/head`` of a run's student, e.g. ``0.35/128/32``."""
    if "alpha" not in cfg:
        return "?"
    return f"{cfg['alpha']:g}/{cfg.get('input_size', '?')}/{cfg.get('head_channels', '?')}"


def collect(root: Path) -> list[dict]:
    """One row per finished run (grid and CV) under ``root``."""
    rows = []
    for metrics_path in sorted(root.glob("*/*/*/seed*/metrics.json")):
        run_dir = metrics_path.parent
        kind, arm, cell = run_dir.parts[-4], run_dir.parts[-3], run_dir.parts[-2]
        metrics = _read_json(metrics_path)
        if kind not in ("grid", "cv") or not metrics or "val" not in metrics:
            continue
        ev = _read_json(run_dir / "eval.json") or {}
        rec = _read_json(run_dir / "run.json") or {}
        cfg = (_read_json(run_dir / "config.json") or {})
        teacher = cfg.get("teacher") or {}
        val = metrics["val"]
        rows.append({
            "kind": kind,
            "config": arm,
            "n": int(cell[1:]) if kind == "grid" else cfg.get("num_train"),
            "fold": cell.removeprefix("test_") if kind == "cv" else "",
            "seed": int(run_dir.name[4:]),
            "epochs": metrics.get("epochs"),
            "num_train": cfg.get("num_train"),
            "num_val": cfg.get("num_val", val.get("n")),
            "student": _student_label(cfg.get("config") or {}),
            "teacher": teacher.get("name", "none"),
            "teacher_pretrained": teacher.get("pretrained", ""),
            "nme": val["nme"],
            "fr_10": val["fr_10"],
            "auc_10": val["auc_10"],
            "fit_seconds": rec.get("fit_seconds", metrics.get("fit_seconds_this_process")),
            "epoch_seconds": rec.get("epoch_seconds"),
            "wall_seconds": rec.get("wall_seconds"),
            "per_face": ev.get("per_face"),
            "dir": str(run_dir),
        })
    return rows


def mean_sd(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else math.nan)


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and sd over seeds per (config, N) of the grid runs."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        if r["kind"] == "grid":
            groups.setdefault((r["config"], r["n"]), []).append(r)
    order = list(ARMS)
    out = []
    for (arm, n), rs in sorted(groups.items(),
                               key=lambda kv: (_arm_order(kv[0][0], order), kv[0][1])):
        s = {"config": arm, "n": n, "seeds": len(rs),
             "epochs": "/".join(str(e) for e in sorted({r["epochs"] for r in rs}))}
        for m in ("nme", "fr_10", "auc_10"):
            s[f"{m}_mean"], s[f"{m}_sd"] = mean_sd([r[m] for r in rs])
        out.append(s)
    return out


def _arm_order(arm: str, order: list[str]) -> int:
    return order.index(arm) if arm in order else len(order)


# ------------------------------------------------------------------------------ timing


def time_model(rows: list[dict]) -> dict:
    """Seconds per (train step + validation batch) per config, and per-run overhead."""
    per_unit: dict[str, list[float]] = {}
    overheads = []
    for r in rows:
        if not r["epochs"] or not r["num_train"] or not r["num_val"]:
            continue
        units = steps_for(r["num_train"]) + steps_for(r["num_val"])
        epoch_s = r["epoch_seconds"] or (r["fit_seconds"] or 0) / r["epochs"]
        if epoch_s > 0:
            per_unit.setdefault(r["config"], []).append(epoch_s / units)
        if r["wall_seconds"]:  # everything but steady-state epochs (includes tracing)
            overheads.append(r["wall_seconds"] - r["epochs"] * epoch_s)
    unit = {k: statistics.median(v) for k, v in per_unit.items()}
    return {"unit": unit, "overhead": statistics.median(overheads) if overheads
            else DEFAULT_RUN_OVERHEAD_S, "runs": sum(len(v) for v in per_unit.values())}


def estimate_seconds(model: dict, arm: str, n_train: int, n_val: int, epochs: int) -> float | None:
    """Predicted wall time of one run, from measured times (None when nothing is measured)."""
    unit = model["unit"]
    if not unit:
        return None
    if arm in unit:
        u = unit[arm]
    else:  # same cost class: with a teacher / transfer, or plain student
        teachered = [v for k, v in unit.items() if ARMS.get(k) and ARMS[k].teacher != "none"]
        plain = [v for k, v in unit.items() if ARMS.get(k) and ARMS[k].teacher == "none"]
        pool = teachered if ARMS[arm].teacher != "none" or ARMS[arm].transfer else plain
        u = max(pool or list(unit.values()))
    return model["overhead"] + epochs * (steps_for(n_train) + steps_for(n_val)) * u


def grid_keys(arms: list[str], sizes: list[int], seeds: list[int]) -> list[RunKey]:
    return [RunKey(a, n, s) for a in arms for n in sizes for s in seeds]


def cv_keys(arms: list[str], seeds: list[int]) -> list[RunKey]:
    return [RunKey(a, None, s, fold) for a in arms for fold in BATCHES for s in seeds]


def estimate_lines(rows: list[dict], out: Path, schedules: list[int], min_steps: int,
                   counts: dict[str, int]) -> list[str]:
    """Time estimates of the full grid and of a 2-config CV per epoch setting, from measured runs.

    Runs already finished under ``out/<schedule tag>`` count as done.
    """
    model = time_model(rows)
    if not model["unit"]:
        return ["Time estimate: no measured runs yet (run the quick grid first)."]
    n_val = sum(counts.get(s, 0) for s in VAL_SETS)
    lines = [f"Measured seconds per (training step + validation batch) from {model['runs']} "
             f"runs on this machine ({os.cpu_count()} CPUs; steady-state epochs when a run had "
             "2 or more, timings include whatever else ran): "
             + ", ".join(f"{k} {v:.2f}" for k, v in sorted(model["unit"].items()))
             + f"; per-run overhead (loading, tracing, evaluation) {model['overhead']:.0f} s."]

    def total(keys: list[RunKey], epochs: int, root: Path) -> tuple[float, float, int]:
        all_s = left_s = 0.0
        left = 0
        for k in keys:
            n_tr = k.n if k.fold is None else sum(counts.get(b, 0) for b in k.train_sets)
            n_v = n_val if k.fold is None else counts.get(k.fold, 0)
            s = estimate_seconds(model, k.arm, n_tr, n_v, epochs_for(n_tr, epochs, min_steps))
            all_s += s or 0.0
            if not (root / k.rel_dir() / "metrics.json").is_file():
                left_s += s or 0.0
                left += 1
        return all_s, left_s, left

    full = grid_keys(list(ARMS), list(SIZES), list(SEEDS))
    cv = cv_keys(["none", "dlib_all"], [0])
    for epochs in schedules:
        tag = schedule_tag(epochs, min_steps)
        all_s, left_s, left = total(full, epochs, out / tag)
        lines.append(f"Estimated full grid, schedule {tag} ({len(ARMS)} configs x N "
                     f"{list(SIZES)} x seeds {list(SEEDS)} = {len(full)} runs): "
                     f"{all_s / 3600:.1f} h sequential; {left} runs left, {left_s / 3600:.1f} h.")
        all_s, left_s, left = total(cv, epochs, out / tag)
        lines.append(f"Estimated CV, schedule {tag} (--cv=none,dlib_all, seed 0, {len(cv)} "
                     f"runs): {all_s / 3600:.1f} h; {left} runs left, {left_s / 3600:.1f} h.")
    return lines


# ------------------------------------------------------------------------------ report


def _fmt(mean: float, sd: float, scale: float, digits: int) -> str:
    if math.isnan(sd):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}"


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else
                                 f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in r.items() if k in columns})
    os.replace(tmp, path)


def plot_nme_vs_n(summary: list[dict], path: Path) -> None:
    """NME (mean ± sd over seeds) vs training-set size, one line per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in dict.fromkeys(s["config"] for s in summary):
        pts = [s for s in summary if s["config"] == arm]
        xs = [s["n"] for s in pts]
        ys = [s["nme_mean"] * 100 for s in pts]
        err = [0.0 if math.isnan(s["nme_sd"]) else s["nme_sd"] * 100 for s in pts]
        label = ARMS[arm].label if arm in ARMS else arm
        style = "--" if arm in ("facenet_random", "dlib_random") else "-"
        ax.errorbar(xs, ys, yerr=err, fmt=f"o{style}", capsize=3, label=label, alpha=0.85)
    ax.set_xscale("log", base=2)
    sizes = sorted({s["n"] for s in summary})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("training faces N (ads + youtube2 subset)")
    ax.set_ylabel("validation NME on google2 (%, interocular)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_ced_configs(rows: list[dict], n: int, path: Path) -> None:
    """CED up to NME 0.10 at training size ``n``, per config (faces pooled over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from fas_tf.metrics import ced_curve

    fig, ax = plt.subplots(figsize=(6, 4.5))
    arms = [a for a in ARMS if any(r["config"] == a for r in rows)]
    for arm in arms:
        faces = [e for r in rows if r["config"] == arm for e in (r["per_face"] or [])]
        if not faces:
            continue
        seeds = sum(1 for r in rows if r["config"] == arm and r["per_face"])
        levels, frac = ced_curve(np.asarray(faces), 0.10)
        style = "--" if arm in ("facenet_random", "dlib_random") else "-"
        ax.plot(levels * 100, frac * 100, style, label=f"{ARMS[arm].label} ({seeds} seeds)")
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("faces (%)")
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 100)
    ax.set_title(f"CED on google2, N={n}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


RUN_COLUMNS = ["kind", "config", "n", "fold", "seed", "epochs", "student", "num_train",
               "num_val", "teacher", "teacher_pretrained", "nme", "fr_10", "auc_10", "fit_seconds",
               "epoch_seconds", "wall_seconds"]
SUMMARY_COLUMNS = ["config", "n", "seeds", "epochs", "nme_mean", "nme_sd", "fr_10_mean",
                   "fr_10_sd", "auc_10_mean", "auc_10_sd"]


def write_report(root: Path, docs: Path, tag: str, expected: list[RunKey],
                 estimate: list[str], commands: dict[str, str]) -> Path:
    """Write ``results.md``, the CSVs and the PNG plots for the runs found under ``root``."""
    rows = collect(root)
    grid = [r for r in rows if r["kind"] == "grid"]
    cv = [r for r in rows if r["kind"] == "cv"]
    summary = summarize(rows)
    docs.mkdir(parents=True, exist_ok=True)
    write_csv(docs / "ablation_runs.csv", rows, RUN_COLUMNS)
    write_csv(docs / "ablation_summary.csv", summary, SUMMARY_COLUMNS)
    nme_png, ced_png = docs / "ablation_nme_vs_n.png", None
    if summary:
        plot_nme_vs_n(summary, nme_png)
        n_max = max(r["n"] for r in grid)
        ced_png = docs / f"ablation_ced_n{n_max}.png"
        plot_ced_configs([r for r in grid if r["n"] == n_max], n_max, ced_png)

    done = sum((root / k.rel_dir() / "metrics.json").is_file() for k in expected)
    sizes = sorted({s["n"] for s in summary})
    arms = [a for a in ARMS if any(s["config"] == a for s in summary)]
    arms += sorted({s["config"] for s in summary} - set(arms))
    cell = {(s["config"], s["n"]): s for s in summary}
    students = ", ".join(sorted({r["student"] for r in rows})) or "the `fas_tf.train` default"
    md = [
        "# Limited-data ablation: teacher regularizers on InfAnFace",
        "",
        f"Generated by `benchmarks/ablation.py` on "
        f"{datetime.datetime.now().isoformat(timespec='minutes')} from the runs in "
        f"`{_display(root)}` (schedule `{tag}`). Do not edit by hand; rerun with `--report_only`.",
        "",
        "## Protocol",
        "",
        f"- Train on InfAnFace batches {' + '.join(TRAIN_SETS)} (159 faces), validate on "
        f"{', '.join(VAL_SETS)} (51 faces); training subsets of N faces drawn with the run's "
        "seed (`TrainConfig.train_limit`), so each seed changes the subset (N < 159), the "
        "initialization and the augmentation order. At N = 159 only the latter two change.",
        f"- Same student ({students}; MobileNetV2 alpha / input px / head channels, stride-4 "
        "heatmaps), schedule "
        "(AdamW, warmup + cosine decay, peak lr 2e-3, batch 16), augmentation and heatmap loss "
        "for every configuration (`fas_tf.train.train` defaults); regularizer weights 1.0.",
        f"- Epochs per run: schedule `{tag}` (see the `epochs` column of the CSV). By default "
        "every N gets the same number of epochs, so small N also gets fewer optimizer steps; "
        "`--min_steps=K` raises the epochs of small N to at least K steps (tag `_minK`).",
        "- Metrics on the validation batch, interocular normalization: NME, FR@0.10 (share of "
        "faces with NME > 0.10) and AUC@0.10 of the CED; mean ± sd over seeds (sd blank with "
        "one seed).",
        "",
        "| config | what | teacher | regularizers | note |",
        "|---|---|---|---|---|",
    ]
    for a in ARMS.values():
        teacher = "none" if a.teacher == "none" else (
            f"{a.teacher} ({'random' if a.teacher_weights == 'random' else 'pretrained'})")
        if a.transfer:
            teacher = "dlib trunk (pretrained, trained)"
        md.append(f"| `{a.name}` | {a.label} | {teacher} | {a.regularizers} | {a.note} |")
    md += ["", "## Commands", "", "```bash"]
    md += [f"# {k}\n{v}" for k, v in commands.items()]
    md += ["```", "", "## Results", ""]
    md.append(f"{done} of the {len(expected)} runs of the requested grid are finished; "
              f"{len(grid)} grid and {len(cv)} cross-validation runs found in total.")
    md.append("")
    if not summary:
        md += ["**No finished runs yet**: the tables and plots appear here once the grid has "
               "been run (see Commands).", ""]
    else:
        for metric, title, scale, digits in (("nme", "NME (%)", 100, 2),
                                             ("fr_10", "FR@0.10 (%)", 100, 1),
                                             ("auc_10", "AUC@0.10", 1, 3)):
            md += [f"### {title}, mean ± sd over seeds", "",
                   "| config | " + " | ".join(f"N={n}" for n in sizes) + " |",
                   "|---|" + "---|" * len(sizes)]
            for arm in arms:
                cells = []
                for n in sizes:
                    s = cell.get((arm, n))
                    cells.append("–" if s is None else _fmt(
                        s[f"{metric}_mean"], s[f"{metric}_sd"], scale, digits)
                        + f" ({s['seeds']})")
                md.append(f"| `{arm}` | " + " | ".join(cells) + " |")
            md.append("")
        md += ["(k) = number of seeds. `facenet_random` is a **code-path check only** (random "
               "weights); `dlib_random` is the random-teacher control.", "",
               f"![NME vs N]({nme_png.name})", ""]
        if ced_png is not None:
            md += [f"![CED]({ced_png.name})", "",
                   "CED curves pool the validation faces of all seeds of a config.", ""]
    if cv:
        md += ["### 3-fold cross-validation by batch (train on two batches, test on the third)",
               "", "| config | test batch | seeds | NME (%) | FR@0.10 (%) | AUC@0.10 |",
               "|---|---|---|---|---|---|"]
        folds: dict[tuple[str, str], list[dict]] = {}
        for r in cv:
            folds.setdefault((r["config"], r["fold"]), []).append(r)
        for (arm, fold), rs in sorted(folds.items(),
                                      key=lambda kv: (_arm_order(kv[0][0], list(ARMS)), kv[0][1])):
            stats = [mean_sd([r[m] for r in rs]) for m in ("nme", "fr_10", "auc_10")]
            md.append(f"| `{arm}` | {fold} | {len(rs)} | {_fmt(*stats[0], 100, 2)} | "
                      f"{_fmt(*stats[1], 100, 1)} | {_fmt(*stats[2], 1, 3)} |")
        md.append("")
    md += ["## Time", ""] + [f"- {line}" for line in estimate] + [
        "", "Files: `ablation_runs.csv` (one row per run), `ablation_summary.csv` (mean/sd per "
        "config and N), the PNG plots. Run directories are not committed.", ""]
    path = docs / "results.md"
    tmp = path.with_name(".results.md.tmp")
    tmp.write_text("\n".join(md), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------ CLI


def _list(value: str | None, cast: Callable = str) -> list | None:
    return None if value is None else [cast(v) for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced grid: configs "
                   f"{','.join(QUICK_CONFIGS)}, N {QUICK_SIZES}, seed 0, {QUICK_EPOCHS} epochs")
    p.add_argument("--configs", help=f"comma list of {','.join(ARMS)} (default: all)")
    p.add_argument("--sizes", help=f"comma list of N (default: {','.join(map(str, SIZES))})")
    p.add_argument("--seeds", help=f"comma list of seeds (default: {','.join(map(str, SEEDS))})")
    p.add_argument("--epochs", type=int, help=f"epochs per run (default {EPOCHS}; "
                   f"{QUICK_EPOCHS} with --quick)")
    p.add_argument("--min_steps", type=int, default=0, help="raise the epochs of small N so "
                   "every run has at least this many optimizer steps (default 0: same epochs)")
    p.add_argument("--cv", default="", help="comma list of configs for 3-fold CV by batch")
    p.add_argument("--cv_seeds", default="0", help="seeds of the CV runs")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"),
                   help="run directories (a schedule subfolder is added; not committed)")
    p.add_argument("--docs", default=None,
                   help="report folder (default docs, or docs/quick with --quick)")
    p.add_argument("--data", default=str(DATA), help="InfAnFace folder (images + .pts)")
    p.add_argument("--attributes", default=None,
                   help="attributes CSV (default DATA/attributes.csv)")
    p.add_argument("--student", default=None, help="ALPHA:INPUT:HEAD of the student, e.g. "
                   "0.5:96:64 (default: fas_tf.train's; a non-default student gets its own "
                   "subfolder of --out)")
    p.add_argument("--report_only", action="store_true", help="only regenerate the report")
    p.add_argument("--verbose", type=int, default=2, help="Keras progress (0, 1, 2)")
    args = p.parse_args(argv)
    args.configs = _list(args.configs) or list(QUICK_CONFIGS if args.quick else ARMS)
    args.sizes = _list(args.sizes, int) or list(QUICK_SIZES if args.quick else SIZES)
    args.seeds = _list(args.seeds, int) or list(QUICK_SEEDS if args.quick else SEEDS)
    args.cv = _list(args.cv) or []
    args.cv_seeds = _list(args.cv_seeds, int) or [0]
    if args.epochs is None:
        args.epochs = QUICK_EPOCHS if args.quick else EPOCHS
    bad = sorted(set(args.configs + args.cv) - set(ARMS))
    if bad:
        p.error(f"unknown config(s) {bad}; choose from {', '.join(ARMS)}")
    if args.epochs < 1 or any(n < 1 for n in args.sizes):
        p.error("--epochs and --sizes must be positive")
    args.data = Path(args.data)
    args.attributes = Path(args.attributes) if args.attributes else args.data / "attributes.csv"
    args.docs = Path(args.docs or (REPO / "docs" / ("quick" if args.quick else "")))
    args.out = Path(args.out)
    if args.student:
        from fas_tf.student import parse_student_spec

        try:
            args.student = parse_student_spec(args.student)
        except ValueError:
            p.error(f"--student={args.student}: expected ALPHA:INPUT:HEAD, e.g. 0.5:96:64")
    return args


def commands_for(argv: list[str]) -> dict[str, str]:
    s = "python benchmarks/ablation.py"
    return {
        "quick reduced grid (~20 min on 2 idle CPU cores), report in docs/quick/": f"{s} --quick",
        "full grid, all at once or in pieces (each run is skipped once finished)": (
            f"{s}\n{s} --configs=none,dlib_all --sizes=20,40\n{s} --configs=transfer"),
        "3-fold cross-validation by batch for chosen configs": f"{s} --cv=none,dlib_all",
        "regenerate this report from existing runs": f"{s} --report_only",
        "this report was generated with": " ".join([s, *argv]),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    tag = schedule_tag(args.epochs, args.min_steps)
    if args.student:
        tag += "_s{alpha:g}-{input_size}-{head_channels}".format(**args.student)
    root = args.out / tag
    log = lambda m: print(m, flush=True)  # noqa: E731
    keys = grid_keys(args.configs, args.sizes, args.seeds) + cv_keys(args.cv, args.cv_seeds)
    failures = []
    if not args.report_only:
        if not (args.attributes.is_file() and args.data.is_dir()):
            print(f"{args.data}: InfAnFace data (with attributes.csv) not found", file=sys.stderr)
            return 2
        root.mkdir(parents=True, exist_ok=True)
        ignore = args.out / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# run directories of benchmarks/ablation.py (not committed)\n*\n")
        log(f"{len(keys)} runs, schedule {tag}, in {root}")
        for i, key in enumerate(keys, 1):
            log(f"--- run {i}/{len(keys)}")
            try:
                run_one(key, root, args, log)
            except KeyboardInterrupt:
                raise
            except Exception as err:  # keep going; the run can be retried later
                traceback.print_exc()
                failures.append(f"{key.rel_dir()}: {err.__class__.__name__}: {err}")
    counts = count_sets(args.attributes, BATCHES) if args.attributes.is_file() else {
        "ads": 104, "youtube2": 55, "google2": 51}
    # Per-step times do not depend on the schedule: use the runs of every schedule.
    rows = [r for d in sorted(args.out.glob("e*")) if d.is_dir() for r in collect(d)]
    # Estimates for the default full schedule and for this invocation's epochs.
    schedules = list(dict.fromkeys((EPOCHS, args.epochs)))
    estimate = estimate_lines(rows, args.out, schedules, args.min_steps, counts)
    path = write_report(root, args.docs, tag, keys, estimate, commands_for(argv))
    for line in estimate:
        log(line)
    log(f"wrote {path}")
    for f in failures:
        log(f"FAILED {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
