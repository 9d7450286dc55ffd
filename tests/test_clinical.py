"""Clinical measurement tooling: agreement statistics, known-answer warps, the imprecise verdict."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from fas_tf import agreement as A
from fas_tf import face_warp as W
from fas_tf import measurements as M
from fas_tf import spread as S

from .conftest import INFANFACE, needs_infanface
from .test_measurements import frontal

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; ICC(2,1) = 0.29, ICC(1,1) = 0.17
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
                          [6, 2, 4, 7]], float)  # fmt: skip


def test_icc_known_answers():
    assert A.icc_agreement(SHROUT_FLEISS) == pytest.approx(0.290, abs=0.001)
    assert A.icc_repeatability(SHROUT_FLEISS)["icc"] == pytest.approx(0.166, abs=0.001)
    x = np.random.default_rng(0).normal(size=40)
    assert A.icc_agreement(np.stack([x, x], 1)) == pytest.approx(1.0)
    # a constant offset between raters costs absolute agreement, not consistency (r = 1)
    shifted = A.agreement(x, x + 1.0)
    var = np.var(x, ddof=1)
    assert shifted["r"] == pytest.approx(1.0)
    assert shifted["icc_a1"] == pytest.approx(var / (var + 0.5))  # s^2 / (s^2 + offset^2 / 2)
    assert shifted["bias"] == pytest.approx(1.0) and shifted["loa_low"] == pytest.approx(1.0)


def test_repeatability_recovers_the_variance_components():
    rng = np.random.default_rng(1)
    truth = rng.normal(0, 2.0, size=400)  # between SD ~2, within SD 1: ICC ~0.8
    groups = [t + rng.normal(0, 1.0, size=rng.integers(2, 9)) for t in truth]  # unbalanced
    rep = A.icc_repeatability(groups)
    var = np.var(truth, ddof=1)
    assert rep["icc"] == pytest.approx(var / (var + 1.0), abs=0.02)
    assert rep["within_sd"] == pytest.approx(1.0, abs=0.05)
    assert rep["between_sd"] == pytest.approx(math.sqrt(var), abs=0.1)
    assert rep["subjects"] == 400
    assert A.icc_repeatability([[1.0, 1.0], [2.0, 2.0]])["icc"] == pytest.approx(1.0)


def test_bland_altman_limits_and_plot(tmp_path):
    rng = np.random.default_rng(2)
    ref = rng.uniform(0.6, 1.0, 2000)
    test = ref + 0.05 + rng.normal(0, 0.02, 2000)
    ba = A.bland_altman(ref, test)
    assert ba["bias"] == pytest.approx(0.05, abs=0.002)
    assert ba["loa_high"] - ba["loa_low"] == pytest.approx(2 * 1.96 * 0.02, rel=0.05)
    assert A.robust_sd(rng.normal(0, 3.0, 20000)) == pytest.approx(3.0, rel=0.03)
    assert A.ols_slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx((2.0, 1.0))
    png = tmp_path / "ba.png"
    A.plot_bland_altman({"a": (ref, test), "b": (ref, ref)}, png, "t")
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_stretch_scales_the_segment_exactly(factor):
    a, b = np.array([100.0, 80.0]), np.array([140.0, 95.0])
    s = W.stretch_between(a, b, factor)
    na, nb = W.warp_points(np.stack([a, b]), [s])
    assert np.hypot(*(nb - na)) == pytest.approx(factor * np.hypot(*(b - a)), rel=1e-9)
    far = np.array([[400.0, 400.0]])  # far from the segment: unmoved
    assert np.allclose(W.warp_points(far, [s]), far, atol=1e-6)


def test_measurement_stretches_change_only_their_measurement():
    pts = frontal(scale=2.0)
    before = M.raw_measurements(pts)
    for warp, name in (("pfl", "pfl_right"), ("pfl", "pfl_left"), ("philtrum", "philtrum")):
        after = M.raw_measurements(W.warp_points(pts, W.measurement_stretches(pts, warp, 1.1)))
        assert after[name] / before[name] == pytest.approx(1.1, abs=0.002), (warp, name)
    after = M.raw_measurements(W.warp_points(pts, W.measurement_stretches(pts, "pfl", 1.1)))
    assert after["mouth_width"] == pytest.approx(before["mouth_width"], rel=0.005)
    with pytest.raises(ValueError, match="unknown measurement"):
        W.measurement_stretches(pts, "nose", 1.1)


def blob_image(points: np.ndarray, size: int = 512, sigma: float = 1.3) -> np.ndarray:
    """Black RGB image with a bright Gaussian blob at every point."""
    img = np.zeros((size, size))
    r = int(4 * sigma) + 2
    for x, y in points:
        x0, y0 = max(int(x) - r, 0), max(int(y) - r, 0)
        yy, xx = np.mgrid[y0:int(y) + r + 1, x0:int(x) + r + 1].astype(np.float64)
        blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
        patch = img[y0:y0 + blob.shape[0], x0:x0 + blob.shape[1]]
        np.maximum(patch, blob[:patch.shape[0], :patch.shape[1]], out=patch)
    return np.repeat((255 * img)[..., None], 3, axis=2).astype(np.uint8)


def test_image_moves_with_the_points():
    dot = np.array([[250.0, 200.0]])
    s = W.stretch_between([235.0, 200.0], [275.0, 205.0], 1.15)
    warped = W.warp_image(blob_image(dot, 400, sigma=2.0), [s])[..., 0].astype(float)
    ys, xs = np.mgrid[0:400, 0:400]
    centroid = np.array([np.sum(xs * warped), np.sum(ys * warped)]) / np.sum(warped)
    assert np.allclose(centroid, W.warp_points(dot, [s])[0], atol=0.05)
    assert not np.allclose(centroid, dot[0], atol=0.5)  # it did move


class BlobLandmarker:
    """A perfect landmark model of blob images: each landmark is the centroid of the blob
    nearest to where it was in the unwarped crop (``hints``, crop pixels)."""

    num_landmarks = 68
    path = ""

    def __init__(self, hints: np.ndarray, input_size: int):
        self.hints, self.input_size = hints, input_size

    def predict(self, crops):
        import cv2
        from scipy import ndimage

        out = []
        for crop in np.asarray(crops):
            gray = crop[..., 0].astype(np.float64)
            n, labels = cv2.connectedComponents((gray > 40).astype(np.uint8))
            cents = np.array(ndimage.center_of_mass(gray, labels, range(1, n)))[:, ::-1]
            near = np.argmin(np.linalg.norm(self.hints[:, None] - cents[None], axis=2), axis=1)
            out.append(cents[near])
        return np.stack(out), np.ones((len(out), 68))


def test_known_answer_of_a_perfect_model_is_slope_one():
    from benchmarks.known_answer import face_changes
    from fas_tf.framing import crop_box, cut_square

    gt = frontal(scale=2.2) + np.array([-40.0, 30.0])
    image = blob_image(gt)
    cx, cy, side = crop_box(gt)
    _, matrix = cut_square(image, cx, cy, side, 256)
    hints = gt @ matrix[:, :2].T + matrix[:, 2]
    model = BlobLandmarker(hints, 256)
    for warp, name in (("pfl", "pfl_mean"), ("philtrum", "philtrum"),
                       ("upper_lip", "upper_lip")):  # fmt: skip
        changes = face_changes(image, gt, model, warp, (0.85, 0.92, 1.08, 1.15))
        points = [] if warp == "upper_lip" else [k for k in changes if k.startswith("point_")]
        for key in (name, *points):  # (the inner-lip blobs 62 and 66 of this face overlap)
            pairs = np.array(changes[key])
            slope, _ = A.ols_slope(pairs[:, 0], pairs[:, 1])
            assert slope == pytest.approx(1.0, abs=0.05), (warp, key, pairs)
            assert A.pearson_r(pairs[:, 0], pairs[:, 1]) > 0.99


def test_known_answer_points_show_which_landmark_lags():
    """A model whose upper-lip point 51 stays put: the philtrum's point_51 slope is 0, point_33
    follows in full, and the philtrum's own slope is about half (51 carries half its change)."""
    from benchmarks.known_answer import face_changes, reported
    from fas_tf.framing import crop_box, cut_square

    gt = frontal(scale=2.2) + np.array([-40.0, 30.0])
    image = blob_image(gt)
    _, matrix = cut_square(image, *crop_box(gt), 256)
    hints = gt @ matrix[:, :2].T + matrix[:, 2]

    class Stuck51(BlobLandmarker):
        def predict(self, crops):
            pts, conf = super().predict(crops)
            pts[:, 51] = self.hints[51]
            return pts, conf

    assert reported("philtrum")[-2:] == ("point_33", "point_51")
    changes = face_changes(image, gt, Stuck51(hints, 256), "philtrum", (0.85, 0.92, 1.08, 1.15))
    slope = {k: A.ols_slope(*np.array(changes[k]).T)[0] for k in ("point_33", "point_51",
                                                                 "philtrum")}  # fmt: skip
    assert slope["point_33"] == pytest.approx(1.0, abs=0.05)
    assert abs(slope["point_51"]) < 0.02
    assert 0.35 < slope["philtrum"] < 0.65


