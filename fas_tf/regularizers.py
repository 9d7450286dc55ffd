"""The four teacher constraints added to the heatmap loss (Fu et al., IEEE JBHI 2021).

Notation: s_i student feature and t_i teacher feature at stride i, a_i a training-only adapter
(1x1 conv to the teacher's channel count, then bilinear resize to the teacher's spatial size),
e_s, e_t the student-head and teacher embeddings. Every function takes lists over matched
strides, returns a float32 scalar, and is plain TF (no gradient ever flows into the teacher: its
outputs are wrapped in ``stop_gradient``).
"""

from __future__ import annotations

import tensorflow as tf

from fas_tf.metrics import normalizer

NAMES = ("cls", "feat", "sa", "ca")
_EPS = 1e-8


def _f32(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float32)


def l2_normalize(x: tf.Tensor) -> tf.Tensor:
    """``x / ||x||_2`` over the last axis."""
    return tf.math.l2_normalize(_f32(x), axis=-1, epsilon=1e-12)


def cls_loss(e_s: tf.Tensor, e_t: tf.Tensor) -> tf.Tensor:
    """Classification-layer output: ``L_cls = mean_b ||e_s - e_t||^2``.

    ``e_s = l2norm(Dense(D)(GAP(s_32)))`` (normalized here), ``e_t`` the L2-normalized teacher
    embedding. Range [0, 4].
    """
    diff = l2_normalize(e_s) - tf.stop_gradient(l2_normalize(e_t))
    return tf.reduce_mean(tf.reduce_sum(tf.square(diff), axis=-1))


def feat_loss(adapted: list[tf.Tensor], teacher: list[tf.Tensor]) -> tf.Tensor:
    """Intermediate features (FitNets hints): ``L_feat = mean_i mean((a_i(s_i) - t_i/rms(t_i))^2)``.

    ``rms(t) = sqrt(mean(t^2))`` over the whole batch tensor, so the weight does not depend on the
    teacher's activation scale.
    """
    terms = []
    for a, t in zip(adapted, teacher, strict=True):
        t = tf.stop_gradient(_f32(t))
        rms = tf.sqrt(tf.reduce_mean(tf.square(t)) + _EPS)
        terms.append(tf.reduce_mean(tf.square(_f32(a) - t / rms)))
    return tf.add_n(terms) / float(len(terms))


def _norm(x: tf.Tensor) -> tf.Tensor:
    """``||x||_2`` over the last axis, with a finite gradient at 0 (sqrt(sum x^2 + 1e-12))."""
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=-1) + 1e-12)


def spatial_attention(feature: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """``A(F) = l2norm(vec(resize(mean_c F^2, size)))``, shape (B, H*W)."""
    amap = tf.reduce_mean(tf.square(_f32(feature)), axis=-1, keepdims=True)
    if tuple(amap.shape[1:3]) != tuple(size):
        amap = tf.image.resize(amap, size, method="bilinear")
    return l2_normalize(tf.reshape(amap, [tf.shape(amap)[0], -1]))


def channel_attention(feature: tf.Tensor) -> tf.Tensor:
    """``C(F) = l2norm(mean_{x,y} F^2)`` per channel, shape (B, C)."""
    return l2_normalize(tf.reduce_mean(tf.square(_f32(feature)), axis=[1, 2]))


def sa_loss(student: list[tf.Tensor], teacher: list[tf.Tensor]) -> tf.Tensor:
    """Spatial attention: ``L_sa = mean_i mean_b ||A(s_i) - A(t_i)||_2``.

    Both maps are resized to the teacher's spatial size. Range [0, 2].
    """
    terms = []
    for s, t in zip(student, teacher, strict=True):
        size = tuple(int(d) for d in t.shape[1:3])
        diff = spatial_attention(s, size) - tf.stop_gradient(spatial_attention(t, size))
        terms.append(tf.reduce_mean(_norm(diff)))
    return tf.add_n(terms) / float(len(terms))


def ca_loss(adapted: list[tf.Tensor], teacher: list[tf.Tensor]) -> tf.Tensor:
    """Channel attention: ``L_ca = mean_i mean_b ||C(a_i(s_i)) - C(t_i)||_2``. Range [0, 2]."""
    terms = []
    for a, t in zip(adapted, teacher, strict=True):
        diff = channel_attention(a) - tf.stop_gradient(channel_attention(t))
        terms.append(tf.reduce_mean(_norm(diff)))
    return tf.add_n(terms) / float(len(terms))


def heatmap_loss(predicted: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """``L_heatmap = mean_{b,k} sum_{x,y} (H_pred - H_target)^2`` (per-landmark squared error)."""
    se = tf.square(_f32(predicted) - _f32(target))
    return tf.reduce_mean(tf.reduce_sum(se, axis=[1, 2]))


def awing_loss(
    predicted: tf.Tensor,
    target: tf.Tensor,
    alpha: float = 2.1,
    omega: float = 14.0,
    epsilon: float = 1.0,
    theta: float = 0.5,
    weight: float = 10.0,
) -> tf.Tensor:
    """Adaptive Wing loss with a weighted loss map (Wang et al., ICCV 2019), same reduction as
    :func:`heatmap_loss` (sum over pixels, mean over batch and landmarks).

    Near a target's foreground (``y`` -> 1) the loss grows almost linearly with small errors,
    so a blob's position keeps a gradient where squared error has little; the map gives
    ``weight + 1`` to the 3x3-dilated region where the target exceeds 0.2, 1 elsewhere. The sum
    is divided by ``omega * (weight + 1)``, so that a blank prediction costs about what it costs
    under squared error and the teacher terms keep their balance at the same lambdas.
    """
    y, p = _f32(target), _f32(predicted)
    diff = tf.abs(y - p)
    power = alpha - y
    ratio = theta / epsilon
    a = omega / (1.0 + tf.pow(ratio, power)) * power * tf.pow(ratio, power - 1.0) / epsilon
    c = theta * a - omega * tf.math.log(1.0 + tf.pow(ratio, power))
    loss = tf.where(
        diff < theta, omega * tf.math.log(1.0 + tf.pow(diff / epsilon, power)), a * diff - c
    )
    region = tf.nn.max_pool2d(tf.cast(y > 0.2, tf.float32), 3, 1, "SAME")
    weighted = tf.reduce_sum(loss * (weight * region + 1.0), axis=[1, 2])
    return tf.reduce_mean(weighted) / (omega * (weight + 1.0))


HEATMAP_LOSSES = {"mse": heatmap_loss, "awing": awing_loss}


def coordinate_loss(points: tf.Tensor, gt: tf.Tensor, normalization: str | None = None,
                    eps: float = 1e-3) -> tf.Tensor:
    """The NME of decoded ``points`` against ``gt`` (both (B, N, 2) crop pixels), smoothed at 0:
    ``mean_{b,k} sqrt(||p - g||^2 + (eps d)^2) / d`` (``d``: :func:`fas_tf.metrics.normalizer`).

    With ``points`` decoded from the student's heatmaps inside the tape (the argmax picks the
    cell, the log-Taylor step of the decoding is differentiable), it trains the sub-cell
    position the saved model will report, which the heatmap loss only reaches through the
    shape of a blob.
    """
    gt = _f32(gt)
    d = tf.maximum(normalizer(gt, normalization), 1e-6)[:, None]
    squared = tf.reduce_sum(tf.square(_f32(points) - gt), axis=-1)
    return tf.reduce_mean(tf.sqrt(squared + tf.square(eps * d)) / d)
