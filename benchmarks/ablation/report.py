"""The ablation report, built from ``rows.csv`` and the per-face files only (never from run
folders): ``results.md``, ``summary.csv``, NME-vs-N plots with bootstrap intervals and the
paired differences in plain sentences."""

from __future__ import annotations

import csv
import datetime
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from fas_tf.cli import atomic_path

from .arms import (
    ARMS,
    BATCHES,
    CONTROLS,
    LAMBDA,
    REGULARIZERS,
    REPO,
    SEEDS,
    SIZES,
    TRAIN_SETS,
    VAL_SETS,
)
from .collect import (
    RERUNS_CSV,
    ROWS_SUBDIR,
    SUBSET_FLAGS,
    arm_label,
    arm_order,
    mean_sd,
    per_face_of,
    read_rows,
    row_key,
    run_name,
    setting_of,
    summarize,
    typed,
)
from .stats import Interval, bootstrap, bootstrap_strata, paired_matrix, sentence

CONTROL_ARMS = tuple(CONTROLS.values())  # drawn dashed
MAX_N = 80  # the questions are asked at N <= MAX_N ("limited data")


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
            writer.writerow({k: ("" if v is None or isinstance(v, float) and math.isnan(v) else
                                 f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in r.items() if k in columns})


def _arm_key(row: dict) -> tuple[str, float | None]:
    return row["config"], row["lambda"]


def _faces_by_seed(rows: Iterable[dict], faces: dict[int, dict[str, float]],
                   config: str, lam: float | None, n: int) -> dict[int, dict[str, float]]:
    """seed -> per-face NMEs of the grid rows of one (config, lambda, N) with a per-face file."""
    return {seed: faces[id(r)] for seed, r in _runs_by_seed(rows, config, lam, n).items()
            if faces.get(id(r))}


def replay_control(config: str, arms: Iterable[tuple[str, float | None]]
                   ) -> tuple[str, float] | None:
    """The replay control a weighted arm of ``config`` is compared with: the same config at
    lambda 0 if it ran, else the first lambda-0 arm in arm order, else None."""
    replay = sorted((k for k in arms if k[1] == 0), key=lambda k: arm_order(k[0]))
    return (config, 0.0) if (config, 0.0) in replay else (replay[0] if replay else None)


def comparisons(rows: list[dict], faces: dict[int, dict[str, float]],
                reruns: list[dict] = ()) -> list[dict]:
    """Paired differences of one setting's grid rows, per N: every arm vs ``none``, every
    pretrained teacher vs its random control (same lambda) and every weighted arm vs the replay
    control (a teacher arm at lambda 0, the same config's if there is one), with bootstrap
    intervals; ``reruns`` (see :func:`_paired`) stand in for rows of another machine."""
    out = []
    pairs = _pairs(rows)
    for n in sorted({r["n"] for r in rows if not r["fold"]}):
        for a, b in pairs:
            m, _, cross = _paired(rows, faces, a, b, n, reruns)
            if m.size:
                la, lb = (arm_label({"config": c, "lambda": lam}) for c, lam in (a, b))
                out.append({"a": la, "b": lb, "n": n, "control": b[0] != "none",
                            "iv": bootstrap(m), "cross_machine": cross})
    return out


def _paired(rows: list[dict], faces: dict[int, dict[str, float]], a: tuple, b: tuple, n: int,
            reruns: list[dict] = ()) -> tuple[np.ndarray, list[str], int]:
    """Arm ``a`` − arm ``b`` (config, lambda) at N: the (seeds x faces) matrix, its faces, and
    for how many of its seeds the two runs trained on different machines.

    Where a seed's two rows come from different machines, a rerun (``reruns``, per-face errors
    in ``faces`` too) of one arm on the other row's machine takes its row's place, so the pair
    is of one machine."""
    runs = {arm: _runs_by_seed(rows, *arm, n) for arm in (a, b)}
    again = {arm: _runs_by_seed(reruns, *arm, n, every=True) for arm in (a, b)}
    fa, fb, machines = {}, {}, {}
    for seed in sorted(set(runs[a]) & set(runs[b])):
        x, y = one_machine(runs[a][seed], runs[b][seed], again[a].get(seed, []),
                           again[b].get(seed, []))
        if faces.get(id(x)) and faces.get(id(y)):
            fa[seed], fb[seed], machines[seed] = faces[id(x)], faces[id(y)], (x, y)
    m, seeds, stems = paired_matrix(fa, fb)
    return m, stems, sum(_machine(machines[t][0]) != _machine(machines[t][1]) for t in seeds)


def _machine(row: dict) -> str:
    return row.get("machine") or ""


def one_machine(x: dict, y: dict, x_again: Iterable[dict], y_again: Iterable[dict]
                ) -> tuple[dict, dict]:
    """The two runs of a pair (rows ``x`` and ``y``), of one machine where reruns allow:
    where ``x`` and ``y`` ran on different machines, a rerun of ``y`` on ``x``'s machine
    (``y_again``) takes ``y``'s place, else one of ``x`` on ``y``'s machine takes ``x``'s."""
    if _machine(x) != _machine(y):
        for r in y_again:
            if _machine(r) == _machine(x):
                return x, r
        for r in x_again:
            if _machine(r) == _machine(y):
                return r, y
    return x, y


def _runs_by_seed(rows: Iterable[dict], config: str, lam: float | None, n: int,
                  every: bool = False) -> dict[int, dict] | dict[int, list[dict]]:
    """seed -> the grid row of one (config, lambda, N) (``every``: the list of them)."""
    out: dict = {}
    for r in rows:
        if not r["fold"] and r["n"] == n and _arm_key(r) == (config, lam):
            if every:
                out.setdefault(r["seed"], []).append(r)
            else:
                out[r["seed"]] = r
    return out


def _pairs(rows: list[dict]) -> list[tuple[tuple[str, float | None], tuple[str, float | None]]]:
    """(arm, reference) pairs of one setting's grid rows: every arm vs ``none``, every
    pretrained teacher vs its random control, every weighted arm vs the replay control, every
    teacher arm with all four terms vs ``transfer``."""
    arms = sorted({_arm_key(r) for r in rows if not r["fold"]},
                  key=lambda k: (arm_order(k[0]), k[1] or 0.0))
    pairs = [((c, lam), ("none", None)) for c, lam in arms if c != "none"]
    pairs += [((c, lam), (CONTROLS[c], lam)) for c, lam in arms if c in CONTROLS]
    pairs += [((c, lam), ref) for c, lam in arms if lam and (ref := replay_control(c, arms))]
    if ("transfer", None) in arms:  # the method against standard transfer learning
        pairs += [((c, lam), ("transfer", None)) for c, lam in arms if c in CONTROLS]
    return pairs


def pooled_comparisons(rows: list[dict], faces: dict[int, dict[str, float]], max_n: int,
                       reruns: list[dict] = ()) -> dict[tuple[str, str], dict]:
    """The pairs of :func:`comparisons` averaged over the sizes N <= ``max_n`` where both arms
    ran (each N weighted equally, :func:`.stats.bootstrap_strata` over the faces all share), for
    pairs with at least two such sizes: ``(arm, reference) -> {"iv", "sizes",
    "cross_machine"}``."""
    out = {}
    sizes = sorted({r["n"] for r in rows if not r["fold"] and r["n"] and r["n"] <= max_n})
    for a, b in _pairs(rows):
        found = {n: got for n in sizes
                 if (got := _paired(rows, faces, a, b, n, reruns))[0].size}
        shared = set.intersection(*(set(v[1]) for v in found.values())) if found else set()
        if len(found) < 2 or not shared:
            continue
        keep = sorted(shared)
        strata = [m[:, [stems.index(t) for t in keep]] for m, stems, _ in found.values()]
        la, lb = (arm_label({"config": c, "lambda": lam}) for c, lam in (a, b))
        out[(la, lb)] = {"iv": bootstrap_strata(strata), "sizes": sorted(found),
                         "cross_machine": sum(v[2] for v in found.values())}
    return out


def nme_intervals(rows: list[dict], faces: dict[int, dict[str, float]]) -> list[dict]:
    """Mean NME per (config, lambda, N) with a bootstrap interval when per-face files exist."""
    out = []
    for s in summarize(rows):
        by_seed = _faces_by_seed(rows, faces, s["config"], s["lambda"], s["n"])
        stems = sorted(set.intersection(*(set(v) for v in by_seed.values()))) if by_seed else []
        iv = (bootstrap(np.array([[v[t] for t in stems] for v in by_seed.values()]))
              if stems else None)
        out.append({**s, "label": arm_label(s), "iv": iv})
    return out


def plot_nme_vs_n(points: list[dict], diffs: list[dict], path: Path) -> None:
    """Left: NME vs N per arm (95 % bootstrap interval over faces and seeds when per-face
    errors exist); right: paired difference arm − none vs N with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    labels = list(dict.fromkeys(p["label"] for p in points))
    for i, label in enumerate(labels):
        pts = [p for p in points if p["label"] == label]
        xs = np.array([p["n"] for p in pts], float) * (1 + 0.015 * (i - len(labels) / 2))
        ys = np.array([p["nme_mean"] * 100 for p in pts])
        err = np.array([[0.0, 0.0] if p["iv"] is None else
                        [p["nme_mean"] - p["iv"].lo, p["iv"].hi - p["nme_mean"]]
                        for p in pts]).T * 100
        style = "--" if pts[0]["config"] in CONTROL_ARMS else "-"
        ax.errorbar(xs, ys, yerr=err, fmt=f"o{style}", capsize=3, label=label, alpha=0.85,
                    color=f"C{i % 10}")
    vs_none = [d for d in diffs if not d["control"]]
    dl = list(dict.fromkeys(d["a"] for d in vs_none))
    for i, label in enumerate(dl):
        ds = [d for d in vs_none if d["a"] == label]
        xs = np.array([d["n"] for d in ds], float) * (1 + 0.015 * (i - len(dl) / 2))
        iv = [d["iv"] for d in ds]
        style = "--" if ds[0]["a"].split()[0] in CONTROL_ARMS else "-"
        bx.errorbar(xs, [v.mean * 100 for v in iv],
                    yerr=np.array([[v.mean - v.lo, v.hi - v.mean] for v in iv]).T * 100,
                    fmt=f"o{style}", capsize=3, label=f"{label} − none", alpha=0.85,
                    color=f"C{labels.index(label) % 10 if label in labels else i}")
    bx.axhline(0, color="k", lw=0.8)
    sizes = sorted({p["n"] for p in points})
    for a in (ax, bx):
        a.set_xscale("log", base=2)
        a.set_xticks(sizes, [str(n) for n in sizes])
        a.set_xlabel(f"training faces N ({' + '.join(TRAIN_SETS)} subset)")
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    ax.set_ylabel(f"validation NME on {', '.join(VAL_SETS)} (%, interocular)")
    bx.set_ylabel("paired difference vs none (NME points)")
    ax.set_title("NME, 95 % bootstrap interval (faces × seeds)", fontsize=9)
    bx.set_title("same seed and subset, 95 % bootstrap interval", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


SUMMARY_COLUMNS = ["schedule", "student", "config", "lambda", "n", "seeds", "steps", "nme_mean",
                   "nme_sd", "nme_lo", "nme_hi", "fr_10_mean", "fr_10_sd", "auc_10_mean",
                   "auc_10_sd"]


def _arms_table() -> list[str]:
    md = ["| config | what | teacher | regularizers | note |", "|---|---|---|---|---|"]
    for a in ARMS.values():
        teacher = "none" if a.teacher == "none" else (
            f"{a.teacher} ({'random' if a.teacher_weights == 'random' else 'pretrained'})")
        if a.transfer:
            teacher = "dlib trunk (pretrained, trained)"
        md.append(f"| `{a.name}` | {a.label} | {teacher} | {a.regularizers} | {a.note} |")
    return md


def _setting_section(rows: list[dict], faces: dict[int, dict[str, float]], rows_dir: Path,
                     schedule: str, student: str, summary_out: list[dict],
                     diffs: list[dict]) -> list[str]:
    """The tables, paired differences (``diffs``: :func:`comparisons` of these rows) and plot
    of one (schedule, student)."""
    grid = [r for r in rows if not r["fold"]]
    if not grid:
        return []
    points = nme_intervals(grid, faces)
    summary_out += [{"schedule": schedule, "student": student, **p,
                     "nme_lo": p["iv"].lo if p["iv"] else None,
                     "nme_hi": p["iv"].hi if p["iv"] else None} for p in points]
    sizes = sorted({p["n"] for p in points})
    labels = list(dict.fromkeys(p["label"] for p in points))
    cell = {(p["label"], p["n"]): p for p in points}
    kind = "epochs" if schedule.startswith("e") else "optimizer steps"
    md = [f"## Schedule `{schedule}` ({schedule[1:]} {kind}), student `{student}`", ""]
    for metric, title, scale, digits in (("nme", "NME (%)", 100, 2),
                                         ("fr_10", "FR@0.10 (%)", 100, 1),
                                         ("auc_10", "AUC@0.10", 1, 3)):
        md += [f"### {title}, mean ± sd over seeds (k seeds)", "",
               "| config | " + " | ".join(f"N={n}" for n in sizes) + " |",
               "|---|" + "---|" * len(sizes)]
        for label in labels:
            cells = []
            for n in sizes:
                p = cell.get((label, n))
                cells.append("–" if p is None else mean_sd_text(
                    p[f"{metric}_mean"], p[f"{metric}_sd"], scale, digits) + f" ({p['seeds']})")
            md.append(f"| `{label}` | " + " | ".join(cells) + " |")
        md.append("")
    subsets = [(label, n, [r for r in grid if arm_label(r) == label and r["n"] == n])
               for label in labels for n in sizes]
    if any(r.get(f"nme_{f}") is not None for _, _, rs in subsets for r in rs
           for f in SUBSET_FLAGS):
        md += ["### NME (%) per attribute subset of the validation faces, mean over seeds", "",
               "| config | N | " + " | ".join(SUBSET_FLAGS) + " |",
               "|---|---|" + "---|" * len(SUBSET_FLAGS)]
        for label, n, rs in subsets:
            vals = [[r[f"nme_{f}"] for r in rs if r.get(f"nme_{f}") is not None]
                    for f in SUBSET_FLAGS]
            if any(vals):
                md.append(f"| `{label}` | {n} | " + " | ".join(
                    f"{np.mean(v) * 100:.2f}" if v else "–" for v in vals) + " |")
        md.append("")
    md += ["### Paired differences (same seed, same training subset, same validation faces)",
           ""]
    if not diffs:
        md += ["No two arms with per-face errors share an N and a seed yet (migrated rows "
               "have none), so no interval can be given.", ""]
    else:
        md += ["Mean of (arm − reference) per-face NME in points of %, 95 % percentile "
               "bootstrap interval resampling faces and seeds (numpy, seeded, "
               f"{len(diffs)} comparisons).", "",
               "| N | arm − reference | seeds | faces | mean | 95 % interval | excludes 0 |",
               "|---|---|---|---|---|---|---|"]
        for d in diffs:
            iv: Interval = d["iv"]
            md.append(f"| {d['n']} | `{d['a']}` − `{d['b']}` | {iv.seeds} | {iv.faces} | "
                      f"{iv.mean * 100:+.2f} | {iv.lo * 100:+.2f} to {iv.hi * 100:+.2f} | "
                      f"{'yes' if iv.excludes_zero else 'no'} |")
        md += ["", "In words:", ""] + [f"- {sentence(d['a'], d['b'], d['n'], d['iv'])}"
                                       for d in diffs] + [""]
    png = rows_dir / f"nme_vs_n_{schedule}_{student.replace(':', '-')}.png"
    plot_nme_vs_n(points, diffs, png)
    md += [f"![NME vs N]({rows_dir.name}/{png.name})", ""]
    return md


def _shown(iv: Interval) -> str:
    """What a paired difference shows: ``lower``, ``higher`` or ``no difference shown``."""
    return ("lower" if iv.hi < 0 else "higher") if iv.excludes_zero else "no difference shown"


def _verdict(iv: Interval) -> str:
    """One table cell: the paired difference, its interval and what it shows."""
    return (f"{iv.mean * 100:+.2f} ({iv.lo * 100:+.2f} to {iv.hi * 100:+.2f}), {_shown(iv)}"
            f"{', faces only' if iv.seeds == 1 else ''}")


def _in_short(what: str, ivs: dict[int, Interval | None], pooled: dict | None = None) -> str:
    """One sentence on one comparison (``what``) over the sizes: where a difference is shown,
    where not, and there which gains the intervals rule out; with ``pooled``
    (:func:`pooled_comparisons`' entry), the same for the mean over those sizes."""
    found = {n: iv for n, iv in ivs.items() if iv is not None}
    if not found:
        return f"{what}: no paired rows yet."
    if pooled:
        iv = pooled["iv"]
        ruled = (f", a gain larger than {max(0.0, -iv.lo) * 100:.2f} points ruled out"
                 if not iv.excludes_zero else "")
        mean_clause = (f"; averaged over N={', '.join(map(str, pooled['sizes']))}: "
                       f"{_verdict(iv)}{ruled}")
        return _in_short(what, ivs).rstrip(".") + mean_clause + "."
    by: dict[str, list[int]] = {}
    for n, iv in found.items():
        by.setdefault(_shown(iv), []).append(n)
    lower, higher, neither = (by.get(k, []) for k in ("lower", "higher", "no difference shown"))
    parts = []
    if lower:
        parts.append(f"lower NME shown at N={', '.join(map(str, lower))}")
    if higher:
        parts.append(f"higher NME shown at N={', '.join(map(str, higher))}")
    if neither:
        gains = ", ".join(f"{max(0.0, -found[n].lo) * 100:.2f} points (N={n})" for n in neither)
        parts.append(f"no difference shown at N={', '.join(map(str, neither))}, and a gain "
                     f"larger than {gains} is ruled out")
    short = [n for n, iv in found.items() if iv.seeds < len(SEEDS)]
    missing = [n for n, iv in ivs.items() if iv is None]
    tail = "".join([f"; fewer than {len(SEEDS)} seeds at N={', '.join(map(str, short))}"
                    if short else "",
                    f"; not compared yet at N={', '.join(map(str, missing))}" if missing else ""])
    return f"{what}: " + "; ".join(parts) + tail + "."


def _cell(iv: Interval | None) -> str:
    """A table cell of the answers: the verdict and the number of seeds, or that none paired."""
    return _verdict(iv) + f" [{iv.seeds}]" if iv else "no paired rows yet"


def _weights(full: str, grid: list[dict], diffs: dict[tuple[str, str, int], Interval],
             replay: str | None, cell: Callable[[str, str | None, int], str]) -> list[str]:
    """The weight sweep of one teacher arm (``full``, e.g. ``facenet_all``) in one setting's
    ``grid``: each weight λ > 0 it ran at, minus ``none`` and minus the replay control, at every
    N where it ran at a weight other than the default; nothing if it ran at one weight only.
    ``cell(arm, reference, N)``: a table cell."""
    weights = sorted({r["lambda"] for r in grid if r["config"] == full and r["lambda"]})
    sizes = sorted({r["n"] for r in grid if r["config"] == full and r["lambda"]
                    and r["lambda"] != LAMBDA})
    if len(weights) < 2 or not sizes:
        return []
    labels = {w: arm_label({"config": full, "lambda": w}) for w in weights}
    ref = f"`{replay}` (replay control)" if replay else "replay control"
    md = [f"**Which weight λ?** `{full}` (all four terms weighted λ jointly) at each weight it "
          "ran:", "", f"| N | λ | − `none` | − {ref} |", "|---|---|---|---|"]
    md += [f"| {n} | {w:g} | {cell(labels[w], 'none', n)} | {cell(labels[w], replay, n)} |"
           for n in sizes for w in weights]
    md += ["", "In short:", ""]
    for label in labels.values():
        ivs = {n: diffs.get((label, "none", n)) for n in sizes}
        md.append(f"- {_in_short(f'`{label}` against `none`', ivs)}")
    return [*md, ""]


def _answers(rows: list[dict], diffs_by_setting: dict[tuple[str, str], list[dict]],
             pooled_by_setting: dict[tuple[str, str], dict] | None = None,
             teacher: str = "facenet", max_n: int = MAX_N) -> list[str]:
    """The issue's questions answered from the paired differences so far
    (``diffs_by_setting``: :func:`comparisons` per (schedule, student)), per setting with
    rows of ``{teacher}_all`` at the default weight: does the real teacher lower NME at
    N <= ``max_n`` against no teacher, its random control and the replay control, which
    single regularizers do, and, where a teacher arm ran at several weights, at which; with
    ``pooled_by_setting`` (:func:`pooled_comparisons` per setting), also averaged over N."""
    lam = LAMBDA
    full = f"{teacher}_all"
    name = {"facenet": "FaceNet"}.get(teacher, teacher)
    sizes = [n for n in SIZES if n <= max_n]
    md = ["## The questions, answered so far", "",
          f"Paired differences in NME (points of %, arm − reference, 95 % interval; "
          f"\"lower\" means the teacher arm is better) at N ≤ {max_n}, all regularizers at "
          f"λ={lam:g}; every cell is from the tables below.", ""]
    answered = False
    for schedule, student in sorted({setting_of(r) for r in rows}):
        grid = [r for r in rows if setting_of(r) == (schedule, student) and not r["fold"]]
        if not any(_arm_key(r) == (full, lam) for r in grid):
            continue
        answered = True
        diffs = {(d["a"], d["b"], d["n"]): d["iv"]
                 for d in diffs_by_setting[(schedule, student)]}
        crossed = {(d["a"], d["b"], d["n"]) for d in diffs_by_setting[(schedule, student)]
                   if d.get("cross_machine")}
        any_crossed = False
        label = arm_label({"config": full, "lambda": lam})

        def cell(a: str, b: str | None, n: int, diffs=diffs, crossed=crossed) -> str:
            nonlocal any_crossed
            mark = (a, b, n) in crossed
            any_crossed |= mark
            return _cell(diffs.get((a, b, n))) + (" †" if mark else "")

        def column(a: str, b: str, diffs=diffs) -> dict[int, Interval | None]:
            return {n: diffs.get((a, b, n)) for n in sizes}

        pooled = (pooled_by_setting or {}).get((schedule, student), {})

        def pooled_cell(a: str, b: str | None, pooled=pooled) -> str:
            nonlocal any_crossed
            p = pooled.get((a, b))
            if not p:
                return "fewer than two sizes paired"
            any_crossed |= bool(p["cross_machine"])
            some = "" if p["sizes"] == sizes else f" (N={', '.join(map(str, p['sizes']))})"
            return _cell(p["iv"]) + some + (" †" if p["cross_machine"] else "")

        arms = {_arm_key(r) for r in grid}

        def replay(config: str, arms=arms) -> str | None:
            ref = replay_control(config, arms)
            return arm_label({"config": ref[0], "lambda": ref[1]}) if ref else None

        control = arm_label({"config": CONTROLS[full], "lambda": lam})
        full_replay = replay(full)
        md += [f"Schedule `{schedule}`, student `{student}` ([seeds] in brackets).", "",
               f"**Does the real {name} teacher (`{label}`) lower NME?**", "",
               f"| N | − `none` | − `{control}` (random weights) | − "
               f"{f'`{full_replay}` (replay control)' if full_replay else 'replay control'} |",
               "|---|---|---|---|"]
        md += [f"| {n} | {cell(label, 'none', n)} | {cell(label, control, n)} | "
               f"{cell(label, full_replay, n)} |" for n in sizes]
        md.append(f"| ≤ {max_n}, mean over N | {pooled_cell(label, 'none')} | "
                  f"{pooled_cell(label, control)} | {pooled_cell(label, full_replay)} |")
        refs = {"none": "no teacher", control: "random weights", full_replay: "replay control"}
        md += ["", "Mean over N: each N weighted equally, the interval resampling seeds within "
               "each N and the faces once for all ([runs] in brackets).", "",
               "In short (\"gain\": lower NME with the teacher; 95 % intervals):", ""]
        md += ["- " + _in_short(f"Against `{ref}` ({why})", column(label, ref),
                                pooled.get((label, ref))) for ref, why in refs.items() if ref]
        if any(r["config"] == "transfer" for r in grid):
            md += ["", "**Does it beat standard transfer learning?** `transfer`: the same "
                   "heatmap head on dlib's pretrained face-recognition trunk, every weight "
                   "fine-tuned, heatmap loss only (no teacher term):", "",
                   f"| N | `transfer` − `none` | `{label}` − `transfer` |", "|---|---|---|"]
            md += [f"| {n} | {cell('transfer', 'none', n)} | {cell(label, 'transfer', n)} |"
                   for n in sizes]
            md += [f"| ≤ {max_n}, mean over N | {pooled_cell('transfer', 'none')} | "
                   f"{pooled_cell(label, 'transfer')} |", "", "In short:", ""]
            md += ["- " + _in_short(f"`{a}` against `{b}`", column(a, b), pooled.get((a, b)))
                   for a, b in (("transfer", "none"), (label, "transfer"))]
        md += ["", f"**Which of the four regularizers carry it?** Each alone, λ={lam:g}:", "",
               "| N | arm | − `none` | − replay control |", "|---|---|---|---|"]
        singles = {arm_label({"config": f"{teacher}_{r}", "lambda": lam}): replay(f"{teacher}_{r}")
                   for r in REGULARIZERS}  # label -> its replay control
        md += [f"| {n} | `{a}` | {cell(a, 'none', n)} | {cell(a, ref, n)} |"
               for n in sizes for a, ref in singles.items()]
        md += [f"| ≤ {max_n}, mean over N | `{a}` | {pooled_cell(a, 'none')} | "
               f"{pooled_cell(a, ref)} |" for a, ref in singles.items()]
        md += ["", "In short:", ""]
        md += ["- " + _in_short(f"`{a}` against `none`", column(a, "none"),
                                pooled.get((a, "none"))) for a in singles]
        md.append("")
        for swept in CONTROLS:  # each pretrained teacher's weight sweep, if it ran
            md += _weights(swept, grid, diffs, replay(swept), cell)
        if any_crossed:
            md += ["† For at least one seed the two rows were trained on different machines "
                   "(their `machine` differs or one is not recorded) and no rerun of either on "
                   "the other's machine exists (where one does, it takes its row's place in the "
                   "pair): a run on another machine drifts like a run with another seed (see "
                   "the reruns below), so such a difference carries that drift too.", ""]
    if not answered:
        md += [f"No `{full}` rows yet: neither question is answered.", ""]
    return md


def cv_runs(rows: list[dict], every_twin: bool = False) -> list[dict]:
    """The CV runs: rows with a fold, and for an arm and setting with such rows (any arm
    with ``every_twin``, for reruns), a fold that did not run but whose grid twin did
    (:func:`.arms.grid_twin`, the same training) as a copy of that grid row, its ``twin`` the
    grid row."""
    cv = [r for r in rows if r["fold"]]
    have = {row_key(r) for r in cv}
    ran = {(_arm_key(r), setting_of(r)) for r in cv}
    for r in rows:
        if r["fold"] or r["n"] != SIZES[-1] or not (
                every_twin or (_arm_key(r), setting_of(r)) in ran):
            continue
        fold = {**r, "fold": VAL_SETS[0], "n": None, "twin": r}
        if row_key(fold) not in have:
            cv.append(fold)
    return cv


def cv_comparisons(cv: list[dict], faces: dict[int, dict[str, float]],
                   reruns: Iterable[dict] = ()) -> list[dict]:
    """Each CV arm − ``none`` (same schedule, student, seed): per held-out batch, and over the
    faces of every batch both ran (each face weighted once: the CV estimate), with bootstrap
    intervals over seeds and faces. ``reruns`` (CV runs run again, :func:`cv_runs`) stand in
    for a run of another machine (:func:`one_machine`); ``cross_machine``: seeds whose two
    runs still differ in machine."""
    def by(r: dict) -> tuple:
        return (_arm_key(r), r["schedule"], r["student"])

    runs: dict[tuple, dict[str, dict[int, dict]]] = {}
    for r in cv:
        if faces.get(id(r)):
            runs.setdefault(by(r), {}).setdefault(r["fold"], {})[r["seed"]] = r
    again: dict[tuple, list[dict]] = {}
    for r in reruns:
        if faces.get(id(r)):
            again.setdefault((by(r), r["fold"], r["seed"]), []).append(r)
    out = []
    for (arm, schedule, student), folds in sorted(runs.items(),
                                                  key=lambda kv: arm_order(kv[0][0][0])):
        ref_key = (("none", None), schedule, student)
        ref = runs.get(ref_key)
        if arm[0] == "none" or not ref:
            continue
        per_fold = {}
        for fold in BATCHES:
            a, b = folds.get(fold, {}), ref.get(fold, {})
            pairs = {s: one_machine(a[s], b[s], again.get(((arm, schedule, student), fold, s), []),
                                    again.get((ref_key, fold, s), []))
                     for s in sorted(set(a) & set(b))}
            if pairs:
                m, seeds, _ = paired_matrix({s: faces[id(x)] for s, (x, _) in pairs.items()},
                                            {s: faces[id(y)] for s, (_, y) in pairs.items()})
                per_fold[fold] = {"m": m, "seeds": seeds,
                                  "cross": sum(_machine(pairs[s][0]) != _machine(pairs[s][1])
                                               for s in seeds),
                                  "twin": any(a[s].get("twin") for s in seeds)}
        label = arm_label({"config": arm[0], "lambda": arm[1]})
        for fold, v in per_fold.items():
            out.append({"a": label, "schedule": schedule, "student": student, "fold": fold,
                        "iv": bootstrap(v["m"]), "cross_machine": v["cross"], "twin": v["twin"]})
        shared = sorted(set.intersection(*(set(v["seeds"]) for v in per_fold.values()))
                        if per_fold else ())
        if len(per_fold) > 1 and shared:
            m = np.concatenate([v["m"][[v["seeds"].index(s) for s in shared]]
                                for v in per_fold.values()], axis=1)
            out.append({"a": label, "schedule": schedule, "student": student,
                        "fold": "+".join(per_fold), "iv": bootstrap(m),
                        "cross_machine": sum(v["cross"] for v in per_fold.values()),
                        "twin": any(v["twin"] for v in per_fold.values())})
    return out


def _cv_section(cv: list[dict], faces: dict[int, dict[str, float]],
                reruns: Iterable[dict] = ()) -> list[str]:
    md = ["## 3-fold cross-validation by batch (train on two batches, test on the third)", "",
          f"Holding out {VAL_SETS[0]} is the grid's own split: that fold's run is the grid's "
          f"N={SIZES[-1]} run of the same seed (the same training, *), so it is not trained "
          "twice.", "",
          "| config | schedule | student | test batch | seeds | NME (%) | FR@0.10 (%) | AUC@0.10 |",
          "|---|---|---|---|---|---|---|---|"]
    folds: dict[tuple, list[dict]] = {}
    for r in cv:
        folds.setdefault((arm_label(r), r["schedule"], r["student"], r["fold"]), []).append(r)
    for (label, sch, stu, fold), rs in sorted(folds.items()):
        stats = [mean_sd([r[m] for r in rs]) for m in ("nme", "fr_10", "auc_10")]
        star = " *" if any(r.get("twin") for r in rs) else ""
        md.append(f"| `{label}` | {sch} | {stu} | {fold}{star} | {len(rs)} | "
                  f"{mean_sd_text(*stats[0], 100, 2)} | {mean_sd_text(*stats[1], 100, 1)} | "
                  f"{mean_sd_text(*stats[2], 1, 3)} |")
    diffs = cv_comparisons(cv, faces, reruns)
    if diffs:
        md += ["", "Paired difference with `none` (same seed and held-out faces; points of %, "
               "95 % interval over seeds and faces; several batches: every face of them "
               "weighted once):", "",
               "| config − `none` | schedule | student | test batch | seeds × faces | "
               "difference |", "|---|---|---|---|---|---|"]
        for d in diffs:
            iv = d["iv"]
            mark = " †" if d["cross_machine"] else ""
            star = " *" if d["twin"] else ""
            md.append(f"| `{d['a']}` | {d['schedule']} | {d['student']} | {d['fold']}{star} "
                      f"| {iv.seeds} × {iv.faces} | {_cell(iv)}{mark} |")
        md += ["", "Where a fold's two runs trained on different machines, a rerun of one on "
               "the other's machine takes its place (`--rerun`, reruns below); † marks a "
               "difference for which none exists, so it carries the drift between machines too."]
    return md + [""]


def _reruns(rows: list[dict], reruns: list[dict], faces: dict[int, dict[str, float]]
            ) -> list[str]:
    """Each rerun against its row (``faces``: per-face errors by ``id`` of either): same faces
    to 6 digits, NME difference; and how far reruns drift next to the spread between seeds."""
    by_key = {row_key(r): r for r in rows}
    pairs = [(by_key[row_key(rr)], rr) for rr in reruns if row_key(rr) in by_key]
    if not pairs:
        return []
    md = ["## Does a row reproduce from its command? (reruns)", "",
          "Rows run again on purpose (`<the row's command> --rerun`), recorded in "
          f"`{RERUNS_CSV}`, never in `rows.csv`. NME in %, difference in points; same faces: "
          "validation faces whose error equals the row's to 6 digits.", "",
          "| run | row's machine | rerun's machine | row | rerun | rerun − row | same faces |",
          "|---|---|---|---|---|---|---|"]
    drift: list[tuple[float, int | None]] = []  # (rerun − row, N) of reruns that differ
    identical = home = home_identical = 0
    seen: set[tuple] = set()  # (row key, errors) of the drifted reruns counted
    for row, rr in sorted(pairs, key=lambda p: (run_name(row_key(p[0])), p[1]["date"] or "")):
        a, b = faces.get(id(row), {}), faces.get(id(rr), {})
        common = sorted(set(a) & set(b))
        same = sum(a[f] == b[f] for f in common)
        diff = (rr["nme"] - row["nme"]) * 100
        at_home = bool(_machine(row)) and _machine(row) == _machine(rr)
        home += at_home
        if common and same == len(common):
            identical += 1
            home_identical += at_home
        elif (twin := (row_key(row), tuple(b[f] for f in common))) not in seen:
            seen.add(twin)  # reruns with the same errors count once
            drift.append((diff, row.get("n")))
        md.append(f"| {run_name(row_key(row))} | {row.get('machine') or 'not recorded'} | "
                  f"{rr.get('machine')} | {row['nme'] * 100:.2f} | {rr['nme'] * 100:.2f} | "
                  f"{diff:+.2f} | {same}/{len(common)} |")
    md += ["", f"- {identical} of {len(pairs)} reruns give their row's error on every face; "
           f"{home_identical} of the {home} on the row's own machine do."]
    if drift:
        n_sizes = sorted({n for _, n in drift if n})
        spread = [g["nme_sd"] * 100 for setting in {setting_of(r) for r in rows}
                  for g in summarize([r for r in rows if setting_of(r) == setting])
                  if g["n"] in n_sizes and g["seeds"] > 1]
        diffs = [d for d, _ in drift]
        sd = f", SD {np.std(diffs, ddof=1):.2f}" if len(diffs) > 1 else ""
        md.append(
            f"- The other {len(pairs) - identical} do not ({len(diffs)} distinct): "
            f"rerun − row {np.mean(diffs):+.2f} points on "
            f"average{sd}, from {min(diffs):+.2f} to {max(diffs):+.2f}"
            + (f"; for scale, the SD of NME over seeds of one arm at N = "
               f"{', '.join(map(str, n_sizes))} is {np.mean(spread):.2f} points on average"
               if spread else "")
            + ". A training run amplifies the last bits of its float sums, so a run on other "
            "kernels drifts as with another seed" + _drift_bias(diffs) + ".")
    return md + [""]


def _drift_bias(diffs: list[float]) -> str:
    """Whether reruns on other machines drift one way: a clause on the mean's 95 % interval
    (normal approximation, from 3 reruns on)."""
    if len(diffs) < 3:
        return ""
    half = 1.96 * float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs))
    mean = float(np.mean(diffs))
    where = f"mean {mean:+.2f}, {mean - half:+.2f} to {mean + half:+.2f}"
    if abs(mean) <= half:
        return f", centred on 0 here ({where}): across machines a difference is noisier"
    return (f", and here not around 0 ({where}): across machines a difference can be biased, "
            "not only noisier, so the answers above pair rows of one machine where a rerun "
            "allows and mark the others †")


