"""The students: heatmap networks from an RGB [0, 255] face crop to a dict

- ``heatmaps``: (B, S/4, S/4, N) float32 landmark heatmaps at output stride 4;
- ``feat_8``, ``feat_16``, ``feat_32``: trunk features at strides 8, 16 and 32 (all on the
  heatmap path), matched to the teacher's taps by the regularizers.

:data:`STUDENTS` names every student a training run can choose (``TrainConfig.student``) and
:func:`build_architecture` builds one by name. This module holds the MobileNetV2 students
(:func:`build_student`, the phone-sized ones); :mod:`fas_tf.transfer` holds ``dlib_transfer``.
Both use the head of :mod:`fas_tf.head`.

``inference_model`` turns any student into image -> ``landmarks`` (N, 2, crop pixels) +
``confidence`` (N) with decoding inside the graph; training-only heads and adapters are not
part of it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping

import keras

from fas_tf.head import heatmap_head
from fas_tf.heatmaps import HeatmapDecoder, HeatmapDecoding
from fas_tf.transfer import build_transfer_model

STRIDE = 4
# MobileNetV2 layers used as features, by stride (the ReLU6 expansions feeding each stage).
BACKBONE_TAPS = {
    4: "block_3_expand_relu",
    8: "block_6_expand_relu",
    16: "block_13_expand_relu",
    32: "out_relu",
}
FEATURE_STRIDES = (8, 16, 32)
# The lite student's stride-32 feature: block 16's projection (320 * alpha channels) instead of
# MobileNetV2's last 1x1 expansion to 1280 channels, whose weights (and those of the 1280-wide
# lateral) are a third of the default student's size.
LITE_TOP = "block_16_project_BN"


def build_student(
    num_landmarks: int = 68,
    input_size: int = 128,
    alpha: float = 0.5,
    head_channels: int = 64,
    backbone_weights: str | None = None,
    batch_size: int | None = None,
    bn_momentum: float = 0.9,
    name: str = "student",
    lite: bool = False,
    heatmap_stride: int = 4,
) -> keras.Model:
    """Build the student network.

    Args:
        num_landmarks: N heatmap channels.
        input_size: square input side, a multiple of 32.
        alpha: MobileNetV2 width multiplier.
        head_channels: channels of the upsampling head.
        backbone_weights: None (random init) or ``"imagenet"`` when those weights are reachable.
        batch_size: static batch size (1 for int8 TFLite export), None for dynamic.
        bn_momentum: BatchNormalization momentum of every layer (small data: 0.9).
        name: model name.
        lite: take the stride-32 feature before MobileNetV2's 1280-channel expansion
            (:data:`LITE_TOP`): the phone-sized student.
    """
    if input_size % 32:
        raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
    image = keras.Input((input_size, input_size, 3), batch_size=batch_size, name="image")
    backbone = keras.applications.MobileNetV2(
        input_shape=(input_size, input_size, 3),
        alpha=alpha,
        include_top=False,
        weights=backbone_weights,
    )
    tap_names = {**BACKBONE_TAPS, **({32: LITE_TOP} if lite else {})}
    taps = keras.Model(
        backbone.input,
        [backbone.get_layer(tap_names[s]).output for s in (4, 8, 16, 32)],
        name="backbone",
    )
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(image)
    c4, c8, c16, c32 = taps(x)

    out_size = None if heatmap_stride == STRIDE else input_size // heatmap_stride
    heatmaps = heatmap_head(c4, c8, c16, c32, num_landmarks, head_channels, bn_momentum,
                            out_size=out_size)
    outputs = {"heatmaps": heatmaps, "feat_8": c8, "feat_16": c16, "feat_32": c32}
    model = keras.Model(image, outputs, name=name)
    # keras.applications uses BN momentum 0.999: with a few hundred faces (a few hundred steps)
    # the moving statistics would still be mostly at their initial values at inference time.
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    return model


# Every student a training run can choose, by name: builder(num_landmarks, input_size, **settings).
STUDENTS: dict[str, Callable[..., keras.Model]] = {
    "mobilenetv2": build_student,
    "mobilenetv2_lite": functools.partial(build_student, lite=True),  # the phone-sized one
    "dlib_transfer": build_transfer_model,  # dlib's pretrained trunk, fine-tuned
}
ARCHITECTURES = tuple(STUDENTS)


def build_architecture(
    architecture: str,
    num_landmarks: int = 68,
    input_size: int = 128,
    alpha: float = 0.5,
    head_channels: int | None = None,
    students: Mapping[str, Callable[..., keras.Model]] | None = None,
    **settings,
) -> keras.Model:
    """The student named ``architecture`` in ``students`` (default :data:`STUDENTS`).

    ``alpha``, ``head_channels`` (None: the builder's own default) and any other keyword
    ``settings`` reach the builder when its signature names them (e.g. ``alpha`` only shapes
    the MobileNetV2 students), so a new network setting is one more keyword argument here and
    in the builders that use it.
    Raises ValueError for an unknown name.
    """
    students = STUDENTS if students is None else students
    if architecture not in students:
        raise ValueError(
            f"unknown student {architecture!r}; choose from {', '.join(students)}"
        )
    builder = students[architecture]
    settings = {"alpha": alpha, **settings}
    if head_channels is not None:  # else the builder's own default
        settings["head_channels"] = head_channels
    accepted = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        settings = {k: v for k, v in settings.items() if k in accepted}
    return builder(num_landmarks, input_size, **settings)


def parse_student_spec(spec: str) -> dict[str, float | int]:
    """``"ALPHA:INPUT:HEAD"`` (e.g. ``"0.5:96:64"``) -> :func:`build_student` keyword arguments.

    Raises ValueError on anything else.
    """
    alpha, size, head = spec.split(":")
    return {"alpha": float(alpha), "input_size": int(size), "head_channels": int(head)}


def split_architecture(spec: str) -> tuple[str, str]:
    """``"ALPHA:INPUT:HEAD[:lite]"`` -> (architecture, ``"ALPHA:INPUT:HEAD"``): a trailing
    ``:lite`` names the ``mobilenetv2_lite`` student, anything else ``mobilenetv2``.
    """
    if spec.endswith(":lite"):
        return "mobilenetv2_lite", spec.removesuffix(":lite")
    return "mobilenetv2", spec


def student_geometry(student: keras.Model) -> tuple[int, int, int]:
    """(input size, output stride, landmark count) read off a built student."""
    size = int(student.input_shape[1])
    heat = student.output["heatmaps"] if isinstance(student.output, dict) else student.output
    return size, size // int(heat.shape[1]), int(heat.shape[-1])


def with_decoding(student: keras.Model, method: str, sigma: float | None) -> keras.Model:
    """The same student (same layers and weights) whose heatmaps pass through a
    :class:`fas_tf.heatmaps.HeatmapDecoding` recording ``method`` and ``sigma`` (the training
    sigma, heatmap cells): saved with it, the decoding of :func:`inference_model` and exports."""
    outputs = dict(student.output)
    heatmaps = outputs["heatmaps"]
    if isinstance(heatmaps._keras_history.operation, HeatmapDecoding):
        heatmaps = heatmaps._keras_history.operation.input
    outputs["heatmaps"] = HeatmapDecoding(method, sigma, name="heatmap_decoding")(heatmaps)
    return keras.Model(student.input, outputs, name=student.name)


def decoding_of(student: keras.Model) -> tuple[str, float | None]:
    """(method, sigma) a student's heatmaps are decoded with (:func:`with_decoding`);
    ``("taylor", None)`` for a student saved without it."""
    heat = student.output["heatmaps"] if isinstance(student.output, dict) else student.output
    layer = heat._keras_history.operation
    if isinstance(layer, HeatmapDecoding):
        return layer.method, layer.sigma
    return "taylor", None


def inference_model(
    student: keras.Model,
    batch_size: int | None = None,
    decoding: tuple[str, float | None] | None = None,
    int8: bool = False,
) -> keras.Model:
    """Image -> ``{"landmarks": (B, N, 2) crop pixels, "confidence": (B, N)}``.

    ``decoding``: (method, sigma) instead of the student's own (:func:`decoding_of`), e.g. to
    score a saved model with another decoder. ``int8``: the decoder in ops with int8 TFLite
    kernels. Use ``batch_size=1`` for TFLite int8 export (a static batch keeps every op a
    builtin).
    """
    size, stride, _ = student_geometry(student)
    method, sigma = decoding or decoding_of(student)
    image = keras.Input((size, size, 3), batch_size=batch_size, name="image")
    heatmaps = keras.Model(student.input, student.output["heatmaps"], name="heatmap_net")(image)
    outputs = HeatmapDecoder(stride, method, sigma, int8=int8, name="decode")(heatmaps)
    return keras.Model(image, outputs, name="landmarker")
