"""The heatmap head shared by every student: a light FPN from four feature maps to heatmaps.

:func:`heatmap_head` takes features at strides 4, 8, 16 and 32 of any trunk (MobileNetV2 in
:mod:`fas_tf.student`, dlib's ResNet in :mod:`fas_tf.transfer`) and returns (B, H, W, N) float32
landmark heatmaps.
"""

from __future__ import annotations

import keras


def _separable(x, channels: int, name: str, momentum: float):
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_pw")(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_pw_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_pw_relu")(x)


def heatmap_head(
    c4,
    c8,
    c16,
    c32,
    num_landmarks: int,
    head_channels: int,
    bn_momentum: float,
    upsample: str = "nearest",
    out_size: int | None = None,
):
    """The light FPN head: features at strides 4/8/16/32 -> (B, H, W, N) float32 heatmaps.

    Top-down: 1x1 laterals, upsample and add, a separable conv per level, one more separable
    conv, a 1x1 conv to the heatmaps. ``upsample``: ``"nearest"`` (x2, exact strides, the
    student) or ``"bilinear"`` (resize to each feature's size, for trunks whose sizes do not
    halve exactly); ``out_size``: resize to this side before the last conv (None: stride 4).
    """

    def lateral(feature, stride):
        y = keras.layers.Conv2D(head_channels, 1, use_bias=False, name=f"lateral_{stride}")(feature)
        return keras.layers.BatchNormalization(momentum=bn_momentum, name=f"lateral_{stride}_bn")(y)

    p = lateral(c32, 32)
    for stride, feature in ((16, c16), (8, c8), (4, c4)):
        if upsample == "nearest":
            p = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"up_{stride}")(p)
        else:
            h, w = int(feature.shape[1]), int(feature.shape[2])
            p = keras.layers.Resizing(h, w, upsample, name=f"up_{stride}")(p)
        p = keras.layers.Add(name=f"merge_{stride}")([p, lateral(feature, stride)])
        p = _separable(p, head_channels, f"smooth_{stride}", bn_momentum)
    if out_size is not None:
        p = keras.layers.Resizing(out_size, out_size, "bilinear", name="to_output_size")(p)
    p = _separable(p, head_channels, "head", bn_momentum)
    return keras.layers.Conv2D(
        num_landmarks,
        1,
        dtype="float32",
        kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3),
        name="heatmaps",
    )(p)
