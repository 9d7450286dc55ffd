"""The ablation's command line: ``python benchmarks/ablation [--quick] [--configs=..] ...``."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from . import __doc__ as ablation_doc
from .arms import (
    ARMS,
    BATCHES,
    DATA,
    EPOCHS,
    QUICK_CONFIGS,
    QUICK_EPOCHS,
    QUICK_SEEDS,
    QUICK_SIZES,
    REPO,
    SEEDS,
    SIZES,
    cv_keys,
    grid_keys,
    schedule_tag,
)
from .collect import collect, estimate_lines
from .report import write_report
from .runner import count_sets, run_one


def _list(value: str | None, cast: Callable = str) -> list | None:
    return None if value is None else [cast(v) for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/ablation",
                                description=ablation_doc.splitlines()[0])
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
    s = "python benchmarks/ablation"
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
            ignore.write_text("# run directories of benchmarks/ablation (not committed)\n*\n")
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
