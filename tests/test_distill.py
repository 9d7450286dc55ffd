"""Knowledge distillation from a trained landmark model (``--distill_from``)."""

import dataclasses
import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from fas_tf.cli import sha256_of
from fas_tf.data import load_faces, make_dataset
from fas_tf.errors import UsageError
from fas_tf.heatmaps import decode_heatmaps, render_heatmaps, resample_heatmaps
from fas_tf.inference import load_student
from fas_tf.landmarks import layout_for
from fas_tf.model import DistillSource, RegularizedLandmarkModel
from fas_tf.student import build_student
from fas_tf.training.config import TrainConfig
from fas_tf.training.loop import train

from .conftest import Interrupt, killed_in_epoch, train_tiny
from .test_cli import assert_one_line_error, five_point_copy, run

LAYOUT = layout_for(68)
TINY = {"alpha": 0.35, "head_channels": 8}


def source_student(size: int, seed: int) -> keras.Model:
    """A small student whose inference heatmaps are far from zero, like a trained one's."""
    keras.utils.set_random_seed(seed)
    # momentum 0: one training-mode call sets every BatchNormalization's moving statistics to
    # those of the batch, as after a long training
    student = build_student(input_size=size, bn_momentum=0.0, **TINY)
    layer = student.get_layer("heatmaps")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 300.0, bias])  # initialised at stddev 1e-3
    student(keras.random.uniform((4, size, size, 3), 0, 255, seed=seed), training=True)
    return student


@pytest.fixture(scope="module")
def source_path(tmp_path_factory):
    """A 64 px landmark model saved as fas_tf.train saves ``student.keras``."""
    path = tmp_path_factory.mktemp("source") / "student.keras"
    source_student(64, seed=1).save(path)
    return path


def batch(demo_faces, size: int):
    """One augmented batch of 4 crops of ``size`` px: (images, targets)."""
    ds = make_dataset(load_faces(demo_faces, size), LAYOUT, size, batch_size=4, training=True,
                      seed=0)
    return next(iter(ds))


def heatmap_loss_np(a, b) -> float:
    return float(np.mean(np.sum((np.asarray(a, np.float64) - np.asarray(b)) ** 2, axis=(1, 2))))


def test_distill_loss_is_zero_for_the_source_itself_and_positive_otherwise(
    source_path, demo_faces
):
    images, _ = batch(demo_faces, 64)
    source = DistillSource.load(source_path)
    assert (source.input_size, source.stride, source.heatmap_size) == (64, 4, 16)
    assert source.sha256 == sha256_of(source_path)

    same = load_student(source_path)  # same weights, same geometry
    model = RegularizedLandmarkModel(same, None, distill=source)
    heatmaps = same(images, training=False)["heatmaps"]
    assert float(tf.reduce_max(tf.abs(heatmaps))) > 0.1, "the source's heatmaps are not ~0"
    assert float(model.distill_loss(images, heatmaps)) == 0.0

    other = source_student(64, seed=2)
    model = RegularizedLandmarkModel(other, None, distill=source)
    mine = other(images, training=False)["heatmaps"]
    theirs = source.model(images, training=False)["heatmaps"]
    loss = float(model.distill_loss(images, mine))
    assert loss > 0.1
    assert loss == pytest.approx(heatmap_loss_np(mine, theirs), rel=1e-5)


