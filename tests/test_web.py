"""The offline screening page (web/) in headless Chromium, compared with Python on real photos.

Skips (one line) without chromium, chromedriver, node/npm. With ``FAS_TF_WEB_MODEL`` set to an
exported ``model.tflite`` of a trained model (its ``model.json`` beside it) and ../shared present,
also runs the page end to end on the 51 google2 faces (``benchmarks/web_parity.py`` prints the
same numbers).
"""

import os
from pathlib import Path

import numpy as np
import pytest

from export.web import (
    DIST,
    Page,
    StaticServer,
    build_page,
    crop_differences,
    crop_squares,
    end_to_end,
    measurement_mismatches,
    missing_tools,
    same_crop_parity,
    square_dict,
)
from fas_tf.data import list_folder, read_attributes, read_pts, stems_in_sets
from fas_tf.framing import crop_box

from .conftest import INFANFACE, export_tiny, needs_blazeface

_missing = missing_tools()
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")
MODEL_ENV = "FAS_TF_WEB_MODEL"


@pytest.fixture(scope="module")
def dist():
    try:
        return build_page()
    except RuntimeError as err:  # e.g. npm ci offline without node_modules
        pytest.skip(str(err))


def labelled(folder: Path, sets: str | None = None, limit: int | None = None):
    """(image path, landmarks) of a labelled folder, optionally only the given image sets."""
    pairs = list_folder(folder)
    if sets:
        stems = stems_in_sets(read_attributes(folder / "attributes.csv"), sets.split(","))
        pairs = [(i, p) for i, p in pairs if Path(i).stem in stems]
    return [(Path(i), read_pts(p)) for i, p in pairs[:limit]]


def photos_of(faces, prefix: str):
    return [(prefix + path.name, path) for path, _ in faces]


def squares_of(faces):
    """The framing-rule square of each face, turned by a few different angles."""
    angles = [0.0, 0.35, -0.2, 0.6]
    return [(*crop_box(pts), angles[i % len(angles)]) for i, (_, pts) in enumerate(faces)]


@pytest.fixture(scope="module")
def exported(tiny_run, demo_faces, tmp_path_factory):
    """The tiny student's int8 and float32 exports; mode -> ExportResult."""
    return export_tiny(tiny_run, demo_faces, tmp_path_factory.mktemp("web"), ["int8", "float32"])


@pytest.fixture(scope="module")
def turned(demo_faces, tmp_path_factory):
    """A demo face stored turned a quarter with EXIF orientation 6 (upright when displayed)."""
    from PIL import Image

    path, pts = labelled(demo_faces, limit=1)[0]
    out = tmp_path_factory.mktemp("exif") / "turned.jpg"
    with Image.open(path) as im:
        exif = im.getexif()
        exif[0x0112] = 6  # Orientation: rotate 90 CW to display
        im.transpose(Image.Transpose.ROTATE_90).save(out, exif=exif, quality=95)
    return out, pts


@pytest.fixture(scope="module")
def served(dist, exported, demo_faces, turned):
    """The build folder with the int8 and float32 exports and the photos mounted."""
    mounts = {"/int8/": exported["int8"].tflite_path.parent,
              "/float32/": exported["float32"].tflite_path.parent, "/demo/": demo_faces,
              "/exif/": turned[0].parent}
    if INFANFACE.is_dir():
        mounts["/infanface/"] = INFANFACE
    with StaticServer(dist, mounts) as server:
        yield server


def test_page_ships_the_detector_model_json_was_calibrated_for(dist):
    import hashlib

    from export.convert import BLAZEFACE_MODEL

    shipped = dist / "detector" / BLAZEFACE_MODEL["file"]
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == BLAZEFACE_MODEL["sha256"]


