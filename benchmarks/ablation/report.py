"""The ablation report: ``results.md``, the run and summary CSVs, NME-vs-N and CED plots."""

from __future__ import annotations

import csv
import datetime
import math
from pathlib import Path

from fas_tf.cli import atomic_path

from .arms import ARMS, REPO, TRAIN_SETS, VAL_SETS, RunKey
from .collect import arm_order, collect, mean_sd, summarize

CONTROL_ARMS = ("facenet_random", "dlib_random")  # drawn dashed


def mean_sd_text(mean: float, sd: float, scale: float, digits: int) -> str:
    """``"12.34 ± 0.56"`` (``mean`` and ``sd`` times ``scale``); the mean alone when sd is NaN."""
    if math.isnan(sd):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}"


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else
                                 f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in r.items() if k in columns})


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
        style = "--" if arm in CONTROL_ARMS else "-"
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
    from fas_tf.evaluate import plot_ced

    curves, dashed = {}, set()
    for arm in (a for a in ARMS if any(r["config"] == a for r in rows)):
        faces = [e for r in rows if r["config"] == arm for e in (r["per_face"] or [])]
        if not faces:
            continue
        seeds = sum(1 for r in rows if r["config"] == arm and r["per_face"])
        label = f"{ARMS[arm].label} ({seeds} seeds)"
        curves[label] = faces
        if arm in CONTROL_ARMS:
            dashed.add(label)
    plot_ced(curves, path, title=f"CED on google2, N={n}", dashed=dashed)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


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
        f"Generated by `benchmarks/ablation` on "
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
                    cells.append("–" if s is None else mean_sd_text(
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
                                      key=lambda kv: (arm_order(kv[0][0], list(ARMS)), kv[0][1])):
            stats = [mean_sd([r[m] for r in rs]) for m in ("nme", "fr_10", "auc_10")]
            md.append(f"| `{arm}` | {fold} | {len(rs)} | {mean_sd_text(*stats[0], 100, 2)} | "
                      f"{mean_sd_text(*stats[1], 100, 1)} | {mean_sd_text(*stats[2], 1, 3)} |")
        md.append("")
    md += ["## Time", ""] + [f"- {line}" for line in estimate] + [
        "", "Files: `ablation_runs.csv` (one row per run), `ablation_summary.csv` (mean/sd per "
        "config and N), the PNG plots. Run directories are not committed.", ""]
    path = docs / "results.md"
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(md), encoding="utf-8")
    return path


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)
