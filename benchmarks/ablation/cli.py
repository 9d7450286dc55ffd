"""The ablation's command line: ``python benchmarks/ablation [--configs=..] [--sizes=..] ...``."""

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
    LAMBDA,
    QUICK_CONFIGS,
    QUICK_SEEDS,
    QUICK_SIZES,
    QUICK_STEPS,
    REPO,
    SEEDS,
    SIZES,
    STEPS,
    STUDENT,
    RunKey,
    cv_keys,
    grid_configs,
    grid_keys,
    grid_twin,
    schedule_tag,
)
from .collect import (
    RERUNS_CSV,
    ROWS_SUBDIR,
    estimate_seconds,
    migrate_old_rows,
    read_rows,
    row_key,
    run_key,
    seconds_per_step,
    typed,
    write_rows,
)
from .report import write_report
from .runner import Setting, count_sets, machine, print_log, run_in_child, run_one


def _list(value: str | None, cast: Callable = str) -> list | None:
    return None if value is None else [cast(v) for v in value.split(",") if v.strip()]


def _cache_views(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: a number of views >= 0, or auto")
    return int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/ablation",
                                description=ablation_doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced grid: configs "
                   f"{','.join(QUICK_CONFIGS)}, N {QUICK_SIZES}, seed 0, {QUICK_STEPS} steps, "
                   "report in docs/quick")
    p.add_argument("--configs", help=f"comma list of {','.join(ARMS)} (default: the grid of "
                   "issue 16, see --single_teacher; none with --cv alone)")
    p.add_argument("--single_teacher", choices=("facenet", "dlib"), default="facenet",
                   help="teacher of the four single-regularizer arms in the default --configs")
    p.add_argument("--sizes", help=f"comma list of N (default: {','.join(map(str, SIZES))})")
    p.add_argument("--seeds", help=f"comma list of seeds (default: {','.join(map(str, SEEDS))})")
    p.add_argument("--steps", type=int, help=f"optimizer steps per run, whatever N (default "
                   f"{STEPS}; {QUICK_STEPS} with --quick); epochs = ceil(steps / steps per epoch)")
    p.add_argument("--lambdas", default=f"{LAMBDA:g}", help="comma list of regularizer weights "
                   "(all four jointly); each teacher arm runs once per weight, e.g. "
                   "0.03,0.1,0.3,1 (default %(default)s)")
    p.add_argument("--student", default=STUDENT, help="ALPHA:INPUT:HEAD of the student "
                   "(default %(default)s)")
    p.add_argument("--teacher_cache", type=_cache_views, default=0, help="K precomputed teacher "
                   "views per face (TrainConfig.teacher_cache), 'auto' (K = epochs / 4 per run: "
                   "fewer views cost accuracy); 0: teacher online")
    p.add_argument("--cv", default="", help="comma list of configs for 3-fold CV by batch "
                   "(alone: only the CV runs)")
    p.add_argument("--cv_seeds", default="0", help="seeds of the CV runs")
    p.add_argument("--cv_folds", default=",".join(BATCHES), help="held-out batches of the CV")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"),
                   help="scratch run folders (not committed; a killed run resumes from here)")
    p.add_argument("--docs", default=None, help="report folder (default docs, docs/quick with "
                   f"--quick); rows go to DOCS/{ROWS_SUBDIR}/rows.csv")
    p.add_argument("--data", default=str(DATA), help="InfAnFace folder (images + .pts)")
    p.add_argument("--attributes", default=None,
                   help="attributes CSV (default DATA/attributes.csv)")
    p.add_argument("--migrate_from", default=None, help="add the rows of an old "
                   "ablation_runs.csv (run-folder era) to rows.csv, missing fields empty")
    p.add_argument("--report_only", action="store_true", help="only regenerate the report")
    p.add_argument("--verbose", type=int, default=2, help="Keras progress (0, 1, 2)")
    p.add_argument("--rerun", action="store_true", help="run the asked runs that are in "
                   "rows.csv again, on this machine, into reruns.csv (one per run and machine; "
                   "rows.csv is left alone): does a row reproduce from its command?")
    p.add_argument("--in_process", action="store_true", help="train in this process (for a "
                   "debugger); by default each run trains in its own process, so memory does "
                   "not grow run after run")
    args = p.parse_args(argv)
    default_configs = [] if args.cv and args.configs is None else (
        list(QUICK_CONFIGS) if args.quick else grid_configs(args.single_teacher))
    args.configs = _list(args.configs) if args.configs is not None else default_configs
    args.sizes = _list(args.sizes, int) or list(QUICK_SIZES if args.quick else SIZES)
    args.seeds = _list(args.seeds, int) or list(QUICK_SEEDS if args.quick else SEEDS)
    args.cv = _list(args.cv) or []
    args.cv_seeds = _list(args.cv_seeds, int) or [0]
    args.cv_folds = _list(args.cv_folds) or list(BATCHES)
    try:
        args.lambdas = _list(args.lambdas, float) or [LAMBDA]
    except ValueError:
        p.error(f"--lambdas={args.lambdas}: expected numbers, e.g. 0.03,0.1,0.3,1")
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else STEPS
    bad = sorted(set(args.configs + args.cv) - set(ARMS))
    if bad:
        p.error(f"unknown config(s) {bad}; choose from {', '.join(ARMS)}")
    if sorted(set(args.cv_folds) - set(BATCHES)):
        p.error(f"--cv_folds: choose from {', '.join(BATCHES)}")
    if args.steps < 1 or any(n < 1 for n in args.sizes) or any(v < 0 for v in args.lambdas):
        p.error("--steps and --sizes must be positive, --lambdas >= 0")
    from fas_tf.student import parse_student_spec

    try:
        parse_student_spec(args.student)
    except ValueError:
        p.error(f"--student={args.student}: expected ALPHA:INPUT:HEAD, e.g. 0.5:96:64")
    args.data, args.out = Path(args.data), Path(args.out)
    args.docs = Path(args.docs or (REPO / "docs" / ("quick" if args.quick else "")))
    return args


