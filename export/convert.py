"""Keras student -> TFLite landmark model (+ ``model.json``), with an accuracy parity check.

The exported graph takes one framing-rule face crop ``image`` (1, S, S, 3) RGB and returns
``landmarks`` (1, N, 2, input-crop pixels) and ``confidence`` (1, N) through the
``serving_default`` signature, decoding in the graph by the student's own method (ops with int8
kernels). Modes: ``float32``; ``float16`` (weights); ``dynamic`` (int8 weights, float
activations); ``int8`` (full-integer, calibrated on framing-rule training crops, uint8 input,
float32 outputs). ``flip``: the graph also averages the mirror's answer (:func:`export_graph`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fas_tf import __version__, cli
from fas_tf.cli import UsageError, atomic_path, sha256_of, write_json
from fas_tf.errors import CheckFailedError
from fas_tf.inference import load_student

MODES = ("float32", "float16", "dynamic", "int8")
# The face detector file of the web page (npm @mediapipe/face_detection 0.4.1657300184, web/):
# BlazeFace short-range, the network of fas_tf.detection.blazeface's (the mediapipe wheel's file,
# other bytes, equal outputs); its box -> crop constants are BOX_TO_CROP["blazeface"].
BLAZEFACE_MODEL = {
    "file": "face_detection_short_range.tflite",
    "sha256": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
}
METADATA_VERSION = 2  # 2: crop.web_detector and measurements (the web page's inputs)
METADATA_FORMAT = "fas_tf.landmarks.tflite"
# An existing .json beside the output is replaced only when it is an earlier model.json
# (``"format"`` above); an existing .tflite only when that model.json records its sha256.
METADATA_OUTPUT = cli.json_output(METADATA_FORMAT)


def _earlier_export(path: Path) -> bool:
    import json

    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    return (isinstance(meta, dict) and meta.get("format") == METADATA_FORMAT
            and meta.get("model_sha256") == sha256_of(path))


TFLITE_OUTPUT = cli.Recogniser("an earlier export (its .json beside it records its sha256)",
                               _earlier_export)


class ParityError(CheckFailedError):
    """The TFLite model is less accurate than the Keras model by more than allowed."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote (or would have written) and measured."""

    tflite_path: Path
    json_path: Path
    metadata: dict
    parity: dict
    written: bool = True
    notes: list[str] = field(default_factory=list)


def export_graph(student, int8: bool = True, flip: bool = False):
    """Batch-1 Keras graph: ``image`` -> {``landmarks``, ``confidence``} with in-graph decoding.

    Decoding by the student's own method (:func:`fas_tf.student.decoding_of`); ``int8``: its
    refinement in ops with int8 kernels. ``flip``: test-time flip in the graph, the answer of
    :class:`fas_tf.inference.FlipAveraged`: the crop and its mirror image run as one batch of 2,
    the mirror's answer is mapped back with :func:`fas_tf.inference.mirrored_back` and the two
    are averaged (same input and outputs).
    """
    import keras
    from keras import ops

    from fas_tf.heatmaps import HeatmapDecoder
    from fas_tf.inference import mirror_permutation, mirrored_back
    from fas_tf.student import decoding_of, inference_model, student_geometry

    if not flip:
        return inference_model(student, batch_size=1, int8=int8)
    size, stride, n = student_geometry(student)
    image = keras.Input((size, size, 3), batch_size=1, name="image")
    net = keras.Model(student.input, student.output["heatmaps"], name="heatmap_net")
    decode = HeatmapDecoder(stride, *decoding_of(student), int8=int8, name="decode")
    permutation = mirror_permutation(n)
    both = decode(net(ops.concatenate([image, ops.flip(image, axis=2)], axis=0)))
    pts, mirrored_pts = ops.split(both["landmarks"], 2, axis=0)
    conf, mirrored_conf = ops.split(both["confidence"], 2, axis=0)
    back, back_conf = mirrored_back(mirrored_pts, mirrored_conf, permutation, size, take=ops.take)
    outputs = {"landmarks": (pts + back) * 0.5, "confidence": (conf + back_conf) * 0.5}
    return keras.Model(image, outputs, name="flip_landmarker")


