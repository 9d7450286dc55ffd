"""RegularizedLandmarkModel: what gets gradients, what stays frozen, precision and XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fas_tf.data import load_faces, make_dataset
from fas_tf.landmarks import layout_for
from fas_tf.model import RegularizedLandmarkModel, parse_regularizers
from fas_tf.student import build_student, parse_student_spec, split_architecture
from fas_tf.teachers import build_facenet

from .conftest import tiny_teacher

SIZE = 64


@pytest.fixture(scope="module")
def teacher():
    return tiny_teacher()


@pytest.fixture(scope="module")
def dataset(demo_faces):
    faces = load_faces(demo_faces, input_size=SIZE)
    return make_dataset(faces, layout_for(68), SIZE, batch_size=4, training=True, seed=0)


def snapshot(variables):
    return [v.numpy().copy() for v in variables]


def changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables, strict=True)]


def test_fit_updates_student_adapters_head_and_never_the_teacher(teacher, dataset):
    keras.utils.set_random_seed(0)
    model = RegularizedLandmarkModel(build_student(input_size=SIZE), teacher)
    model.compile(keras.optimizers.Adam(1e-3), regularizers="cls,feat,sa,ca", run_eagerly=True)
    teacher_before = snapshot(teacher.model.weights)
    adapters = [w for a in model.adapters.values() for w in a.trainable_weights]
    head = model.embedding_head.trainable_weights
    student = model.student.trainable_weights
    before = snapshot(adapters + head + student)
    history = model.fit(dataset.take(2), epochs=1, verbose=0)
    moved = changed(before, adapters + head + student)
    assert all(moved[: len(adapters) + len(head)]), "adapters and embedding head must train"
    assert np.mean(moved[len(adapters) + len(head):]) > 0.9, "the student must train"
    assert not any(changed(teacher_before, teacher.model.weights)), "teacher must stay frozen"
    for name in ("loss", "heatmap_loss", "cls_loss", "feat_loss", "sa_loss", "ca_loss", "nme"):
        assert np.isfinite(history.history[name][-1]), name


def test_gradient_of_each_regularizer_reaches_its_parts(dataset):
    teacher = build_facenet("random")
    images, _ = next(iter(dataset))
    model = RegularizedLandmarkModel(build_student(input_size=SIZE), teacher)
    adapters = [w for a in model.adapters.values() for w in a.trainable_weights]
    head = model.embedding_head.trainable_weights
    student = model.student.trainable_weights
    expected = {"cls": head, "feat": adapters, "sa": [], "ca": adapters}
    for reg, parts in expected.items():
        model.compile("adam", regularizers=reg)
        with tf.GradientTape(persistent=True) as tape:
            out = model.student(images, training=True)
            loss = model._regularizer_losses(out, model.teacher_outputs(images))[reg]
        teacher_grads = tape.gradient(loss, teacher.model.weights)
        assert all(g is None for g in teacher_grads), f"{reg} must not reach the teacher"
        student_grads = tape.gradient(loss, student)
        assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0
                   for g in student_grads), f"{reg} must reach the student"
        part_grads = tape.gradient(loss, parts)
        assert all(g is not None for g in part_grads), f"{reg} must reach its adapter/head"
        del tape


def test_without_teacher_only_heatmap_loss(dataset):
    model = RegularizedLandmarkModel(build_student(input_size=SIZE), None)
    model.compile("adam", regularizers="cls,feat", run_eagerly=True)
    assert model.regularizers == ()
    logs = model.fit(dataset.take(1), epochs=1, verbose=0).history
    assert set(logs) == {"loss", "heatmap_loss", "nme"}
    assert logs["loss"] == logs["heatmap_loss"]


def test_the_coordinate_term_is_logged_and_weighted_in_train_and_validation(demo_faces):
    keras.utils.set_random_seed(0)
    data = make_dataset(load_faces(demo_faces, input_size=32), layout_for(68), 32, batch_size=4,
                        training=True, seed=0).take(2)
    model = RegularizedLandmarkModel(
        build_student(input_size=32, alpha=0.35, head_channels=8), None)
    model.compile(keras.optimizers.Adam(1e-3), regularizers=None, coordinate_weight=5.0,
                  run_eagerly=True)
    logs = model.fit(data, validation_data=data, epochs=1, verbose=0).history
    assert set(logs) == {"loss", "heatmap_loss", "coord_loss", "nme", "val_loss",
                         "val_heatmap_loss", "val_coord_loss", "val_nme"}
    for p in ("", "val_"):
        loss, heatmap, coord = (logs[f"{p}{k}"][-1] for k in ("loss", "heatmap_loss",
                                                              "coord_loss"))
        assert loss == pytest.approx(heatmap + 5.0 * coord, rel=1e-5)
        # the smoothed NME of the decoded landmarks: the nme metric plus at most eps
        assert logs[f"{p}nme"][-1] <= coord <= logs[f"{p}nme"][-1] + 1e-3
    images, targets = next(iter(data))
    with tf.GradientTape() as tape:
        terms, _ = model._label_terms(model.student(images, training=True)["heatmaps"], targets)
    grads = tape.gradient(terms["coord_loss"], model.student.trainable_weights)
    assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_parse_regularizers():
    assert parse_regularizers("cls, sa") == ("cls", "sa")
    assert parse_regularizers("none") == ()
    with pytest.raises(ValueError, match="unknown"):
        parse_regularizers("cls,foo")


def test_student_spec_strings():
    assert split_architecture("0.35:96:32:lite") == ("mobilenetv2_lite", "0.35:96:32")
    assert split_architecture("0.5:128:64") == ("mobilenetv2", "0.5:128:64")
    spec = parse_student_spec("0.35:96:32")
    assert spec == {"alpha": 0.35, "input_size": 96, "head_channels": 32}
    with pytest.raises(ValueError):
        parse_student_spec("0.35:96")


def test_mixed_precision_step(teacher, dataset):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        student = build_student(input_size=SIZE)
        model = RegularizedLandmarkModel(student, teacher)
        model.compile(keras.optimizers.Adam(1e-3), regularizers="sa,ca,feat,cls",
                      run_eagerly=True)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert student.output["feat_8"].dtype == "float16"
        assert student.output["heatmaps"].dtype == "float32"
        logs = model.fit(dataset.take(1), epochs=1, verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(v[-1]) for v in logs.values())


def test_jit_compiled_step(teacher, dataset):
    model = RegularizedLandmarkModel(build_student(input_size=SIZE), teacher)
    model.compile(keras.optimizers.Adam(1e-3), regularizers="sa,ca,feat,cls", jit_compile=True)
    logs = model.fit(dataset.take(1), epochs=1, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in logs.values())


def test_lite_student_drops_the_1280_channel_top_and_feeds_the_regularizers(teacher, dataset):
    full = build_student(input_size=SIZE, alpha=0.35, head_channels=16)
    lite = build_student(input_size=SIZE, alpha=0.35, head_channels=16, lite=True)
    # stride-32 feature: block 16's projection, 320 * 0.35 = 112 channels, not 1280
    assert lite.output["feat_32"].shape[1:] == (2, 2, 112)
    assert full.output["feat_32"].shape[1:] == (2, 2, 1280)
    assert "Conv_1" not in [layer.name for layer in lite.get_layer("backbone").layers]
    # saved: the 112 -> 1280 expansion (143,360 + 2 * 1280 BN + ...) and most of the lateral
    saved = full.count_params() - lite.count_params()
    assert 112 * 1280 + (1280 - 112) * 16 <= saved <= 112 * 1280 + 1280 * 4 + 1280 * 16
    model = RegularizedLandmarkModel(lite, teacher)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, _ = next(iter(dataset))
    losses = model._regularizer_losses(lite(images, training=True), model.teacher_outputs(images))
    assert set(losses) == {"cls", "feat", "sa", "ca"}
    assert all(np.isfinite(float(v)) and float(v) > 0 for v in losses.values())


def test_adapter_resizes_first_where_the_teacher_grid_is_smaller(teacher):
    # a 64 px student: feat 8x8, 4x4, 2x2 against the tiny teacher's 6x6, 3x3, 2x2 taps
    from .conftest import tiny_student

    student = tiny_student(input_size=64)
    model = RegularizedLandmarkModel(student, teacher)
    feats = student(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32"))
    taps = teacher.tap_shapes()
    shrunk = 0
    for s in (8, 16, 32):
        feat, size = feats[f"feat_{s}"], taps[s][:2]
        shrunk += size[0] < feat.shape[1]
        after = model.adapters[str(s)](feat)  # the adapter first, then the resize
        if tuple(after.shape[1:3]) != size:
            after = tf.image.resize(after, size, method="bilinear")
        got = model._adapt(s, feat, size)
        assert got.shape == after.shape == (2, *size, taps[s][2])
        np.testing.assert_allclose(got.numpy(), after.numpy(), rtol=1e-5, atol=1e-5)
        assert float(tf.reduce_max(tf.abs(after))) > 0.01  # not trivially equal
    assert shrunk == 2  # strides 8 and 16 took the resize-first path


@pytest.mark.parametrize("architecture", ["mobilenetv2", "dlib_transfer"])
def test_heatmap_stride_2_gives_input_half_heatmaps(architecture):
    from fas_tf.student import build_architecture, student_geometry

    student = build_architecture(architecture, 68, 64, 0.35, 16, heatmap_stride=2)
    assert student_geometry(student) == (64, 2, 68)
    assert tuple(student.output["heatmaps"].shape[1:]) == (32, 32, 68)


@pytest.mark.parametrize("architecture, given, width", [
    ("dlib_transfer", None, 128), ("mobilenetv2", None, 64), ("dlib_transfer", 16, 16)])
def test_head_width_is_the_students_own_unless_given(architecture, given, width):
    from fas_tf.student import build_architecture
    from fas_tf.training.config import TrainConfig, settings_for

    assert settings_for(TrainConfig(), "student")["head_channels"] is None  # the default
    TrainConfig().validate()
    student = build_architecture(architecture, 68, 64, head_channels=given, weights="random")
    assert student.get_layer("lateral_32").filters == width
    assert student.get_layer("heatmaps").input.shape[-1] == width


@pytest.mark.parametrize("method", ["taylor", "dark"])
def test_the_nme_metric_decodes_as_the_saved_student_does(dataset, method):
    """history.csv's nme/val_nme use the student's own decoding (what evaluate and exports use)."""
    from fas_tf.heatmaps import decode
    from fas_tf.metrics import mean_nme
    from fas_tf.student import with_decoding

    student = with_decoding(build_student(input_size=SIZE), method, 1.5)
    model = RegularizedLandmarkModel(student, None)
    model.compile("adam", run_eagerly=True)
    images, targets = next(iter(dataset.take(1)))
    logs = model.evaluate(images, targets, verbose=0, return_dict=True)
    heatmaps = student(images, training=False)["heatmaps"]
    expected = {
        m: float(mean_nme(decode(heatmaps, model.stride, m, 1.5)[0], targets["landmarks"]))
        for m in ("taylor", "dark")
    }
    assert abs(expected["dark"] - expected["taylor"]) > 1e-3  # the two decodings differ here
    assert logs["nme"] == pytest.approx(expected[method], rel=1e-5)