def commands_for(argv: list[str]) -> dict[str, str]:
    s = "python benchmarks/ablation"
    return {
        "advance the grid by what fits in a session (finished runs are skipped), then commit "
        "the rows": (f"{s} --configs=none,facenet_all,facenet_random --sizes=20,40 "
                     "--seeds=0,1,2 --teacher_cache=auto\ngit add docs/ablation docs/results.md && "
                     "git commit -m 'ablation: rows of this session'"),
        "the regularizer-weight sweep (each teacher arm once per lambda)": (
            f"{s} --configs=none,facenet_all,dlib_all --sizes=80,159 "
            "--lambdas=0.03,0.1,0.3,1 --teacher_cache=auto"),
        "the whole default grid (none, both teachers + random controls, FaceNet singles, "
        "transfer; N 20-159; seeds 0-2; 2000 steps)": s,
        "3-fold cross-validation by batch": f"{s} --cv=none,facenet_all",
        "rerun rows on this machine (into reruns.csv: does a row reproduce from its "
        "command?)": "<the row's command> --rerun",
        "regenerate this report from rows.csv": f"{s} --report_only",
        "this report was generated with": " ".join([s, *argv]),
    }


def is_done(key: RunKey, done: set[tuple[str, ...]], schedule: str, student: str) -> bool:
    """Whether ``key`` has a row in ``done`` (row keys), itself or its grid twin
    (:func:`.arms.grid_twin`: a CV fold that is the same training as a grid run)."""
    return any(run_key(k, schedule, student) in done
               for k in (key, grid_twin(key)) if k is not None)


