"""Gaussian heatmap targets and sub-pixel decoding, in TF ops.

Coordinates are continuous pixel coordinates with pixel centres at integers. A heatmap at output
stride ``s`` has its pixel ``j`` centred on crop coordinate ``(j + 0.5) * s - 0.5``.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def crop_to_heatmap(points: tf.Tensor, stride: int) -> tf.Tensor:
    """Crop-pixel coordinates -> heatmap coordinates: ``h = (p + 0.5) / s - 0.5``."""
    return (points + 0.5) / float(stride) - 0.5


def heatmap_to_crop(points: tf.Tensor, stride: int) -> tf.Tensor:
    """Heatmap coordinates -> crop-pixel coordinates: ``p = (h + 0.5) * s - 0.5``."""
    return (points + 0.5) * float(stride) - 0.5


def render_heatmaps(points: tf.Tensor, size: int, stride: int, sigma: float) -> tf.Tensor:
    """Gaussian heatmaps ``exp(-||(x, y) - mu_k||^2 / (2 sigma^2))`` with peak 1.

    Args:
        points: (..., N, 2) landmark (x, y) in crop pixels.
        size: heatmap side (crop side / stride).
        stride: output stride.
        sigma: Gaussian sigma in heatmap pixels.

    Returns:
        (..., size, size, N) float32 heatmaps.
    """
    mu = crop_to_heatmap(tf.cast(points, tf.float32), stride)
    grid = tf.range(size, dtype=tf.float32)
    mx = mu[..., 0][..., None, None, :]  # (..., 1, 1, N)
    my = mu[..., 1][..., None, None, :]
    dx2 = tf.square(grid[None, :, None] - mx)  # (..., 1, W, N): x varies along width
    dy2 = tf.square(grid[:, None, None] - my)  # (..., H, 1, N): y varies along height
    return tf.exp(-(dx2 + dy2) / (2.0 * sigma * sigma))


def decode_heatmaps(heatmaps: tf.Tensor, stride: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Sub-pixel landmark positions and confidences from heatmaps.

    The integer peak (x0, y0) is refined per axis by a second-order Taylor step of the log
    heatmap (exact for a Gaussian): ``dx = -(L(x0+1) - L(x0-1)) / (2 (L(x0+1) - 2 L(x0) +
    L(x0-1)))`` with ``L = log(max(h, eps))``, clipped to [-0.5, 0.5]. Neighbour values are read
    with one-hot masks (element-wise ops and reductions only, which convert to TFLite).

    Args:
        heatmaps: (B, H, W, N).
        stride: output stride, to return crop-pixel coordinates.

    Returns:
        landmarks (B, N, 2) in crop pixels, confidence (B, N) = peak value clipped to [0, 1].
    """
    hm = tf.cast(heatmaps, tf.float32)
    shape = tf.shape(hm)
    h, w = shape[1], shape[2]
    flat = tf.reshape(hm, [shape[0], h * w, shape[3]])  # (B, HW, N)
    idx = tf.argmax(flat, axis=1, output_type=tf.int32)  # (B, N)
    peak = tf.reduce_max(flat, axis=1)
    x0 = tf.cast(idx % w, tf.float32)
    y0 = tf.cast(idx // w, tf.float32)
    xs = tf.cast(tf.range(w), tf.float32)[None, None, :, None]  # (1, 1, W, 1)
    ys = tf.cast(tf.range(h), tf.float32)[None, :, None, None]  # (1, H, 1, 1)
    logh = tf.math.log(tf.maximum(hm, 1e-6))

    def at(dx: float, dy: float) -> tf.Tensor:
        mask = tf.cast(
            tf.logical_and(
                tf.equal(xs, (x0 + dx)[:, None, None, :]), tf.equal(ys, (y0 + dy)[:, None, None, :])
            ),
            tf.float32,
        )
        has = tf.reduce_sum(mask, axis=[1, 2])
        value = tf.reduce_sum(mask * logh, axis=[1, 2])
        centre = tf.math.log(tf.maximum(peak, 1e-6))
        return tf.where(has > 0, value, centre)  # outside the map: no refinement

    def step(lm: tf.Tensor, lc: tf.Tensor, lp: tf.Tensor) -> tf.Tensor:
        curvature = lp - 2.0 * lc + lm
        slope = 0.5 * (lp - lm)
        safe = tf.where(curvature < -1e-6, curvature, -tf.ones_like(curvature))
        offset = tf.where(curvature < -1e-6, -slope / safe, tf.zeros_like(slope))
        return tf.clip_by_value(offset, -0.5, 0.5)

    lc = tf.math.log(tf.maximum(peak, 1e-6))
    dx = step(at(-1.0, 0.0), lc, at(1.0, 0.0))
    dy = step(at(0.0, -1.0), lc, at(0.0, 1.0))
    points = tf.stack([x0 + dx, y0 + dy], axis=-1)
    return heatmap_to_crop(points, stride), tf.clip_by_value(peak, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="fas_tf")
class HeatmapDecoder(keras.layers.Layer):
    """Keras layer around :func:`decode_heatmaps`: heatmaps -> {landmarks, confidence}."""

    def __init__(self, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, heatmaps):
        landmarks, confidence = decode_heatmaps(heatmaps, self.stride)
        return {"landmarks": landmarks, "confidence": confidence}

    def compute_output_spec(self, heatmaps):
        b, n = heatmaps.shape[0], heatmaps.shape[-1]
        return {
            "landmarks": keras.KerasTensor((b, n, 2), dtype="float32"),
            "confidence": keras.KerasTensor((b, n), dtype="float32"),
        }

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}
