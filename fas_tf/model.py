"""``RegularizedLandmarkModel``: a landmark student trained with a frozen face-recognition teacher.

Follows the keras-io knowledge-distillation ``Distiller`` pattern: ``compile`` takes the
optimizer and which regularizers to use with their weights, ``train_step`` adds the teacher
constraints (and, with a :class:`DistillSource`, a heatmap distillation term against a trained
landmark model) to the heatmap loss, ``test_step`` reports the heatmap loss and NME. Every loss
term is a metric. Works with ``model.fit`` under ``tf.distribute`` strategies, ``mixed_float16`` and
``jit_compile=True``.

Example::

    student = build_student(num_landmarks=68, input_size=128)
    teacher = build_teacher("auto")
    model = RegularizedLandmarkModel(student, teacher)
    model.compile(keras.optimizers.AdamW(1e-3), regularizers=("cls", "feat", "sa", "ca"))
    model.fit(train_ds, validation_data=val_ds, epochs=200)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from fas_tf import regularizers as R
from fas_tf.heatmaps import decode, resample_heatmaps
from fas_tf.metrics import default_normalization, mean_nme
from fas_tf.student import FEATURE_STRIDES, decoding_of, student_geometry
from fas_tf.teachers import Teacher

DEFAULT_WEIGHTS = {"cls": 1.0, "feat": 1.0, "sa": 1.0, "ca": 1.0}


def parse_regularizers(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"cls,feat"`` / ``["sa"]`` / ``"none"`` / None -> validated tuple of names."""
    if spec is None:
        return ()
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip() and n.strip() != "none"]
    bad = [n for n in names if n not in R.NAMES]
    if bad:
        raise ValueError(f"unknown regularizer(s) {bad}; choose from {', '.join(R.NAMES)} or none")
    return tuple(dict.fromkeys(names))


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True under a ``MultiWorkerMirroredStrategy`` spanning more than one worker."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._in_multi_worker_mode()  # the test Keras itself uses
    )


@dataclass
class SourceModel:
    """One trained landmark model (a ``student.keras``) of a :class:`DistillSource`, frozen.

    Attributes:
        model: the loaded landmark network (``heatmaps`` output), ``trainable=False``.
        path: the file it was loaded from ("" in memory).
        sha256: that file's sha256 (None in memory).
    """

    model: keras.Model
    path: str = ""
    sha256: str | None = None
    input_size: int = field(init=False)
    stride: int = field(init=False)
    num_landmarks: int = field(init=False)

    def __post_init__(self) -> None:
        self.model.trainable = False
        self.input_size, self.stride, self.num_landmarks = student_geometry(self.model)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SourceModel:
        """Load a saved landmark model; UsageError (one line naming the file) when unusable."""
        from fas_tf.cli import sha256_of
        from fas_tf.inference import load_student

        model = load_student(path)
        return cls(model, os.path.abspath(path), sha256_of(path))

    @property
    def heatmap_size(self) -> int:
        return self.input_size // self.stride

    def heatmaps(self, images: tf.Tensor, size: int) -> tf.Tensor:
        """This model's float32 heatmaps on RGB [0, 255] ``images`` (any square size, resized
        bilinearly to its input), on a ``size`` x ``size`` grid over the same crop."""
        x = tf.cast(images, tf.float32)
        if int(x.shape[1]) != self.input_size:
            x = tf.image.resize(x, (self.input_size, self.input_size), method="bilinear")
        hm = tf.cast(self.model(x, training=False)["heatmaps"], tf.float32)
        return resample_heatmaps(hm, size)

    def describe(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "input_size": self.input_size,
            "stride": self.stride,
            "heatmap_size": self.heatmap_size,
            "num_landmarks": self.num_landmarks,
        }


