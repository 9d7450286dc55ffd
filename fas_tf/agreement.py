"""Agreement and repeatability statistics of a measurement (one home for ICC and Bland-Altman).

Used by the clinical benchmarks (known-answer test, agreement with labels, repeatability) and by
the spread between infants that :mod:`fas_tf.spread` reads uncertainties against.

- :func:`icc_agreement`: ICC(A,1), two-way random effects, absolute agreement, single rater
  (McGraw & Wong 1996, case 2A): how well one rater's value stands for another's;
- :func:`icc_repeatability`: one-way random effects ICC(1,1) over groups of repeated values
  (between-group variance / total), unbalanced groups allowed;
- :func:`bland_altman`: bias and 95 % limits of agreement of paired values, and
  :func:`plot_bland_altman` the plot;
- :func:`pearson_r`, :func:`ols_slope`, :func:`robust_sd` (1.4826 x median absolute deviation);
- :func:`between_infant_sd`: the robust SD of each ratio between infants.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

MAD_TO_SD = 1.4826  # the SD of a normal distribution per median absolute deviation
LOA_Z = 1.96  # Bland-Altman limits of agreement: bias +- 1.96 SD of the differences


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, np.float64).reshape(-1)
    y = np.asarray(b, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired values of different lengths: {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def pearson_r(a, b) -> float:
    """Pearson correlation of paired values (NaN with fewer than 3 pairs or no spread)."""
    x, y = _pair(a, b)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def ols_slope(x, y) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line y = slope * x + intercept."""
    x, y = _pair(x, y)
    if x.size < 2 or np.ptp(x) == 0:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def robust_sd(values) -> float:
    """1.4826 x the median absolute deviation: the SD of normal data, robust to outliers."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return float("nan")
    return float(MAD_TO_SD * np.median(np.abs(v - np.median(v))))


def icc_agreement(ratings) -> float:
    """ICC(A,1) of an (n subjects, k raters) matrix: two-way random, absolute agreement.

    ICC = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n). Rows with a missing value are
    dropped; NaN when fewer than 2 rows remain or all values are equal.
    """
    y = np.asarray(ratings, np.float64)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError(f"ratings must be (subjects, raters >= 2), got shape {y.shape}")
    y = y[np.all(np.isfinite(y), axis=1)]
    n, k = y.shape
    if n < 2:
        return float("nan")
    grand = y.mean()
    ss_rows = k * np.sum((y.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((y.mean(axis=0) - grand) ** 2)
    ss_err = np.sum((y - grand) ** 2) - ss_rows - ss_cols
    msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    den = msr + (k - 1) * mse + k * (msc - mse) / n
    return float((msr - mse) / den) if den > 0 else float("nan")


def icc_repeatability(groups: Sequence) -> dict[str, float]:
    """One-way random-effects ICC(1,1) of repeated values per subject (groups of >= 2 values).

    Returns ``icc`` = between-subject variance / (between + within), ``within_sd`` (pooled SD of
    the values of one subject), ``between_sd`` (SD of the subjects' true values, from the
    ANOVA), ``subjects`` and ``values`` counts. Groups with fewer than 2 finite values are left
    out; the between variance is clipped at 0.
    """
    gs = [np.asarray(g, np.float64) for g in groups]
    gs = [g[np.isfinite(g)] for g in gs]
    gs = [g for g in gs if g.size >= 2]
    nan = float("nan")
    out = {"icc": nan, "within_sd": nan, "between_sd": nan, "subjects": len(gs),
           "values": int(sum(g.size for g in gs))}  # fmt: skip
    if len(gs) < 2:
        if gs:
            out["within_sd"] = float(np.sqrt(np.var(gs[0], ddof=1)))
        return out
    sizes = np.array([g.size for g in gs], np.float64)
    total, a = sizes.sum(), len(gs)
    grand = np.concatenate(gs).mean()
    ssb = float(sum(g.size * (g.mean() - grand) ** 2 for g in gs))
    ssw = float(sum(np.sum((g - g.mean()) ** 2) for g in gs))
    msb, msw = ssb / (a - 1), ssw / (total - a)
    k0 = (total - np.sum(sizes**2) / total) / (a - 1)  # mean group size, unbalanced-corrected
    var_b = max((msb - msw) / k0, 0.0)
    out.update({"within_sd": math.sqrt(msw), "between_sd": math.sqrt(var_b),
                "icc": var_b / (var_b + msw) if var_b + msw > 0 else nan})  # fmt: skip
    return out


def bland_altman(reference, test) -> dict[str, float]:
    """Bias (mean of test - reference), SD of the differences and the 95 % limits of agreement."""
    x, y = _pair(reference, test)
    diff = y - x
    if diff.size < 2:
        return {"n": int(diff.size), "bias": _mean_or_nan(diff), "sd_diff": float("nan"),
                "loa_low": float("nan"), "loa_high": float("nan")}  # fmt: skip
    bias, sd = float(diff.mean()), float(diff.std(ddof=1))
    return {"n": int(diff.size), "bias": bias, "sd_diff": sd,
            "loa_low": bias - LOA_Z * sd, "loa_high": bias + LOA_Z * sd}  # fmt: skip


def _mean_or_nan(values: np.ndarray) -> float:
    return float(np.mean(values)) if np.size(values) else float("nan")


def agreement(reference, test) -> dict[str, float]:
    """Every agreement statistic of paired values (test vs reference) in one dict.

    ``n``, ``sd_between`` (SD of the reference values: the spread between subjects), ``mae``,
    ``r`` (Pearson), ``icc_a1`` and the Bland-Altman ``bias``, ``sd_diff``, ``loa_low``,
    ``loa_high``.
    """
    x, y = _pair(reference, test)
    return {"n": int(x.size),
            "sd_between": float(np.std(x, ddof=1)) if x.size > 1 else float("nan"),
            "mae": _mean_or_nan(np.abs(y - x)), "r": pearson_r(x, y),
            "icc_a1": icc_agreement(np.stack([x, y], axis=1)) if x.size else float("nan"),
            **{k: v for k, v in bland_altman(x, y).items() if k != "n"}}  # fmt: skip


def plot_bland_altman(panels: dict[str, tuple], path: str | os.PathLike, title: str = "",
                      labels: tuple[str, str] = ("reference", "test")) -> None:
    """Bland-Altman plots, one panel per name: ``{name: (reference values, test values)}``.

    x = mean of the pair, y = test - reference; lines at the bias and the 95 % limits. Written
    as a PNG (matplotlib, Agg backend).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, (ref, test)) in zip(axes.flat, panels.items(), strict=False):
        x, y = _pair(ref, test)
        ba = bland_altman(x, y)
        ax.scatter((x + y) / 2, y - x, s=12, alpha=0.7)
        if ba["n"] >= 2:
            for v, style in ((ba["bias"], "-"), (ba["loa_low"], "--"), (ba["loa_high"], "--")):
                ax.axhline(v, color="k", linestyle=style, linewidth=1)
        ax.axhline(0.0, color="0.6", linewidth=0.6)
        ax.set_title(f"{name} (n={ba['n']})\nbias {ba['bias']:+.3f}, limits "
                     f"[{ba['loa_low']:+.3f}, {ba['loa_high']:+.3f}]", fontsize=9)  # fmt: skip
        ax.set_xlabel(f"mean of {labels[0]} and {labels[1]}", fontsize=8)
        ax.set_ylabel(f"{labels[1]} - {labels[0]}", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def between_infant_sd(landmark_sets: Iterable[np.ndarray]) -> dict[str, float]:
    """Robust SD of every ratio over faces (68, 2) whose value ``measure`` does not refuse (what
    :data:`fas_tf.spread.BETWEEN_INFANT_SD` holds)."""
    from fas_tf import measurements as M

    values: dict[str, list[float]] = {r: [] for r in M.RATIOS}
    for pts in landmark_sets:
        res = M.measure(pts)
        for name, e in res["ratios"].items():
            if e["value"] is not None:
                values[name].append(e["value"])
    return {name: robust_sd(np.asarray(v)) for name, v in values.items()}