def progress_lines(rows: list[dict], keys: list[RunKey], setting: Setting,
                   counts: dict[str, int]) -> tuple[list[str], list[str]]:
    """(progress, time estimate) lines for this invocation's runs and the default grid."""
    done = {row_key(r) for r in rows}
    full = grid_keys(grid_configs(), list(SIZES), list(SEEDS))
    full_setting = (schedule_tag(STEPS), STUDENT)
    rate = seconds_per_step([typed(r) for r in rows])

    def left(ks: list[RunKey], schedule: str, student: str, steps: int) -> tuple[int, float]:
        todo = [k for k in ks if not is_done(k, done, schedule, student)]
        return len(todo), sum(estimate_seconds(rate, k, steps, counts) or 0.0 for k in todo)

    n_full, s_full = left(full, *full_setting, STEPS)
    n_this, s_this = left(keys, setting.schedule, setting.student, setting.steps)
    progress = [
        f"Progress: {len(full) - n_full} of the {len(full)} runs of the default grid "
        f"(schedule {full_setting[0]}, student {full_setting[1]}, λ {LAMBDA:g}) are in rows.csv; "
        f"{len(keys) - n_this} of the {len(keys)} runs of the invocation that wrote this report.",
    ]
    if not rate:
        return progress, ["No measured run yet, so no time estimate."]
    estimate = [
        "Measured wall seconds per optimizer step (whole run, including tracing and "
        "evaluation; whatever else ran on the machine included): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(rate.items())) + ".",
        f"Left of the default grid: {n_full} runs, about {s_full / 3600:.1f} h sequential.",
        f"Left of this invocation: {n_this} runs, about {s_this / 3600:.1f} h.",
    ]
    return progress, estimate


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    rows_dir = args.docs / ROWS_SUBDIR
    rows_csv = rows_dir / "rows.csv"
    setting = Setting(steps=args.steps, student=args.student, data=args.data,
                      attributes=Path(args.attributes) if args.attributes else None,
                      out=args.out, rows_dir=rows_dir, teacher_cache=args.teacher_cache,
                      verbose=args.verbose, rerun=args.rerun)
    log = print_log
    if args.migrate_from:
        rows = read_rows(rows_csv)
        have = {row_key(r) for r in rows}
        new = [r for r in migrate_old_rows(Path(args.migrate_from)) if row_key(r) not in have]
        write_rows(rows_csv, rows + new)
        log(f"migrated {len(new)} rows from {args.migrate_from} into {rows_csv}")
    keys = (grid_keys(args.configs, args.sizes, args.seeds, args.lambdas)
            + cv_keys(args.cv, args.cv_seeds, args.cv_folds, args.lambdas))
    failures = []
    if not args.report_only:
        done = {row_key(r) for r in read_rows(rows_csv)}
        todo = [k for k in keys if not is_done(k, done, setting.schedule, setting.student)]
        if args.rerun:
            here = machine()
            rerun = {row_key(r) for r in read_rows(rows_dir / RERUNS_CSV)
                     if r.get("machine") == here}
            todo = [k for k in keys if run_key(k, setting.schedule, setting.student) in done
                    - rerun]
            log(f"{len(keys)} runs asked, {len(todo)} of them in {rows_csv} and not yet rerun "
                f"on this machine ({here}): rerunning them into {rows_dir / RERUNS_CSV}")
        else:
            log(f"{len(keys)} runs asked, {len(keys) - len(todo)} already in {rows_csv} "
                f"(skipped), {len(todo)} to run; schedule {setting.schedule}, student "
                f"{setting.student}")
        if todo and not (setting.attributes_csv.is_file() and args.data.is_dir()):
            print(f"{args.data}: InfAnFace data (with attributes.csv) not found", file=sys.stderr)
            return 2
        if todo:
            args.out.mkdir(parents=True, exist_ok=True)
            ignore = args.out / ".gitignore"
            if not ignore.exists():
                ignore.write_text("# run folders of benchmarks/ablation (not committed)\n*\n")
        for i, key in enumerate(todo, 1):
            log(f"--- run {i}/{len(todo)}")
            try:
                if args.in_process:
                    run_one(key, setting, log)
                else:
                    run_in_child(key, setting)
            except KeyboardInterrupt:
                raise
            except Exception as err:  # keep going; the run is retried by the next invocation
                traceback.print_exc()
                failures.append(f"{key}: {err.__class__.__name__}: {err}")
    counts = (count_sets(setting.attributes_csv, BATCHES) if setting.attributes_csv.is_file()
              else {"ads": 104, "youtube2": 55, "google2": 51})
    progress, estimate = progress_lines(read_rows(rows_csv), keys, setting, counts)
    path = write_report(args.docs, progress, estimate, commands_for(argv))
    for line in progress + estimate:
        log(line)
    log(f"wrote {path}")
    for f in failures:
        log(f"FAILED {f}")
    return 1 if failures else 0