@dataclass
class DistillSource:
    """What the student learns to copy: one trained landmark model, or an ensemble of several
    whose heatmaps are averaged (each brought to the student's grid first).

    Not a Keras-tracked object (like :class:`fas_tf.teachers.Teacher`): its weights are in no
    checkpoint and never trainable. It runs online inside the train step (also with a teacher
    cache: it is a small landmark network, and a cache would have to store full heatmaps).

    The distillation target is the source's *heatmaps* brought to the student's heatmap grid,
    compared with the heatmap loss of the labels (``--heatmap_loss``, e.g.
    :func:`fas_tf.regularizers.heatmap_loss`), so both terms have the same form and scale.
    Heatmaps rather than decoded coordinates rendered as Gaussians: they carry what the source
    knows beyond its argmax (spread = uncertainty, second modes), which rendering discards (it
    would make the source a pseudo-labeller), and the term is exactly 0 when the student equals
    the source. Both grids cover the same crop (framing rule) with pixel centres at
    ``(j + 0.5) * stride - 0.5``, so the source map is resampled with half-pixel centres
    (:func:`resample_heatmaps`): a blob keeps its crop position, so both terms agree on the
    peak, which is what decoding reads. Its width does not follow: ``--sigma`` is in heatmap
    pixels, so a source with a k times larger grid gives blobs 1/k as wide as the student's
    label targets (train the student with ``sigma / k`` to make them equal).

    An ensemble's target is the plain mean of its models' resampled heatmaps (heatmap-space
    averaging: where the models disagree the mean keeps both blobs at lower height, and its
    peak is where most of them put the point). The models may differ in input size and stride;
    they must predict the same landmarks.

    Attributes:
        models: the :class:`SourceModel` s, in the order given.
    """

    models: list[SourceModel]

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a distill source needs at least one model")
        first = self.models[0]
        for other in self.models[1:]:
            if other.num_landmarks != first.num_landmarks:
                raise ValueError(
                    f"{other.path or 'a source model'}: predicts {other.num_landmarks} landmarks, "
                    f"{first.path or 'the first source model'} {first.num_landmarks}; an "
                    "ensemble's models must predict the same landmarks")

    @classmethod
    def load(cls, paths: str | os.PathLike | Sequence[str | os.PathLike]) -> DistillSource:
        """Load one saved landmark model or several (an ensemble); UsageError (one line naming
        the file) when one is unusable or predicts other landmarks than the first."""
        from fas_tf.errors import UsageError

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        try:
            return cls([SourceModel.load(p) for p in paths])
        except ValueError as err:
            raise UsageError(str(err)) from err

    @property
    def num_landmarks(self) -> int:
        return self.models[0].num_landmarks

    def heatmaps(self, images: tf.Tensor, size: int) -> tf.Tensor:
        """The source's float32 heatmaps on RGB [0, 255] ``images`` (any square size), on a
        ``size`` x ``size`` grid over the same crop: the mean of its models'; no gradient."""
        maps = [m.heatmaps(images, size) for m in self.models]
        mean = maps[0] if len(maps) == 1 else tf.add_n(maps) / float(len(maps))
        return tf.stop_gradient(mean)

    def describe(self) -> dict:
        return {"models": [m.describe() for m in self.models]}

    def summary(self) -> str:
        """One line: the models and their geometry."""
        parts = [f"{m.path or 'in memory'} ({m.input_size} px input, "
                 f"{m.heatmap_size}x{m.heatmap_size} heatmaps)" for m in self.models]
        head = "" if len(parts) == 1 else f"the mean heatmaps of {len(parts)} models: "
        return head + ", ".join(parts)


