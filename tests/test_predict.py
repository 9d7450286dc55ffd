"""Whole-image inference: detection, framing, mapping back, EXIF, CLI outputs and exit codes."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fas_tf.data import load_image, read_pts
from fas_tf.detection.calibration import BOX_TO_CROP
from fas_tf.framing import FRAMING_SCALE, crop_box, detector_square
from fas_tf.inference import load_landmarker
from fas_tf.predict import predict

from .conftest import INFANFACE, REPO, needs_blazeface, needs_infanface

FACE = INFANFACE / "google2_g-00006.jpg"  # one face (MTCNN score 1.0, BlazeFace 0.89)


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    """An untrained 64-px student (.keras); .tflite inputs are covered by test_export."""
    from fas_tf.student import build_student

    folder = tmp_path_factory.mktemp("model")
    build_student(68, 64, alpha=0.35, head_channels=16).save(folder / "student.keras")
    return folder / "student.keras", None


class _Exact:
    """A fake landmarker returning fixed crop coordinates (tests the geometry alone)."""

    input_size = 64

    def __init__(self, crop_points):
        self.crop_points = crop_points

    def predict(self, crops):
        n = len(crops)  # one answer per crop (predict runs several first crops in a batch)
        return (np.repeat(self.crop_points[None], n, axis=0),
                np.ones((n, len(self.crop_points)), np.float32))


@pytest.mark.parametrize("detector", sorted(BOX_TO_CROP))
def test_box_square_follows_the_calibration(detector):
    cx, cy, side = detector_square((100.0, 50.0, 80.0, 100.0), detector)
    m = BOX_TO_CROP[detector]
    assert cx == pytest.approx(100 + 80 * (0.5 + m["dx"]))
    assert cy == pytest.approx(50 + 100 * (0.5 + m["dy"]))
    assert side == pytest.approx(FRAMING_SCALE * m["scale"] * 100)


@needs_infanface
@pytest.mark.parametrize("detector", ["mtcnn", pytest.param("blazeface", marks=needs_blazeface)])
def test_face_landmarks_map_back_to_image(monkeypatch, detector):
    """Crop coordinates go back to image pixels through the inverse of the crop transform."""
    from fas_tf import framing

    gt = read_pts(FACE.with_suffix(".pts"))
    image = load_image(FACE)
    cx, cy, side = crop_box(gt)
    s = 64 / side  # the crop of the ground-truth framing square: image -> crop pixels
    crop_gt = ((gt - [cx, cy]) * s + 31.5).astype(np.float32)
    monkeypatch.setattr(framing, "crop_box", lambda pts: (cx, cy, side))
    faces = predict(image, _Exact(crop_gt), refine=1, detector=detector)
    assert len(faces) == 1 and faces[0]["detector"] == detector
    np.testing.assert_allclose(np.array(faces[0]["landmarks"]), gt, atol=0.01)
    x0, y0, x1, y1 = faces[0]["box"]
    assert x0 < gt[:, 0].mean() < x1 and y0 < gt[:, 1].mean() < y1
    assert 0.7 <= faces[0]["detector_score"] <= 1.0 and faces[0]["turn_deg"] == 0.0


@needs_blazeface
@needs_infanface
def test_real_face_with_keras_model_and_rotated_exif(model_paths, tmp_path):
    keras_path, _ = model_paths
    model = load_landmarker(keras_path)
    upright = predict(FACE, model)
    assert len(upright) == 1
    face = upright[0]
    assert np.array(face["landmarks"]).shape == (68, 2)
    assert np.array(face["confidence"]).shape == (68,)
    assert set(face) == {"box", "landmarks", "confidence", "detector_score", "detector",
                         "turn_deg", "crop", "first_crop"}
    assert face["first_crop"] in ("box", "eyes")

    # Stored rotated by 90 degrees with EXIF orientation 6 ("rotate 90 CW to display").
    pixels = np.asarray(Image.open(FACE).convert("RGB"))
    rotated = Image.fromarray(np.rot90(pixels, 1).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    rotated.save(path, quality=95, exif=exif)
    assert load_image(path).shape == pixels.shape
    turned = predict(path, model)
    assert len(turned) == 1
    box_a, box_b = np.array(face["box"]), np.array(turned[0]["box"])
    assert np.abs(box_a - box_b).max() < 0.1 * (box_a[2] - box_a[0])


@needs_blazeface
def test_no_face_returns_empty_list(model_paths):
    gray = np.full((160, 200, 3), 128, np.uint8)
    assert predict(gray, load_landmarker(model_paths[0])) == []


@needs_blazeface
def test_cli_goes_on_after_failures_and_reports_them(model_paths, tmp_path):
    blank = tmp_path / "in" / "blank.png"
    blank.parent.mkdir()
    Image.fromarray(np.full((120, 120, 3), 200, np.uint8)).save(blank)
    corrupt = tmp_path / "in" / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    inputs = [str(tmp_path / "in")] + ([str(FACE)] if FACE.is_file() else [])
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "fas_tf.predict", f"--model={model_paths[0]}",
         f"--output={out}", *inputs],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert any("blank.png: no face found" in ln for ln in lines)
    assert any("corrupt.jpg: cannot decode image" in ln for ln in lines)
    assert json.loads((out / "blank.landmarks.json").read_text())["faces"] == []
    assert not (out / "corrupt.landmarks.json").exists()
    if FACE.is_file():
        record = json.loads((out / f"{FACE.stem}.landmarks.json").read_text())
        assert record["width"] == 384 and len(record["faces"]) == 1
        assert (record["detector"], record["turns"], record["refine"]) == ("blazeface", True, 1)
        assert len(record["faces"][0]["landmarks"]) == 68
        assert (out / f"{FACE.stem}.landmarks.png").stat().st_size > 1000


def test_cli_bad_model_is_one_line(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"garbage")
    image = tmp_path / "blank.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    result = subprocess.run(
        [sys.executable, "-m", "fas_tf.predict", f"--model={bad}", str(image)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "bad.tflite" in errors[0]


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _predict_cli(*args):
    return subprocess.run([sys.executable, "-m", "fas_tf.predict", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@needs_blazeface
def test_cli_output_into_the_input_folder_never_overwrites_an_input(model_paths, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, value in (("face.png", 200), ("face.jpg", 90)):  # same stem, two images
        Image.fromarray(np.full((96, 96, 3), value, np.uint8)).save(folder / name)
    before = _hashes(folder)
    result = _predict_cli(f"--model={model_paths[0]}", f"--output={folder}", folder)
    assert result.returncode == 1, result.stderr[-2000:]  # no face in a flat image
    assert "Traceback" not in result.stderr
    after = _hashes(folder)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {
        "face.landmarks.json", "face.landmarks.png", "face_1.landmarks.json",
        "face_1.landmarks.png",
    }
    # A second run over the same folder skips the earlier outputs and replaces only them.
    result = _predict_cli(f"--model={model_paths[0]}", f"--output={folder}", folder)
    assert result.returncode == 1 and set(_hashes(folder)) == set(after)
    assert {k: _hashes(folder)[k] for k in before} == before


def test_cli_refuses_an_output_that_would_replace_an_input(model_paths, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((64, 64, 3), 30, np.uint8)).save(folder / "a.landmarks.png")
    before = _hashes(folder)
    result = _predict_cli(f"--model={model_paths[0]}", f"--output={folder}",
                          folder / "a.png", folder / "a.landmarks.png")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    target = folder / "a.landmarks.png"
    assert errors == [f"error: {target}: is an input of this run ({target}); "
                      "choose another output name"]
    assert _hashes(folder) == before
