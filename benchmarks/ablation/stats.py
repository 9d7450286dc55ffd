"""Paired differences between arms with a bootstrap over faces and seeds (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
REPS = 4000


@dataclass(frozen=True)
class Interval:
    """Mean of a (seeds x faces) matrix and its bootstrap interval."""

    mean: float
    lo: float
    hi: float
    seeds: int
    faces: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def bootstrap(values: np.ndarray, reps: int = REPS, seed: int = 0,
              level: float = LEVEL) -> Interval:
    """Mean of ``values`` (seeds x faces) and a percentile interval resampling both.

    Each replicate draws seeds and faces with replacement, independently (every seed sees the
    same validation faces, so a face is resampled as a whole across seeds), and takes the mean
    of the selected cells. With one seed only the faces are resampled.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[None, :]
    s, f = values.shape
    rng = np.random.default_rng(seed)
    ws = rng.multinomial(s, np.full(s, 1 / s), size=reps)  # seed draw counts (reps, s)
    wf = rng.multinomial(f, np.full(f, 1 / f), size=reps)  # face draw counts (reps, f)
    stats = np.einsum("rs,sf,rf->r", ws, values, wf) / (s * f)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(values.mean()), float(lo), float(hi), s, f)


def bootstrap_strata(strata: list[np.ndarray], reps: int = REPS, seed: int = 0,
                     level: float = LEVEL) -> Interval:
    """Mean over strata (e.g. training-set sizes N) of each stratum's (seeds x faces) mean, and
    a percentile interval: each replicate draws the seeds within every stratum and one draw of
    the faces shared by all (the columns must be the same faces in every stratum), so each
    stratum keeps its weight. ``seeds`` of the result counts the rows of all strata."""
    strata = [np.asarray(m, dtype=np.float64) for m in strata]
    f = strata[0].shape[1]
    if any(m.ndim != 2 or m.shape[1] != f for m in strata):
        raise ValueError("every stratum needs the same faces (columns)")
    rng = np.random.default_rng(seed)
    wf = rng.multinomial(f, np.full(f, 1 / f), size=reps)  # face draw counts (reps, f)
    stats = np.zeros(reps)
    for m in strata:
        s = m.shape[0]
        ws = rng.multinomial(s, np.full(s, 1 / s), size=reps)
        stats += np.einsum("rs,sf,rf->r", ws, m, wf) / (s * f)
    stats /= len(strata)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    mean = float(np.mean([m.mean() for m in strata]))
    return Interval(mean, float(lo), float(hi), sum(m.shape[0] for m in strata), f)


def paired_matrix(a: dict[int, dict[str, float]],
                  b: dict[int, dict[str, float]]) -> tuple[np.ndarray, list[int], list[str]]:
    """``a - b`` per (seed, face) for the seeds both have and the faces all of them share.

    ``a``, ``b``: seed -> (stem -> NME). Returns the (seeds x faces) matrix, the seeds and the
    stems (empty matrix when nothing pairs).
    """
    seeds = sorted(set(a) & set(b))
    stems = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds))) if seeds else []
    if not stems:
        return np.zeros((0, 0)), [], []
    m = np.array([[a[s][t] - b[s][t] for t in stems] for s in seeds])
    return m, seeds, stems


def sentence(a: str, b: str, n: int | str, iv: Interval, scale: float = 100) -> str:
    """What one paired difference shows, in plain words (NME in points of %)."""
    what = (f"N={n}: `{a}` − `{b}` = {iv.mean * scale:+.2f} points NME (95 % interval "
            f"{iv.lo * scale:+.2f} to {iv.hi * scale:+.2f}; {iv.seeds} seed"
            f"{'s' if iv.seeds != 1 else ''} × {iv.faces} faces)")
    if not iv.excludes_zero:
        return (what + f": the interval contains 0, so no difference between `{a}` and `{b}` "
                "is shown at this N.")
    better = a if iv.hi < 0 else b
    caveat = " (faces only: one seed)" if iv.seeds == 1 else ""
    return (what + f": the interval excludes 0, `{better}` has the lower NME on these "
            f"validation faces{caveat}.")