@pytest.mark.parametrize("size, most, bias", [(32, 0.01, 0.01), (96, 0.75, 0.12)])
def test_resampled_source_blob_stays_where_the_source_put_it(size, most, bias):
    """A 64 px source's 16x16 maps on a 32 px (8x8: average pool) or 96 px (24x24: bilinear)
    student's grid decode to the same crop points, to ``most`` student pixels (bilinear
    upsampling bends the Gaussian: 1/8 of a source heatmap pixel), without a shift (``bias``;
    a wrong pixel-centre convention shifts by 0.25 px)."""
    rng = np.random.default_rng(0)
    points64 = rng.uniform(12, 51, (1, 60, 2)).astype(np.float32)  # off the border cells
    maps = resample_heatmaps(render_heatmaps(points64, 16, 4, 1.5), size // 4)
    assert maps.shape == (1, size // 4, size // 4, 60)
    found, _ = decode_heatmaps(maps, 4)
    error = found.numpy() - ((points64 + 0.5) * (size / 64) - 0.5)  # the same crop points
    assert np.max(np.abs(error)) < most
    assert np.all(np.abs(error.mean(axis=(0, 1))) < bias)


@pytest.mark.parametrize("size", [32, 96])
def test_geometry_mismatch_compares_on_the_students_grid(source_path, demo_faces, size):
    """A 64 px source into a 32 px (8x8 heatmaps) or 96 px (24x24) student (the fit itself is
    in the next test)."""
    source = DistillSource.load(source_path)
    images, _ = batch(demo_faces, size)
    student = source_student(size, seed=3)
    model = RegularizedLandmarkModel(student, None, distill=source)
    resized = tf.image.resize(images, (64, 64), method="bilinear")
    theirs = resample_heatmaps(source.model(resized, training=False)["heatmaps"], size // 4)
    mine = student(images, training=False)["heatmaps"]
    assert float(model.distill_loss(images, mine)) == pytest.approx(
        heatmap_loss_np(mine, theirs), rel=1e-5)


def test_short_fit_lowers_the_distill_loss_and_leaves_the_source_alone(source_path, demo_faces):
    source = DistillSource.load(source_path)
    frozen = [w.numpy().copy() for w in source.model.weights]
    keras.utils.set_random_seed(0)
    plain = RegularizedLandmarkModel(build_student(input_size=32, **TINY), None)
    model = RegularizedLandmarkModel(build_student(input_size=32, **TINY), None, distill=source)
    assert len(model.weights) == len(plain.weights), "the source is in no checkpoint"
    model.compile(keras.optimizers.Adam(3e-3), regularizers=None, distill_weight=5.0)
    ds = make_dataset(load_faces(demo_faces, 32), LAYOUT, 32, batch_size=4, training=True,
                      seed=0)
    logs = model.fit(ds, epochs=4, verbose=0).history
    assert set(logs) == {"loss", "heatmap_loss", "distill_loss", "nme"}
    distill = logs["distill_loss"]
    assert np.all(np.diff(distill) < 0), distill
    assert distill[-1] < 0.8 * distill[0], distill  # measured: 7.60, 6.59, 5.73, 5.00
    assert logs["loss"][-1] == pytest.approx(logs["heatmap_loss"][-1] + 5.0 * distill[-1],
                                             rel=1e-4)
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(frozen, source.model.weights,
                                                             strict=True))


def test_mixed_precision_step(source_path, demo_faces):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        source = DistillSource.load(source_path)
        model = RegularizedLandmarkModel(build_student(input_size=32, **TINY), None,
                                         distill=source)
        model.compile(keras.optimizers.Adam(1e-3), regularizers=None)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        logs = model.fit(tf.data.Dataset.from_tensors(batch(demo_faces, 32)), epochs=1,
                         verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(logs["distill_loss"][0]) and logs["distill_loss"][0] > 0


def test_bad_source_file_is_one_cli_line_and_writes_nothing(tmp_path, demo_faces):
    garbage = tmp_path / "garbage.keras"
    garbage.write_text("not a model")
    for path, needle in ((tmp_path / "missing.keras", "no such model file"),
                         (garbage, "not a readable Keras model")):
        out = tmp_path / "out"
        result = run("fas_tf.train", f"--data={demo_faces}", f"--output_dir={out}",
                     f"--distill_from={path}", "--teacher=none", "--input_size=32",
                     "--student=mobilenetv2")
        assert_one_line_error(result, "--distill_from", str(path), needle)
        assert result.returncode == 2
        assert not out.exists()


def test_wrong_kind_of_model_or_landmark_count_is_refused(tmp_path, demo_faces, source_path):
    image = keras.Input((32, 32, 3))
    other = tmp_path / "classifier.keras"
    keras.Model(image, keras.layers.Dense(2)(keras.layers.Flatten()(image))).save(other)
    config = TrainConfig(output_dir=str(tmp_path / "o"), data=str(demo_faces),
                                      teacher="none", input_size=32, distill_from=str(other))
    with pytest.raises(UsageError, match=r"--distill_from: .*classifier.keras: not a fas_tf "):
        train(config, log=lambda line: None)
    assert not (tmp_path / "o").exists()
    five = five_point_copy(demo_faces, tmp_path / "five", 3)
    config = dataclasses.replace(config, data=str(five), distill_from=str(source_path))
    with pytest.raises(UsageError, match="predicts 68 landmarks, the data has 5"):
        train(config, log=lambda line: None)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="predicts 68 landmarks, the student 5"):
        RegularizedLandmarkModel(build_student(5, 32, **TINY), None,
                                 distill=DistillSource.load(source_path))


def test_run_records_the_source_and_resume_refuses_a_changed_one(
    tmp_path, demo_faces, source_path
):
    out, source = tmp_path / "run", tmp_path / "source.keras"
    source.write_bytes(source_path.read_bytes())
    config = TrainConfig(
        output_dir=str(out), data=str(demo_faces), teacher="none", epochs=2, batch_size=4,
        input_size=32, seed=1, verbose=0, train_limit=4, distill_from=str(source),
        lambda_distill=2.0, student="mobilenetv2", **TINY,
    )
    lines = []
    with pytest.raises(Interrupt):
        train_tiny(config, log=lines.append, callbacks=[killed_in_epoch()])
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["distill_from"] == str(source)
    assert record["config"]["lambda_distill"] == 2.0
    assert record["distill"] == {
        "path": str(source), "sha256": sha256_of(source_path), "input_size": 64,
        "stride": 4, "heatmap_size": 16, "num_landmarks": 68,
    }
    assert any(line.startswith("distill: from") for line in lines)
    history = (out / "history.csv").read_text().splitlines()
    assert "distill_loss" in history[0] and len(history) == 2
    first_header = history[0]

    moved = tmp_path / "elsewhere.keras"
    moved.write_bytes(source.read_bytes())
    resume = {"output_dir": str(out), "resume": True, "verbose": 0}
    with pytest.raises(UsageError, match=re.escape(f"--distill_from={moved} differs from "
                                                   f"{source} saved in")):
        train_tiny(TrainConfig(**resume, distill_from=str(moved)), given={"distill_from"})

    original = source.read_bytes()
    source_student(64, seed=9).save(source)  # the same path, another model
    with pytest.raises(UsageError, match=re.escape(f"--distill_from: {source} has changed")):
        train_tiny(TrainConfig(**resume), given=set())

    source.write_bytes(original)
    metrics = train_tiny(TrainConfig(**resume), given=set())
    assert metrics["epochs"] == 2 and (out / "student.keras").is_file()
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3 and history[0] == first_header
