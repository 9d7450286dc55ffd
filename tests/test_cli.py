"""The command lines end to end: bad input, training, evaluation, resume after kill -9."""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fas_tf.data import read_pts, write_pts
from tests.conftest import TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}


def python(*argv, timeout=600):
    """``python ARGV...`` from the repository, output captured as text."""
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=ENV, timeout=timeout,
        cwd=REPO,
    )


def run(module, *args, timeout=600):
    return python("-m", module, *args, timeout=timeout)


def copy_faces(src: Path, dst: Path, count: int) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    images = []
    for jpg in sorted(src.glob("demo_*.jpg"))[:count]:
        for p in (jpg, jpg.with_suffix(".pts")):
            (dst / p.name).write_bytes(p.read_bytes())
        images.append(dst / jpg.name)
    return images


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def break_truncated(p):
    p.write_bytes(p.read_bytes()[:200])


def break_pts_garbled(p):
    p.with_suffix(".pts").write_text("version: 1\nn_points: 68\n{\n1 2\nbanana\n}\n")


def break_pts_count(p):
    write_pts(p.with_suffix(".pts"), read_pts(p.with_suffix(".pts"))[:60])


def break_pts_nan(p):
    pts = read_pts(p.with_suffix(".pts"))
    pts[10, 0] = np.inf
    write_pts(p.with_suffix(".pts"), pts)


def break_pts_outside(p):
    write_pts(p.with_suffix(".pts"), read_pts(p.with_suffix(".pts")) + 5000)


def break_pts_missing(p):
    p.with_suffix(".pts").unlink()


@pytest.mark.parametrize(
    "breaker, needle",
    [
        (break_truncated, "cannot decode image"),
        (break_pts_garbled, "garbled"),
        (break_pts_count, "60"),
        (break_pts_nan, "NaN or inf"),
        (break_pts_outside, "far outside"),
        (break_pts_missing, "no landmark file"),
    ],
)
def test_bad_sample_is_fatal_with_strict_and_nothing_is_written(
    tmp_path, demo_faces, breaker, needle
):
    images = copy_faces(demo_faces, tmp_path / "data", 4)
    breaker(images[1])
    out = tmp_path / "out"
    result = run("fas_tf.train", f"--data={tmp_path / 'data'}", f"--output_dir={out}", "--strict")
    assert_one_line_error(result, images[1].stem, needle)
    assert not out.exists()


def test_dataset_with_no_usable_sample(tmp_path, demo_faces):
    images = copy_faces(demo_faces, tmp_path / "data", 2)
    for p in images:
        break_pts_nan(p)
    result = run("fas_tf.train", f"--data={tmp_path / 'data'}", f"--output_dir={tmp_path / 'o'}")
    assert_one_line_error(result, "no usable samples")
    assert not (tmp_path / "o").exists()


def test_empty_folder_missing_path_and_unwritable_output(tmp_path, demo_faces):
    (tmp_path / "empty").mkdir()
    result = run("fas_tf.train", f"--data={tmp_path / 'empty'}", f"--output_dir={tmp_path / 'o'}")
    assert_one_line_error(result, "empty", "no images found")
    result = run("fas_tf.train", f"--data={tmp_path / 'nope'}", f"--output_dir={tmp_path / 'o'}")
    assert_one_line_error(result, "nope", "no such file")
    (tmp_path / "file").write_text("x")
    result = run("fas_tf.train", f"--data={demo_faces}", f"--output_dir={tmp_path / 'file' / 'o'}")
    assert_one_line_error(result, "file", "not writable")
    result = run("fas_tf.evaluate", f"--model={tmp_path / 'missing.keras'}", f"--data={demo_faces}")
    assert_one_line_error(result, "missing.keras", "no such model file")


