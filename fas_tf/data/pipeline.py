"""The tf.data pipeline: seeded, stateless augmentation of loaded faces into training batches.

Every random draw is a function of the run's seed, the epoch and the face (stateless TF random
ops), so a run is reproducible and can be resumed mid-way. TensorFlow is imported lazily so
that bad input fails before it loads.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from fas_tf.data.faces import LabelledFaces
from fas_tf.errors import UsageError
from fas_tf.landmarks import Layout

if TYPE_CHECKING:
    import tensorflow as tf

    from fas_tf.augment import AugmentConfig


# Domains of the stateless seeds derived from a run's seed: no two kinds of draw share a stream.
_SHUFFLE, _SAMPLE, _VIEW, _SCHEDULE = 1, 2, 3, 4


def stream_seed(seed: int, domain: int, *values) -> tf.Tensor:
    """The stateless seed, shape (2,) int64, of ``(seed, domain, *values)`` (ints or tensors)."""
    import tensorflow as tf

    out = tf.constant([int(seed), int(domain)], tf.int64)
    for value in values:
        out = tf.random.experimental.stateless_fold_in(out, tf.cast(value, tf.int64))
    return out


def sample_seed(seed: int, epoch, index, repeat=0) -> tf.Tensor:
    """Seed of every random draw of face ``index`` in ``epoch`` (its ``repeat``-th use in it)."""
    return stream_seed(seed, _SAMPLE, epoch, index, repeat)


def view_seed(seed: int, index, view) -> tf.Tensor:
    """Seed of view ``view`` of face ``index`` (the teacher cache's crops)."""
    return stream_seed(seed, _VIEW, index, view)


def epoch_order(seed: int, epoch, count: int) -> tf.Tensor:
    """The face order of ``epoch``: a stateless permutation of ``range(count)``, int64."""
    import tensorflow as tf

    u = tf.random.stateless_uniform([count], stream_seed(seed, _SHUFFLE, epoch))
    return tf.cast(tf.argsort(u, stable=True), tf.int64)


def view_of(seed: int, epoch, index, views: int) -> tf.Tensor:
    """Which of its ``views`` cached views face ``index`` replays in ``epoch`` (int64).

    Each face walks through its views in a stateless random order drawn afresh every ``views``
    epochs, so every view is used once per ``views`` epochs (a plain draw per epoch would
    leave some views unused and repeat others), in an order that differs between faces.
    """
    import tensorflow as tf

    epoch = tf.cast(epoch, tf.int64)
    cycle, position = epoch // views, epoch % views
    u = tf.random.stateless_uniform([views], stream_seed(seed, _SCHEDULE, index, cycle))
    return tf.gather(tf.cast(tf.argsort(u, stable=True), tf.int64), position)


def _cropper(faces: LabelledFaces, layout: Layout, input_size: int, augment: AugmentConfig):
    """``crop(index, seed) -> (image, points)``: the augmented crop of face ``index``."""
    import tensorflow as tf

    from fas_tf.augment import PROPORTION_WARP_POINTS, augment_sample

    if augment.proportion_warp > 0 and layout.num_landmarks != PROPORTION_WARP_POINTS:
        raise UsageError(f"the proportion warp needs the 68-point layout, not "
                         f"{layout.num_landmarks} points: train with --proportion_warp=0")
    canvases = tf.constant(faces.canvases)
    landmarks = tf.constant(faces.landmarks)
    perm = tf.constant(layout.flip_permutation(), tf.int32)
    can_flip = layout.can_flip

    def crop(index, seed):
        return augment_sample(
            tf.gather(canvases, index), tf.gather(landmarks, index), input_size, augment, perm,
            can_flip, seed,
        )

    return crop


def make_dataset(
    faces: LabelledFaces,
    layout: Layout,
    input_size: int = 128,
    stride: int = 4,
    sigma: float = 1.5,
    batch_size: int = 16,
    training: bool = True,
    augment: AugmentConfig | None = None,
    seed: int | None = None,
    repeat: bool = False,
    shard: tuple[int, int] | None = None,
    initial_epoch: int = 0,
    epochs: int | None = None,
    global_batch: int | None = None,
    views: int = 0,
) -> tf.data.Dataset:
    """Batches of ``(images, {"heatmaps", "landmarks"})`` for ``model.fit``.

    images: (B, S, S, 3) float32 RGB in [0, 255]; heatmaps: (B, S/stride, S/stride, N);
    landmarks: (B, N, 2) in crop pixels. Evaluation batches are the plain framing-rule crops.

    Training batches are shuffled and augmented (:mod:`fas_tf.augment`) deterministically: the
    dataset is the epochs ``initial_epoch .. epochs - 1`` (one epoch when ``epochs`` is None,
    endless with ``repeat``), one after the other; epoch ``e`` is the faces in the order
    :func:`epoch_order` ``(seed, e)``, each face cropped with :func:`sample_seed`
    ``(seed, e, face)``, so one seed gives the same batches whatever the parallelism. An
    epoch's last batch may be partial; pass ``steps_per_epoch`` to ``fit`` when the dataset
    holds several epochs.

    ``views=K > 0`` replays the teacher cache's views instead: face ``i`` in epoch ``e`` is its
    view :func:`view_of` ``(seed, e, i, K)`` (the crop of :func:`view_seed`), and batches are
    ``(images, targets, rows)`` with the int64 cache rows ``i * K + view``
    (:mod:`fas_tf.teacher_cache`).

    Distributed input: ``global_batch`` pads every epoch (with its first faces again, drawn
    anew) to whole global batches, and ``shard=(n, i)`` keeps every n-th sample of that stream
    from i: with the same ``seed`` on every worker the n shards of each global batch are
    disjoint and every batch is full.
    """
    import tensorflow as tf

    from fas_tf.augment import AugmentConfig, center_crop_sample
    from fas_tf.heatmaps import render_heatmaps

    augment = augment or AugmentConfig()
    heat_size = input_size // stride

    def targets(pts):
        return {"heatmaps": render_heatmaps(pts, heat_size, stride, sigma), "landmarks": pts}

    if not training:
        ds = tf.data.Dataset.from_tensor_slices((faces.canvases, faces.landmarks))
        ds = ds.map(lambda c, p: center_crop_sample(c, p, input_size),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(lambda image, pts: (image, targets(pts)), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)

    seed = 0 if seed is None else int(seed)
    count = len(faces)
    per_epoch = count
    if global_batch is not None:
        per_epoch = steps_per_epoch(count, global_batch) * global_batch
    crop = _cropper(faces, layout, input_size, augment)

    def prepare(epoch, index, repeat):
        if not views:
            image, pts = crop(index, sample_seed(seed, epoch, index, repeat))
            return image, targets(pts)
        view = (view_of(seed, epoch, index, views) + repeat) % views
        image, pts = crop(index, view_seed(seed, index, view))
        return image, targets(pts), index * views + view

    def one_epoch(epoch):
        position = tf.range(per_epoch, dtype=tf.int64)
        index = tf.gather(epoch_order(seed, epoch, count), position % count)
        ds = tf.data.Dataset.from_tensor_slices(
            (tf.fill([per_epoch], epoch), index, position // count)
        )
        if shard is not None:
            ds = ds.shard(*shard)
        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size, drop_remainder=False)

    end = tf.int64.max if repeat else (initial_epoch + 1 if epochs is None else epochs)
    ds = tf.data.Dataset.range(initial_epoch, end).flat_map(one_epoch)
    if not repeat:
        shard_size = per_epoch if shard is None else math.ceil(per_epoch / shard[0])
        ds = ds.apply(tf.data.experimental.assert_cardinality(
            (end - initial_epoch) * steps_per_epoch(shard_size, batch_size)
        ))
    return ds.prefetch(tf.data.AUTOTUNE)


def view_dataset(
    faces: LabelledFaces,
    layout: Layout,
    input_size: int,
    augment: AugmentConfig,
    seed: int,
    views: int,
    batch_size: int = 32,
    rows: tf.Tensor | None = None,
) -> tf.data.Dataset:
    """Batches of ``(images, rows)``: the ``views`` cached views of every face, in row order
    (only ``rows``, int64, when given).

    Row ``index * views + view`` is the crop of :func:`view_seed` ``(seed, index, view)``, the
    one :func:`make_dataset` replays with ``views``.
    """
    import tensorflow as tf

    crop = _cropper(faces, layout, input_size, augment)

    def view(row):
        image, _ = crop(row // views, view_seed(seed, row // views, row % views))
        return image, row

    ds = (tf.data.Dataset.range(len(faces) * views) if rows is None
          else tf.data.Dataset.from_tensor_slices(tf.cast(rows, tf.int64)))
    ds = ds.map(view, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(count: int, batch_size: int) -> int:
    return max(1, math.ceil(count / batch_size))


def framed_crops(faces: LabelledFaces, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Framing-rule crops (float32 [0, 255]) and landmarks in crop pixels, no jitter.

    Exactly the crops of the training pipeline's evaluation batches
    (``fas_tf.data.make_dataset(training=False)``).
    """
    from fas_tf.augment import center_crop_sample

    crops, points = [], []
    for canvas, pts in zip(faces.canvases, faces.landmarks, strict=True):
        image, p = center_crop_sample(canvas, pts, input_size)
        crops.append(np.asarray(image))
        points.append(np.asarray(p))
    return np.stack(crops).astype(np.float32), np.stack(points).astype(np.float32)
