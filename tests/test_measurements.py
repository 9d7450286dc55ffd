"""Tests for FAS screening measurements (a measurement aid, not a diagnosis)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fas_tf import measure as cli
from fas_tf import measurements as M
from fas_tf.errors import UsageError
from fas_tf.landmarks import layout_for
from fas_tf.measurement import pose as P

from .conftest import INFANFACE as DATA
from .conftest import needs_blazeface

REAL_STEMS = ("ads_19920.Still075", "ads_1072.Still005", "youtube2_016")


def face_3d() -> np.ndarray:
    """A synthetic 68-point head (x: subject's left, y: down, z: towards the camera).

    Built to match the pose model of fas_tf.measurements exactly: nose tip 25 = 0.5 half-IODs
    in front of the outer eye corners, jaw points 0/16 one half jaw width (70) behind the nose
    tip, nose tip at 0.34 of the eye-to-mouth height, 0.4 of that height in front.
    """
    p = np.zeros((68, 3))
    for i, a in enumerate(np.linspace(0, math.pi, 17)):  # jaw 0..16, chin 8 = (0, 100, 0)
        p[i] = (-70 * math.cos(a), 10 + 90 * math.sin(a), -45 + 45 * math.sin(a))
    for i, x in enumerate(np.linspace(-60, -15, 5)):  # brows
        p[17 + i] = (x, -20, 5)
        p[26 - i] = (-x, -20, 5)
    p[27:31] = [(0, -2, 10), (0, 6, 15), (0, 13, 20), (0, 21.25, 25)]  # nasion .. pronasale
    p[31:36] = [(-12, 25, 12), (-6, 27, 15), (0, 28, 17), (6, 27, 15), (12, 25, 12)]
    right_eye = [(-50, 0, 0), (-40, -5, 3), (-30, -5, 3), (-20, 0, 5), (-30, 5, 3), (-40, 5, 3)]
    p[36:42] = right_eye
    p[42:48] = [(-x, y, z) for x, y, z in (right_eye[i] for i in (3, 2, 1, 0, 5, 4))]
    p[48:60] = [(-25, 62.5, 0), (-15, 57, 5), (-6, 54.5, 8), (0, 54, 9), (6, 54.5, 8),
                (15, 57, 5), (25, 62.5, 0), (15, 68, 5), (6, 72, 7), (0, 73, 8), (-6, 72, 7),
                (-15, 68, 5)]  # fmt: skip
    p[60:68] = [(-20, 62, 2), (-8, 61.5, 7), (0, 61.5, 8), (8, 61.5, 7), (20, 62, 2),
                (8, 62, 7), (0, 62, 8), (-8, 62, 7)]  # fmt: skip
    return p


def project(p3: np.ndarray, yaw=0.0, pitch=0.0, roll=0.0, scale=1.0, shift=(300.0, 200.0)):
    """Orthographic view: yaw > 0 turns the nose to +x, pitch > 0 raises the chin."""
    y, t, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    q = (rz @ rx @ ry @ p3.T).T[:, :2]
    return scale * q + np.asarray(shift)


def frontal(scale=1.0) -> np.ndarray:
    return project(face_3d(), scale=scale)


def view(yaw=0.0, pitch=0.0, roll=0.0, iod=100.0, shift=(300.0, 200.0), dist=None):
    """P.HEAD_MODEL through a pinhole camera ``dist`` IODs away (default: the assumed one)."""
    y, t, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    head = P.HEAD_MODEL - P.HEAD_MODEL[list(P.POSE_LANDMARKS)].mean(axis=0)
    p = (rz @ rx @ ry @ head.T).T
    dist = dist or M.Thresholds().camera_distance
    return iod * dist * p[:, :2] / (dist - p[:, 2:]) + np.asarray(shift)


def values(res: dict) -> dict:
    out = {k: v["value_px"] for k, v in res["distances"].items()}
    out.update({k: v["value"] for k, v in res["ratios"].items()})
    return out


def test_exact_values_and_sigmas_on_synthetic_geometry():
    res = M.measure(frontal(), mm_per_pixel=0.2)
    assert res["face"]["verdict"] == "ok", res["face"]["reasons"]
    d, r = res["distances"], res["ratios"]
    expected = {"pfl_right": 30, "pfl_left": 30, "pfl_mean": 30, "icd": 40, "ocd": 100,
                "philtrum": 26, "upper_lip": 7.75, "mouth_width": 50, "face_height": 102}
    for name, v in expected.items():
        assert d[name]["verdict"] == "ok", (name, d[name]["reasons"])
        assert d[name]["value_px"] == pytest.approx(v, abs=1e-9)
        assert d[name]["value_mm"] == pytest.approx(0.2 * v, abs=1e-9)
    # sigma_i = 0.01 * IOD = 1 px for every landmark (no confidence given)
    assert d["pfl_right"]["sigma_px"] == pytest.approx(math.sqrt(2))
    assert d["pfl_mean"]["sigma_px"] == pytest.approx(1.0)  # 4 landmarks, weight 1/2 each
    assert d["upper_lip"]["sigma_px"] == pytest.approx(math.sqrt(1.5))  # sto = midpoint
    assert d["pfl_right"]["sigma_mm"] == pytest.approx(0.2 * math.sqrt(2))
    assert r["pfl_mean_to_icd"]["value"] == pytest.approx(0.75)
    assert r["pfl_right_to_ocd"]["value"] == pytest.approx(0.3)
    assert r["icd_to_ocd"]["value"] == pytest.approx(0.4)
    assert r["philtrum_to_face_height"]["value"] == pytest.approx(26 / 102)
    assert res["face"]["yaw_deg"] == pytest.approx(0, abs=1e-6)  # a symmetric face
    assert res["face"]["roll_deg"] == pytest.approx(0, abs=1e-6)
    assert "not a diagnosis" in res["disclaimer"]


def test_first_order_sigma_matches_monte_carlo():
    pts = frontal(scale=2.0)
    conf = np.linspace(0.6, 1.0, 68)
    res = M.measure(pts, conf)
    th = M.Thresholds()
    iod = res["face"]["interocular_px"]
    sig_i = iod * (th.sigma_floor + th.k * (1 - conf))
    rng = np.random.default_rng(0)
    samples = [M.raw_measurements(pts + rng.normal(size=pts.shape) * sig_i[:, None] * 0.1)
               for _ in range(1500)]  # small noise: first order holds  # fmt: skip
    for name in ("pfl_right_to_icd", "pfl_mean_to_ocd", "philtrum_to_face_height", "icd"):
        mc = np.std([s[name] for s in samples]) / 0.1
        entry = res["ratios"].get(name) or res["distances"][name]
        sigma = entry.get("sigma", entry.get("sigma_px"))
        assert mc == pytest.approx(sigma, rel=0.08), name


@pytest.mark.parametrize("roll", [0.0, 37.0, 90.0, 180.0, -123.0])
@pytest.mark.parametrize("scale", [1.0, 3.7])
def test_invariant_to_rotation_translation_scale(roll, scale):
    base = project(face_3d(), yaw=4, pitch=-3)
    ref = M.measure(base)
    centre = base.mean(axis=0)
    a = math.radians(roll)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    moved = (base - centre) @ rot.T * scale + np.array([-55.5, 1234.0])
    res = M.measure(moved)
    assert res["face"]["verdict"] == ref["face"]["verdict"] == "ok"
    for k in ("yaw_deg", "pitch_deg", "yaw_sigma_deg", "pitch_sigma_deg", "eye_opening_right",
              "mouth_open", "brow_raise"):
        assert res["face"][k] == pytest.approx(ref["face"][k], abs=1e-4)
    assert (res["face"]["roll_deg"] - ref["face"]["roll_deg"] - roll + 180) % 360 - 180 == (
        pytest.approx(0, abs=1e-4))
    for name in M.DISTANCES:
        a_, b_ = res["distances"][name], ref["distances"][name]
        assert a_["verdict"] == b_["verdict"], name
        if a_["value_px"] is not None:
            assert a_["value_px"] == pytest.approx(scale * b_["value_px"])
            assert a_["sigma_px"] == pytest.approx(scale * b_["sigma_px"])
    for name in M.RATIOS:
        a_, b_ = res["ratios"][name], ref["ratios"][name]
        assert a_["verdict"] == b_["verdict"], name
        if a_["value"] is not None:
            assert a_["value"] == pytest.approx(b_["value"])
            assert a_["sigma"] == pytest.approx(b_["sigma"])


def test_strong_roll_is_still_measurable():
    res = M.measure(project(face_3d(), roll=70))
    assert res["face"]["verdict"] == "ok", res["face"]["reasons"]
    assert res["face"]["roll_deg"] == pytest.approx(70, abs=1e-4)
    assert res["ratios"]["pfl_mean_to_icd"]["value"] == pytest.approx(0.75)


def test_mirroring_swaps_left_and_right():
    rng = np.random.default_rng(1)
    pts = frontal() + rng.normal(scale=0.8, size=(68, 2))  # break the symmetry
    mirrored = pts[layout_for(68).flip_permutation()] * np.array([-1.0, 1.0])
    a, b = M.measure(pts), M.measure(mirrored)
    assert a["distances"]["pfl_right"]["value_px"] != pytest.approx(
        a["distances"]["pfl_left"]["value_px"])
    for x, y in (("pfl_right", "pfl_left"), ("pfl_left", "pfl_right")):
        assert b["distances"][x]["value_px"] == pytest.approx(a["distances"][y]["value_px"])
    for x, y in (("pfl_right_to_icd", "pfl_left_to_icd"), ("pfl_left_to_ocd", "pfl_right_to_ocd")):
        assert b["ratios"][x]["value"] == pytest.approx(a["ratios"][y]["value"])
    for name in ("pfl_mean", "icd", "ocd", "philtrum", "mouth_width"):
        assert b["distances"][name]["value_px"] == pytest.approx(a["distances"][name]["value_px"])
    assert b["face"]["yaw_deg"] == pytest.approx(-a["face"]["yaw_deg"], abs=1e-4)
    assert b["face"]["pitch_deg"] == pytest.approx(a["face"]["pitch_deg"], abs=1e-4)


def test_low_confidence_gives_not_measurable():
    conf = np.ones(68)
    conf[39] = 0.2  # right endocanthion: the pose is still fitted on the other 20 points
    res = M.measure(frontal(), conf)
    assert res["face"]["verdict"] == "ok" and res["face"]["pose_landmarks"] == 20
    for name in ("pfl_right", "icd", "pfl_mean"):
        assert res["distances"][name]["verdict"] == "not measurable"
        assert "low_confidence" in res["distances"][name]["reason_codes"]
    assert res["distances"]["pfl_left"]["verdict"] == "ok"
    conf = np.ones(68)
    conf[33] = 0.2  # subnasale: philtrum only
    res = M.measure(frontal(), conf)
    assert res["face"]["verdict"] == "ok"
    ph = res["distances"]["philtrum"]
    assert ph["verdict"] == "not measurable" and ph["value_px"] is None
    assert any("low confidence" in r and "33" in r for r in ph["reasons"])
    assert res["ratios"]["philtrum_to_face_height"]["verdict"] == "not measurable"
    assert res["distances"]["pfl_mean"]["verdict"] == "ok"
    conf = np.ones(68)
    conf[list(P.POSE_LANDMARKS)[:14]] = 0.2  # 7 confident pose landmarks left
    res = M.measure(frontal(), conf)
    assert res["face"]["reason_codes"] == ["pose_unknown"]
    # moderately low confidence everywhere: passes the confidence gate, fails on uncertainty
    res = M.measure(frontal(), np.full(68, 0.55))
    assert res["distances"]["upper_lip"]["verdict"] == "not measurable"
    assert any("uncertainty" in r for r in res["distances"]["upper_lip"]["reasons"])


@pytest.mark.parametrize("angle", [5.0, 10.0, 20.0, 40.0])
def test_pose_from_the_head_model(angle):
    for yaw, pitch, roll in ((angle, 0, 25), (-angle, angle / 2, -60), (0, -angle, 140)):
        # nearly weak perspective: exact
        face = M.measure(view(yaw, pitch, roll, dist=1e4), camera_distance=1e4)["face"]
        assert face["yaw_deg"] == pytest.approx(yaw, abs=0.01)
        assert face["pitch_deg"] == pytest.approx(pitch, abs=0.01)
        assert face["roll_deg"] == pytest.approx(roll, abs=0.01)
        assert face["pose_residual"] == pytest.approx(0, abs=1e-4)
        # the default close-up camera: its focal length is inferred from the face size
        face = M.measure(view(yaw, pitch, roll))["face"]
        assert face["yaw_deg"] == pytest.approx(yaw, abs=0.05 * angle + 0.5)
        assert face["pitch_deg"] == pytest.approx(pitch, abs=0.05 * angle + 0.5)


def test_pose_sigma_matches_monte_carlo():
    th = M.Thresholds()
    conf = np.linspace(0.6, 1.0, 68)
    sigma_i = 100 * (th.sigma_floor + th.k * (1 - conf))
    rng = np.random.default_rng(0)
    base = view(15, -10, 5)
    draws, predicted = [], []
    for _ in range(300):
        face = M.estimate_pose(base + rng.normal(size=(68, 2)) * sigma_i[:, None], conf)
        draws.append((face["yaw_deg"], face["pitch_deg"]))
        predicted.append((face["yaw_sigma_deg"], face["pitch_sigma_deg"]))
    mc, pred = np.std(draws, axis=0), np.median(predicted, axis=0)
    assert pred == pytest.approx(mc, rel=0.25)
    assert 0.5 < pred[0] < 10  # degrees, not radians
    # a face the rigid head does not fit (expression, anatomy) gets a larger uncertainty
    bent = base.copy()
    bent[27:36, 0] += 8
    assert M.estimate_pose(bent)["yaw_sigma_deg"] > 1.5 * M.estimate_pose(base)["yaw_sigma_deg"]


def test_turned_face_is_not_measurable():
    res = M.measure(view(yaw=-40))
    assert res["face"]["verdict"] == "not measurable"
    assert res["face"]["reason_codes"] == ["head_turned"]
    assert res["face"]["reasons"][0].startswith("head turned: yaw -39 +- ")
    assert all(v["value_px"] is None for v in res["distances"].values())
    assert all(v["value"] is None for v in res["ratios"].values())
    # a little turned: bilateral values ok, single-eye PFL and mixed-direction ratios refused
    res = M.measure(view(yaw=20))
    assert res["face"]["verdict"] == "ok"
    for name in ("pfl_right", "pfl_left"):
        assert res["distances"][name]["reason_codes"] == ["head_turned_for_value"]
    assert res["ratios"]["upper_lip_to_mouth_width"]["reason_codes"] == ["head_turned_for_value"]
    for name in ("pfl_mean_to_icd", "icd_to_ocd", "philtrum_to_face_height"):
        assert res["ratios"][name]["verdict"] == "ok", name
    front, turned = M.raw_measurements(view()), M.raw_measurements(view(yaw=20))
    assert res["ratios"]["pfl_mean_to_icd"]["value"] == pytest.approx(
        front["pfl_mean_to_icd"], rel=0.015)  # the two eyes' depth errors cancel
    assert abs(turned["pfl_right_to_icd"] / front["pfl_right_to_icd"] - 1) > 0.08


def test_each_spoiler_has_its_own_reason():
    res = M.measure(view(pitch=35, roll=15))
    assert res["face"]["reason_codes"] == ["head_pitched"]
    assert "chin up" in res["face"]["reasons"][0]
    res = M.measure(view(iod=50))
    assert res["face"]["reason_codes"] == ["face_too_small"]

    closed = view()
    closed[[37, 38]] = closed[[41, 40]]  # right eye: upper lid on the lower one
    res = M.measure(closed)
    assert res["face"]["verdict"] == "ok"
    assert res["face"]["eye_opening_right"] == pytest.approx(0)
    for name in ("pfl_right", "pfl_mean"):
        assert res["distances"][name]["reason_codes"] == ["eyes_not_open"]
    assert res["ratios"]["pfl_mean_to_icd"]["reason_codes"] == ["eyes_not_open"]
    for name in ("pfl_left", "icd", "philtrum"):
        assert res["distances"][name]["verdict"] == "ok", name

    crying = view()
    crying[65:68, 1] += 40  # open the mouth: lip gap ~0.8 x mouth width
    res = M.measure(crying)
    for name in ("upper_lip", "philtrum", "face_height", "mouth_width"):
        assert "mouth_open" in res["distances"][name]["reason_codes"], name
    assert res["distances"]["pfl_mean"]["verdict"] == "ok"
    assert res["face"]["verdict"] == "ok"  # the head pose ignores the mouth and the chin

    brows = view()
    brows[17:27, 1] -= 30
    res = M.measure(brows)
    assert res["distances"]["philtrum"]["reason_codes"] == ["brows_raised"]
    assert res["distances"]["pfl_mean"]["verdict"] == "ok"
    assert res["face"]["verdict"] == "ok"


def test_bad_input_raises():
    with pytest.raises(ValueError, match="shape"):
        M.measure(np.zeros((5, 2)))
    pts = frontal()
    pts[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.measure(pts)
    with pytest.raises(ValueError, match="confidence"):
        M.measure(frontal(), np.ones(3))


def test_importing_the_cli_defines_no_flags():
    from absl import flags

    assert "landmarks" not in flags.FLAGS and "mm_per_pixel" not in flags.FLAGS


def test_model_mode_missing_model_fails_clearly(tmp_path):
    with pytest.raises(UsageError, match="m.keras: model not found"):
        cli.run([str(tmp_path)], tmp_path / "out", model=str(tmp_path / "m.keras"))


@pytest.fixture
def real_faces(tmp_path):
    if not all((DATA / f"{s}.pts").is_file() for s in REAL_STEMS):
        pytest.skip(f"InfAnFace data not found at {DATA}")
    folder = tmp_path / "faces"
    folder.mkdir()
    for s in REAL_STEMS:
        for ext in (".jpg", ".pts"):
            shutil.copy(DATA / f"{s}{ext}", folder / f"{s}{ext}")
    return folder


def test_folder_report_on_real_faces(real_faces, tmp_path):
    (real_faces / "broken.jpg").write_bytes(b"not an image")
    shutil.copy(real_faces / f"{REAL_STEMS[0]}.jpg", real_faces / "no_landmarks.jpg")
    out = tmp_path / "out"
    lines = []

    class Log:
        def write(self, s):
            lines.append(s)

    failures = cli.run([str(real_faces)], out, use_landmarks=True, mm_per_pixel=0.25, log=Log())
    assert failures == 2
    msgs = "".join(lines).strip().splitlines()
    assert len(msgs) == 2
    broken = [m for m in msgs if "broken.jpg" in m]
    assert len(broken) == 1 and broken[0].count("broken.jpg") == 1  # the path once (issue 14/10)
    for s in REAL_STEMS:
        assert (out / f"{s}.measure.png").stat().st_size > 1000
        rec = json.loads((out / f"{s}.measure.json").read_text())
        assert "not a diagnosis" in rec["disclaimer"]
        assert rec["faces"][0]["face"]["verdict"] in ("ok", "not measurable")
    with open(out / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and sum(r["face_verdict"] == "error" for r in rows) == 2
    assert "pfl_mean_to_icd" in rows[0] and "pfl_mean_mm" in rows[0]
    assert {r["image"] for r in rows} == {f"{s}.jpg" for s in REAL_STEMS} | {
        "broken.jpg", "no_landmarks.jpg"}  # names relative to the input folder
    page = (out / "report.html").read_text()
    assert "not a diagnosis" in page and f"href='{REAL_STEMS[0]}.measure.png'" in page
    assert str(real_faces) not in page  # no absolute paths
    assert "5 image(s), 3 face(s), 2 error(s)" in page
    assert "<script>" in page and "http" not in page  # inline, no external resources
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # the frontal one is measurable, the strongly turned one is not, for a pose reason
    ok = json.loads((out / f"{REAL_STEMS[0]}.measure.json").read_text())["faces"][0]
    assert ok["face"]["verdict"] == "ok"
    assert ok["ratios"]["pfl_mean_to_icd"]["verdict"] == "ok"
    turned = json.loads((out / f"{REAL_STEMS[1]}.measure.json").read_text())["faces"][0]
    assert "head_turned" in turned["face"]["reason_codes"]


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_cli_never_writes_into_the_input_folder(real_faces, tmp_path):
    """Issue 14 row 1: --output = the input folder is refused, one line, exit 2, inputs intact."""
    before = _hashes(real_faces)
    cmd = [sys.executable, "-m", "fas_tf.measure", "--landmarks", str(real_faces)]
    for out in (real_faces, real_faces / "." ):
        res = subprocess.run(cmd + [f"--output={out}"], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert res.returncode == 2, res.stderr
        err = res.stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in res.stderr
        assert err[0].startswith("error: ") and "holds input images" in err[0]
    assert _hashes(real_faces) == before
    # a single image of the folder, output = that folder: refused too
    one = str(real_faces / f"{REAL_STEMS[0]}.jpg")
    res = subprocess.run([sys.executable, "-m", "fas_tf.measure", "--landmarks", one,
                          f"--output={real_faces}"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and _hashes(real_faces) == before


def test_cli_exit_codes(real_faces, tmp_path):
    cmd = [sys.executable, "-m", "fas_tf.measure", "--landmarks", f"--output={tmp_path / 'o'}"]
    ok = subprocess.run(cmd + [str(real_faces)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG garbage")
    bad = subprocess.run(cmd + [str(real_faces), str(tmp_path / "missing.jpg"),
                                str(tmp_path / "corrupt.png")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    err = bad.stderr.strip().splitlines()
    assert f"{tmp_path / 'missing.jpg'}: no such file or folder" in err
    corrupt = [e for e in err if "corrupt.png" in e]
    assert corrupt == [f"{tmp_path / 'corrupt.png'}: cannot decode image (unreadable or corrupt)"]
    assert (tmp_path / "o" / "report.html").is_file()
    usage = subprocess.run(cmd + ["--model=x.keras", str(real_faces)], capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert usage.returncode == 2 and usage.stderr.strip().splitlines() == [
        "error: give exactly one of --model=PATH or --landmarks"]


@needs_blazeface
def test_model_mode_measures_detected_faces(real_faces, tmp_path):
    """--model runs fas_tf.predict (detector + landmarks) and measures every detected face."""
    from fas_tf.student import build_student

    model = tmp_path / "student.keras"
    build_student(68, 64, alpha=0.35, head_channels=16).save(model)
    out = tmp_path / "out"
    assert cli.run([str(real_faces / f"{REAL_STEMS[0]}.jpg")], out, model=str(model)) == 0
    rec = json.loads((out / f"{REAL_STEMS[0]}.measure.json").read_text())
    assert len(rec["faces"]) == 1
    assert rec["pipeline"]["detector"] == rec["faces"][0]["detector"] == "blazeface"
    assert rec["pipeline"]["flip"] is True  # the default: test-time flip
    face = rec["faces"][0]
    assert len(face["landmarks"]) == 68 and len(face["box"]) == 4
    # an untrained model has low confidence everywhere: no number may be reported as ok
    assert face["face"]["verdict"] == "not measurable"


@needs_blazeface
def test_model_mode_flips_by_default_and_noflip_is_one_pass(real_faces, tmp_path):
    """measure averages each crop with its mirror unless told not to, and its JSON says which:
    the two give different landmarks, and a flip-averaged model run without flip gives them."""
    from fas_tf.inference import FlipAveraged, load_landmarker
    from fas_tf.predict import predict
    from fas_tf.student import build_student

    model = tmp_path / "student.keras"
    build_student(68, 64, alpha=0.35, head_channels=16).save(model)
    photo = real_faces / f"{REAL_STEMS[0]}.jpg"
    points = {}
    for flip in (True, False):
        out = tmp_path / f"out_{flip}"
        assert cli.run([str(photo)], out, model=str(model), flip=flip) == 0
        rec = json.loads((out / f"{REAL_STEMS[0]}.measure.json").read_text())
        assert rec["pipeline"]["flip"] is flip
        points[flip] = np.array(rec["faces"][0]["landmarks"])
    assert np.abs(points[True] - points[False]).max() > 0.5  # pixels
    by_hand = predict(str(photo), FlipAveraged(load_landmarker(model)))
    assert np.allclose(by_hand[0]["landmarks"], points[True], atol=1e-3)
