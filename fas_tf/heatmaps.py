"""Gaussian heatmap targets and sub-pixel decoding, in TF ops.

Coordinates are continuous pixel coordinates with pixel centres at integers. A heatmap at output
stride ``s`` has its pixel ``j`` centred on crop coordinate ``(j + 0.5) * s - 0.5``.
"""

from __future__ import annotations

import keras
import numpy as np
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


def resample_heatmaps(heatmaps: tf.Tensor, size: int) -> tf.Tensor:
    """(B, H, H, N) heatmaps over a crop -> (B, size, size, N) over the same crop.

    Half-pixel centres (the convention of :mod:`fas_tf.heatmaps`): an average pool when ``H``
    is a multiple of ``size`` (the exact area average), else bilinear ``tf.image.resize``
    (antialiasing does not compile under XLA). Needs a static ``H``.
    """
    own = int(heatmaps.shape[1])
    if own == size:
        return heatmaps
    if own % size == 0:
        return tf.nn.avg_pool2d(heatmaps, own // size, own // size, "VALID")
    return tf.image.resize(heatmaps, (size, size), method="bilinear")


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


def decode_heatmaps_int8(
    heatmaps: tf.Tensor, stride: int, eps: float = 0.02
) -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`decode_heatmaps` written with ops that have int8 TFLite kernels (for export).

    Same integer peak and the same log-Taylor refinement, but cheap and int8-friendly: the map
    is transposed to (B, N, H*W) so that ``argmax`` runs along the last axis; the peak and its
    four neighbours are read with one ``gather`` (not full-map one-hot masks), neighbour indices
    being clamped to the map (edge replication: a peak on the border is pushed outward, as in
    :func:`decode_heatmaps`); every intermediate has a bounded range so that int8 calibration
    keeps its resolution: ``L = log(max(h, eps))`` and the clipped step ``slope / -curvature``
    is computed as ``slope / max(-curvature, 2|slope|, 0.05)``, already in [-0.5, 0.5] (the
    0.05 floor, far below the 1/sigma^2 = 0.44 curvature of a trained peak, keeps int8 division
    away from zero; it only shortens the step of nearly flat peaks). Peak pixel centres come
    from constant tables (a gather), so no int -> float cast is needed. Needs static H, W, N.

    Returns:
        landmarks (B, N, 2) in crop pixels, confidence (B, N) = peak clipped to [0, 1].
    """
    hm = tf.cast(heatmaps, tf.float32)
    _, h, w, n = hm.shape
    if h is None or w is None or n is None:
        raise ValueError("decode_heatmaps_int8 needs static heatmap height, width and count")
    by_channel = tf.transpose(tf.reshape(hm, [-1, h * w, n]), [0, 2, 1])  # (B, N, HW)
    idx = tf.argmax(by_channel, axis=-1, output_type=tf.int32)  # (B, N)
    x0, y0 = idx % w, idx // w
    xm, xp = tf.maximum(x0 - 1, 0), tf.minimum(x0 + 1, w - 1)
    ym, yp = tf.maximum(y0 - 1, 0) * w, tf.minimum(y0 + 1, h - 1) * w
    row = y0 * w
    # Index into the flattened (B * N * HW) map of: peak, x-1, x+1, y-1, y+1.
    where = tf.stack([idx, row + xm, row + xp, ym + x0, yp + x0], axis=-1)  # (B, N, 5)
    base = tf.reshape(tf.range(tf.shape(idx)[0] * n) * (h * w), [-1, n, 1])
    values = tf.gather(tf.reshape(by_channel, [-1]), where + base)
    logs = tf.math.log(tf.maximum(values, eps))
    lc = logs[..., 0]

    def offset(lm: tf.Tensor, lp: tf.Tensor) -> tf.Tensor:
        slope = 0.5 * (lp - lm)
        bend = 2.0 * lc - lp - lm  # minus the curvature, >= 0 at a maximum (no NEG op)
        return slope / tf.maximum(tf.maximum(bend, 2.0 * tf.abs(slope)), 0.05)

    dx = offset(logs[..., 1], logs[..., 2])
    dy = offset(logs[..., 3], logs[..., 4])
    cells = np.arange(h * w)
    px = tf.constant(((cells % w + 0.5) * stride - 0.5).astype(np.float32))
    py = tf.constant(((cells // w + 0.5) * stride - 0.5).astype(np.float32))
    x = tf.gather(px, idx) + float(stride) * dx
    y = tf.gather(py, idx) + float(stride) * dy
    return tf.stack([x, y], axis=-1), tf.clip_by_value(values[..., 0], 0.0, 1.0)


# Decoding methods, by name (the names are also fas_tf.training.config.DECODER_CHOICES).
DECODERS = ("taylor", "dark")


def check_decoding(method: str, sigma: float | None) -> None:
    """ValueError unless ``method`` is one of :data:`DECODERS` with what it needs (``"dark"``:
    the training sigma > 0)."""
    if method not in DECODERS:
        raise ValueError(f"unknown decoding method {method!r}; choose from {', '.join(DECODERS)}")
    if method == "dark" and (sigma is None or not sigma > 0):
        raise ValueError(f"decoding 'dark' needs the training sigma > 0, got {sigma}")


def gaussian_kernel(sigma: float, max_radius: int | None = None) -> np.ndarray:
    """(2r+1, 2r+1) Gaussian of ``sigma`` cells summing to 1, ``r = round(4 sigma)`` (OpenCV's
    size for float images), at least 1 and at most ``max_radius``."""
    r = max(1, round(4.0 * sigma))
    r = r if max_radius is None else min(r, max_radius)
    taps = np.exp(-np.square(np.arange(-r, r + 1)) / (2.0 * sigma * sigma))
    kernel = np.outer(taps, taps)
    return (kernel / kernel.sum()).astype(np.float32)


def blur_heatmaps(heatmaps: tf.Tensor, sigma: float) -> tf.Tensor:
    """(B, H, W, N) heatmaps blurred per channel by a Gaussian of ``sigma`` cells.

    A fixed depthwise convolution (:func:`gaussian_kernel`, its radius capped at the map side
    minus one) after reflect padding (OpenCV's default border) done by two ``gather`` s of
    constant rows and columns: GATHER and DEPTHWISE_CONV_2D quantize to int8 (the converter
    leaves MIRROR_PAD in float). Needs static H, W, N.
    """
    hm = tf.cast(heatmaps, tf.float32)
    _, h, w, n = hm.shape
    if h is None or w is None or n is None:
        raise ValueError("blur_heatmaps needs static heatmap height, width and count")
    kernel = gaussian_kernel(sigma, max_radius=min(h, w) - 1)
    r = kernel.shape[0] // 2
    kernel = np.tile(kernel[:, :, None, None], (1, 1, n, 1))

    def reflected(size: int) -> np.ndarray:  # indices -r..size-1+r reflected about 0, size-1
        i = np.abs(np.arange(-r, size + r))
        return np.where(i > size - 1, 2 * (size - 1) - i, i).astype(np.int32)

    padded = tf.gather(tf.gather(hm, reflected(h), axis=1), reflected(w), axis=2)
    return tf.nn.depthwise_conv2d(padded, tf.constant(kernel), [1, 1, 1, 1], "VALID")


def decode(
    heatmaps: tf.Tensor,
    stride: int,
    method: str = "taylor",
    sigma: float | None = None,
    int8: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Landmarks (B, N, 2) in crop pixels and confidence (B, N) by decoding ``method``.

    ``"taylor"``: argmax + log-Taylor step (:func:`decode_heatmaps`). ``"dark"``: the same on
    the heatmaps blurred by the training Gaussian (``sigma``, heatmap cells; DARK's modulation,
    Zhang et al., CVPR 2020: a trained heatmap is not one clean Gaussian), confidence still the
    unblurred peak. ``int8``: the refinement of :func:`decode_heatmaps_int8` (for export).
    """
    check_decoding(method, sigma)
    refine = decode_heatmaps_int8 if int8 else decode_heatmaps
    if method == "taylor":
        return refine(heatmaps, stride)
    landmarks, _ = refine(blur_heatmaps(heatmaps, sigma), stride)
    peak = tf.reduce_max(tf.cast(heatmaps, tf.float32), axis=[1, 2])
    return landmarks, tf.clip_by_value(peak, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="fas_tf")
class HeatmapDecoder(keras.layers.Layer):
    """Keras layer: heatmaps -> {landmarks, confidence} by :func:`decode`.

    ``method``: ``"taylor"`` or ``"dark"`` (needs ``sigma``, the training sigma in heatmap
    cells); ``int8``: the refinement in ops with int8 TFLite kernels (export).
    """

    def __init__(self, stride: int, method: str = "taylor", sigma: float | None = None,
                 int8: bool = False, **kwargs):
        super().__init__(**kwargs)
        check_decoding(method, sigma)
        self.stride = int(stride)
        self.method = method
        self.sigma = None if sigma is None else float(sigma)
        self.int8 = bool(int8)

    def call(self, heatmaps):
        landmarks, confidence = decode(heatmaps, self.stride, self.method, self.sigma, self.int8)
        return {"landmarks": landmarks, "confidence": confidence}

    def compute_output_spec(self, heatmaps):
        b, n = heatmaps.shape[0], heatmaps.shape[-1]
        return {
            "landmarks": keras.KerasTensor((b, n, 2), dtype="float32"),
            "confidence": keras.KerasTensor((b, n), dtype="float32"),
        }

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "method": self.method,
                "sigma": self.sigma, "int8": self.int8}


@keras.saving.register_keras_serializable(package="fas_tf")
class HeatmapDecoding(keras.layers.Layer):
    """Identity on a student's heatmaps that records how they are decoded (``method``, and
    ``sigma``, the training sigma in heatmap cells): saved with the student, read by
    :func:`fas_tf.student.decoding_of`. A student without one (saved before it existed)
    decodes with ``"taylor"``."""

    def __init__(self, method: str = "taylor", sigma: float | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # heatmaps stay float32 under mixed precision
        super().__init__(**kwargs)
        check_decoding(method, sigma)
        self.method = method
        self.sigma = None if sigma is None else float(sigma)

    def call(self, heatmaps):
        return heatmaps

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "method": self.method, "sigma": self.sigma}
