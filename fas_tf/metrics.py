"""Landmark error metrics: NME, failure rate, CED area under the curve.

NME of one face = mean_k ||p_k - g_k||_2 / d, with d one of

- ``interocular``: ||g_36 - g_45|| (outer eye corners, the 68-point default);
- ``interpupil``: distance of the eye centres (means of points 36-41 and 42-47);
- ``diagonal``: the diagonal of the ground-truth landmark box (any layout).

The default (``mode=None`` everywhere) is :func:`default_normalization`: interocular for 68
points, diagonal otherwise. Training metrics, evaluation and the export parity check all use
these functions.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

NORMALIZATIONS = ("interocular", "interpupil", "diagonal")


def default_normalization(num_landmarks: int) -> str:
    """The normalization used when none is asked for: interocular for 68 points, else diagonal."""
    return "interocular" if num_landmarks == 68 else "diagonal"


def normalizer(gt: tf.Tensor, mode: str | None = None) -> tf.Tensor:
    """Per-face normalizing distance d, shape (B,). Non-68 layouts support ``diagonal`` only."""
    gt = tf.cast(gt, tf.float32)
    n = gt.shape[-2]
    mode = mode or default_normalization(n)
    if mode == "diagonal" or n != 68:
        if mode != "diagonal":
            raise ValueError(f"{mode} normalization needs the 68-point layout, got {n} points")
        extent = tf.reduce_max(gt, axis=-2) - tf.reduce_min(gt, axis=-2)
        return tf.norm(extent, axis=-1)
    if mode == "interocular":
        return tf.norm(gt[..., 36, :] - gt[..., 45, :], axis=-1)
    if mode == "interpupil":
        right = tf.reduce_mean(gt[..., 36:42, :], axis=-2)
        left = tf.reduce_mean(gt[..., 42:48, :], axis=-2)
        return tf.norm(right - left, axis=-1)
    raise ValueError(f"unknown normalization {mode!r}; choose from {NORMALIZATIONS}")


def point_errors(pred: tf.Tensor, gt: tf.Tensor, mode: str | None = None) -> tf.Tensor:
    """Normalized error of each landmark, shape (B, N)."""
    pred = tf.cast(pred, tf.float32)
    gt = tf.cast(gt, tf.float32)
    d = tf.maximum(normalizer(gt, mode), 1e-6)
    return tf.norm(pred - gt, axis=-1) / d[..., None]


def per_sample_nme(pred: tf.Tensor, gt: tf.Tensor, mode: str | None = None) -> tf.Tensor:
    """NME of each face, shape (B,)."""
    return tf.reduce_mean(point_errors(pred, gt, mode), axis=-1)


def mean_nme(pred: tf.Tensor, gt: tf.Tensor, mode: str | None = None) -> tf.Tensor:
    """NME averaged over the faces (a scalar tensor; ``float()`` it outside a graph)."""
    return tf.reduce_mean(per_sample_nme(pred, gt, mode))


def failure_rate(nmes: np.ndarray, threshold: float) -> float:
    """Fraction of faces with NME above ``threshold``."""
    return float(np.mean(np.asarray(nmes) > threshold))


def ced_curve(
    nmes: np.ndarray, threshold: float, steps: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: (levels in [0, threshold], fraction of faces <= level)."""
    levels = np.linspace(0.0, threshold, steps + 1)
    nmes = np.sort(np.asarray(nmes, dtype=np.float64))
    return levels, np.searchsorted(nmes, levels, side="right") / max(len(nmes), 1)


def auc(nmes: np.ndarray, threshold: float) -> float:
    """Area under the CED curve up to ``threshold``, divided by ``threshold`` (in [0, 1])."""
    levels, frac = ced_curve(nmes, threshold)
    return float(np.trapezoid(frac, levels) / threshold)
