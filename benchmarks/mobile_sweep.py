"""Small students with and without distillation: size, speed and accuracy in one table.

    python benchmarks/mobile_sweep.py [--source=0.5:128:64 | --source_model=RUN/student.keras]
        [--students=0.35:128:32:lite,0.35:96:32:lite] [--distill=off,on] [--epochs=200]
        [--runs_dir=runs/mobile_sweep] [--parallel=2]

Trains (``python -m fas_tf.train``, no teacher unless ``--teacher``) the source model and, for
each student spec ``ALPHA:INPUT:HEAD[:lite]``, one run without and one with
``--distill_from=<source>/student.keras``; exports each (and the source) with
``python -m export --quantize=int8`` (its parity check gives the Keras and int8 NME on the
validation sets); then times every int8 file together with MediaPipe's face landmark model in
one interleaved run (1 thread). Finished runs and exports are reused, an interrupted run is
resumed, so the command can be repeated until the table is complete. Prints the Markdown table
(also written to ``<runs_dir>/sweep.md``) with the CPU model and flags it was timed on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu  # benchmarks/machine.py (this script runs as a file)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_name(spec: str, distilled: bool) -> str:
    return "s_" + spec.replace(":", "_") + ("_distill" if distilled else "")


def train_command(
    args: argparse.Namespace, spec: str, out: Path, distill: Path | None,
) -> list[str]:
    from fas_tf.student import parse_student_spec, split_architecture

    architecture, numbers = split_architecture(spec)
    geometry = parse_student_spec(numbers)
    cmd = [sys.executable, "-m", "fas_tf.train", f"--data={args.data}",
           f"--attributes={args.attributes}", f"--train_sets={args.train_sets}",
           f"--val_sets={args.val_sets}", f"--teacher={args.teacher}", f"--epochs={args.epochs}",
           f"--seed={args.seed}", f"--student={architecture}", f"--alpha={geometry['alpha']:g}",
           f"--input_size={geometry['input_size']}",
           f"--head_channels={geometry['head_channels']}", f"--output_dir={out}", "--verbose=2"]
    if distill is not None:
        cmd += [f"--distill_from={distill}", f"--lambda_distill={args.lambda_distill:g}"]
    if (out / "config.json").exists():
        cmd.append("--resume")
    return cmd


def run_all(jobs: list[tuple[Path, list[str], bool]], parallel: int, source: Path) -> None:
    """Run (log, command, needs the source) jobs in order, at most ``parallel`` at a time, a
    distillation job only once ``source`` exists; stop at the first failure.
    """
    pending, running = list(jobs), []
    while pending or running:
        ready = [j for j in pending if not j[2] or source.exists()]
        while ready and len(running) < parallel:
            job = ready.pop(0)
            pending.remove(job)
            log, cmd, _ = job
            print("run:", " ".join(cmd[1:]), f"> {log}", flush=True)
            running.append((log, subprocess.Popen(cmd, stdout=open(log, "w"),
                                                  stderr=subprocess.STDOUT)))
        while True:  # wait for any one job to end
            ended = [r for r in running if r[1].poll() is not None]
            if ended:
                break
            time.sleep(5)
        for log, proc in ended:
            running.remove((log, proc))
            if proc.returncode != 0:
                for _, other in running:
                    other.terminate()
                lines = log.read_text().strip().splitlines() or ["(no output)"]
                sys.exit(f"error: {log}: {lines[-1]}")


def export(args: argparse.Namespace, run: Path) -> dict:
    """int8 export of ``run/student.keras`` (kept in ``run/int8``) -> its model.json."""
    meta = run / "int8" / "model.json"
    if not meta.exists():
        proc = subprocess.run(
            [sys.executable, "-m", "export", f"--model={run / 'student.keras'}",
             f"--output={run / 'int8' / 'model.tflite'}", "--quantize=int8",
             f"--representative_data={args.data}", f"--attributes={args.attributes}",
             f"--representative_sets={args.train_sets}", f"--val_sets={args.val_sets}"],
            capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            sys.exit(f"error: export of {run}: {last}")
    return json.loads(meta.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/infanface-train")
    parser.add_argument("--attributes", default=None, help="default: DATA/attributes.csv")
    parser.add_argument("--train_sets", default="ads,youtube2")
    parser.add_argument("--val_sets", default="google2")
    parser.add_argument("--source", default="0.5:128:64", help="spec of the model to distill from")
    parser.add_argument("--source_model", default=None,
                        help="a trained student.keras to distill from instead of training --source")
    parser.add_argument("--students", default="0.35:128:32:lite,0.35:96:32:lite")
    parser.add_argument("--distill", default="off,on", help="off, on or both")
    parser.add_argument("--lambda_distill", type=float, default=1.0)
    parser.add_argument("--teacher", default="none", help="--teacher of every training run")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs_dir", default="runs/mobile_sweep")
    parser.add_argument("--parallel", type=int, default=2, help="training runs at a time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timing_runs", type=int, default=400)
    args = parser.parse_args()
    args.attributes = args.attributes or str(Path(args.data) / "attributes.csv")
    modes = args.distill.split(",")
    if not set(modes) <= {"off", "on"}:
        parser.error(f"--distill={args.distill}: expected off, on or off,on")
    root = Path(args.runs_dir)
    root.mkdir(parents=True, exist_ok=True)

    def todo(spec: str, distilled: bool) -> list[tuple[Path, list[str], bool]]:
        out = root / run_name(spec, distilled)
        if (out / "student.keras").exists():
            return []
        distill = source_run / "student.keras" if distilled else None
        return [(root / f"{out.name}.log", train_command(args, spec, out, distill), distilled)]

    source_run = Path(args.source_model).parent if args.source_model else (
        root / run_name(args.source, False))
    specs = args.students.split(",")
    arms = [(s, m == "on") for s in specs for m in modes]
    # the source first; the distilled arms start once it exists, plain arms fill the free slots
    jobs = [] if args.source_model else todo(args.source, False)
    jobs += [j for s, d in arms if d for j in todo(s, True)]
    jobs += [j for s, d in arms if not d for j in todo(s, False)]
    run_all(jobs, args.parallel, source_run / "student.keras")

    from export.benchmark import DEFAULT_REFERENCE, benchmark

    rows = [("source", args.source_model or args.source, source_run)]
    rows += [("distilled" if d else "plain", s, root / run_name(s, d)) for s, d in arms]
    metas = [export(args, run) for _, _, run in rows]
    timed = benchmark([str(run / "int8" / "model.tflite") for _, _, run in rows],
                      str(DEFAULT_REFERENCE), args.threads, args.timing_runs)
    source_nme = metas[0]["parity"]["tflite_nme_percent"]
    lines = [f"Timed on {cpu()}, {args.threads} thread(s), {args.timing_runs} interleaved "
             f"invocations; MediaPipe {timed[-1]['median_ms']:.3f} ms. NME on {args.val_sets} "
             f"(int8, the export's parity check); delta = int8 NME - source int8 NME.", "",
             "| model | student | Keras NME | int8 NME | delta | int8 MB | ms | vs MediaPipe |",
             "|---|---|---|---|---|---|---|---|"]
    for (kind, spec, _), meta, t in zip(rows, metas, timed[:-1], strict=True):  # [-1]: MediaPipe
        parity = meta["parity"]
        delta = parity["tflite_nme_percent"] - source_nme
        lines.append(f"| {kind} | {spec} | {parity['keras_nme_percent']:.2f} % | "
                     f"{parity['tflite_nme_percent']:.2f} % | {delta:+.2f} | "
                     f"{t['bytes'] / 1e6:.3f} | {t['median_ms']:.3f} | "
                     f"{t['ratio_to_reference']:.2f}x |")
    text = "\n".join(lines) + "\n"
    (root / "sweep.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
