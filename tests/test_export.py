"""TFLite export: all quantization modes, int8 integer-only, parity refusal, model.json."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export.convert import (
    MODES,
    ParityError,
    export_model,
    float_compute_ops,
    op_types,
)
from fas_tf import measurements
from fas_tf.cli import UsageError
from fas_tf.detection.calibration import BOX_TO_CROP
from fas_tf.heatmaps import decode_heatmaps, decode_heatmaps_int8, render_heatmaps
from fas_tf.inference import LiteRTLandmarker, load_student
from fas_tf.measurements import Thresholds

from .conftest import REPO, TINY_SIZE, export_tiny

SIZE = TINY_SIZE


@pytest.fixture(scope="module")
def exported(tiny_run, demo_faces, tmp_path_factory):
    """Every mode exported once; mode -> ExportResult."""
    return export_tiny(tiny_run, demo_faces, tmp_path_factory.mktemp("exports"), MODES)


def test_decode_int8_matches_taylor_decoder():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-2, 130, (8, 68, 2)).astype(np.float32)
    heat = render_heatmaps(pts, 32, 4, 1.5) + rng.normal(0, 0.01, (8, 32, 32, 68))
    heat = tf.cast(heat, tf.float32)
    taylor, conf_t = decode_heatmaps(heat, 4)
    fast, conf_f = decode_heatmaps_int8(heat, 4)
    np.testing.assert_allclose(conf_f, conf_t, atol=1e-6)
    inner = np.all((pts > 4) & (pts < 123), axis=-1)  # peak not on the map border
    assert float(np.abs(fast - taylor)[inner].max()) < 0.02
    # on the border both push outward, by up to half a heatmap pixel (2 crop pixels)
    assert float(np.abs(fast - taylor).max()) <= 2.0 + 1e-4
    assert float(np.abs(fast - pts)[inner].mean()) < 0.15
    # a peak on the border is refined outward, as by the Taylor decoder
    edge = render_heatmaps(tf.constant([[[-1.5, 60.0]]]), 32, 4, 1.5)
    np.testing.assert_allclose(decode_heatmaps_int8(edge, 4)[0], decode_heatmaps(edge, 4)[0],
                               atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_exports_with_contract(exported, tiny_run, mode):
    result = exported[mode]
    path = result.tflite_path
    meta = json.loads(result.json_path.read_text())
    assert path.is_file() and meta["model_bytes"] == path.stat().st_size
    assert meta["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not list(path.parent.glob(".*.tmp"))  # nothing half-written left behind

    runner = LiteRTLandmarker(path)
    inp = runner.runner.get_input_details()["image"]
    outs = runner.runner.get_output_details()
    assert meta["input"]["shape"] == list(inp["shape"]) == [1, SIZE, SIZE, 3]
    assert meta["input"]["dtype"] == np.dtype(inp["dtype"]).name
    assert meta["input"]["dtype"] == ("uint8" if mode == "int8" else "float32")
    assert meta["input"]["channel_order"] == "RGB" and meta["input"]["value_range"] == [0, 255]
    for name in ("landmarks", "confidence"):
        assert meta["outputs"][name]["shape"] == list(outs[name]["shape"])
        assert meta["outputs"][name]["dtype"] == "float32"
    assert meta["outputs"]["landmarks"]["shape"] == [1, 68, 2]
    assert meta["landmarks"]["count"] == 68 == len(meta["landmarks"]["names"])
    assert [36, 45] in meta["landmarks"]["flip_pairs"]
    assert meta["crop"]["scale"] == 1.4 and meta["crop"]["input_size"] == SIZE
    # the web page's inputs, from their one Python source each
    detector = meta["crop"]["web_detector"]["detector"]
    assert meta["crop"]["from_face_detector"]["constants_by_detector"][detector] == (
        BOX_TO_CROP["blazeface"])
    assert meta["measurements"] == json.loads(json.dumps(measurements.spec()))
    assert meta["measurements"]["thresholds"]["max_yaw_deg"] == Thresholds().max_yaw_deg
    config_hash = hashlib.sha256((tiny_run / "config.json").read_bytes()).hexdigest()
    assert meta["training"]["config_sha256"] == config_hash
    assert meta["quantization"] == mode
    parity = meta["parity"]
    assert {"keras_nme_percent", "tflite_nme_percent", "drift_points", "n"} <= set(parity)
    if mode in ("float32", "float16"):
        assert abs(parity["drift_points"]) < 0.5


def test_sizes_shrink_with_quantization(exported):
    size = {m: r.metadata["model_bytes"] for m, r in exported.items()}
    assert size["float16"] < 0.6 * size["float32"]
    assert size["int8"] < 0.5 * size["float32"] and size["dynamic"] < 0.5 * size["float32"]


def test_int8_is_integer_only(exported):
    path = exported["int8"].tflite_path
    assert float_compute_ops(path) == []
    ops = op_types(path)
    conv = [o for o in ops if o[0] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert conv and all(o[1][0] == "int8" and o[2] == ["int8"] for o in conv)
    assert ops[0][0] == "QUANTIZE" and ops[0][1] == ["uint8"]
    # the float export, by contrast, computes in float
    assert float_compute_ops(exported["float32"].tflite_path)


def test_landmarkers_by_suffix_agree_on_crops(exported, tiny_run, demo_faces):
    from fas_tf.data import framed_crops, load_faces
    from fas_tf.inference import KerasLandmarker, load_landmarker

    crops, _ = framed_crops(load_faces(demo_faces, SIZE), SIZE)
    keras = load_landmarker(tiny_run / "student.keras")
    assert isinstance(keras, KerasLandmarker) and keras.input_size == SIZE
    keras_pts, keras_conf = keras.predict(crops)
    assert keras_conf.shape == (len(crops), 68)
    lite = load_landmarker(exported["float32"].tflite_path)
    assert isinstance(lite, LiteRTLandmarker) and lite.input_size == SIZE
    pts, conf = lite.predict(crops)
    assert pts.shape == (len(crops), 68, 2) and conf.shape == (len(crops), 68)
    assert np.all((conf >= 0) & (conf <= 1))
    assert np.median(np.abs(pts - keras_pts)) < 0.05
    q_pts, _ = LiteRTLandmarker(exported["int8"].tflite_path).predict(crops[:2])
    assert q_pts.shape == (2, 68, 2) and np.all(np.isfinite(q_pts))


def test_parity_check_refuses_broken_model(tiny_run, demo_faces, tmp_path, monkeypatch):
    """A TFLite model that disagrees with the Keras one is not written (unless --force)."""
    import keras

    import export.convert as conv

    real_graph, real_convert = conv.export_graph, conv.convert

    def shifted_graph(student, method="int8", flip=False):
        # A broken export: every landmark moved 200 px, off the 64-px crop, so its error exceeds
        # that of any in-crop Keras prediction whatever the (barely trained) model does.
        graph = real_graph(student, method, flip)
        moved = keras.layers.Rescaling(1.0, offset=200.0)(graph.output["landmarks"])
        return keras.Model(graph.input, {"landmarks": moved,
                                         "confidence": graph.output["confidence"]})

    cache = {}

    def convert_once(student, mode, calibration=None, flip=False):
        if "bytes" not in cache:
            cache["bytes"] = real_convert(student, mode, calibration, flip)
        return cache["bytes"]

    monkeypatch.setattr(conv, "export_graph", shifted_graph)
    monkeypatch.setattr(conv, "convert", convert_once)
    out = tmp_path / "model.tflite"
    with pytest.raises(ParityError, match="not written"):
        export_model(tiny_run / "student.keras", out, "float32",
                     representative_data=str(demo_faces), max_nme_drift=0.5, log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []
    forced = export_model(tiny_run / "student.keras", out, "float32",
                          representative_data=str(demo_faces), max_nme_drift=0.5, force=True,
                          log=lambda *_: None)
    assert out.is_file() and forced.metadata["parity"]["forced"] is True
    assert forced.metadata["parity"]["drift_points"] > 0.5


def test_bad_inputs_are_one_line_errors(tmp_path, demo_faces):
    with pytest.raises(UsageError, match="no such model file"):
        load_student(tmp_path / "missing.keras")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(UsageError, match="corrupt.keras: not a readable Keras model"):
        load_student(corrupt)
    with pytest.raises(ValueError, match="not a usable TFLite"):
        LiteRTLandmarker(corrupt)
    with pytest.raises(UsageError, match="needs --representative_data"):
        export_model(corrupt, tmp_path / "m.tflite", "int8", val_data=str(demo_faces))

    missing = tmp_path / "run" / "student.keras"
    result = subprocess.run(
        [sys.executable, "-m", "export", f"--model={missing}", f"--output={tmp_path / 'o.tflite'}",
         "--quantize=float32", f"--representative_data={demo_faces}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0] and "no such model file" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.tflite").exists()


def test_benchmark_times_models(exported):
    from export.benchmark import benchmark

    rows = benchmark([str(exported["int8"].tflite_path), str(exported["float32"].tflite_path)],
                     reference=str(exported["float32"].tflite_path), runs=20, warmup=2, rounds=2)
    assert [r["reference"] for r in rows] == [False, False, True]
    assert all(r["median_ms"] > 0 and r["runs"] >= 20 for r in rows)
    assert rows[-1]["ratio_to_reference"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def flip_exports(tiny_run, demo_faces, tmp_path_factory, exported):
    """The tiny student exported with --flip (float32 and int8) and plain int8; name -> result."""
    out = tmp_path_factory.mktemp("flip_exports")
    results = {
        f"{mode}_flip": export_model(tiny_run / "student.keras", out / mode / "model.tflite", mode,
                                     representative_data=str(demo_faces), num_calibration=16,
                                     max_nme_drift=100.0, log=lambda *_: None, flip=True)
        for mode in ("float32", "int8")
    }
    return {**results, "int8": exported["int8"]}


def test_flip_export_is_the_flip_averaged_student(flip_exports, tiny_run, demo_faces):
    from fas_tf.data import framed_crops, load_faces
    from fas_tf.inference import FlipAveraged, KerasLandmarker, mirrored_back

    result = flip_exports["float32_flip"]
    meta = json.loads(result.json_path.read_text())
    assert meta["flip"] is True and flip_exports["int8"].metadata["flip"] is False
    assert meta["parity"]["flip"] is True and abs(meta["parity"]["drift_points"]) < 0.5
    lite = LiteRTLandmarker(result.tflite_path)  # same contract as without --flip
    assert meta["input"]["shape"] == [1, SIZE, SIZE, 3]
    assert meta["outputs"]["landmarks"]["shape"] == [1, 68, 2]
    assert meta["outputs"]["confidence"]["shape"] == [1, 68]

    crops, _ = framed_crops(load_faces(demo_faces, SIZE), SIZE)
    student = KerasLandmarker(tiny_run / "student.keras")
    pts, conf = lite.predict(crops)
    keras_pts, keras_conf = FlipAveraged(student).predict(crops)
    assert np.median(np.abs(pts - keras_pts)) < 0.05
    assert np.abs(conf - keras_conf).max() < 0.01
    plain_pts, _ = student.predict(crops)
    assert np.median(np.abs(pts - plain_pts)) > 0.1  # the built-in flip does change the answer
    # a flip-averaged model is mirror-symmetric: its answer on the mirror image, mapped back,
    # is its answer on the crop
    mirrored_pts, mirrored_conf = lite.predict(crops[:, :, ::-1])
    back, back_conf = mirrored_back(mirrored_pts, mirrored_conf, _permutation(meta), SIZE)
    np.testing.assert_allclose(back, pts, atol=1e-3)
    np.testing.assert_allclose(back_conf, conf, atol=1e-5)


def _permutation(meta: dict) -> np.ndarray:
    """The flip permutation from model.json's flip pairs (what an app would build)."""
    perm = np.arange(meta["landmarks"]["count"])
    for a, b in meta["landmarks"]["flip_pairs"]:
        perm[a], perm[b] = b, a
    return perm


