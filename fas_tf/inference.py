"""Running a trained landmark model on face crops: one interface, a Keras and a LiteRT backend.

A :class:`Landmarker` answers one question: *landmarks and confidences for these framing-rule
crops* (``(B, S, S, 3)`` RGB in [0, 255], see :mod:`fas_tf.framing`) ->
``(landmarks (B, N, 2) in crop pixels, confidence (B, N))``.

- :class:`KerasLandmarker`: a saved ``student.keras`` (heatmaps decoded with
  :func:`fas_tf.student.inference_model`);
- :class:`LiteRTLandmarker`: an exported ``.tflite`` (``python -m export``), run with the LiteRT
  interpreter; handles uint8 (int8 export), int8 and float32 inputs;
- :class:`FlipAveraged`: test-time flip around any landmarker (the mean of the prediction on a
  crop and, mirrored back, on its mirror image);
- :func:`load_landmarker`: pick one by the file suffix (``flip=True`` wraps it in
  :class:`FlipAveraged`);
- :func:`landmarks_in_squares` / :func:`recrop`: a landmarker on squares cut from whole images
  (or canvases), answers mapped back to image pixels; ``recrop`` re-cuts the framing-rule square
  around earlier landmarks, optionally turned so that the predicted eyes are level.

Evaluation (:mod:`fas_tf.evaluate`), whole-image prediction (:mod:`fas_tf.predict`) and the
export parity check all go through this module.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

import numpy as np

from fas_tf.errors import UsageError

SIGNATURE = "serving_default"  # the signature an exported .tflite is run through
BATCH_SIZE = 32  # crops per Keras predict batch


def load_student(path: str | os.PathLike):
    """Load a saved ``student.keras``; UsageError (one line naming the file) when unusable."""
    path = str(path)
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such model file")
    if not path.endswith(".keras"):
        raise UsageError(f"{path}: expected a Keras student saved as .keras")
    import keras  # after the cheap checks: a wrong path fails without loading TensorFlow

    import fas_tf.dlib_resnet  # noqa: F401  (registers PadAdd: --student=dlib_transfer)
    import fas_tf.heatmaps  # noqa: F401  (registers HeatmapDecoder for deserialization)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # Keras raises many types for a corrupt archive
        raise UsageError(unreadable_keras(path, err)) from err
    out = model.output
    if not (isinstance(out, dict) and "heatmaps" in out) or len(model.inputs) != 1:
        raise UsageError(f"{path}: not a fas_tf student (needs one image input, 'heatmaps' output)")
    return model


def unreadable_keras(path: str | os.PathLike, err: Exception) -> str:
    """The one-line message for a ``.keras`` file that exists but cannot be loaded."""
    import zipfile

    if not zipfile.is_zipfile(path):  # Keras then says "File not found", which misleads
        reason = "not a zip archive"
    else:
        text = str(err).strip()
        reason = err.__class__.__name__ + (f": {text.splitlines()[0][:160]}" if text else "")
    return f"{path}: not a readable Keras model ({reason})"


class Landmarker(abc.ABC):
    """A landmark model on crops.

    Attributes:
        path: the model file ("" for an in-memory model).
        input_size: S, the crop side.
        num_landmarks: N.
    """

    path: str
    input_size: int
    num_landmarks: int

    @abc.abstractmethod
    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (B, N, 2) in crop pixels and confidences (B, N) for (B, S, S, 3) crops."""


def training_sigma(student, path: str | os.PathLike | None = None) -> float:
    """The heatmap sigma a student was trained with: the one saved with its decoding
    (:func:`fas_tf.student.decoding_of`), else ``sigma`` in the run's ``config.json`` beside
    ``path``; UsageError (one line naming the file) when neither says."""
    import json

    from fas_tf.student import decoding_of

    _, sigma = decoding_of(student)
    if sigma is not None:
        return sigma
    config = Path(path).parent / "config.json" if path else None
    try:
        return float(json.loads(config.read_text())["config"]["sigma"])
    except (AttributeError, OSError, ValueError, KeyError, TypeError):
        where = f"{path}: " if path else ""
        raise UsageError(f"{where}the training sigma is neither saved with the model nor in a "
                         "run config.json beside it") from None