@needs_blazeface
def test_page_detector_finds_the_boxes_of_fas_tf_detection(served, demo_faces):
    """The page's BlazeFace (npm file, JS decoding) = fas_tf.detection's (wheel file, Python)."""
    from fas_tf.data import load_image
    from fas_tf.detection.blazeface import BlazeFace

    python = BlazeFace("short")
    photos = photos_of(labelled(demo_faces, limit=3), "/demo/")
    if INFANFACE.is_dir():
        photos += photos_of(labelled(INFANFACE, "google2", limit=6), "/infanface/")
    compared = 0
    with Page(served.url) as page:
        for url, path in photos:
            ours = page.call("detectUrl", url)
            theirs = python.detect(load_image(path))
            assert len(ours) == len(theirs), url
            for o, (box, score, _) in zip(ours, theirs, strict=True):
                shift = np.subtract([o["x"], o["y"], o["w"], o["h"]], box)
                assert np.abs(shift).max() < 0.01 * max(box[2], box[3])
                assert abs(o["score"] - score) < 0.01
                compared += 1
    assert compared >= 3


def test_page_decodes_and_crops_bit_for_bit_as_python(served, demo_faces, turned):
    """The page's decoded photo equals fas_tf.data.load_image's and its crop equals
    fas_tf.framing.cut_square's, value for value, on real photos (every third InfAnFace-train
    photo when ../shared is there), EXIF-turned, turned squares and squares off the photo."""
    from fas_tf.data import load_image

    faces = labelled(demo_faces, limit=4) + [turned]
    photos = photos_of(faces[:-1], "/demo/") + [("/exif/" + turned[0].name, turned[0])]
    if INFANFACE.is_dir():
        real = labelled(INFANFACE)[::3]
        faces += real
        photos += photos_of(real, "/infanface/")
    shapes = [load_image(path).shape[:2] for _, path in photos]
    squares = crop_squares([pts for _, pts in faces], shapes, np.random.default_rng(0))
    with Page(served.url) as page:
        numbers = crop_differences(page, photos, squares, 128)
    assert numbers["crops"] == 6 * len(photos) and numbers["photos"] == len(photos)
    assert numbers["decoded_differing"] == 0, numbers
    assert numbers["crop_differing"] == 0, numbers


@pytest.mark.parametrize("mode,flip", [("int8", True), ("int8", False), ("float32", True)])
def test_page_landmarks_equal_python_on_the_same_square(served, exported, demo_faces, turned,
                                                        mode, flip):
    """The page's landmarks equal fas_tf.inference's on the same square, with the page's
    test-time flip (its default, as fas_tf.measure's) equal to FlipAveraged's."""
    faces = labelled(demo_faces, limit=8)
    photos = photos_of(faces, "/demo/") + [("/exif/" + turned[0].name, turned[0])]
    with Page(f"{served.url}?model=/{mode}/model.json") as page:
        assert "not a diagnosis" in page.driver.page_source
        assert page.text("model-status").startswith(f"model.tflite ({mode},")
        assert page.driver.find_element("id", "flip").is_selected()  # flip by default
        numbers = same_crop_parity(page, exported[mode].tflite_path, photos,
                                   squares_of(faces + [turned]), flip=flip)
    # the page cuts cv2.warpAffine's crop bit for bit, and the two LiteRT runtimes agree
    assert numbers["max_crop_pixel_diff"] == 0.0, numbers
    assert numbers["runtime_max_px"] <= 0.01, numbers
    assert numbers["max_px"] <= 0.01, numbers


def test_page_measurements_equal_python(served, demo_faces):
    """Ratios, uncertainties, pose and verdicts of the page equal fas_tf.measurements."""
    rng = np.random.default_rng(0)
    faces = labelled(demo_faces, limit=4)
    if INFANFACE.is_dir():  # real faces: turned, tilted, crying, small (many gates fire)
        faces += labelled(INFANFACE)[::6]
    cases = [(pts, conf) for _, pts in faces for conf in (np.ones(68), rng.uniform(0.35, 1, 68))]
    with Page(f"{served.url}?model=/int8/model.json") as page:
        # the page's loop measures its own landmarks and confidences with that same function
        # (the tiny model's landmarks are no face: their pose fit has several minima, where the
        # page and OpenCV may settle in different ones)
        r = page.call("analyzeUrl", "/demo/" + faces[0][0].name, {"square": square_dict(
            (*crop_box(faces[0][1]), 0.0))})
        assert r["measurement"] == page.call("measure", r["second"]["points"],
                                             r["second"]["confidence"])
        for pts, conf in cases:
            assert measurement_mismatches(page, pts, conf) == []
        verdicts = {e["verdict"] for pts, conf in cases
                    for e in page.call("measure", pts.tolist(), conf.tolist())["ratios"].values()}
    # every verdict was compared (the synthetic faces are too small to measure)
    assert verdicts == ({"ok", "imprecise", "not measurable"} if INFANFACE.is_dir()
                        else {"not measurable"})


