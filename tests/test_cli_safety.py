"""The CLI tools never lose a user's file, never record a wrong setting, never print a traceback
(issue 39, part A): the output guard of fas_tf.cli and its use by evaluate, export, predict and
measure; flag errors; disk-full names; start-up log lines."""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fas_tf import cli, inference
from fas_tf import measure as measure_cli
from fas_tf import predict as predict_cli
from fas_tf.data import DataError, read_attributes, read_pts, write_pts
from fas_tf.errors import UsageError

from .conftest import REPO


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (the data-loss tests compare before and after)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_module(module: str, *args: str, env_extra: dict | None = None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def only_error_line(result) -> str:
    """The whole stderr must be one ``error:`` line (no TF start-up lines, no absl usage line)."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def student_run(tmp_path_factory):
    """A run folder with an untrained 64-px student and its config.json."""
    from fas_tf.student import build_student

    run = tmp_path_factory.mktemp("run")
    build_student(68, 64, alpha=0.35, head_channels=16).save(run / "student.keras")
    (run / "config.json").write_text('{"config": {"input_size": 64}}\n')
    return run


# ------------------------------------------------------------------ 1, 2: data loss


def test_evaluate_never_writes_over_its_model_or_a_label_file(student_run, demo_faces, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_faces, data)
    run = tmp_path / "run"
    shutil.copytree(student_run, run)
    model = run / "student.keras"
    before = {**hashes(data), **{f"run/{k}": v for k, v in hashes(run).items()}}
    label = data / "demo_0001.pts"
    result = run_module("fas_tf.evaluate", f"--model={model}", f"--data={data}",
                        f"--output={label}", f"--plot={model}")
    # the files first: before the fix both were replaced (a PNG over the model) with exit 0
    assert {**hashes(data), **{f"run/{k}": v for k, v in hashes(run).items()}} == before
    assert result.returncode == 2
    line = only_error_line(result)
    assert line == (f"error: {label}: exists and is not an earlier fas_tf.evaluate.metrics JSON; "
                    "not replaced (move it away or choose another output name)")
    with pytest.raises(UsageError, match="is an input of this run"):
        cli.check_outputs({model: cli.png_output("fas_tf.evaluate")}, inputs=[model])


def test_evaluate_outputs_are_recognised_on_a_second_run(tmp_path):
    from fas_tf.evaluate import METRICS_OUTPUT, PLOT_OUTPUT, plot_ced

    plot, metrics = tmp_path / "ced.png", tmp_path / "m.json"
    plot_ced({"a": [0.01, 0.03, 0.2]}, plot)
    cli.write_json(metrics, {"format": "fas_tf.evaluate.metrics", "nme": 0.1})
    legacy = tmp_path / "old.json"  # written before outputs carried a format
    legacy.write_text(json.dumps({"nme": 0.1, "per_face": [0.1], "model": "m.keras"}))
    cli.check_outputs({plot: PLOT_OUTPUT, metrics: METRICS_OUTPUT})
    cli.check_outputs({legacy: METRICS_OUTPUT})
    photo = tmp_path / "photo.png"  # a user's PNG is not an earlier plot
    photo.write_bytes(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    with pytest.raises(UsageError, match="photo.png: exists and is not an earlier "
                                         "fas_tf.evaluate PNG"):
        cli.check_outputs({photo: PLOT_OUTPUT})
    with pytest.raises(UsageError, match="named for two outputs"):
        cli.check_outputs([(plot, PLOT_OUTPUT), (f"{tmp_path}/./ced.png", PLOT_OUTPUT)])
    with pytest.raises(UsageError, match="named for two outputs"):  # --output=X --plot=X
        cli.check_outputs([(metrics, METRICS_OUTPUT), (metrics, PLOT_OUTPUT)])
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(UsageError, match="dangling symbolic link"):
        cli.check_outputs({tmp_path / "link.png": PLOT_OUTPUT})


def test_export_never_writes_over_the_runs_config(student_run, demo_faces, tmp_path):
    from export.convert import export_model

    run = tmp_path / "run"
    shutil.copytree(student_run, run)
    before = hashes(run)
    with pytest.raises(UsageError) as err:
        export_model(run / "student.keras", run / "config.tflite", "float32",
                     val_data=str(demo_faces), max_nme_drift=100.0, log=lambda *_: None)
    assert str(err.value) == (f"{run / 'config.json'}: is an input of this run "
                              f"({run / 'config.json'}); choose another output name")
    assert hashes(run) == before
    # a user's .json beside the output is not an earlier model.json either
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    with pytest.raises(UsageError, match="notes.json: exists and is not an earlier "
                                         "fas_tf.landmarks.tflite JSON"):
        export_model(run / "student.keras", tmp_path / "notes.tflite", "float32",
                     val_data=str(demo_faces), max_nme_drift=100.0, log=lambda *_: None)
    assert json.loads((tmp_path / "notes.json").read_text()) == {"mine": 1}


# ------------------------------------------------------------------ 6, 19: silent wrong results
# (18, --flip on a --flip export: tests/test_export.py)


class FakeLandmarker:
    input_size, num_landmarks, path = 64, 68, "fake"

    def predict(self, crops):
        from fas_tf.landmarks import layout_for  # noqa: F401  (68-point layout exists)

        pts = np.stack([np.linspace(10, 50, 68), np.linspace(20, 40, 68)], axis=1)
        return np.repeat(pts[None], len(crops), 0), np.ones((len(crops), 68), np.float32)


def test_predict_upright_alone_is_one_pass_as_in_evaluate(monkeypatch):
    from fas_tf.detection import Face

    corners = np.float64([[20, 20], [80, 20], [80, 80], [20, 80]])
    face = Face("mtcnn", 1.0, 0.0, (50.0, 50.0, 60.0, 0.0), corners, None)
    monkeypatch.setattr(predict_cli, "detect_faces", lambda image, *args: [face])
    calls = []
    real = inference.recrop
    monkeypatch.setattr(inference, "recrop",
                        lambda imgs, model, pts, passes, upright: calls.append((passes, upright))
                        or real(imgs, model, pts, passes, upright))
    image = np.zeros((120, 120, 3), np.uint8)
    predict_cli.predict(image, FakeLandmarker(), refine=0, upright=True)
    assert calls == [(1, True)]
    predict_cli.predict(image, FakeLandmarker(), refine=0, upright=False)
    assert calls == [(1, True)]
    assert predict_cli.refine_passes(0, True) == 1 and predict_cli.refine_passes(2, True) == 2


def test_detection_runs_on_a_bounded_copy_and_maps_faces_back():
    from fas_tf import detection

    seen = []

    class Fake(detection.Detector):
        name, min_score = "mtcnn", 0.5

        def detect(self, image):
            seen.append(image.shape)
            return [detection.RawFace((100.0, 50.0, 200.0, 100.0), 0.99, None)]

    image = np.zeros((3000, 4800, 3), np.uint8)
    faces = detection.find_faces(image, Fake(), angles_deg=())
    assert seen == [(1000, 1600, 3)]
    np.testing.assert_allclose(faces[0].box, (300.0, 150.0, 900.0, 450.0))
    small = detection.find_faces(np.zeros((800, 600, 3), np.uint8), Fake(), angles_deg=())
    assert seen[1] == (800, 600, 3)  # small images untouched
    np.testing.assert_allclose(small[0].box, (100.0, 50.0, 300.0, 150.0))


# ------------------------------------------------------------------ 10, 11, 15, 16: measure, CSV


def measure_inputs(demo_faces: Path, folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for src, name in zip(sorted(demo_faces.glob("*.jpg")), names, strict=False):
        dst = folder / os.fsdecode(name.encode("utf-8", "surrogateescape"))
        shutil.copy(src, dst)
        shutil.copy(src.with_suffix(".pts"), dst.with_suffix(".pts"))
    return folder


def test_measure_a_name_that_is_not_utf8(demo_faces, tmp_path):
    """Item 10: before the fix, UnicodeEncodeError in write_csv, no CSV or report."""
    bad_name = os.fsdecode(b"bad\xff.jpg")
    folder = measure_inputs(demo_faces, tmp_path / "in", [bad_name])
    out = tmp_path / "out"
    with open(tmp_path / "log.txt", "w", encoding="utf-8", errors="backslashreplace") as log:
        assert measure_cli.run([str(folder)], out, use_landmarks=True, log=log) == 0
    rows = (out / "measurements.csv").read_text(encoding="utf-8")
    assert "bad\\xff.jpg" in rows
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "href='bad%FF.measure.png'" in page
    assert (out / os.fsdecode(b"bad\xff.measure.png")).is_file()


def test_measure_far_off_landmarks_and_a_hash_in_a_name(demo_faces, tmp_path):
    """Item 16: far-off points were measured, 1e30 gave a 5-line OpenCV error, '#' broke a link."""
    folder = measure_inputs(demo_faces, tmp_path / "in", ["a#b.jpg", "far.jpg", "huge.jpg"])
    write_pts(folder / "far.pts", read_pts(folder / "far.pts") + 5000)
    pts = read_pts(folder / "huge.pts")
    pts[3] = 1e30
    write_pts(folder / "huge.pts", pts)
    out = tmp_path / "out"
    log = tmp_path / "log.txt"
    with open(log, "w", encoding="utf-8") as f:
        failures = measure_cli.run([str(folder)], out, use_landmarks=True, log=f)
    lines = log.read_text(encoding="utf-8").splitlines()
    assert failures == 2 and len(lines) == 2, lines
    assert all("landmarks lie far outside the 128x128 image" in ln for ln in lines), lines
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "href='a%23b.measure.png'" in page and (out / "a#b.measure.png").is_file()
    assert not list(out.glob("far.*")) and not list(out.glob("huge.*"))


def test_measure_failed_item_leaves_no_file(demo_faces, tmp_path, monkeypatch):
    folder = measure_inputs(demo_faces, tmp_path / "in", ["one.jpg", "two.jpg"])
    real = cli.atomic_path

    def full_disk_for(suffix):
        def atomic_path(path, *args, **kwargs):
            if str(path).endswith(suffix):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real(path, *args, **kwargs)
        return atomic_path

    for suffix in (".measure.png", ".measure.json"):
        out = tmp_path / f"out{suffix}"
        monkeypatch.setattr(cli, "atomic_path", full_disk_for(suffix))
        log = tmp_path / "log.txt"
        with open(log, "w") as f:
            assert measure_cli.run([str(folder)], out, use_landmarks=True, log=f) == 2
        assert sorted(p.name for p in out.iterdir()) == ["measurements.csv", "report.html"]
        assert "No space left on device" in log.read_text()


def test_disk_full_names_the_file(tmp_path):
    """Item 15: an OSError raised while writing names the file; folders made for it are gone."""
    target = tmp_path / "new" / "deeper" / "m.json"
    with pytest.raises(OSError) as err, cli.atomic_path(target):
        raise OSError(errno.ENOSPC, "No space left on device")  # write() names no file
    assert err.value.filename == str(target) and err.value.errno == errno.ENOSPC
    assert not (tmp_path / "new").exists()  # folders made for the file are gone again


def test_existing_user_file_in_the_output_folder_is_never_replaced(demo_faces, tmp_path):
    folder = measure_inputs(demo_faces, tmp_path / "in", ["one.jpg"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("<p>my notes</p>")
    with pytest.raises(UsageError, match="report.html: exists and is not an earlier report.html"):
        measure_cli.run([str(folder)], out, use_landmarks=True)
    assert (out / "report.html").read_text() == "<p>my notes</p>"
    (out / "report.html").unlink()
    assert measure_cli.run([str(folder)], out, use_landmarks=True) == 0
    assert measure_cli.run([str(folder)], out, use_landmarks=True) == 0  # own outputs: replaced


def test_attributes_without_stem_or_not_utf8_is_one_line(tmp_path):
    no_stem = tmp_path / "a.csv"
    no_stem.write_text("name,image_set\nx,google2\n")
    with pytest.raises(DataError) as err:
        read_attributes(no_stem)
    assert str(err.value) == (
        f"{no_stem}: the attributes CSV has no 'stem' column (its header: name, image_set); "
        "the first line must name the columns, one of them 'stem' (image file name without "
        "extension)")
    latin = tmp_path / "b.csv"
    latin.write_bytes("stem,image_set\nb\xe9b\xe9,google2\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_attributes(latin)
    assert str(err.value) == (f"{latin}: the attributes CSV is not UTF-8 text (byte 16); "
                              "save it as UTF-8 CSV")
    excel = tmp_path / "c.csv"  # Excel's "CSV UTF-8" starts with a byte-order mark
    excel.write_bytes("\ufeffstem,image_set\nx,google2\n".encode())
    assert read_attributes(excel)["x"]["image_set"] == "google2"


# ------------------------------------------------------------------ 14, 20: one line, no noise


@pytest.mark.parametrize("module, flag, message", [
    ("fas_tf.predict", "--refine=-1", "flag --refine=-1: -1 is not a non-negative integer"),
    ("export", "--quantize=int4", "flag --quantize=int4: value should be one of"),
    # found by probes after issue 39: every photo was "no face found" / every image failed
    ("fas_tf.predict", "--min_face_score=2",
     "flag --min_face_score=2.0: must be a finite number >= 0 and <= 1"),
    ("fas_tf.measure", "--max_yaw_deg=nan", "flag --max_yaw_deg=nan: must be a finite number >= 0"),
    # NaN turned the parity check off: NaN > drift is never true
    ("export", "--max_nme_drift=nan", "flag --max_nme_drift=nan: must be a finite number >= 0"),
])
def test_bad_flag_value_is_one_line_exit_2_without_startup_noise(module, flag, message):
    result = run_module(module, "--model=m.keras", flag)
    assert result.returncode == 2
    line = only_error_line(result)
    assert line.startswith(f"error: {message}") and line.endswith("(--helpfull lists the flags)")


def test_export_start_up_is_quiet_once_tensorflow_loads(tmp_path, demo_faces):
    """``python -m export`` imported fas_tf after runpy had set sys.argv[0], so TensorFlow's
    start-up lines were on screen (a probe after issue 39)."""
    model = tmp_path / "m.keras"
    model.write_bytes(b"not a zip")
    result = run_module("export", f"--model={model}", f"--output={tmp_path / 'm.tflite'}",
                        "--quantize=float32", f"--val_data={demo_faces}")
    assert result.returncode == 2
    assert only_error_line(result) == (
        f"error: {model}: not a readable Keras model (not a zip archive)")


def test_no_matplotlib_font_cache_line_on_a_first_run(demo_faces, tmp_path):
    """Keras imports pyplot; on a first run matplotlib logs "generated new fontManager", which
    absl printed before the tool's own line (a probe after issue 39)."""
    label = sorted(demo_faces.glob("*.pts"))[0]
    result = run_module("fas_tf.predict", f"--model={label}", f"--output={tmp_path / 'out'}",
                        str(label.with_suffix(".jpg")),
                        env_extra={"MPLCONFIGDIR": str(tmp_path / "fresh")})
    assert result.returncode == 2
    assert only_error_line(result) == f"error: {label}: expected a Keras student saved as .keras"
    assert (tmp_path / "fresh").is_dir()  # matplotlib did build its cache in this run


def test_tensorflow_startup_lines_are_filtered_by_level():
    from fas_tf import _quiet_tf

    lines = (b"WARNING: All log messages before absl::InitializeLog() is called are written to "
             b"STDERR\n"
             b"I0000 00:00:1796608685.926834    4507 cudart_stub.cc:31] Could not find cuda\n"
             b"I0000 00:00:1796608737.205253    7251 cpu_feature_guard.cc:227] This TF\n"
             b"To enable the following instructions: AVX2, in other operations, rebuild\n"
             b"W0000 00:00:1796608737.205253    7251 foo.cc:1] a warning\n"
             b"E0000 00:00:1796608737.205253    7251 foo.cc:2] an error\n"
             b"E0000 00:00:1796609372.814457   18826 cuda_platform.cc:52] failed call to "
             b"cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
             b"my own line\n")

    def filtered(level):
        return subprocess.run([sys.executable, "-I", "-S", "-c", _quiet_tf.FILTER, str(level)],
                              input=lines, capture_output=True, check=True).stdout

    assert filtered(2) == b"E0000 00:00:1796608737.205253    7251 foo.cc:2] an error\nmy own line\n"
    assert filtered(3) == b"my own line\n"
    assert filtered(1).count(b"\n") == 4  # W, both E, own
