"""``--resume`` backups (fas_tf.train.backup_and_restore): atomic saves, one-line restore errors."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fas_tf import train as fas_train
from fas_tf.errors import DataError
from fas_tf.train import TrainConfig, backup_and_restore

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
    fas_train.truncate_history(path, 2)  # no file: nothing to do
    assert not path.exists()
    rows = ["epoch,loss\n"] + [f"{e},{1 / (e + 1):.3f}\n" for e in (0, 1, 2, 3)]
    path.write_text("".join(rows))
    fas_train.truncate_history(path, 4)
    assert path.read_text() == "".join(rows)
    fas_train.truncate_history(path, 2)
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


def test_unreadable_backup_on_resume_is_a_data_error_naming_the_file(
    tmp_path, demo_faces, monkeypatch, fast_student
):
    import keras

    out = tmp_path / "run"
    config = TrainConfig(
        output_dir=str(out), data=str(demo_faces), teacher="none", epochs=3, batch_size=4,
        train_limit=4, input_size=64, student="mobilenetv2", alpha=0.35, head_channels=16,
        verbose=0,
    )

    def killed_after_first_epoch(student, path, **cadence):  # after the backup of epoch 1
        def stop(epoch, logs):
            raise RuntimeError("killed")
        return keras.callbacks.LambdaCallback(on_epoch_end=stop)

    monkeypatch.setattr(fas_train, "student_checkpoint", killed_after_first_epoch)
    with pytest.raises(RuntimeError, match="killed"):
        fas_train.train(config, log=lambda line: None)
    monkeypatch.undo()
    weights = out / "checkpoints" / "backup" / "latest.weights.h5"
    assert saved_epoch(weights.parent) == 1
    weights.write_bytes(weights.read_bytes()[:3000])  # torn by a kill mid-write (old Keras)
    resumed = TrainConfig(**{**config.__dict__, "resume": True})
    with pytest.raises(DataError) as err:
        fas_train.train(resumed, log=lambda line: None)
    message = str(err.value)
    assert message.startswith(f"{weights}: cannot restore")
    assert "without --resume into a new --output_dir" in message and "\n" not in message
    assert not (out / "student.keras").exists()