class KerasLandmarker(Landmarker):
    """A Keras student (a ``.keras`` path or a built/loaded model), decoded by its own method
    (:func:`fas_tf.student.decoding_of`) or ``decoder`` (``"taylor"`` or ``"dark"``, with the
    student's :func:`training_sigma`).

    Attributes:
        decoding: (method, sigma) of the heatmap decoder used.
    """

    def __init__(self, student, decoder: str | None = None):
        from fas_tf.student import decoding_of, inference_model, student_geometry

        if isinstance(student, (str, os.PathLike)):
            self.path = str(student)
            student = load_student(student)
        else:
            self.path = ""
        self.student = student
        self.input_size, self.stride, self.num_landmarks = student_geometry(student)
        self.decoding = decoding_of(student)
        if decoder is not None and decoder != self.decoding[0]:
            sigma = training_sigma(student, self.path) if decoder == "dark" else None
            self.decoding = (decoder, sigma)
        self.model = inference_model(student, decoding=self.decoding)

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.model.predict(np.asarray(crops, np.float32), verbose=0, batch_size=BATCH_SIZE)
        return np.asarray(out["landmarks"]), np.asarray(out["confidence"])


class LiteRTLandmarker(Landmarker):
    """An exported ``.tflite`` landmark model, run with the LiteRT interpreter.

    Takes the same float crops as the Keras student and handles the model's input type: uint8
    (int8 export: values are rounded and clipped), int8 (quantized with the tensor's scale and
    zero point) or float32.

    Attributes:
        input_dtype: numpy dtype of the model input (uint8 for int8 exports, else float32).
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise UsageError(f"{self.path}: no such model file")
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
            signatures = self.interpreter.get_signature_list()
            if SIGNATURE not in signatures:
                raise ValueError(f"no {SIGNATURE!r} signature (has {list(signatures)})")
            self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        except (ValueError, RuntimeError) as err:
            raise UsageError(f"{self.path}: not a usable TFLite landmark model ({err})") from err
        inputs = self.runner.get_input_details()
        outputs = self.runner.get_output_details()
        if list(inputs) != ["image"] or not {"landmarks", "confidence"} <= set(outputs):
            raise UsageError(
                f"{self.path}: expected input 'image' and outputs 'landmarks', 'confidence'; "
                f"got {list(inputs)} -> {list(outputs)}"
            )
        self._input = inputs["image"]
        self._outputs = outputs
        shape = [int(v) for v in self._input["shape"]]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise UsageError(f"{self.path}: input shape {shape} is not (1, S, S, 3)")
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

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray(crops)
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


def mirror_permutation(num_landmarks: int, what: str = "model") -> np.ndarray:
    """The landmark permutation of a horizontal mirror (the layout's flip pairs).

    Raises UsageError naming ``what`` when the layout has no mirror pairs (not 68 points).
    """
    from fas_tf.landmarks import layout_for

    layout = layout_for(num_landmarks)
    if not layout.can_flip:
        raise UsageError(
            f"{what}: no mirror pairs are known for {num_landmarks} landmarks; test-time flip "
            "needs the 68-point layout"
        )
    return layout.flip_permutation()


def mirrored_back(points, confidence, permutation: np.ndarray, size: int, take=np.take):
    """Predictions on a mirrored crop, as predictions on the crop itself.

    The crop's landmark ``k`` is the mirror image's landmark ``permutation[k]`` at
    ``x = S - 1 - x'`` (pixel centres at integers, the convention of the training flip in
    :mod:`fas_tf.augment`). ``points`` (B, N, 2), ``confidence`` (B, N): numpy arrays, or graph
    tensors with ``take=keras.ops.take`` (the ``--flip`` export, :mod:`export.convert`).
    """
    perm = np.asarray(permutation, np.int32)
    pts = take(points, perm, axis=1) * np.float32([-1.0, 1.0]) + np.float32([size - 1.0, 0.0])
    return pts, take(confidence, perm, axis=1)


class FlipAveraged(Landmarker):
    """Test-time flip: the mean of ``base`` on a crop and, mirrored back, on its mirror image.

    The mirror image's answer is mapped back with :func:`mirrored_back`. Costs two model runs
    per crop. ``python -m export --flip`` builds the same average into the exported graph.
    """

    def __init__(self, base: Landmarker, flip_permutation: np.ndarray | None = None):
        if flip_permutation is None:
            flip_permutation = mirror_permutation(base.num_landmarks, base.path or "model")
        self.base = base
        self.permutation = np.asarray(flip_permutation, np.int64)
        self.path, self.input_size = base.path, base.input_size
        self.num_landmarks = base.num_landmarks

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crops = np.asarray(crops)
        pts, conf = self.base.predict(crops)
        mirrored_pts, mirrored_conf = self.base.predict(crops[:, :, ::-1])
        back, back_conf = mirrored_back(np.asarray(mirrored_pts), np.asarray(mirrored_conf),
                                        self.permutation, self.input_size)
        return (pts + back) / 2.0, (conf + back_conf) / 2.0


def landmarks_in_squares(
    images: list[np.ndarray], model: Landmarker,
    squares: list[tuple[float, float, float, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """``model`` on the square ``(cx, cy, side, angle)`` of each image, in one batch.

    Returns landmarks (M, N, 2) in each image's pixels and confidences (M, N).
    """
    from fas_tf.framing import cut_square, to_image

    cuts = [cut_square(im, cx, cy, side, model.input_size, angle)
            for im, (cx, cy, side, angle) in zip(images, squares, strict=True)]
    pts, conf = model.predict(np.stack([c[0] for c in cuts]).astype(np.float32))
    back = np.stack([to_image(p, m) for p, (_, m) in zip(pts, cuts, strict=True)])
    return back, np.asarray(conf)


def recrop(
    images: list[np.ndarray], model: Landmarker, points: np.ndarray, passes: int = 1,
    upright: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``passes`` re-crop passes: each cuts the framing-rule square around the last landmarks.

    ``upright``: the square is turned so that the landmarks' outer eye corners are level
    (:func:`fas_tf.framing.upright_square`); the model then sees faces upright however the head
    is tilted. ``points`` (M, N, 2) in image pixels. Returns the last landmarks and confidences
    (None when ``passes`` is 0).
    """
    from fas_tf.framing import crop_box, upright_square
    from fas_tf.landmarks import layout_for

    eyes = layout_for(model.num_landmarks).interocular if upright else None
    if upright and eyes is None:
        raise UsageError(
            f"{model.path or 'model'}: upright crops need the eye corners of the 68-point layout"
        )
    pts, conf = np.asarray(points, np.float64), None
    for _ in range(max(0, passes)):
        squares = [upright_square(p, eyes) if upright else (*crop_box(p), 0.0) for p in pts]
        pts, conf = landmarks_in_squares(images, model, squares)
    return pts, conf


