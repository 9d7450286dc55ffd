"""Shared test fixtures: paths to ../shared data and small generated datasets."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
INFANFACE = REPO.parent / "shared" / "data" / "infanface-train"

needs_infanface = pytest.mark.skipif(
    not (INFANFACE / "attributes.csv").is_file(),
    reason=f"InfAnFace data not found at {INFANFACE} (licensed data, kept outside the repo)",
)


@pytest.fixture(scope="session")
def demo_faces(tmp_path_factory) -> Path:
    """A folder of 12 synthetic faces (jpg + pts), generated once per session."""
    from fas_tf.demo import make_demo_set

    return make_demo_set(tmp_path_factory.mktemp("demo"), 12, seed=5, size=128)


def tiny_teacher():
    """A small random teacher with the Teacher interface (fast to trace; tests only)."""
    import keras

    from fas_tf.teachers import Teacher

    image = keras.Input((48, 48, 3))
    x = keras.layers.Rescaling(1 / 128.0, offset=-1.0)(image)
    taps = {}
    for stride, ch in ((8, 16), (16, 24), (32, 32)):
        x = keras.layers.Conv2D(ch, 3, strides=2 if stride > 8 else 8, padding="same",
                                activation="relu")(x)
        taps[f"tap_{stride}"] = x
    emb = keras.layers.Dense(12)(keras.layers.GlobalAveragePooling2D()(x))
    emb = keras.layers.UnitNormalization()(emb)
    model = keras.Model(image, {"embedding": emb, **taps})
    return Teacher("tiny", 48, 12, model, pretrained=False, weights_source="random")


class Interrupt(Exception):
    """Stands for a kill in the middle of training (tests only)."""


def killed_in_epoch(real_checkpoint, epoch: int = 1):
    """A ``fas_tf.train.student_checkpoint`` replacement: checkpoints as usual, then raises
    :class:`Interrupt` when epoch ``epoch`` (0-based) begins, i.e. after the backup of the one
    before (a kill mid-run, for ``--resume`` tests)."""
    import keras

    def checkpoint(student, path, **cadence):
        class Die(keras.callbacks.Callback):
            def on_epoch_begin(self, e, logs=None):
                if e == epoch:
                    raise Interrupt()

        return keras.callbacks.CallbackList([real_checkpoint(student, path, **cadence), Die()])

    return checkpoint


def pytest_configure(config):
    """Skip Grappler's graph rewrites in-process: they dominate tracing time on 2 CPU cores."""
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
