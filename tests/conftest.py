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

# BlazeFace's model comes from `python -m fas_tf.detection fetch` (.ci/run does it): without it
# the tests of the default detector are skipped, except in CI where that is a failure.
needs_blazeface = pytest.mark.skipif(
    not os.environ.get("CI") and not (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "fas_tf" / "detectors" / "face_detection_short_range.tflite").is_file(),
    reason="BlazeFace model not fetched (python -m fas_tf.detection fetch)",
)


@pytest.fixture(scope="session")
def demo_faces(tmp_path_factory) -> Path:
    """A folder of 12 synthetic faces (jpg + pts), generated once per session."""
    from fas_tf.demo import make_demo_set

    return make_demo_set(tmp_path_factory.mktemp("demo"), 12, seed=5, size=128)


TINY_SIZE = 64  # input side of the tiny_run student


def fit_tiny_student(faces_dir: Path, run: Path) -> Path:
    """A 64-px, alpha 0.35 student fitted for 80 steps on ``faces_dir``, saved in ``run``.

    (20 steps left its heatmaps so flat that float32 LiteRT and Keras decoded different peaks:
    drift 1.1 points.)
    """
    import keras

    from fas_tf.data import load_faces, make_dataset
    from fas_tf.landmarks import layout_for
    from fas_tf.student import build_student

    keras.utils.set_random_seed(0)
    faces = load_faces(faces_dir, TINY_SIZE)
    student = build_student(68, TINY_SIZE, alpha=0.35, head_channels=16)
    net = keras.Model(student.input, student.output["heatmaps"])
    net.compile(keras.optimizers.Adam(3e-3), "mse")
    ds = make_dataset(faces, layout_for(68), TINY_SIZE, batch_size=12, training=False)
    ds = ds.map(lambda x, y: (x, y["heatmaps"] * 10.0)).cache().repeat()
    net.fit(ds, steps_per_epoch=80, epochs=1, verbose=0)
    student.save(run / "student.keras")
    (run / "config.json").write_text('{"config": {"input_size": 64}}')
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, demo_faces) -> Path:
    """A run folder with the tiny student (:func:`fit_tiny_student` on the demo faces)."""
    return fit_tiny_student(demo_faces, tmp_path_factory.mktemp("run"))


def export_tiny(tiny_run: Path, demo_faces: Path, out: Path, modes) -> dict:
    """The tiny student exported in ``modes`` (int8 calibrated on the demo faces);
    mode -> :class:`export.convert.ExportResult`."""
    from export.convert import export_model

    return {mode: export_model(
        tiny_run / "student.keras", out / mode / "model.tflite", mode,
        representative_data=str(demo_faces), num_calibration=16, max_nme_drift=100.0,
        log=lambda *_: None,
    ) for mode in modes}


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


def tiny_student(
    num_landmarks: int = 68,
    input_size: int = 32,
    alpha: float = 0.35,
    head_channels: int = 8,
    batch_norm: bool = False,
):
    """A small student with the student's outputs (stride-4 heatmaps, ``feat_8/16/32``): a
    dozen variables instead of MobileNetV2's ~200, whose optimizer update dominates the
    tracing of a train step on 2 cores (tests of the training machinery only).
    ``batch_norm``: one BatchNormalization (moving statistics to checkpoint and restore)."""
    import keras

    image = keras.Input((input_size, input_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(image)
    feats = {}
    for stride, ch in ((2, 4), (4, 8), (8, 8), (16, 12), (32, 16)):
        x = keras.layers.Conv2D(ch, 3, strides=2, padding="same", activation="relu")(x)
        if batch_norm and stride == 4:
            x = keras.layers.BatchNormalization(momentum=0.5)(x)
        feats[stride] = x
    heatmaps = keras.layers.Conv2D(num_landmarks, 1, dtype="float32", name="heatmaps")(feats[4])
    outputs = {"heatmaps": heatmaps, **{f"feat_{s}": feats[s] for s in (8, 16, 32)}}
    return keras.Model(image, outputs, name="student")


def tiny_architecture(architecture: str, *args, **kwargs):
    """A student builder (:class:`fas_tf.training.loop.Builders`) that builds
    :func:`tiny_student` whatever the architecture (keyword ``batch_norm`` passes through;
    ``heatmap_stride`` must be the tiny student's 4)."""
    if kwargs.pop("heatmap_stride", 4) != 4:
        raise ValueError("the tiny student has heatmap stride 4 only")
    return tiny_student(*args, **kwargs)


def tiny_builders(teacher: bool = False, batch_norm: bool = False, callbacks=()):
    """:class:`fas_tf.training.loop.Builders` of a run with :func:`tiny_student` for every
    architecture, :func:`tiny_teacher` for every ``--teacher`` (``teacher=True``; else the
    real choice, e.g. none), and ``callbacks`` after the run's own."""
    import functools

    from fas_tf.training.loop import Builders

    return Builders(
        student=functools.partial(tiny_architecture, batch_norm=batch_norm),
        teacher=(lambda config, log: tiny_teacher()) if teacher else None,
        callbacks=tuple(callbacks),
    )


def train_tiny(config, log=lambda line: None, given=None, teacher: bool = False,
               batch_norm: bool = False, callbacks=()):
    """:func:`fas_tf.training.loop.train` with :func:`tiny_builders`."""
    from fas_tf.training.loop import train

    return train(config, log, given, tiny_builders(teacher, batch_norm, callbacks))


# `python -m fas_tf.train` whose runs use the tiny student and teacher (tests/tiny_train.py).
TINY_TRAIN = ["-m", "tests.tiny_train"]


class Interrupt(Exception):
    """Stands for a kill in the middle of training (tests only)."""


def killed_in_epoch(epoch: int = 1):
    """A Keras callback raising :class:`Interrupt` when epoch ``epoch`` (0-based) begins, i.e.
    after the checkpoint of the one before (a kill mid-run, for ``--resume`` tests; pass it in
    :func:`tiny_builders`' ``callbacks``)."""
    import keras

    class Die(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            if e == epoch:
                raise Interrupt()

    return Die()


def pytest_configure(config):
    """Skip Grappler's graph rewrites in-process: they dominate tracing time on 2 CPU cores."""
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
