"""Face detection: BlazeFace decoding and fetch, turned views, the search, the found-face rule."""

import math
import sys
import zipfile

import numpy as np
import pytest

from fas_tf import detection
from fas_tf.detection import blazeface
from fas_tf.errors import UsageError
from fas_tf.framing import crop_box, upright_square

from .conftest import INFANFACE, needs_blazeface, needs_infanface


def test_anchor_layouts_match_the_models():
    short = blazeface.anchors(128, blazeface.MODELS["short"]["strides"])
    full = blazeface.anchors(192, blazeface.MODELS["full"]["strides"])
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # first anchors: two per cell of the 16x16 grid; the last: six per cell of the 8x8 grid
    np.testing.assert_allclose(short[:3], [[1 / 32, 1 / 32]] * 2 + [[3 / 32, 1 / 32]])
    np.testing.assert_allclose(short[-1], [15 / 16, 15 / 16])
    np.testing.assert_allclose(full[-1], [95 / 96, 95 / 96])


def test_weighted_nms_merges_a_cluster_by_score():
    boxes = np.float64([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]])
    scores = np.float64([0.9, 0.3, 0.6])
    points = np.zeros((3, 6, 2))
    points[1] += 4.0
    kept = blazeface.weighted_nms(boxes, scores, points)
    assert len(kept) == 2
    box, score, pts = kept[0]
    assert score == 0.9
    np.testing.assert_allclose(box, [0.25, 0, 10.25, 10])  # (0.9 * 0 + 0.3 * 1) / 1.2
    np.testing.assert_allclose(pts, 1.0)
    np.testing.assert_allclose(kept[1][0], boxes[2])