def history_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, demo_faces):
    """Three epochs with a random FaceNet teacher on 12 synthetic faces."""
    out = tmp_path_factory.mktemp("run") / "out"
    result = run(
        "fas_tf.train", f"--data={demo_faces}", f"--val_data={demo_faces}", f"--output_dir={out}",
        "--teacher=facenet", "--teacher_weights=random", "--epochs=3", "--batch_size=4",
        "--input_size=64", "--student=mobilenetv2", "--learning_rate=3e-3", "--verbose=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_training_writes_run_and_loss_goes_down(trained_run):
    out, result = trained_run
    assert "RANDOM weights" in result.stdout
    for name in ("student.keras", "config.json", "metrics.json", "history.csv"):
        assert (out / name).is_file(), name
    assert (out / "logs").is_dir() and (out / "checkpoints" / "student_last.keras").is_file()
    rows = history_rows(out / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for term in ("cls_loss", "feat_loss", "sa_loss", "ca_loss", "heatmap_loss", "nme", "val_nme"):
        assert term in rows[0], term
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    config = json.loads((out / "config.json").read_text())
    assert config["teacher"]["name"] == "facenet" and config["teacher"]["pretrained"] is False
    assert config["config"]["epochs"] == 3 and "tensorflow" in config["versions"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["val"]["nme"] < 10
    # the last epoch's val_nme is the final validation: same faces, same decoding
    assert float(rows[-1]["val_nme"]) == pytest.approx(metrics["val"]["nme"], rel=1e-4)


def test_evaluate_cli_reports_and_writes(trained_run, demo_faces, tmp_path):
    out, _ = trained_run
    result = run(
        "fas_tf.evaluate", f"--model={out / 'student.keras'}", f"--data={demo_faces}",
        f"--output={tmp_path / 'm.json'}", f"--plot={tmp_path / 'ced.png'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("NME ") and line.endswith("n=12"), line
    metrics = json.loads((tmp_path / "m.json").read_text())
    for key in ("nme", "fr_08", "fr_10", "auc_10", "n", "per_landmark", "subsets"):
        assert key in metrics
    assert len(metrics["per_landmark"]) == 68 and metrics["n"] == 12
    assert (tmp_path / "ced.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["flip"] is False
    (tmp_path / "wrong_labels.txt").write_text("demo_0002.jpg\ndemo_0005  # off the face\n")
    flipped = run(
        "fas_tf.evaluate", f"--model={out / 'student.keras'}", f"--data={demo_faces}", "--flip",
        "--upright", f"--output={tmp_path / 'flip.json'}",
        f"--exclude={tmp_path / 'wrong_labels.txt'}",
    )
    assert flipped.returncode == 0, flipped.stderr[-2000:]
    with_flip = json.loads((tmp_path / "flip.json").read_text())
    assert with_flip["flip"] is True and with_flip["n"] == 10
    assert set(metrics["images"]) - set(with_flip["images"]) == {"demo_0002", "demo_0005"}
    assert with_flip["upright"] is True and with_flip["refine"] == 1
    assert metrics["upright"] is False and metrics["refine"] == 0
    plain = dict(zip(metrics["images"], metrics["per_face"], strict=True))
    assert with_flip["per_face"] != [plain[s] for s in with_flip["images"]]  # other crops
    missing = run("fas_tf.evaluate", f"--model={out / 'student.keras'}", f"--data={demo_faces}",
                  f"--exclude={tmp_path / 'nope.txt'}")
    assert_one_line_error(missing, "nope.txt: cannot read the exclusion list")


def test_existing_run_needs_resume(trained_run, demo_faces):
    out, _ = trained_run
    result = run("fas_tf.train", f"--data={demo_faces}", f"--output_dir={out}")
    assert_one_line_error(result, "--resume")


def test_resume_after_kill_continues_from_last_epoch(tmp_path, demo_faces):
    out = tmp_path / "run"
    args = [
        sys.executable, *TINY_TRAIN, f"--data={demo_faces}", f"--output_dir={out}",
        "--teacher=none", "--epochs=12", "--batch_size=4", "--input_size=64", "--alpha=0.35",
        "--student=mobilenetv2", "--head_channels=16", "--verbose=2",
    ]
    log = tmp_path / "first.log"  # a file, not a pipe nobody reads (a full pipe blocks training)
    with open(log, "wb") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=ENV, cwd=REPO)
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if (out / "history.csv").exists() and len(history_rows(out / "history.csv")) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before the kill: " + log.read_text()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # An epoch's history row is written before its backup: the kill may fall between them.
    backed_up = json.loads((out / "checkpoints" / "backup" / "training_metadata.json")
                           .read_text())["epoch"]
    assert backed_up in (len(history_rows(out / "history.csv")),
                         len(history_rows(out / "history.csv")) - 1)
    assert not (out / "student.keras").exists()
    result = python(*TINY_TRAIN, f"--output_dir={out}", "--resume", "--verbose=2",
                    f"--data={demo_faces}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Epoch {backed_up}/12" not in result.stdout
    assert f"Epoch {backed_up + 1}/12" in result.stdout
    epochs = [int(r["epoch"]) for r in history_rows(out / "history.csv")]
    assert epochs == list(range(12))
    assert (out / "student.keras").is_file()


def run_hashes(folder):
    """sha256 of every file under ``folder`` (the run is unchanged iff this is equal)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_of_a_finished_run_touches_nothing(trained_run, demo_faces):
    out, _ = trained_run
    before = run_hashes(out)
    result = run("fas_tf.train", f"--output_dir={out}", "--resume", f"--data={demo_faces}",
                 "--learning_rate=3e-3")  # a given flag equal to the saved value is fine
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{out}: already finished (3 epochs); nothing to do" in result.stdout
    assert "Epoch" not in result.stdout
    assert run_hashes(out) == before


@pytest.mark.parametrize("flag, needles", [
    ("--learning_rate=0.05", ["--learning_rate=0.05 differs from 0.003 saved in"]),
    ("--epochs=5", ["--epochs=5 differs from 3 saved in", "cannot be extended"]),
    ("--teacher=none", ["--teacher=none differs from facenet saved in"]),
])
def test_resume_with_a_different_flag_names_it_and_touches_nothing(
    trained_run, demo_faces, flag, needles
):
    out, _ = trained_run
    before = run_hashes(out)
    result = run("fas_tf.train", f"--output_dir={out}", "--resume", flag)
    assert result.returncode == 2
    assert_one_line_error(result, *needles, str(out / "config.json"))
    assert run_hashes(out) == before


@pytest.mark.parametrize("flag, message", [
    ("--batch_size=0", "--batch_size must be >= 1, got 0"),
    ("--epochs=0", "--epochs must be >= 1, got 0"),
    ("--lambda_feat=-5", "--lambda_feat must be >= 0, got -5.0"),
    ("--lambda_coord=-1", "--lambda_coord must be >= 0, got -1.0"),
    ("--learning_rate=0", "--learning_rate must be > 0, got 0.0"),
    ("--learning_rate=nan", "--learning_rate must be > 0, got nan"),
    ("--input_size=48", "--input_size must be a multiple of 32, >= 32, got 48"),
    ("--input_size=0", "--input_size must be a multiple of 32, >= 32, got 0"),
    ("--train_limit=0", "--train_limit must be >= 1, got 0"),
    ("--sigma=0", "--sigma must be > 0, got 0.0"),
    ("--rotation=200", "--rotation must be in [0, 180] degrees, got 200.0"),
    ("--seed=-1", "--seed must be in [0, 2**32), got -1"),
    ("--teacher_cache=-1", "--teacher_cache must be >= 0, got -1"),
])
def test_out_of_range_flag_is_a_usage_error_before_tensorflow(tmp_path, demo_faces, flag, message):
    out = tmp_path / "o"
    result = subprocess.run(  # -X importtime lists every module imported, on stderr
        [sys.executable, "-X", "importtime", "-m", "fas_tf.train", f"--data={demo_faces}",
         f"--output_dir={out}", flag],
        capture_output=True, text=True, env=ENV, cwd=REPO, timeout=120,
    )
    assert result.returncode == 2
    assert_one_line_error(result)
    assert f"error: {message}" in result.stderr.splitlines()
    assert "| tensorflow" not in result.stderr
    assert not out.exists()


def test_library_rejects_the_same_values(tmp_path):
    from fas_tf.errors import UsageError
    from fas_tf.training.config import TrainConfig
    from fas_tf.training.loop import train

    with pytest.raises(UsageError, match="--batch_size must be >= 1, got 0"):
        train(TrainConfig(output_dir=str(tmp_path / "o"), batch_size=0))
    assert not (tmp_path / "o").exists()


def five_point_copy(src: Path, dst: Path, count: int) -> Path:
    """The demo faces with 5 landmarks each (eye corners, nose tip, mouth corners)."""
    for image in copy_faces(src, dst, count):
        pts = read_pts(image.with_suffix(".pts"))
        write_pts(image.with_suffix(".pts"), pts[[36, 45, 30, 48, 54]])
    return dst


def test_evaluate_68_point_model_on_5_point_data(trained_run, demo_faces, tmp_path):
    out, _ = trained_run
    data = five_point_copy(demo_faces, tmp_path / "five", 3)
    result = run("fas_tf.evaluate", f"--model={out / 'student.keras'}", f"--data={data}")
    assert result.returncode == 2
    assert_one_line_error(result, "student.keras: the model predicts 68 landmarks, the data has 5")


def test_corrupt_keras_file_is_named_by_evaluate_and_export(trained_run, demo_faces, tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"this is not a keras archive")
    result = run("fas_tf.evaluate", f"--model={garbage}", f"--data={demo_faces}")
    assert_one_line_error(result, f"{garbage}: not a readable Keras model (not a zip archive)")
    truncated = tmp_path / "truncated.keras"
    whole = (trained_run[0] / "student.keras").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    result = run("export", f"--model={truncated}", f"--output={tmp_path / 'm.tflite'}",
                 "--quantize=float32", f"--val_data={demo_faces}")
    assert_one_line_error(result, f"{truncated}: not a readable Keras model (")
    assert result.returncode == 2 and not (tmp_path / "m.tflite").exists()


def test_skipped_samples_summary_goes_to_stderr(trained_run, demo_faces, tmp_path):
    out, _ = trained_run
    images = copy_faces(demo_faces, tmp_path / "data", 4)
    break_pts_nan(images[2])
    result = run("fas_tf.evaluate", f"--model={out / 'student.keras'}",
                 f"--data={tmp_path / 'data'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith("NME ") and "skipped" not in result.stdout
    assert f"skipped 1 of 4: {images[2]}" in result.stderr
    result = run("fas_tf.train", f"--data={tmp_path / 'data'}", f"--output_dir={tmp_path / 'o'}",
                 "--regularizers=bogus", "--student=mobilenetv2")  # fails before training
    assert_one_line_error(result, "--regularizers")
    assert "skipped 1 of 4" in result.stderr and "skipped" not in result.stdout


def test_written_files_get_the_umask_mode(trained_run, tmp_path):
    from fas_tf import cli

    out, _ = trained_run
    modes = {n: (out / n).stat().st_mode & 0o777
             for n in ("config.json", "metrics.json", "student.keras", "history.csv")}
    assert len(set(modes.values())) == 1, modes  # atomic writes look like any other file
    old = os.umask(0o027)
    try:
        cli.write_json(tmp_path / "m.json", {"a": 1})
        with cli.atomic_path(tmp_path / "b.bin") as tmp:
            Path(tmp).write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "m.json"]


SLOW_WRITER = r"""
import sys, time
from fas_tf import cli
def main(argv):
    with cli.atomic_path(sys.argv[1]) as tmp:
        open(tmp, "wb").write(b"half")
        time.sleep(60)
cli.run(main)
"""


def test_sigterm_leaves_no_temp_file_and_one_line(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(tmp_path / "out.bin")],
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".out.bin.*.tmp")):
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.bin.*.tmp")), "the writer never started"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert stderr.strip() == "error: terminated (SIGTERM)"
    assert list(tmp_path.iterdir()) == []


MIRRORED = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from fas_tf.data import load_faces, make_dataset
from fas_tf.landmarks import layout_for
from fas_tf.model import RegularizedLandmarkModel
from fas_tf.student import build_student
from fas_tf.training.distributed import make_strategy
from tests.conftest import tiny_teacher
keras.utils.set_random_seed(0)
strategy = make_strategy("mirrored")
faces = load_faces(sys.argv[1], input_size=64)
ds = make_dataset(faces, layout_for(68), 64, batch_size=4, training=True, seed=0)
with strategy.scope():
    teacher = tiny_teacher()
    model = RegularizedLandmarkModel(build_student(input_size=64), teacher)
    model.compile(keras.optimizers.Adam(3e-3), regularizers="cls,feat,sa,ca")
before = [w.numpy().copy() for w in teacher.model.weights]
hist = model.fit(ds, epochs=3, verbose=0).history
frozen = all((b == w.numpy()).all() for b, w in zip(before, teacher.model.weights))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "frozen": frozen,
                  "history": hist}))
"""


def test_mirrored_strategy_on_two_logical_cpus(demo_faces):
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(demo_faces)], capture_output=True, text=True,
        env=ENV, cwd=REPO, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["frozen"]
    hist = report["history"]
    assert all(np.isfinite(hist[k][-1]) for k in hist)
    assert hist["loss"][-1] < hist["loss"][0]


def test_unknown_student_is_refused_before_anything_is_written(demo_faces, tmp_path):
    from fas_tf.cli import UsageError
    from fas_tf.training.config import TrainConfig
    from fas_tf.training.loop import train

    out = tmp_path / "run"
    config = TrainConfig(output_dir=str(out), data=str(demo_faces), teacher="none",
                         student="resnet50", input_size=32, epochs=1)
    with pytest.raises(UsageError, match="--student: unknown 'resnet50'; choose from "
                                         "mobilenetv2, mobilenetv2_lite, dlib_transfer"):
        train(config, log=lambda *_: None)
    assert not out.exists()


def test_evaluate_reads_a_transfer_student(tmp_path, demo_faces):
    # --student=dlib_transfer saves dlib's custom layer (PadAdd) inside student.keras: a fresh
    # evaluate process must know it without the user importing anything
    from fas_tf.transfer import build_transfer_model

    path = tmp_path / "transfer.keras"
    build_transfer_model(input_size=64, head_channels=8, weights="random").save(path)
    result = run("fas_tf.evaluate", f"--model={path}", f"--data={demo_faces}")
    assert result.returncode == 0, result.stderr
    nme = float(result.stdout.split("NME ")[1].split("%")[0])
    assert 0 < nme < 1000  # an untrained head: some number, scored on every face
    assert f"n={len(list(demo_faces.glob('*.pts')))}" in result.stdout
