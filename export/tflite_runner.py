"""Run an exported landmark ``.tflite`` model on face crops (LiteRT interpreter).

``TFLiteLandmarker(path).predict(crops)`` takes framing-rule crops as float RGB in [0, 255] (the
same input as the Keras student) and handles the model's input type: uint8 (int8 export: values
are rounded and clipped), int8 (quantized with the tensor's scale / zero point) or float32.
"""

from __future__ import annotations

import os

import numpy as np

SIGNATURE = "serving_default"


class TFLiteLandmarker:
    """An exported landmark model: crops (B, S, S, 3) -> landmarks (B, N, 2), confidence (B, N).

    Attributes:
        input_size: S, the crop side.
        num_landmarks: N.
        input_dtype: numpy dtype of the model input (uint8 for int8 exports, else float32).
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = str(path)
        if not os.path.isfile(self.path):
            raise ValueError(f"{self.path}: no such model file")
        try:
            self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
            signatures = self.interpreter.get_signature_list()
            if SIGNATURE not in signatures:
                raise ValueError(f"no {SIGNATURE!r} signature (has {list(signatures)})")
            self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"{self.path}: not a usable TFLite landmark model ({err})") from err
        inputs = self.runner.get_input_details()
        outputs = self.runner.get_output_details()
        if list(inputs) != ["image"] or not {"landmarks", "confidence"} <= set(outputs):
            raise ValueError(
                f"{self.path}: expected input 'image' and outputs 'landmarks', 'confidence'; "
                f"got {list(inputs)} -> {list(outputs)}"
            )
        self._input = inputs["image"]
        self._outputs = outputs
        shape = [int(v) for v in self._input["shape"]]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ValueError(f"{self.path}: input shape {shape} is not (1, S, S, 3)")
        self.input_size = shape[1]
        self.num_landmarks = int(outputs["landmarks"]["shape"][-2])
        self.input_dtype = np.dtype(self._input["dtype"])

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        x = np.asarray(image, dtype=np.float32)[None]
        if self.input_dtype == np.float32:
            return x
        scale, zero = self._input["quantization"]
        if self.input_dtype == np.uint8 and (scale, zero) in ((0.0, 0), (1.0, 0)):
            q = x  # raw pixel values (int8 export with uint8 camera input)
        else:
            q = x / scale + zero
        info = np.iinfo(self.input_dtype)
        return np.clip(np.round(q), info.min, info.max).astype(self.input_dtype)

    def _output(self, name: str, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        if value.dtype != np.float32:
            scale, zero = self._outputs[name]["quantization"]
            value = (value.astype(np.float32) - zero) * scale
        return value

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (B, N, 2) in crop pixels and confidences (B, N) for crops (B, S, S, 3)."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        expected = (self.input_size, self.input_size, 3)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"expected crops of shape (B, {self.input_size}, "
                             f"{self.input_size}, 3), got {images.shape}")
        landmarks = np.zeros((len(images), self.num_landmarks, 2), np.float32)
        confidence = np.zeros((len(images), self.num_landmarks), np.float32)
        for i, image in enumerate(images):
            out = self.runner(image=self._prepare(image))
            landmarks[i] = self._output("landmarks", out["landmarks"])[0]
            confidence[i] = self._output("confidence", out["confidence"])[0]
        return landmarks, confidence

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Landmarks only (the ``fas_tf.evaluate`` predictor interface)."""
        return self.predict(images)[0]