class RegularizedLandmarkModel(keras.Model):
    """Student heatmap network + frozen teacher (+ frozen distill source) + training-only
    adapters and embedding head.

    Args:
        student: a model from :func:`fas_tf.student.build_student` (outputs ``heatmaps`` and
            ``feat_8/16/32``).
        teacher: a :class:`fas_tf.teachers.Teacher`, or None (heatmap loss only).
        normalization: NME normalization for the metric (default: interocular for 68 points,
            box diagonal otherwise).
        distill: the trained landmark model(s) to distill from (same landmark count; any
            input size), or None.
    """

    def __init__(
        self,
        student: keras.Model,
        teacher: Teacher | None = None,
        normalization: str | None = None,
        distill: DistillSource | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        size, self.stride, n = student_geometry(student)
        if distill is not None and distill.num_landmarks != n:
            raise ValueError(f"the distill source predicts {distill.num_landmarks} landmarks, "
                             f"the student {n}")
        self.distill_source = distill
        self.distill_weight = 1.0
        self.coordinate_weight = 0.0
        self.heatmap_loss = R.heatmap_loss  # compile(heatmap_loss=...) chooses
        self.input_size = size
        self.normalization = normalization or default_normalization(n)
        self.decoding = decoding_of(student)  # the nme metric decodes as the saved model will
        self.adapters: dict[str, keras.layers.Layer] = {}
        self.embedding_head = None
        if teacher is not None:
            taps = teacher.tap_shapes()
            for s in FEATURE_STRIDES:
                feat = student.output[f"feat_{s}"]
                conv = keras.layers.Conv2D(taps[s][2], 1, name=f"adapter_{s}")
                conv.build(tuple(feat.shape))
                self.adapters[str(s)] = conv
            deepest = student.output[f"feat_{FEATURE_STRIDES[-1]}"]
            self.embedding_head = keras.layers.Dense(
                teacher.embedding_dim, name="embedding_head"
            )
            self.embedding_head.build((None, int(deepest.shape[-1])))
        self.regularizers: tuple[str, ...] = ()
        self.regularizer_weights: dict[str, float] = {}
        self._trackers: dict[str, keras.metrics.Mean] = {}
        self.built = True  # every sub-layer is built above

    # ------------------------------------------------------------------ configuration
    def compile(
        self,
        optimizer: keras.optimizers.Optimizer | str = "adamw",
        regularizers: str | Iterable[str] | None = R.NAMES,
        weights: Mapping[str, float] | None = None,
        distill_weight: float = 1.0,
        heatmap_loss: str = "mse",
        coordinate_weight: float = 0.0,
        **kwargs,
    ) -> None:
        """Set the optimizer, the active regularizers and their weights (lambdas).

        Args:
            optimizer: a Keras optimizer (wrapped for loss scaling under ``mixed_float16``).
            regularizers: subset of ``("cls", "feat", "sa", "ca")``, a comma string, or None /
                ``"none"``. Ignored (empty) when there is no teacher.
            weights: lambda per regularizer; missing entries default to 1.0.
            distill_weight: lambda of the distillation term (used with a distill source).
            heatmap_loss: the label term, a name of :data:`fas_tf.regularizers.HEATMAP_LOSSES`.
            coordinate_weight: lambda of the coordinate term
                (:func:`fas_tf.regularizers.coordinate_loss` of the decoded landmarks); 0: off.
            **kwargs: passed to ``keras.Model.compile`` (e.g. ``jit_compile``).
        """
        super().compile(optimizer=optimizer, **kwargs)
        self.heatmap_loss = R.HEATMAP_LOSSES[heatmap_loss]
        active = parse_regularizers(regularizers)
        if self.teacher is None:
            active = ()
        self.regularizers = active
        # Only the parts a regularizer uses are trainable, so trainable_variables (which the
        # optimizer and BackupAndRestore see) is exactly what train_step updates.
        for adapter in self.adapters.values():
            adapter.trainable = bool({"feat", "ca"} & set(active))
        if self.embedding_head is not None:
            self.embedding_head.trainable = "cls" in active
        merged = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.regularizer_weights = {k: float(merged[k]) for k in active}
        self.distill_weight = float(distill_weight)
        self.coordinate_weight = float(coordinate_weight)
        distill = ["distill_loss"] if self.distill_source is not None else []
        coord = ["coord_loss"] if self.coordinate_weight > 0 else []
        names = ["loss", "heatmap_loss", *coord, *(f"{k}_loss" for k in active), *distill,
                 "nme"]
        self._trackers = {k: keras.metrics.Mean(name=k) for k in names}

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Build the optimizer only; every layer is already built in ``__init__``.

        Keras' TF trainer would first ``strategy.reduce`` a distributed batch to get its
        shapes, which ``MultiWorkerMirroredStrategy`` cannot do for a nested batch
        (``ValueError: Attempt to convert a value (PerReplica...)``, keras-team/keras#20585).
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ forward
    def call(self, images, training=False):
        return self.student(images, training=training)

    def teacher_outputs(self, images, stored=None) -> dict[str, tf.Tensor]:
        """The frozen teacher's outputs on ``images``, no gradient.

        ``stored``: the teacher's outputs on ``images`` read from a teacher cache (the third
        element of a cached batch, :meth:`fas_tf.teacher_cache.TeacherCache.attach`), cast to
        the compute dtype; the teacher is then not run. Without it the teacher runs on
        ``images``.
        """
        if stored is not None:
            t = {k: tf.cast(v, self.compute_dtype) for k, v in stored.items()}
        else:
            t = self.teacher(images)  # frozen, training=False inside
        return {k: tf.stop_gradient(v) for k, v in t.items()}

    def _adapt(self, stride: int, feat: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
        """``a_i(s_i)``: the 1x1 adapter of ``stride`` on the student's ``feat``, on the
        teacher's grid ``size`` (bilinear resize).

        The two commute (both linear per pixel or per channel, and each bilinear output pixel
        is a weighted mean of input pixels, so the adapter's bias passes through), so the map
        is resized first where that shrinks it: fewer pixels go through the adapter, and the
        resize moves the student's channels instead of the teacher's (e.g. 4x4x256 -> 3x3 before
        a 256 -> 1792 adapter, not after).
        """
        adapter = self.adapters[str(stride)]
        if tuple(feat.shape[1:3]) == size:
            return adapter(feat)
        if size[0] * size[1] < int(feat.shape[1]) * int(feat.shape[2]):
            return adapter(tf.image.resize(feat, size, method="bilinear"))
        return tf.image.resize(adapter(feat), size, method="bilinear")

    def _regularizer_losses(
        self, outputs: dict[str, tf.Tensor], t: dict[str, tf.Tensor]
    ) -> dict[str, tf.Tensor]:
        """The active regularizers of the student's ``outputs`` against teacher outputs ``t``.

        One function for the online and the cached teacher (:meth:`teacher_outputs`).
        """
        if not self.regularizers:
            return {}
        student_feats = [outputs[f"feat_{s}"] for s in FEATURE_STRIDES]
        teacher_feats = [t[f"tap_{s}"] for s in FEATURE_STRIDES]
        losses = {}
        adapted = None
        if {"feat", "ca"} & set(self.regularizers):
            adapted = []
            pairs = zip(FEATURE_STRIDES, student_feats, teacher_feats, strict=True)
            for s, feat, teacher_feat in pairs:
                size = tuple(int(d) for d in teacher_feat.shape[1:3])
                adapted.append(self._adapt(s, feat, size))
        if "cls" in self.regularizers:
            pooled = tf.reduce_mean(tf.cast(student_feats[-1], tf.float32), axis=[1, 2])
            e_s = self.embedding_head(pooled)
            losses["cls"] = R.cls_loss(e_s, t["embedding"])
        if "feat" in self.regularizers:
            losses["feat"] = R.feat_loss(adapted, teacher_feats)
        if "sa" in self.regularizers:
            losses["sa"] = R.sa_loss(student_feats, teacher_feats)
        if "ca" in self.regularizers:
            losses["ca"] = R.ca_loss(adapted, teacher_feats)
        return losses

    def distill_loss(self, images: tf.Tensor, heatmaps: tf.Tensor) -> tf.Tensor:
        """The label term's heatmap loss (``compile(heatmap_loss=...)``) of the student's
        ``heatmaps`` against the distill source's on ``images`` (brought to the student's grid,
        :class:`DistillSource`)."""
        target = self.distill_source.heatmaps(images, int(heatmaps.shape[1]))
        return self.heatmap_loss(heatmaps, target)

    def _update(self, values: dict[str, tf.Tensor], batch: tf.Tensor) -> dict[str, tf.Tensor]:
        for name, value in values.items():
            self._trackers[name].update_state(value, sample_weight=batch)
        results = {name: self._trackers[name].result() for name in values}
        if _multi_worker(self.distribute_strategy):
            # Keras reduces step outputs across workers with reduce("MEAN", axis=0), which
            # fails on scalars ("Invalid reduction dimension 0", tensorflow/tensorflow#72388).
            results = {name: tf.reshape(v, [1]) for name, v in results.items()}
        return results

    def _label_terms(self, heatmaps, targets) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """The label terms of ``heatmaps`` (``heatmap_loss``, and ``coord_loss`` when its
        weight is > 0: the landmarks decoded as the saved model decodes them) and the NME of
        those landmarks (the metric, no gradient wanted)."""
        pred, _ = decode(heatmaps, self.stride, *self.decoding)
        terms = {"heatmap_loss": self.heatmap_loss(heatmaps, targets["heatmaps"])}
        if self.coordinate_weight > 0:
            terms["coord_loss"] = R.coordinate_loss(pred, targets["landmarks"],
                                                    self.normalization)
        nme = mean_nme(tf.stop_gradient(pred), targets["landmarks"], self.normalization)
        return terms, nme

    def _label_loss(self, terms: dict[str, tf.Tensor]) -> tf.Tensor:
        total = terms["heatmap_loss"]
        if "coord_loss" in terms:
            total = total + self.coordinate_weight * terms["coord_loss"]
        return total

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        """One step on ``(images, targets)``, or ``(images, targets, stored)`` with a teacher
        cache (``stored``: the teacher's outputs on ``images``, read instead of computed; a
        distill source always runs on ``images``)."""
        images, targets = data[0], data[1]
        stored = data[2] if len(data) > 2 else None
        batch = tf.cast(tf.shape(images)[0], tf.float32)
        variables = self.trainable_variables  # student + used adapters/head; never the teacher
        with tf.GradientTape() as tape:
            outputs = self.student(images, training=True)
            terms, nme = self._label_terms(outputs["heatmaps"], targets)
            reg = {}
            if self.regularizers:
                reg = self._regularizer_losses(outputs, self.teacher_outputs(images, stored))
            total = self._label_loss(terms)
            for name, value in reg.items():
                total = total + self.regularizer_weights[name] * value
            if self.distill_source is not None:
                reg["distill"] = self.distill_loss(images, outputs["heatmaps"])
                total = total + self.distill_weight * reg["distill"]
            replicas = tf.distribute.get_replica_context().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(total / tf.cast(replicas, tf.float32))
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        values = {"loss": total, **terms}
        values.update({f"{k}_loss": v for k, v in reg.items()})
        values["nme"] = nme
        return self._update(values, batch)

    def test_step(self, data):
        images, targets = data[0], data[1]
        batch = tf.cast(tf.shape(images)[0], tf.float32)
        outputs = self.student(images, training=False)
        terms, nme = self._label_terms(outputs["heatmaps"], targets)
        values = {"loss": self._label_loss(terms), **terms, "nme": nme}
        return self._update(values, batch)