def _face_points(angle: float, centre=(200.0, 150.0), size=80.0) -> np.ndarray:
    """An upright 68-point-like cloud (eye corners 36/45 level), turned by ``angle``."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.5, 0.5, (68, 2)) * size
    pts[36], pts[45] = (-0.45 * size, -0.2 * size), (0.45 * size, -0.2 * size)
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.float64([[c, s], [-s, c]]) + centre


def test_face_overlap_is_the_framing_square_in_the_detection_frame():
    pts = _face_points(math.radians(40))
    square = upright_square(pts, (36, 45))
    assert square[3] == pytest.approx(math.radians(40))
    assert detection.face_overlap(square, pts) == pytest.approx(1.0)
    assert detection.face_overlap((*crop_box(pts), 0.0), pts) == pytest.approx(1.0)
    cx, cy, side, angle = square
    # a quarter side off in both directions of the turned frame: IoU 0.5625 / 1.4375 < 0.4
    ox, oy = 0.25 * side * (math.cos(angle) - math.sin(angle)), 0.25 * side * (
        math.sin(angle) + math.cos(angle))
    off = detection.face_overlap((cx + ox, cy + oy, side, angle), pts)
    assert off == pytest.approx(0.5625 / 1.4375) and off < detection.FOUND_IOU
    # same centre, 1.5 times the side: 1 / 2.25
    assert detection.face_overlap((cx, cy, 1.5 * side, angle), pts) == pytest.approx(1 / 2.25)


class _Blob(detection.Detector):
    """Finds the bright square of a synthetic image: its bounding box in the view."""

    name = "blazeface"
    min_score = 0.5

    def __init__(self, score_upright=0.9, score_turned=0.9):
        self.scores = (score_upright, score_turned)
        self.views = []

    def detect(self, image):
        self.views.append(image.shape)
        ys, xs = np.nonzero(image[..., 0] > 128)
        if not len(xs):
            return []
        box = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min()),
               float(ys.max() - ys.min()))
        score = self.scores[0] if len(self.views) == 1 else self.scores[1]
        return [detection.RawFace(box, score, np.float64([[box[0], box[1]],
                                                          [box[0] + box[2], box[1]]]))]


def _blob_image():
    image = np.zeros((240, 320, 3), np.uint8)
    image[80:140, 180:240] = 255  # centre (209.5, 109.5)
    return image


def test_turned_view_maps_detections_back_to_the_image():
    image = _blob_image()
    view, matrix = detection.turned_view(image, math.radians(30))
    assert view.shape[:2] == (400, 400)  # the diagonal of 240 x 320: nothing cut off
    face = detection.detect_view(image, _Blob(), math.radians(30))[0]
    # the box is axis-aligned in the view, so it is turned by 30 degrees in the image
    np.testing.assert_allclose(face.corners.mean(0), [209.5, 109.5], atol=1.5)
    edge = face.corners[1] - face.corners[0]
    assert math.degrees(math.atan2(edge[1], edge[0])) == pytest.approx(30, abs=0.5)
    assert face.square[3] == pytest.approx(math.radians(30))
    assert face.eye_square()[3] == pytest.approx(math.radians(30), abs=0.02)


def test_find_faces_turns_only_without_a_confident_upright_face():
    image = _blob_image()
    confident = _Blob(score_upright=0.95)
    faces = detection.find_faces(image, confident, (30.0, -30.0), accept_score=0.9)
    assert len(confident.views) == 1 and len(faces) == 1
    weak = _Blob(score_upright=0.6, score_turned=0.8)
    faces = detection.find_faces(image, weak, (30.0, -30.0), accept_score=0.9)
    assert len(weak.views) == 3  # upright + two turns
    assert len(faces) == 1  # the three detections of one blob are merged...
    assert faces[0].score == 0.8 and abs(faces[0].angle) == pytest.approx(math.radians(30))


def _fake_wheel(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as wheel:
        for spec in blazeface.MODELS.values():
            wheel.writestr(spec["member"], payload)
    return path


def test_fetch_takes_the_models_out_of_a_wheel(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    payload = b"not really a tflite"
    digest = hashlib.sha256(payload).hexdigest()
    for variant in blazeface.MODELS:
        monkeypatch.setitem(blazeface.MODELS, variant,
                            {**blazeface.MODELS[variant], "sha256": digest})
    wheel = _fake_wheel(tmp_path / "mediapipe.whl", payload)
    paths = blazeface.fetch(wheel, log=lambda *_: None)
    assert [p.read_bytes() for p in paths] == [payload] * len(blazeface.MODELS)
    assert paths[0] == blazeface.model_path("short")


def test_fetch_refuses_a_wrong_file_and_reports_pip_failures(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    wheel = _fake_wheel(tmp_path / "mediapipe.whl", b"tampered")
    with pytest.raises(UsageError, match="sha256"):
        blazeface.fetch(wheel, log=lambda *_: None)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.tflite"))
    failing_pip = [sys.executable, "-c", "import sys; sys.exit('ERROR: no network')"]
    with pytest.raises(UsageError, match="--wheel=PATH"):
        blazeface.fetch(pip=failing_pip, log=lambda *_: None)


def test_missing_blazeface_model_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="run `python -m fas_tf.detection fetch` once"):
        blazeface.BlazeFace("short")


@needs_blazeface
@needs_infanface
def test_blazeface_finds_a_real_infant_face_upright_and_upside_down():
    from fas_tf.data import load_image, read_pts

    image = load_image(INFANFACE / "google2_g-00006.jpg")
    gt = read_pts(INFANFACE / "google2_g-00006.pts")
    faces = detection.find_faces(image, "blazeface", ())
    assert len(faces) == 1 and detection.face_overlap(faces[0].square, gt) > 0.6
    dx, dy = faces[0].eyes[1] - faces[0].eyes[0]  # image-left eye first, roughly level
    assert abs(math.degrees(math.atan2(dy, dx))) < 20
    upside_down = np.ascontiguousarray(image[::-1, ::-1])
    turned_gt = np.float64(image.shape[1::-1]) - 1 - gt
    faces = detection.find_faces(upside_down, "blazeface", (90.0, -90.0, 180.0))
    found = [f for f in faces if detection.face_overlap(f.square, turned_gt) >= 0.5]
    assert found and abs(math.degrees(found[0].angle)) >= 90


def test_end_to_end_scores_a_miss_as_a_failure():
    from benchmarks import end_to_end

    pts = _face_points(0.0)
    square = (*crop_box(pts), 0.0)
    far = (square[0] + square[2], square[1], square[2], 0.0)
    face, overlap = end_to_end.matched_face([{"crop": far}, {"crop": square}], pts)
    assert face == {"crop": square} and overlap == pytest.approx(1.0)
    assert end_to_end.matched_face([{"crop": far}], pts) == (None, 0.0)
    rows = [{"found": True, "nme": 0.05, "gt_crop_nme": 0.04, "overlap": 0.9},
            {"found": True, "nme": 0.20, "gt_crop_nme": 0.08, "overlap": 0.7},
            {"found": False, "gt_crop_nme": 0.06, "overlap": 0.0}]
    s = end_to_end.summarize(rows, [0, 1, 2])
    assert (s["found"], s["n"]) == (2, 3)
    assert s["nme_found"] == pytest.approx(12.5) and s["fr10_found"] == pytest.approx(50.0)
    assert s["nme_all"] == pytest.approx(100 * (0.05 + 0.20 + end_to_end.MISS_NME) / 3)
    assert s["fr10_all"] == pytest.approx(200 / 3)
    assert s["gt_crop_nme"] == pytest.approx(6.0) and s["gt_crop_nme_found"] == pytest.approx(6.0)
