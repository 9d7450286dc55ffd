"""Finished ablation runs -> one row each, mean/sd summaries, and wall-time estimates."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from .arms import (
    ARMS,
    SEEDS,
    SIZES,
    VAL_SETS,
    RunKey,
    cv_keys,
    epochs_for,
    grid_keys,
    schedule_tag,
    steps_for,
)

DEFAULT_RUN_OVERHEAD_S = 30.0  # data loading, model building, tracing, evaluation


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
                               key=lambda kv: (arm_order(kv[0][0], order), kv[0][1])):
        s = {"config": arm, "n": n, "seeds": len(rs),
             "epochs": "/".join(str(e) for e in sorted({r["epochs"] for r in rs}))}
        for m in ("nme", "fr_10", "auc_10"):
            s[f"{m}_mean"], s[f"{m}_sd"] = mean_sd([r[m] for r in rs])
        out.append(s)
    return out


def arm_order(arm: str, order: list[str]) -> int:
    return order.index(arm) if arm in order else len(order)


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