def test_page_works_offline_and_requests_only_its_own_files(dist, exported, demo_faces):
    photo = labelled(demo_faces, limit=1)[0][0]
    server = StaticServer(dist, {"/int8/": exported["int8"].tflite_path.parent})
    try:
        with Page(f"{server.url}?model=/int8/model.json") as page:
            page.wait_for("navigator.serviceWorker.controller")
            server.stop()
            server = None
            page.reload()  # served by the page's service worker: no server any more
            page.driver.find_element("id", "photo").send_keys(str(photo))
            page.wait_for("!document.getElementById('results').hidden")
            assert page.text("status").startswith("face found"), page.text("status")
            assert "not a diagnosis" in page.text("results") + page.driver.page_source
            origin = page.driver.current_url.split("?")[0]
            foreign = [u for u in page.network_requests()
                       if not u.startswith((origin, "data:", "blob:"))]
    finally:
        if server is not None:
            server.stop()
    assert foreign == []


@pytest.mark.skipif(not (os.environ.get(MODEL_ENV) and INFANFACE.is_dir()),
                    reason=f"set {MODEL_ENV}=trained model.tflite (and ../shared) for google2")
def test_page_end_to_end_on_google2_matches_evaluate():
    from fas_tf.evaluate import evaluate_model
    from fas_tf.inference import exported_with_flip

    model = Path(os.environ[MODEL_ENV])
    faces = labelled(INFANFACE, "google2")
    csv = str(INFANFACE / "attributes.csv")
    flip = not exported_with_flip(model)  # the page flips by default, as fas_tf.measure
    plain, _ = evaluate_model(model, INFANFACE, csv, ["google2"], flip=flip)  # GT-framed
    upright, _ = evaluate_model(model, INFANFACE, csv, ["google2"], upright=True,
                                flip=flip)  # + the loop
    with StaticServer(DIST, {"/model/": model.parent, "/infanface/": INFANFACE}) as server, \
            Page(f"{server.url}?model=/model/{model.with_suffix('.json').name}") as page:
        page_numbers = end_to_end(page, photos_of(faces, "/infanface/"),
                                  np.stack([p for _, p in faces]))
        crops = same_crop_parity(page, model, photos_of(faces, "/infanface/")[:12],
                                 squares_of(faces[:12]))
    assert page_numbers["found"] == len(faces) == 51  # MTCNN finds at most as many
    # the page's detector framing costs at most 0.5 points against GT framing, same loop
    nme = page_numbers["nme_percent"]
    assert abs(nme - 100 * upright["nme"]) <= 0.5, (nme, upright["nme"])
    assert nme <= 100 * plain["nme"] + 0.5, (nme, plain["nme"])
    # the same crops, so the same landmarks
    assert crops["runtime_max_px"] <= 0.01 and crops["max_crop_pixel_diff"] == 0.0, crops
    assert crops["max_px"] <= 0.5, crops


def test_no_face_found_then_a_dragged_box(served, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains

    blank = tmp_path / "no_face.png"
    Image.new("RGB", (320, 240), (90, 90, 90)).save(blank)
    with Page(f"{served.url}?model=/int8/model.json") as page:
        page.driver.find_element("id", "photo").send_keys(str(blank))
        page.wait_for("/No face found/.test(document.getElementById('status').textContent)")
        assert page.driver.find_element("id", "results").get_attribute("hidden") is not None
        canvas = page.driver.find_element("id", "canvas")
        ActionChains(page.driver).move_to_element_with_offset(canvas, -60, -60).click_and_hold() \
            .move_by_offset(100, 110).release().perform()
        page.wait_for("!document.getElementById('results').hidden")
        assert page.text("status").startswith("face from your box"), page.text("status")
