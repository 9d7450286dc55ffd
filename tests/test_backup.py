"""``--resume`` backups (fas_tf.training.checkpoints.backup_and_restore): atomic saves, one-line
restore errors."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fas_tf.errors import DataError
from fas_tf.training import checkpoints as ckpt
from fas_tf.training.checkpoints import backup_and_restore
from fas_tf.training.config import TrainConfig

from .conftest import train_tiny

HINT = "start again"
X = np.linspace(-1, 1, 32, dtype="float32").reshape(8, 4)
Y = X.sum(axis=1, keepdims=True)


def tiny_model():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), loss="mse")
    return model


def stop_at(epoch: int):
    """A callback ending ``fit`` (like a kill) as epoch ``epoch`` (0-based) begins; it keeps
    the weights of that moment in ``.weights``."""
    import keras

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            if e == epoch:
                self.weights = [w.copy() for w in self.model.get_weights()]
                raise RuntimeError("stopped")

    return Stop()


def fit(model, backup: Path, epochs: int, *extra, every: int = 1):
    return model.fit(X, Y, batch_size=4, epochs=epochs, verbose=0,
                     callbacks=[backup_and_restore(backup, HINT, every, epochs), *extra])


def interrupted_run(backup: Path, after_epochs: int, every: int = 1) -> list[np.ndarray]:
    """Train ``after_epochs`` epochs of 5 with backups, then stop; the weights at the stop."""
    stop = stop_at(after_epochs)
    with pytest.raises(RuntimeError, match="stopped"):
        fit(tiny_model(), backup, 5, stop, every=every)
    return stop.weights


def test_backups_every_k_epochs_and_after_the_last(tmp_path):
    import keras

    backup = tmp_path / "backup"
    seen = []  # the epoch the backup names after each epoch's end
    probe = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(
        saved_epoch(backup) if (backup / "training_metadata.json").exists() else None))
    fit(tiny_model(), backup, 5, probe, every=2)
    assert seen == [None, 2, 2, 4, 5]  # every 2 epochs, and after the last one
    interrupted_run(backup, 3, every=2)
    assert saved_epoch(backup) == 2  # epoch 3 was trained but not backed up
    history = fit(tiny_model(), backup, 5, every=2)
    assert len(history.history["loss"]) == 3  # resumed after epoch 2: epochs 3 to 5 again


def test_truncate_history_keeps_the_epochs_before_the_backup(tmp_path):
    path = tmp_path / "history.csv"
    ckpt.truncate_history(path, 2)  # no file: nothing to do
    assert not path.exists()
    rows = ["epoch,loss\n"] + [f"{e},{1 / (e + 1):.3f}\n" for e in (0, 1, 2, 3)]
    path.write_text("".join(rows))
    ckpt.truncate_history(path, 4)
    assert path.read_text() == "".join(rows)
    ckpt.truncate_history(path, 2)
    assert path.read_text() == "epoch,loss\n0,1.000\n1,0.500\n"


def saved_epoch(backup: Path) -> int:
    return json.loads((backup / "training_metadata.json").read_text())["epoch"]


def test_backup_loads_and_fit_resumes_after_it(tmp_path):
    backup = tmp_path / "backup"
    weights = interrupted_run(backup, 2)
    # Only the two backup files: no temporary file is left beside them.
    assert sorted(p.name for p in backup.iterdir()) == ["latest.weights.h5",
                                                        "training_metadata.json"]
    assert saved_epoch(backup) == 2
    fresh = tiny_model()
    fresh.load_weights(backup / "latest.weights.h5")
    for got, want in zip(fresh.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(got, want)
    history = fit(tiny_model(), backup, 5)
    assert len(history.history["loss"]) == 3  # epochs 3, 4, 5 only
    assert not backup.exists()  # removed when the run finishes


@pytest.mark.parametrize("failing, epoch_after", [("latest.weights.h5", 1),
                                                  ("training_metadata.json", 1)])
def test_crash_between_the_writes_leaves_a_loadable_backup(
    tmp_path, monkeypatch, failing, epoch_after
):
    backup = tmp_path / "backup"
    weights = interrupted_run(backup, 1)
    real_replace = os.replace

    def crash_on(src, dst):
        if Path(dst).name == failing:
            raise OSError("injected crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on)
    with pytest.raises(OSError, match="injected crash"):
        fit(tiny_model(), backup, 5)  # restores epoch 1, trains epoch 2, crashes saving it
    monkeypatch.undo()
    assert sorted(p.name for p in backup.iterdir()) == ["latest.weights.h5",
                                                        "training_metadata.json"]
    # The metadata still names epoch 1 (it is written last); weights are epoch 1's if their
    # rename failed, else epoch 2's: either way a complete, readable file.
    assert saved_epoch(backup) == epoch_after
    fresh = tiny_model()
    fresh.load_weights(backup / "latest.weights.h5")
    same = all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), weights, strict=True))
    assert same is (failing == "latest.weights.h5")
    history = fit(tiny_model(), backup, 5)
    assert len(history.history["loss"]) == 4  # resumed after epoch 1


def test_unreadable_backup_on_resume_is_a_data_error_naming_the_file(tmp_path, demo_faces):
    import keras

    out = tmp_path / "run"
    config = TrainConfig(
        output_dir=str(out), data=str(demo_faces), teacher="none", epochs=3, batch_size=4,
        train_limit=4, input_size=64, student="mobilenetv2", alpha=0.35, head_channels=16,
        verbose=0,
    )

    def stop(epoch, logs):  # after the backup of epoch 1
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train_tiny(config, callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=stop)])
    weights = out / "checkpoints" / "backup" / "latest.weights.h5"
    assert saved_epoch(weights.parent) == 1
    weights.write_bytes(weights.read_bytes()[:3000])  # torn by a kill mid-write (old Keras)
    resumed = TrainConfig(**{**config.__dict__, "resume": True})
    with pytest.raises(DataError) as err:
        train_tiny(resumed, log=lambda line: None)
    message = str(err.value)
    assert message.startswith(f"{weights}: cannot restore")
    assert "without --resume into a new --output_dir" in message and "\n" not in message
    assert not (out / "student.keras").exists()



def tiny_config(out: Path, data: Path, **changes) -> TrainConfig:
    return TrainConfig(
        output_dir=str(out), data=str(data), teacher="none", epochs=3, batch_size=4,
        train_limit=4, input_size=64, student="mobilenetv2", alpha=0.35, head_channels=16,
        verbose=0, **changes,
    )


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    from fas_tf.cli import sha256_of

    return {str(p.relative_to(folder)): sha256_of(p) for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("interrupted", ["before", "after"])
def test_ctrl_c_around_an_epochs_backup_then_resume_gives_the_straight_history(
    tmp_path, demo_faces, monkeypatch, interrupted
):
    """Ctrl-C just before or just after the backup of epoch 2 is written: the resumed
    history.csv equals the straight run's (issue 39 item 5: it missed an epoch)."""
    straight = train_tiny(tiny_config(tmp_path / "straight", demo_faces),
                               log=lambda line: None)
    assert len(straight["final_train"]) > 0
    real = ckpt.backup_and_restore

    def interrupting(*args, **kwargs):
        callback = real(*args, **kwargs)
        save = callback._save_model

        def save_then_interrupt():
            if interrupted == "before" and callback._current_epoch == 2:
                raise KeyboardInterrupt()
            save()
            if interrupted == "after" and callback._current_epoch == 2:
                raise KeyboardInterrupt()

        callback._save_model = save_then_interrupt
        return callback

    out = tmp_path / "run"
    monkeypatch.setattr(ckpt, "backup_and_restore", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(tiny_config(out, demo_faces), log=lambda line: None)
    monkeypatch.setattr(ckpt, "backup_and_restore", real)
    assert saved_epoch(out / "checkpoints" / "backup") == (1 if interrupted == "before" else 2)
    train_tiny(tiny_config(out, demo_faces, resume=True), log=lambda line: None)
    history = (out / "history.csv").read_bytes()
    assert [row.split(b",")[0] for row in history.splitlines()[1:]] == [b"0", b"1", b"2"]
    assert history == (tmp_path / "straight" / "history.csv").read_bytes()  # "\r\n" kept


def test_a_failed_final_write_keeps_the_backup_and_resume_only_finishes(
    tmp_path, demo_faces, monkeypatch
):
    """student.keras cannot be written after the last epoch (e.g. a full disk): the backup of
    the last epoch stays, and --resume writes the outputs without training again."""
    out = tmp_path / "run"
    real = ckpt.save_student

    def full_disk(student, path):
        if path.name == "student.keras":
            raise OSError(28, "No space left on device", str(path))
        real(student, path)

    monkeypatch.setattr(ckpt, "save_student", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train_tiny(tiny_config(out, demo_faces), log=lambda line: None)
    monkeypatch.setattr(ckpt, "save_student", real)
    assert saved_epoch(out / "checkpoints" / "backup") == 3
    assert not (out / "student.keras").exists()
    before = hashes(out)
    lines = []
    metrics = train_tiny(tiny_config(out, demo_faces, resume=True), log=lines.append)
    after = hashes(out)
    assert (out / "student.keras").is_file() and (out / "metrics.json").is_file()
    assert not (out / "checkpoints" / "backup").exists()  # removed once the outputs exist
    for name in ("history.csv", "checkpoints/student_last.keras"):
        assert after[name] == before[name], f"{name}: nothing was trained again"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    last = ckpt.last_history_row(out / "history.csv")
    assert metrics["final_train"] == {k: v for k, v in last.items() if not k.startswith("val_")}
    assert metrics["final_train"]["loss"] > 0


@pytest.mark.parametrize("row", ["\n", "\r\n", "garbled\n", "3,0.5\n"])
def test_truncate_history_drops_blank_and_torn_rows_and_names_a_garbled_one(tmp_path, row):
    path = tmp_path / "history.csv"
    good = "epoch,loss\n0,1.000\n1,0.500\n"
    path.write_text(good + row + "2,0.4\n")
    if row.strip() in ("", "3,0.5"):
        ckpt.truncate_history(path, 2)
        assert path.read_text() == good
        crlf = good.replace("\n", "\r\n").encode()
        path.write_bytes(crlf + b"2,0.4\r\n")  # as CSVLogger writes
        ckpt.truncate_history(path, 2)
        assert path.read_bytes() == crlf
    else:
        with pytest.raises(DataError) as err:
            ckpt.truncate_history(path, 2)
        assert str(err.value) == (f"{path}: line 4 is not a row of epoch results ('garbled'); "
                                  "delete that line and --resume again")
        assert path.read_text() == good + row + "2,0.4\n"
    path.write_text(good + "2,0.3")  # the last row cut short by a kill
    ckpt.truncate_history(path, 5)
    assert path.read_text() == good


def test_a_nan_loss_stops_training_in_one_line_and_writes_no_model(
    tmp_path, demo_faces
):
    out = tmp_path / "run"
    config = tiny_config(out, demo_faces, learning_rate=1e38)
    with pytest.raises(DataError) as err:
        train_tiny(config, log=lambda line: None)
    message = str(err.value)
    assert message.startswith("training stopped in epoch ") and "loss nan" in message.lower()
    assert f"the epochs before it are in {out / 'history.csv'}" in message
    assert "\n" not in message
    assert not (out / "student.keras").exists() and not (out / "metrics.json").exists()
    for line in (out / "history.csv").read_text().splitlines()[1:]:
        assert all(np.isfinite(float(v)) for v in line.split(",")[1:] if v != "NA"), line


def test_json_outputs_stay_strict(tmp_path):
    from fas_tf.cli import write_json

    path = tmp_path / "metrics.json"
    write_json(path, {"loss": float("nan"), "nested": [1.5, float("inf")], "n": 3})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "loss": None, "n": 3, "nested": [1.5, None]}


def test_a_fresh_run_never_overwrites_files_of_its_names(tmp_path, demo_faces):
    """A folder holding a history.csv and metrics.json of the user's (no config.json): a run
    there would append to one and replace the other; it stops before writing anything."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "history.csv").write_text("my,own\n1,2\n")
    (out / "metrics.json").write_text('{"mine": 1}\n')
    before = hashes(out)
    with pytest.raises(ckpt.cli.UsageError) as err:
        train_tiny(tiny_config(out, demo_faces), log=lambda line: None)
    assert str(err.value) == (f"{out}: already holds history.csv, metrics.json, which a run "
                              "would overwrite; use another --output_dir")
    assert hashes(out) == before and sorted(p.name for p in out.iterdir()) == [
        "history.csv", "metrics.json"]


FULL_DISK_RUN = """
import resource, signal, sys
import keras, numpy as np
from fas_tf.training.checkpoints import backup_and_restore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-long write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # a disk that fills mid-write
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(20000)])  # 400 kB of weights
model.compile(keras.optimizers.SGD(0.05), loss="mse")
try:
    model.fit(np.zeros((8, 4)), np.zeros((8, 20000)), epochs=1, verbose=0,
              callbacks=[backup_and_restore(sys.argv[1], "start again")])
except OSError as err:
    print(f"error: {err.filename}: {err.strerror}")
    sys.exit(2)
"""


def test_a_backup_that_cannot_be_written_fails_cleanly(tmp_path):
    """A full disk while the backup is written (probe R18): the error names the file, and no
    HDF5 file is left half-open on the disk, so nothing prints tracebacks at exit."""
    import subprocess
    import sys

    backup = tmp_path / "backup"
    run = subprocess.run([sys.executable, "-c", FULL_DISK_RUN, str(backup)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stdout.strip() == f"error: {backup / 'latest.weights.h5'}: File too large"
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr
    assert list(backup.iterdir()) == []  # no temp file, no torn backup