def test_flip_int8_export_stays_integer_only(flip_exports):
    from collections import Counter

    flip_path = flip_exports["int8_flip"].tflite_path
    assert float_compute_ops(flip_path) == [] == float_compute_ops(
        flip_exports["int8"].tflite_path)
    flip_ops = Counter(name for name, _, _ in op_types(flip_path))
    plain_ops = Counter(name for name, _, _ in op_types(flip_exports["int8"].tflite_path))
    added = flip_ops - plain_ops
    # the mirror image, the batch of two and its split, the index permutation, the average
    assert added["REVERSE_V2"] == 1 and added["CONCATENATION"] == 1 and added["SPLIT"] == 2
    assert set(added) <= {"REVERSE_V2", "CONCATENATION", "SPLIT", "GATHER", "MUL", "ADD",
                          "RESHAPE"}
    assert not plain_ops - flip_ops
    conv = [o for o in op_types(flip_path) if o[0] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert conv and all(o[1][0] == "int8" for o in conv)
    assert LiteRTLandmarker(flip_path).input_dtype == np.uint8
    # its parity reference is the flip-averaged Keras student (that of the float32 --flip export),
    # not the plain one
    parity = {name: r.parity for name, r in flip_exports.items()}
    assert parity["int8_flip"]["flip"] is True and parity["int8"]["flip"] is False
    assert parity["int8_flip"]["keras_nme_percent"] == parity["float32_flip"]["keras_nme_percent"]
    assert parity["int8_flip"]["keras_nme_percent"] != parity["int8"]["keras_nme_percent"]


def test_flip_export_needs_mirror_pairs(tmp_path, demo_faces):
    from fas_tf.student import build_student

    student = build_student(5, 32, alpha=0.35, head_channels=8)
    student.save(tmp_path / "student.keras")
    with pytest.raises(UsageError, match="student.keras: no mirror pairs are known for 5"):
        export_model(tmp_path / "student.keras", tmp_path / "out" / "m.tflite", "float32",
                     representative_data=str(demo_faces), flip=True, log=lambda *_: None)
    assert not (tmp_path / "out").exists()
