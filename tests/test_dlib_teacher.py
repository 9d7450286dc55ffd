"""dlib face-recognition ResNet teacher: .dat decoding, Teacher interface, parity with dlib."""

import math
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from fas_tf import dlib_resnet as dr
from fas_tf import teachers

from .conftest import INFANFACE

NUM_CHIPS = 24

needs_dat = pytest.mark.skipif(
    dr.dlib_model_path() is None,
    reason="face-recognition-models (dlib_face_recognition_resnet_model_v1.dat) not installed",
)


# ---------------------------------------------------------------------- decoding primitives


def test_decode_ints():
    r = dr.DlibReader(b"\x01\x02" + b"\x81\x1c" + b"\x02\x34\x12" + b"\x01\x00" + b"\x88" + bytes(7)
                      + b"\x01")
    assert [r.read_int() for _ in range(4)] == [2, -28, 0x1234, 0]
    assert r.read_int() == -(1 << 56)
    with pytest.raises(dr.DlibFormatError):  # truncated: control byte says 1 byte, none left
        r.read_int()
    with pytest.raises(dr.DlibFormatError):  # reserved bits set
        dr.DlibReader(b"\x31\x00").read_int()


def test_decode_float_details():
    # mantissa/exponent pairs as dlib's float_details writes them (trailing zero bytes of the
    # mantissa shifted into the exponent): 0.04 = 0xa3d70a * 2**-28, -1.5 = -0xc0 * 2**-7.
    data = (b"\x03\x0a\xd7\xa3\x81\x1c" + b"\x81\xc0\x81\x07" + b"\x01\x00\x01\x28"
            + b"\x01\x01\x02\x00\x7d" + b"\x01\x00\x02\x02\x7d")
    r = dr.DlibReader(data)
    assert r.read_float() == pytest.approx(0.04, rel=1e-7)
    assert r.read_float() == -1.5
    assert r.read_float() == 0.0
    assert r.read_float() == math.inf  # exponent 32000
    assert math.isnan(r.read_float())  # exponent 32002
    assert r.pos == len(data)


def test_decode_string_bool_tensor():
    values = np.array([1.5, -2.25], np.float32)
    data = (b"\x01\x05hello" + b"10"
            + b"\x01\x02" + b"\x01\x01\x01\x02\x01\x01\x01\x01" + struct.pack("<2f", *values)
            + b"\x01\x02" + b"\x01\x00" * 4
            + b"\x01\x01" + b"\x01\x01\x01\x20\x01\x03\x01\x03")
    r = dr.DlibReader(data)
    assert r.read_str() == "hello"
    assert (r.read_bool(), r.read_bool()) == (True, False)
    t = r.read_tensor()
    assert t.shape == (1, 2, 1, 1) and t.dtype == np.float32
    np.testing.assert_array_equal(t.ravel(), values)
    assert r.read_tensor().size == 0
    assert r.read_alias_tensor() == (1, 32, 3, 3)
    assert r.pos == len(data)


def test_parser_rejects_other_bytes():
    with pytest.raises(dr.DlibFormatError):
        dr.parse_dlib_resnet(b"\x01\x01\x01\x0dloss_multiclass")
    with pytest.raises(dr.DlibFormatError):
        dr.parse_dlib_resnet(b"\x89HDF\r\n")


def test_architecture_counts():
    kinds = [op.kind for op in dr.dlib_resnet_ops()]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29
    assert kinds.count("add_prev") == 14 and kinds.count("avg_pool") == 4


# ---------------------------------------------------------------------- the real weights


@pytest.fixture(scope="module")
def dlib_teacher():
    if dr.dlib_model_path() is None:
        pytest.skip("face-recognition-models not installed")
    return teachers.build_teacher("dlib")


@needs_dat
def test_dat_loads_fast():
    start = time.perf_counter()
    net = dr.load_dlib_resnet(dr.dlib_model_path())
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"parsing the .dat took {elapsed:.2f} s"
    np.testing.assert_allclose(net.mean_rgb, dr.DLIB_DEFAULT_MEAN_RGB, rtol=1e-6)
    assert net.loss["type"] == "loss_metric"
    assert net.layers[-1].params["kernel"].shape == (256, 128)


