"""Seeded runs: the same seed gives the same history, also across a kill and ``--resume``."""

import keras
import pytest

from fas_tf.training.config import TrainConfig

from .conftest import Interrupt, killed_in_epoch, train_tiny


def run(tmp_path, demo_faces, name: str, seed: int, callbacks=(), **changes) -> str:
    config = TrainConfig(
        output_dir=str(tmp_path / name), data=str(demo_faces), val_data=str(demo_faces),
        teacher="dlib", epochs=2,
        batch_size=3, input_size=32, student="mobilenetv2", alpha=0.35, head_channels=8,
        seed=seed, verbose=0,
        train_limit=7, **changes,
    )
    # the tiny student (fast to trace) with a BatchNormalization, whose moving statistics the
    # backup must restore too, and the tiny teacher
    train_tiny(config, teacher=True, batch_norm=True, callbacks=callbacks)
    return (tmp_path / name / "history.csv").read_text()


def test_one_seed_gives_one_history_also_after_a_kill_and_resume(
    tmp_path, demo_faces, monkeypatch
):
    straight = run(tmp_path, demo_faces, "a", seed=1)
    rows = straight.splitlines()
    assert len(rows) == 3 and "cls_loss" in rows[0] and rows[1] != rows[2]
    assert "val_nme" in rows[0]  # inference mode: the BatchNormalization's moving statistics

    loggers = []

    class RecordedCSVLogger(keras.callbacks.CSVLogger):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loggers.append(self)

    monkeypatch.setattr(keras.callbacks, "CSVLogger", RecordedCSVLogger)
    with pytest.raises(Interrupt):
        run(tmp_path, demo_faces, "b", seed=1, callbacks=[killed_in_epoch()])
    assert len((tmp_path / "b" / "history.csv").read_text().splitlines()) == 2
    assert len(loggers) == 1 and loggers[0].csv_file.closed  # history.csv closed on the raise
    resumed = run(tmp_path, demo_faces, "b", seed=1, resume=True)
    assert resumed == straight
    # that another seed gives other crops is tests/test_data.py's
    # test_epochs_are_pure_functions_of_seed_and_epoch (a third training run cost ~45 s here)