def _sessions(rows: list[dict]) -> list[str]:
    groups: dict[tuple[str, str, str], int] = {}
    for r in rows:
        k = ((r.get("date") or "")[:10] or "unknown", (r.get("commit") or "")[:12] or "unknown",
             r.get("machine") or "not recorded")
        groups[k] = groups.get(k, 0) + 1
    md = ["## Rows per session (date, code commit, machine)", "",
          "| date | commit | machine | rows |", "|---|---|---|---|"]
    md += [f"| {d} | {c} | {m} | {k} |" for (d, c, m), k in sorted(groups.items())]
    return md + ["", "Every row's `command` column reruns it (rows without one were migrated "
                 "from the run-folder era). A rerun gives the row's numbers bit for bit on a "
                 "machine like the row's (`machine`: CPU model and count, vector flags, "
                 "TensorFlow's version; recorded for rows since 2026-11-30 19:23 UTC); on "
                 "another CPU the training drifts as with another seed (reruns above).", ""]


def write_report(docs: Path, progress: list[str], estimate: list[str],
                 commands: dict[str, str]) -> Path:
    """Write ``docs/results.md``, ``docs/ablation/summary.csv`` and the plots from
    ``docs/ablation/rows.csv`` and its per-face files only."""
    rows_dir = docs / ROWS_SUBDIR
    raw = read_rows(rows_dir / "rows.csv")
    rows = [typed(r) for r in raw]
    reruns = [typed(r) for r in read_rows(rows_dir / RERUNS_CSV)]
    faces = {id(r): per_face_of(rows_dir, r) for r in rows + reruns}
    docs.mkdir(parents=True, exist_ok=True)
    settings = sorted({setting_of(r) for r in rows},
                      key=lambda s: -sum(setting_of(r) == s for r in rows))

    def grid(some: list[dict], setting: tuple[str, str]) -> list[dict]:
        return [r for r in some if setting_of(r) == setting and not r["fold"]]

    # paired differences, for the answers and each setting's section
    diffs = {s: comparisons(grid(rows, s), faces, grid(reruns, s)) for s in settings}
    pooled = {s: pooled_comparisons(grid(rows, s), faces, MAX_N, grid(reruns, s))
              for s in settings}
    md = [
        "# Limited-data ablation: teacher regularizers on InfAnFace",
        "",
        f"Generated by `benchmarks/ablation` on "
        f"{datetime.datetime.now(datetime.UTC).isoformat(timespec='minutes')} from "
        f"`{_display(rows_dir / 'rows.csv', REPO)}` ({len(rows)} runs) and its per-face files; "
        "run folders are not used. Do not edit by hand; rerun with `--report_only`.",
        "",
        "The training recipe's levers and the choice of `python -m fas_tf.train`'s defaults "
        "(the regularized-transfer student, with its 3-fold cross-validation by batch) are in "
        "[accuracy.md](accuracy.md); this report is the teacher-regularizer ablation on the "
        "MobileNetV2 student.",
        "",
        *_answers(rows, diffs, pooled),
        "## How a session advances the grid",
        "",
        "Each finished run appends one row (and a per-face file) to the committed "
        "`docs/ablation/rows.csv`; a run whose (config, lambda, N, seed, schedule, fold, "
        "student) is already there is skipped before training, so the grid advances over "
        "sessions even though run folders do not survive one. Run what fits, then commit the "
        "rows:",
        "",
        "```bash",
    ]
    md += [f"# {k}\n{v}" for k, v in commands.items()]
    md += ["```", "", *progress, "", "## Protocol", "",
           f"- Train on InfAnFace batches {' + '.join(TRAIN_SETS)} (159 faces), validate on "
           f"{', '.join(VAL_SETS)} (51 faces); training subsets of N faces drawn with the run's "
           "seed (`TrainConfig.train_limit`), so each seed changes the subset (N < 159), the "
           "initialization and the augmentation order. At N = 159 only the latter two change.",
           "- Same student, optimizer (AdamW, warmup + cosine decay, peak lr 2e-3, batch 16), "
           "augmentation and heatmap loss for every configuration "
           "(`fas_tf.training.loop.train`); only the teacher, its regularizers and their weight "
           "λ (all four jointly, column `lambda`) change, or for `transfer` the architecture.",
           "- Schedule `sK`: K optimizer steps for every N (epochs = ceil(K / steps per epoch), "
           "so small N is not under-trained); `eK` (migrated rows): K epochs for every N.",
           "- A teacher arm with `teacher_cache` K > 0 (`--teacher_cache=auto`: K = epochs / 4) "
           "trains on K seeded augmented views per face, the teacher's outputs on them stored "
           "once, and replays those views (each about epochs / K times), while `none` draws a "
           "fresh crop every epoch. A teacher arm "
           "at λ=0 (every regularizer weighted 0, so the heatmap loss alone) trains on those "
           "replayed views: the control that separates the replay from the teacher.",
           "- Metrics on the validation batch, scored once after training (the last weights; "
           "no per-epoch validation in `s` schedules), interocular normalization: NME, FR@0.10 "
           "(share of faces with NME > 0.10), AUC@0.10 of the CED.",
           "", *_arms_table(), ""]
    summary: list[dict] = []
    for schedule, student in settings:
        part = [r for r in rows if setting_of(r) == (schedule, student)]
        md += _setting_section(part, faces, rows_dir, schedule, student, summary,
                               diffs[(schedule, student)])
    if not rows:
        md += ["**No finished runs yet**: the tables and plots appear once rows exist.", ""]
    cv, cv_again = cv_runs(rows), cv_runs(reruns, every_twin=True)
    faces.update({id(r): faces[id(r["twin"])] for r in cv + cv_again if r.get("twin")})
    if any(not r.get("twin") for r in cv):
        md += _cv_section(cv, faces, cv_again)
    md += ["## What is and is not shown", "",
           "- An interval that excludes 0 shows a difference in NME on these validation faces "
           "for the seeds run, at that N, schedule and student; one that contains 0 shows no "
           "difference, which is not proof of no effect (few seeds, 51 faces).",
           "- With one seed the interval covers the faces only, not the variation between "
           "training subsets and initializations.",
           "- The mean over N weighs each N equally: it answers \"on average over these "
           "sizes\" and can hide effects of opposite sign at different N (the rows per N show "
           "those).",
           "- `transfer` is another network than the student (dlib's ResNet trunk, fine-tuned): "
           "it compares the method with standard transfer learning, not one network with and "
           "without pretraining.",
           f"- All grid numbers are on one batch ({', '.join(VAL_SETS)}); the cross-validation "
           "by batch is the check that they carry over to other batches. Weights λ chosen on "
           f"{', '.join(VAL_SETS)} are not an unbiased estimate there.", ""]
    md += _reruns(rows, reruns, faces)
    md += _sessions(rows)
    md += ["## Time", ""] + [f"- {line}" for line in estimate] + [
        "", f"Files in `{_display(rows_dir, REPO)}`: `rows.csv` (one row per run), "
        "`per_face/` (per-face NME of each run), `summary.csv` (per config, λ and N), the PNG "
        "plots.", ""]
    write_csv(rows_dir / "summary.csv", summary, SUMMARY_COLUMNS)
    path = docs / "results.md"
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(md), encoding="utf-8")
    return path


def _display(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