def test_known_answer_per_face_slopes_compare_between_arms(tmp_path):
    import json
    import subprocess
    import sys

    import cv2

    from benchmarks.clinical_data import Face
    from benchmarks.known_answer import known_answer
    from fas_tf.framing import crop_box, cut_square

    gt = frontal(scale=2.2) + np.array([-40.0, 30.0])
    image = blob_image(gt)
    cv2.imwrite(str(tmp_path / "f.png"), image)
    _, matrix = cut_square(image, *crop_box(gt), 256)
    model = BlobLandmarker(gt @ matrix[:, :2].T + matrix[:, 2], 256)
    res = known_answer([Face("f", tmp_path / "f.png", gt)], model, ("pfl",),
                       (0.85, 1.15), all_faces=True, log=lambda s: None)["pfl"]["pfl_mean"]
    assert res["per_face"] == {"f": pytest.approx(res["slope"])}
    assert res["slope"] == pytest.approx(1.0, abs=0.05)

    def arm(name: str, slopes: dict[str, float]) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"results": {"pfl": {"pfl_mean": {"per_face": slopes}}}}))
        return str(path)

    b = [arm(f"b{i}", {"x": 0.4 + i / 10, "y": 0.5, "z": 0.3}) for i in range(2)]
    a = [arm(f"a{i}", {"x": 0.7 + i / 10, "y": 0.8, "z": 0.6, "w": 9.0}) for i in range(2)]
    run = subprocess.run([sys.executable, "benchmarks/paired.py", "--known_answer=pfl_mean",
                          "--a=" + ",".join(a), "--b=" + ",".join(b)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert "a: 0.70, 0.73; mean 0.72" in run.stdout  # "w" has no pair and is left out
    assert "a - b: +0.30 [+0.30, +0.30] (95 %, 2 seeds x 3 faces)" in run.stdout
    bad = subprocess.run([sys.executable, "benchmarks/paired.py", "--known_answer=philtrum",
                          "--a=" + a[0], "--b=" + b[0]], capture_output=True, text=True)
    assert bad.returncode != 0 and "per-face slopes of philtrum" in bad.stderr


def test_verdict_reads_sigma_against_the_spread_between_infants():
    pts = frontal(scale=3.0)
    sure = M.measure(pts)["ratios"]["pfl_mean_to_icd"]
    assert sure["verdict"] == "ok" and sure["reason_codes"] == []
    assert sure["sigma"] < 0.5 * S.BETWEEN_INFANT_SD["pfl_mean_to_icd"]
    conf = np.full(68, 0.8)  # landmark sigma 3 % of IOD: below the 25 % relative gate
    res = M.measure(pts, conf)["ratios"]["pfl_mean_to_icd"]
    assert res["verdict"] == "imprecise" and res["reason_codes"] == ["imprecise"]
    assert res["value"] == pytest.approx(sure["value"]) and res["sigma"] > sure["sigma"]
    assert res["sigma"] >= 0.5 * res["spread_between_infants"]
    assert "typical" in res["reasons"][0] and f"{res['sigma']:.3f}" in res["reasons"][0]
    assert M.measure(pts, conf, max_sigma_to_spread=10.0)["ratios"]["pfl_mean_to_icd"][
        "verdict"] == "ok"  # fmt: skip
    assert "verdict" in M.measure(pts, conf)["distances"]["pfl_mean"]  # distances: no spread
    assert M.measure(pts, conf)["distances"]["pfl_mean"]["verdict"] == "ok"


def test_report_csv_and_json_say_why_a_value_is_imprecise(tmp_path):
    from fas_tf import measure
    from fas_tf.data import write_pts
    from fas_tf.measurement import report

    photos = tmp_path / "photos"
    photos.mkdir()
    import cv2

    pts = frontal(scale=3.0) + np.array([100.0, 100.0])
    cv2.imwrite(str(photos / "baby.png"), np.full((800, 1000, 3), 128, np.uint8))
    write_pts(photos / "baby.pts", pts)

    def faces(path):
        return [{"box": None, "landmarks": pts, "confidence": np.full(68, 0.8)}]

    out = tmp_path / "out"
    out.mkdir()
    image, got = measure.process_image(photos / "baby.png", faces, None, M.Thresholds())
    item = {"image": "baby.png", "name": "baby.png", "png": "baby.measure.png",
            "results": [got[0]["result"]]}  # fmt: skip
    report.write_html(out / "report.html", [item])
    page = (out / "report.html").read_text()
    assert S.IMPRECISE_TEXT in page and "class=warn>0." in page
    assert "cannot tell this infant from a typical one: &plusmn; 0.143 vs a usual" in page
    res = got[0]["result"]
    assert "data-verdict=partial" in page  # upper lip / mouth width: not measurable (25 % gate)
    all_measured = {**res, "ratios": {**res["ratios"], "upper_lip_to_mouth_width":
                                      res["ratios"]["pfl_mean_to_icd"]}}  # fmt: skip
    assert report._card_verdict(all_measured) == "imprecise"
    report.write_csv(out / "m.csv", [report.csv_row("baby.png", 1, got[0]["result"])], False)
    row = next(csv.DictReader(open(out / "m.csv", encoding="utf-8")))
    assert row["pfl_mean_to_icd_verdict"] == "imprecise"
    assert "typical" in row["pfl_mean_to_icd_why"] and float(row["pfl_mean_to_icd"]) > 0
    line = report._value_line("PFL/ICD", got[0]["result"]["ratios"]["pfl_mean_to_icd"], True, [])
    assert "IMPRECISE" in line


@needs_infanface
def test_between_infant_sd_reproduces_the_constants():
    from benchmarks.clinical_data import labelled_faces

    faces = labelled_faces(INFANFACE, ",".join(S.CALIBRATION_SETS))
    got = A.between_infant_sd(f.gt for f in faces)
    for name, sd in S.BETWEEN_INFANT_SD.items():
        assert got[name] == pytest.approx(sd, abs=5e-5), name
    assert all(math.isfinite(v) for v in got.values())


def test_retake_moves_the_photo_like_its_points():
    from benchmarks.repeatability import ViewChange, apply_change
    from fas_tf.framing import crop_box

    gt = frontal(scale=2.0) + np.array([-60.0, 40.0])
    dot = gt[30:31]
    image = blob_image(dot, 512, sigma=2.0)
    for change in (ViewChange(degrees=12.0), ViewChange(degrees=-8.0, mirror=True)):
        view, square = apply_change(image, gt, change)
        w = view[..., 0].astype(float)
        ys, xs = np.mgrid[0:512, 0:512]
        got = np.array([np.sum(xs * w), np.sum(ys * w)]) / np.sum(w)
        cx, cy, _ = crop_box(gt)
        a = math.radians(change.degrees)  # cv2: counter-clockwise on screen (y down)
        rel = dot[0] - (cx, cy)
        want = np.array([math.cos(a) * rel[0] + math.sin(a) * rel[1],
                         -math.sin(a) * rel[0] + math.cos(a) * rel[1]]) + (cx, cy)  # fmt: skip
        if change.mirror:
            want[0] = 511 - want[0]
            assert square[0] == pytest.approx(511 - cx)
        assert np.allclose(got, want, atol=0.2), (change, got, want)


class FixedShape:
    """A landmark model that ignores the pixels: always the same (asymmetric) face."""

    num_landmarks, path, input_size = 68, "", 128

    def __init__(self):
        from fas_tf.framing import crop_box

        pts = frontal()
        pts[36, 0] -= 6.0  # the subject's right eye longer than the left
        cx, cy, side = crop_box(pts)
        self.shape = (pts - (cx, cy)) * (128 / side) + 63.5

    def predict(self, crops):
        n = len(crops)
        return np.repeat(self.shape[None], n, 0), np.ones((n, 68))


def test_mirrored_retakes_are_swapped_back_to_the_subjects_sides():
    from benchmarks.repeatability import draw_changes, view_landmarks

    model = FixedShape()
    gt = frontal(scale=2.0) + np.array([-60.0, 40.0])
    image = np.full((512, 512, 3), 90, np.uint8)
    changes = draw_changes(np.random.default_rng(0), 6)
    got = view_landmarks(image, gt, model, changes, refine=0)
    shape = M.raw_measurements(model.shape)
    assert shape["pfl_right_to_icd"] > shape["pfl_left_to_icd"] + 0.1
    for c, (pts, _) in zip(changes, got, strict=True):
        m = M.raw_measurements(pts)
        # a model blind to the pixels answers the same face on the mirror image: swapped back,
        # its right eye is the shape's left eye
        want = shape["pfl_left_to_icd"] if c.mirror else shape["pfl_right_to_icd"]
        assert m["pfl_right_to_icd"] == pytest.approx(want, rel=1e-6), c
        assert m["philtrum_to_face_height"] == pytest.approx(shape["philtrum_to_face_height"])


def test_agreement_of_perfect_landmarks_is_perfect(tmp_path):
    from benchmarks.clinical_agreement import evaluate
    from benchmarks.clinical_data import Face

    rng = np.random.default_rng(3)
    faces, preds = [], {}
    for k in range(12):
        gt = frontal(scale=3.0)
        gt[[36, 45], 0] += rng.normal(0, 4.0, 2) * (-1, 1)  # eye lengths differ between faces
        gt[33, 1] += rng.normal(0, 3.0)  # philtrum too
        faces.append(Face(f"f{k}", tmp_path / f"f{k}.jpg", gt))
        preds[f"f{k}"] = (gt, np.ones(68))
    res = evaluate(faces, preds)
    assert res["detected"] == 12
    for name in ("pfl_mean_to_icd", "philtrum_to_face_height"):
        st = res["measured"][name]
        assert st["n"] == 12 and st["mae"] == pytest.approx(0.0, abs=1e-12)
        assert st["r"] == pytest.approx(1.0) and st["icc_a1"] == pytest.approx(1.0)
        assert st["sd_between"] > 0.005
    labels = res["sides"]["labels: PFL/OCD right vs left"]
    model = res["sides"]["model: PFL/OCD right vs left"]  # the model is the labels
    assert labels["r"] == model["r"] and labels["n"] == model["n"]
    assert labels["n"] == 12 and -1.0 <= labels["r"] <= 1.0


def test_labelled_faces_leave_out_the_listed_stems(tmp_path):
    from benchmarks.clinical_data import labelled_faces
    from fas_tf.errors import DataError, UsageError

    for k in range(3):
        (tmp_path / f"f{k}.jpg").write_bytes(b"")  # only listed, never decoded here
        np.savetxt(tmp_path / f"f{k}.pts", frontal(), header="version: 1\nn_points: 68\n{",
                   footer="}", comments="")  # fmt: skip
    listing = tmp_path / "errors.txt"
    listing.write_text("# wrong labels\nf1.jpg\nnot_here\n")
    assert [f.stem for f in labelled_faces(tmp_path)] == ["f0", "f1", "f2"]
    assert [f.stem for f in labelled_faces(tmp_path, exclude=listing)] == ["f0", "f2"]
    listing.write_text("f0\nf1\nf2\n")
    with pytest.raises(UsageError, match="no labelled faces"):
        labelled_faces(tmp_path, exclude=listing)
    with pytest.raises(DataError, match="missing.txt"):
        labelled_faces(tmp_path, exclude=tmp_path / "missing.txt")