def convert(
    student, mode: str, calibration: np.ndarray | None = None, flip: bool = False
) -> bytes:
    """TFLite flatbuffer of the student in ``mode``; ``calibration`` crops (M, S, S, 3) for int8.

    ``flip``: with test-time flip in the graph (:func:`export_graph`).
    """
    import tensorflow as tf

    if mode not in MODES:
        raise UsageError(f"--quantize={mode}: choose from {', '.join(MODES)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(export_graph(student, flip=flip))
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if calibration is None or len(calibration) == 0:
            raise UsageError("--quantize=int8 needs calibration crops (--representative_data)")
        crops = np.asarray(calibration, np.float32)

        def representative():
            for crop in crops:
                yield [crop[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    with contextlib.redirect_stdout(io.StringIO()):  # the SavedModel export prints every capture
        return bytes(converter.convert())


def op_types(model: bytes | str | os.PathLike) -> list[tuple[str, list[str], list[str]]]:
    """(op name, input dtypes, output dtypes) of every op of a TFLite model, in graph order."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, bytes):
        interpreter = Interpreter(model_content=model)
    else:
        interpreter = Interpreter(model_path=str(model))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}

    def names(indices) -> list[str]:
        return [np.dtype(tensors[i]["dtype"]).name for i in indices if i >= 0 and i in tensors]

    return [
        (op["op_name"], names(op["inputs"]), names(op["outputs"]))
        for op in interpreter._get_ops_details()
    ]


def float_compute_ops(model: bytes | str | os.PathLike) -> list[str]:
    """Ops that compute in floating point, apart from the boundary DEQUANTIZE of the outputs.

    Empty for a full-integer model whose only float tensors are the float32 outputs.
    """
    floats = ("float32", "float16", "float64")
    return [
        name
        for name, ins, outs in op_types(model)
        if (any(t in floats for t in ins) or any(t in floats for t in outs))
        and not (name == "DEQUANTIZE" and all(t.startswith(("int", "uint")) for t in ins))
    ]


# --------------------------------------------------------------------------- data


def _stems(data: Path, attributes: str | None, sets: str | None) -> set[str] | None:
    if not sets:
        return None
    from fas_tf.data import parse_sets, read_attributes, stems_in_sets

    csv_path = Path(attributes) if attributes else (data if data.is_dir() else data.parent) / (
        "attributes.csv"
    )
    if not csv_path.is_file():
        raise UsageError(f"{csv_path}: no attributes CSV to select image sets {sets!r}")
    stems = stems_in_sets(read_attributes(csv_path), sets)
    if not stems:
        raise UsageError(f"{csv_path}: no image has image_set in {sorted(parse_sets(sets))}")
    return stems


def calibration_crops(
    path: str | os.PathLike,
    input_size: int,
    count: int,
    sets: str | None = None,
    attributes: str | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``count`` calibration crops: every framing-rule crop, topped up with augmented ones.

    The plain ones are :func:`fas_tf.data.framed_crops`, the others the training
    augmentation of :func:`fas_tf.data.make_dataset`, so int8 ranges also cover the rotations
    and lighting seen in training.
    """
    from fas_tf.data import framed_crops, load_faces, make_dataset
    from fas_tf.landmarks import layout_for

    data = Path(path)
    faces = load_faces(data, input_size, stems=_stems(data, attributes, sets))
    layout = layout_for(faces.num_landmarks)
    plain, _ = framed_crops(faces, input_size)
    rng = np.random.default_rng(seed)
    if count <= len(plain):
        return plain[np.sort(rng.choice(len(plain), count, replace=False))]
    extra: list[np.ndarray] = []
    need = count - len(plain)
    augmented = make_dataset(faces, layout, input_size, batch_size=64, training=True, seed=seed,
                             repeat=True)
    for x, _ in augmented:
        extra.append(x.numpy())
        if sum(len(e) for e in extra) >= need:
            break
    return np.concatenate([plain, *extra])[:count]


# --------------------------------------------------------------------------- parity


def parity(
    student, tflite_path: str | os.PathLike, crops: np.ndarray, gt: np.ndarray,
    flip: bool = False,
) -> dict:
    """NME (percent) of the Keras student and the TFLite model on the same crops.

    ``flip``: the TFLite model has test-time flip built in; the Keras side is then the
    flip-averaged student (:class:`fas_tf.inference.FlipAveraged`).
    """
    from fas_tf.inference import FlipAveraged, KerasLandmarker, Landmarker, LiteRTLandmarker
    from fas_tf.metrics import default_normalization, mean_nme

    reference: Landmarker = KerasLandmarker(student)
    if flip:
        reference = FlipAveraged(reference)
    keras_pred, _ = reference.predict(crops)
    lite_pred, _ = LiteRTLandmarker(tflite_path).predict(crops)
    keras_nme = float(mean_nme(keras_pred, gt)) * 100.0
    lite_nme = float(mean_nme(lite_pred, gt)) * 100.0
    shift = np.linalg.norm(lite_pred - keras_pred, axis=-1)
    return {
        "n": int(len(crops)),
        "flip": bool(flip),
        "normalization": default_normalization(gt.shape[1]),
        "keras_nme_percent": round(keras_nme, 4),
        "tflite_nme_percent": round(lite_nme, 4),
        "drift_points": round(lite_nme - keras_nme, 4),
        "mean_shift_vs_keras_px": round(float(shift.mean()), 4),
        "max_shift_vs_keras_px": round(float(shift.max()), 4),
    }


# --------------------------------------------------------------------------- metadata


def build_metadata(
    student,
    mode: str,
    tflite_path: Path,
    tflite_bytes: bytes,
    model_path: Path,
    parity_numbers: dict,
    data_notes: dict,
    flip: bool = False,
) -> dict:
    """The ``model.json`` an app developer needs (see ``export/MOBILE.md``)."""
    from ai_edge_litert.interpreter import Interpreter

    from fas_tf import measurements
    from fas_tf.detection.calibration import BOX_TO_CROP
    from fas_tf.framing import FRAMING_SCALE
    from fas_tf.landmarks import layout_for
    from fas_tf.student import student_geometry

    size, stride, n = student_geometry(student)
    layout = layout_for(n)
    interpreter = Interpreter(model_content=tflite_bytes)
    runner = interpreter.get_signature_runner("serving_default")
    inp = runner.get_input_details()["image"]
    outs = runner.get_output_details()

    order = [d["index"] for d in interpreter.get_output_details()]

    def tensor(detail: dict) -> dict:
        scale, zero = detail["quantization"]
        return {
            "index": order.index(detail["index"]) if detail["index"] in order else 0,
            "shape": [int(v) for v in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero)}
            if scale else None,
        }

    from fas_tf.student import decoding_of

    config = model_path.parent / "config.json"
    uint8 = np.dtype(inp["dtype"]) == np.uint8
    method, sigma = decoding_of(student)
    return {
        "format": METADATA_FORMAT,
        "metadata_version": METADATA_VERSION,
        "model_file": tflite_path.name,
        "model_sha256": hashlib.sha256(tflite_bytes).hexdigest(),
        "model_bytes": len(tflite_bytes),
        "quantization": mode,
        "flip": bool(flip),
        "signature": "serving_default",
        "input": {
            "name": "image",
            **tensor(inp),
            "layout": "NHWC, batch 1, one face crop",
            "channel_order": "RGB",
            "value_range": [0, 255],
            "normalization": (
                "none: feed raw 0..255 RGB pixel values"
                + (" as uint8" if uint8 else " as float32")
                + "; the model applies x / 127.5 - 1 itself"
            ),
        },
        "outputs": {
            "landmarks": {
                "name": "landmarks",
                **tensor(outs["landmarks"]),
                "meaning": (
                    "(x, y) of each landmark in input-crop pixels; origin at the top-left pixel "
                    "centre, pixel centres at integer coordinates, x right, y down"
                ),
            },
            "confidence": {
                "name": "confidence",
                **tensor(outs["confidence"]),
                "meaning": (
                    "heatmap peak of each landmark clipped to [0, 1] (1 = a sharp, full-height "
                    "peak; low values mean the point is uncertain or occluded)"
                ),
            },
        },
        "landmarks": {
            "count": n,
            "layout": "300-W / Multi-PIE 68 points, 0-based" if n == 68 else "custom",
            "names": list(layout.names),
            "flip_pairs": [list(p) for p in layout.flip_pairs],
            "interocular": list(layout.interocular) if layout.interocular else None,
        },
        "crop": {
            "rule": (
                f"square of side {FRAMING_SCALE} * max(width, height) of the face's landmark "
                "bounding box, centred on that box, resized to the input size; pixels outside "
                "the image are black (0, 0, 0)"
            ),
            "scale": FRAMING_SCALE,
            "input_size": size,
            "crop_to_image": (
                "x_image = cx + (x_crop - (S - 1) / 2) * side / S (same for y with cy), where "
                "(cx, cy, side) is the crop square and S the input size"
            ),
            "image_to_crop": "x_crop = (x_image - cx) * S / side + (S - 1) / 2",
            "from_face_detector": {
                "detector": "MTCNN (package mtcnn 1.0, box_format xywh)",
                "constants": BOX_TO_CROP["mtcnn"],
                "constants_by_detector": BOX_TO_CROP,
                "rule": (
                    "cx = bx + bw * (0.5 + dx), cy = by + bh * (0.5 + dy), side = scale * "
                    f"max(bw, bh) * {FRAMING_SCALE} for detector box (bx, by, bw, bh); "
                    "recalibrate these constants for another detector"
                ),
            },
            "web_detector": {
                "detector": "blazeface",
                "model_file": BLAZEFACE_MODEL["file"],
                "model_sha256": BLAZEFACE_MODEL["sha256"],
                "rule": (
                    "the web page (web/src/blazeface.js) runs this file as "
                    "fas_tf.detection.blazeface runs MediaPipe's (the same network): its box -> "
                    "crop constants are from_face_detector.constants_by_detector.blazeface"
                ),
            },
            "heatmap_stride": stride,
            "heatmap_decoder": {"method": method, "sigma": sigma},
        },
        "measurements": measurements.spec(),
        "training": {
            "student_file": model_path.name,
            "config_sha256": sha256_of(config) if config.is_file() else None,
            "config_file": "config.json" if config.is_file() else None,
        },
        "package": {"name": "fas_tf", "version": __version__},
        "parity": {**parity_numbers, **data_notes},
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- export


def export_model(
    model: str | os.PathLike,
    output: str | os.PathLike,
    quantize: str = "int8",
    representative_data: str | None = None,
    representative_sets: str | None = None,
    val_data: str | None = None,
    val_sets: str | None = None,
    attributes: str | None = None,
    num_calibration: int = 200,
    max_nme_drift: float = 0.5,
    force: bool = False,
    log=print,
    flip: bool = False,
) -> ExportResult:
    """Convert, check parity, and write ``output`` (.tflite) and its ``.json`` atomically.

    Neither replaces an input or a file that is not an earlier export (:data:`TFLITE_OUTPUT`,
    :data:`METADATA_OUTPUT`); both are checked before anything is loaded.

    ``flip``: the graph averages the crop's answer with its mirror image's (test-time flip; two
    network runs per call), checked against the flip-averaged Keras student.

    Raises:
        UsageError: bad input (missing/corrupt model, missing data).
        ParityError: TFLite NME worse than Keras NME by more than ``max_nme_drift`` points (and
            not ``force``); nothing is written then.
    """
    if quantize not in MODES:
        raise UsageError(f"--quantize={quantize}: choose from {', '.join(MODES)}")
    output = Path(output)
    if output.suffix != ".tflite":
        raise UsageError(f"{output}: the output file must end in .tflite")
    if num_calibration < 1:
        raise UsageError(f"--num_calibration={num_calibration}: must be at least 1")
    val_data = val_data or representative_data
    if val_data is None:
        raise UsageError("the parity check needs labelled faces: give --val_data or "
                         "--representative_data")
    if quantize == "int8" and representative_data is None:
        raise UsageError("--quantize=int8 needs --representative_data (training faces)")
    for p in (representative_data, val_data):
        if p is not None and not Path(p).exists():
            raise UsageError(f"{p}: no such data file or folder")
    model_path = Path(model)
    json_path = output.with_suffix(".json")
    cli.check_outputs({output: TFLITE_OUTPUT, json_path: METADATA_OUTPUT},
                      inputs=[model_path, model_path.parent / "config.json",
                              representative_data, val_data, attributes])
    student = load_student(model_path)
    from fas_tf.inference import mirror_permutation
    from fas_tf.student import student_geometry

    size, _, num_landmarks = student_geometry(student)
    if flip:
        mirror_permutation(num_landmarks, str(model_path))  # --flip needs known mirror pairs
    calibration = None
    notes = {"val_data": str(val_data), "val_sets": val_sets}
    if quantize == "int8":
        calibration = calibration_crops(representative_data, size, num_calibration,
                                        representative_sets, attributes)
        notes.update(calibration_data=str(representative_data),
                     calibration_sets=representative_sets, num_calibration=len(calibration))
        log(f"calibrating on {len(calibration)} crops from {representative_data}")
    from fas_tf.data import framed_crops, load_faces

    val_path = Path(val_data)
    val_faces = load_faces(val_path, size, stems=_stems(val_path, attributes, val_sets))
    crops, gt = framed_crops(val_faces, size)
    tflite_bytes = convert(student, quantize, calibration, flip)

    with atomic_path(output) as tmp_model:
        Path(tmp_model).write_bytes(tflite_bytes)
        numbers = parity(student, tmp_model, crops, gt, flip)
        numbers["max_nme_drift_points"] = max_nme_drift
        kind = f"{quantize}, flip" if flip else quantize
        log(
            f"parity on {numbers['n']} faces: Keras{' flip' if flip else ''} NME "
            f"{numbers['keras_nme_percent']:.2f}%, TFLite ({kind}) NME "
            f"{numbers['tflite_nme_percent']:.2f}%, drift "
            f"{numbers['drift_points']:+.2f} points (allowed {max_nme_drift})"
        )
        too_far = numbers["drift_points"] > max_nme_drift
        if too_far and not force:
            raise ParityError(
                f"{output}: not written, TFLite NME {numbers['tflite_nme_percent']:.2f}% is "
                f"{numbers['drift_points']:.2f} points worse than Keras "
                f"{numbers['keras_nme_percent']:.2f}% (--max_nme_drift={max_nme_drift}; "
                "--force writes it anyway)"
            )
        numbers["forced"] = bool(too_far and force)
        metadata = build_metadata(student, quantize, output, tflite_bytes, model_path, numbers,
                                  notes, flip)
        write_json(json_path, metadata)
        os.chmod(tmp_model, 0o644)
        os.chmod(json_path, 0o644)
    log(f"wrote {output} ({len(tflite_bytes) / 1e6:.2f} MB) and {json_path}")
    return ExportResult(output, json_path, metadata, numbers)