def exported_with_flip(path: str | os.PathLike) -> bool:
    """Whether the ``model.json`` beside an exported ``.tflite`` says the graph already averages
    with the mirror image (``python -m export --flip``); False without a readable one."""
    import json

    meta = Path(path).with_suffix(".json")
    if Path(path).suffix != ".tflite" or not meta.is_file():
        return False
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(data, dict) and data.get("model_file") == Path(path).name
            and data.get("flip") is True)


def load_landmarker(
    path: str | os.PathLike, num_threads: int = 1, flip: bool = False,
    decoder: str | None = None,
) -> Landmarker:
    """The landmarker of a model file: ``.tflite`` -> LiteRT, anything else -> Keras student.

    ``flip=True``: with test-time flip (:class:`FlipAveraged`). ``decoder``: a Keras student's
    heatmaps decoded by this method instead of its own (:class:`KerasLandmarker`). Raises
    UsageError (one line naming the file) when the file is missing or unusable.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such model file")
    if flip and exported_with_flip(path):
        raise UsageError(
            f"{path}: exported with --flip (its {Path(path).with_suffix('.json').name} says "
            '"flip": true), so --flip would flip twice; drop --flip'
        )
    if path.endswith(".tflite"):
        if decoder is not None:
            raise UsageError(f"{path}: an exported model decodes as it was exported; a decoder "
                             "can be chosen for a .keras student only")
        model: Landmarker = LiteRTLandmarker(path, num_threads=num_threads)
    else:
        model = KerasLandmarker(path, decoder=decoder)
    return FlipAveraged(model) if flip else model