@needs_dat
def test_dlib_teacher_interface(dlib_teacher):
    t = dlib_teacher
    assert t.describe()["name"] == "dlib" and t.pretrained
    assert (t.input_size, t.embedding_dim) == (150, 128)
    assert t.tap_shapes() == {8: (17, 17, 64), 16: (8, 8, 128), 32: (4, 4, 256)}
    out = t(np.random.default_rng(0).uniform(0, 255, (2, 112, 112, 3)).astype("float32"))
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, atol=1e-5)
    assert not t.model.trainable


@needs_dat
def test_dlib_litert_forward_equals_tensorflow(dlib_teacher):
    crops = np.random.default_rng(0).uniform(0, 255, (3, 96, 96, 3)).astype("float32")
    found = dlib_teacher.litert_forward(batch_size=2, crop_size=96)(crops)
    for name, value in dlib_teacher(crops).items():
        np.testing.assert_allclose(found[name], value.numpy(), atol=3e-4, err_msg=name)


def test_dlib_random_teacher_is_not_pretrained():
    t = teachers.build_dlib("random")
    assert not t.pretrained and t.tap_shapes()[32] == (4, 4, 256)


@needs_dat
def test_auto_falls_back_to_dlib():
    def no_facenet(weights, allow_download):
        raise teachers.TeacherUnavailableError("FaceNet weights not found (test)")

    registry = {**teachers.TEACHERS, "facenet": no_facenet}
    t = teachers.build_teacher("auto", allow_download=False, teachers=registry)
    assert t.name == "dlib" and t.pretrained


def test_dlib_unavailable_message(monkeypatch):
    monkeypatch.setattr(dr, "dlib_model_path", lambda: None)
    with pytest.raises(teachers.TeacherUnavailableError, match="face-recognition-models"):
        teachers.build_teacher("dlib")
    registry = {**teachers.TEACHERS, "facenet": lambda w, d: teachers.build_dlib("random")}
    with pytest.raises(teachers.TeacherUnavailableError, match="no pretrained teacher"):
        teachers.build_teacher("auto", allow_download=False, teachers=registry)


# ---------------------------------------------------------------------- parity with dlib


def _read_pts(path: Path) -> np.ndarray:
    text = path.read_text()
    body = text[text.index("{") + 1 : text.index("}")]
    return np.array(body.split(), float).reshape(-1, 2)


def _face_chips(dlib, n: int) -> np.ndarray:
    from PIL import Image

    chips = []
    for pts_path in sorted(INFANFACE.glob("*.pts")):
        jpg = pts_path.with_suffix(".jpg")
        pts = _read_pts(pts_path)
        if not jpg.is_file() or len(pts) != 68:
            continue
        image = np.asarray(Image.open(jpg).convert("RGB"))
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        parts = [dlib.point(int(round(x)), int(round(y))) for x, y in pts]
        det = dlib.full_object_detection(rect, parts)
        chips.append(dlib.get_face_chip(image, det, size=150, padding=0.25))
        if len(chips) == n:
            break
    return np.stack(chips)


@needs_dat
@pytest.mark.skipif(not INFANFACE.is_dir(), reason=f"face data not found at {INFANFACE}")
def test_parity_with_dlib(dlib_teacher):
    dlib = pytest.importorskip("dlib", reason="dlib (pip install dlib-bin) is needed as reference")
    chips = _face_chips(dlib, NUM_CHIPS)
    if len(chips) < 20:
        pytest.skip(f"only {len(chips)} faces with 68-point .pts files in {INFANFACE}")
    reference = dlib.face_recognition_model_v1(str(dr.dlib_model_path()))
    # the overload for already-aligned 150x150 chips (a list: one batch)
    ref = np.array([np.array(d) for d in reference.compute_face_descriptor(list(chips))])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    ours = np.asarray(dlib_teacher.model(chips.astype("float32"), training=False)["embedding"])
    cosine = (ref * ours).sum(axis=1)
    assert cosine.min() >= 0.999, f"min cosine {cosine.min():.6f}"
    iu = np.triu_indices(len(chips), 1)
    d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=-1)[iu]
    d_ours = np.linalg.norm(ours[:, None] - ours[None], axis=-1)[iu]
    np.testing.assert_array_equal(np.argsort(d_ref), np.argsort(d_ours))
