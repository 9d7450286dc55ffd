"""The teacher cache: stored outputs equal the online ones, the teacher is not run, keys."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from fas_tf.augment import AugmentConfig
from fas_tf.data import load_faces, make_dataset, view_of
from fas_tf.errors import UsageError
from fas_tf.landmarks import layout_for
from fas_tf.model import RegularizedLandmarkModel
from fas_tf.student import build_student
from fas_tf.teacher_cache import load_or_build, open_cache
from fas_tf.teachers import Teacher
from fas_tf.training.config import TrainConfig

from .conftest import Interrupt, killed_in_epoch, tiny_teacher, train_tiny

SIZE = 32
LAYOUT = layout_for(68)


def quiet(*args):
    pass


class CountingTeacher(Teacher):
    """The tiny teacher, counting its calls (eager runs and traces alike)."""

    calls = 0

    def __call__(self, images):
        CountingTeacher.calls += 1
        return super().__call__(images)


def counting_tiny_teacher() -> CountingTeacher:
    t = tiny_teacher()
    return CountingTeacher(**{f.name: getattr(t, f.name) for f in dataclasses.fields(Teacher)})


@pytest.fixture(scope="module")
def faces(demo_faces):
    return load_faces(demo_faces, input_size=SIZE).subset(range(6))


def small_student():
    return build_student(input_size=SIZE, alpha=0.35, head_channels=8)


def test_view_schedule_uses_every_view_once_per_cycle():
    views = np.array([[int(view_of(7, e, i, 4)) for e in range(8)] for i in range(3)])
    for row in views:
        assert sorted(row[:4]) == [0, 1, 2, 3] and sorted(row[4:]) == [0, 1, 2, 3]
    assert len({tuple(r[:4]) for r in views}) > 1, "faces walk their views in different orders"


def test_cached_losses_equal_online_losses_on_the_same_views(faces, tmp_path):
    keras.utils.set_random_seed(0)
    teacher = tiny_teacher()
    cache = load_or_build(teacher, faces, LAYOUT, SIZE, AugmentConfig(), 3, 0, root=tmp_path,
                          log=quiet)
    ds = make_dataset(faces, LAYOUT, SIZE, batch_size=6, seed=0, initial_epoch=2, epochs=3,
                      views=3)
    _, _, rows = next(iter(ds))
    assert sorted((rows.numpy() // 3).tolist()) == list(range(6))
    images, _, stored = next(iter(cache.attach(ds)))
    assert all(v.dtype == tf.float16 for v in stored.values())
    np.testing.assert_array_equal(stored["tap_8"], cache.arrays["tap_8"][rows.numpy()])
    model = RegularizedLandmarkModel(small_student(), teacher)
    model.compile("adam", regularizers="cls,feat,sa,ca")
    outputs = model.student(images, training=False)
    online = model._regularizer_losses(outputs, model.teacher_outputs(images))
    cached = model._regularizer_losses(outputs, model.teacher_outputs(images, stored))
    assert set(cached) == {"cls", "feat", "sa", "ca"}
    for name in cached:
        assert float(online[name]) > 1e-3, name
        np.testing.assert_allclose(float(cached[name]), float(online[name]), rtol=2e-3,
                                   err_msg=name)


def test_teacher_never_runs_in_fit_with_the_cache_and_no_checkpoint_holds_it(
    faces, tmp_path
):
    keras.utils.set_random_seed(0)
    teacher = counting_tiny_teacher()
    cache = load_or_build(teacher, faces, LAYOUT, SIZE, AugmentConfig(), 2, 0, root=tmp_path,
                          log=quiet)
    model = RegularizedLandmarkModel(small_student(), teacher)
    model.compile(keras.optimizers.Adam(1e-3), regularizers="cls,feat,sa,ca")
    weights = len(model.weights)
    model.optimizer.build(model.trainable_variables)
    model.save_weights(tmp_path / "before.weights.h5")
    ds = cache.attach(make_dataset(faces, LAYOUT, SIZE, batch_size=4, seed=0, epochs=2, views=2))
    CountingTeacher.calls = 0
    logs = model.fit(ds, epochs=2, steps_per_epoch=2, verbose=0).history
    assert CountingTeacher.calls == 0
    for k in ("cls_loss", "feat_loss", "sa_loss", "ca_loss"):
        assert len(logs[k]) == 2 and np.isfinite(logs[k][-1]) and logs[k][-1] > 0, k
    assert len(model.weights) == weights, "the cache is not a model variable"
    model.save_weights(tmp_path / "after.weights.h5")
    size = os.path.getsize
    assert size(tmp_path / "after.weights.h5") == size(tmp_path / "before.weights.h5")
    online = make_dataset(faces, LAYOUT, SIZE, batch_size=4, seed=0)
    model.fit(online.take(1), epochs=1, verbose=0)
    assert CountingTeacher.calls > 0, "without the cache the step runs the teacher"


def test_views_computed_while_training_equal_a_build_and_are_kept(faces, tmp_path):
    """An empty cache fills itself from the training batches: after the K epochs that use
    every view it holds what a build before training holds, is saved, and is reused whole."""
    keras.utils.set_random_seed(0)
    teacher = counting_tiny_teacher()
    args = (teacher, faces, LAYOUT, SIZE, AugmentConfig(), 3, 0)
    built = load_or_build(*args, root=tmp_path / "built", log=quiet)
    lines = []
    lazy = open_cache(*args, root=tmp_path / "lazy", log=lines.append)
    assert lines[0].startswith("teacher cache: new") and not lazy.filled.any()
    model = RegularizedLandmarkModel(small_student(), teacher)
    model.compile(keras.optimizers.Adam(1e-3), regularizers="cls,feat,sa,ca")


    def epochs(first, end):
        return lazy.attach(make_dataset(faces, LAYOUT, SIZE, batch_size=4, seed=0,
                                        initial_epoch=first, epochs=end, views=3))

    model.fit(epochs(0, 1), epochs=1, verbose=0)  # epoch 0: one view of each of the 6 faces
    assert (lazy.computed_rows, int(lazy.filled.sum())) == (6, 6)
    assert not (tmp_path / "lazy").exists(), "an incomplete cache is saved by its owner only"
    model.fit(epochs(1, 3), epochs=1, steps_per_epoch=4, verbose=0)  # epochs 1 and 2
    assert lazy.complete and lazy.computed_rows == 18
    assert lazy.saver is not None, "the complete cache is being saved"
    lazy.saver.join()  # by a thread of its own, while training goes on
    assert (tmp_path / "lazy" / lazy.key / "filled.npy").is_file(), "saved once complete"
    assert lazy.forward_backend == "litert"
    for name in built.arrays:
        np.testing.assert_allclose(np.asarray(lazy.arrays[name], np.float32),
                                   np.asarray(built.arrays[name], np.float32), atol=2e-3,
                                   rtol=2e-3, err_msg=name)
    CountingTeacher.calls = 0
    again = open_cache(*args, root=tmp_path / "lazy", log=lines.append)
    assert again.complete and again.reused_rows == 18 and lines[-1].startswith(
        "teacher cache: reused")
    for _ in again.attach(make_dataset(faces, LAYOUT, SIZE, batch_size=4, seed=0, epochs=3,
                                       views=3)):
        pass
    assert CountingTeacher.calls == 0 and again.computed_rows == 0


def test_a_partial_cache_is_saved_and_completed_by_the_next_run(faces, tmp_path):
    keras.utils.set_random_seed(0)
    teacher = tiny_teacher()
    args = (teacher, faces, LAYOUT, SIZE, AugmentConfig(), 4, 0)
    first = open_cache(*args, root=tmp_path, log=quiet)
    other = open_cache(*args, root=tmp_path, log=quiet)  # a parallel run with the same key
    for cache, epoch in ((first, 0), (other, 1)):
        for _ in cache.attach(make_dataset(faces, LAYOUT, SIZE, batch_size=6, seed=0,
                                           initial_epoch=epoch, epochs=epoch + 1, views=4)):
            pass
        assert cache.computed_rows == 6
    first.save()
    other.save()  # keeps the rows first saved
    lines = []
    second = open_cache(*args, root=tmp_path, log=lines.append)
    assert second.reused_rows == 12 and not second.complete
    assert lines == [f"teacher cache: reused 12 of 24 views from {tmp_path / first.key} "
                     f"({first.nbytes / 2**20:.1f} MiB, 6 faces x 4 views); the rest are "
                     "computed when first used"]
    np.testing.assert_array_equal(second.filled, first.filled | other.filled)
    for cache in (first, other):
        rows = np.flatnonzero(cache.filled)
        np.testing.assert_array_equal(second.arrays["tap_8"][rows], cache.arrays["tap_8"][rows])
    second.fill(faces, LAYOUT, SIZE, AugmentConfig(), 0)
    assert second.complete and second.computed_rows == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.key], "no temp folder left"


def test_litert_forward_equals_the_teacher_on_any_number_of_crops():
    teacher = tiny_teacher()
    crops = np.random.default_rng(0).uniform(0, 255, (7, SIZE, SIZE, 3)).astype(np.float32)
    forward = teacher.litert_forward(batch_size=3, crop_size=SIZE, num_threads=1)
    expected = teacher(tf.constant(crops))
    for n in (7, 3, 1):  # padded, whole, one crop
        found = forward(crops[:n])
        assert set(found) == set(expected)
        for name, value in expected.items():
            assert found[name].shape == (n, *value.shape[1:]), name
            assert np.abs(value.numpy()).max() > 0.05, name
            np.testing.assert_allclose(found[name], value.numpy()[:n], atol=1e-4, rtol=1e-4,
                                       err_msg=name)


def test_same_key_builds_nothing_and_a_changed_key_rebuilds(faces, tmp_path):
    keras.utils.set_random_seed(0)
    teacher = tiny_teacher()
    args = (teacher, faces, LAYOUT, SIZE, AugmentConfig(), 2, 0)
    first = load_or_build(*args, root=tmp_path, log=quiet)
    again = load_or_build(*args, root=tmp_path, log=quiet)
    assert first.built and not again.built and again.key == first.key
    assert first.nbytes == 6 * 2 * 2 * (12 + 6 * 6 * 16 + 3 * 3 * 24 + 2 * 2 * 32)
    for name in first.arrays:
        assert np.abs(np.asarray(first.arrays[name], np.float32)).max() > 0
        np.testing.assert_array_equal(first.arrays[name], again.arrays[name])
    changed = {
        "seed": (teacher, faces, LAYOUT, SIZE, AugmentConfig(), 2, 1),
        "views": (teacher, faces, LAYOUT, SIZE, AugmentConfig(), 3, 0),
        "augment": (teacher, faces, LAYOUT, SIZE, AugmentConfig(rotation=10.0), 2, 0),
        "data": (teacher, faces.subset(range(5)), LAYOUT, SIZE, AugmentConfig(), 2, 0),
        "teacher weights": (tiny_teacher(), faces, LAYOUT, SIZE, AugmentConfig(), 2, 0),
    }
    keys = {first.key}
    for what, other in changed.items():
        rebuilt = load_or_build(*other, root=tmp_path, log=quiet)
        assert rebuilt.built, f"a changed {what} must rebuild"
        keys.add(rebuilt.key)
    assert len(keys) == 1 + len(changed)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keys), "no temp folder left"


def test_an_interrupted_build_leaves_nothing(faces, tmp_path, monkeypatch):
    import fas_tf.data

    teacher = tiny_teacher()
    real_views = fas_tf.data.view_dataset

    def interrupted_after_one_batch(*args, **kwargs):
        yield next(iter(real_views(*args, **kwargs)))
        raise KeyboardInterrupt()  # Ctrl-C (or SIGTERM, see fas_tf.cli) during the build

    # A build killed with -9 earlier (its process is gone) left its temp folder behind.
    stale = tmp_path / f".{'0' * 32}.tmp-999999999"
    stale.mkdir()
    monkeypatch.setattr(fas_tf.data, "view_dataset", interrupted_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        load_or_build(teacher, faces, LAYOUT, SIZE, AugmentConfig(), 4, 0, root=tmp_path,
                      batch_size=8, log=quiet)
    assert [p.name for p in tmp_path.iterdir()] == [stale.name], "nothing half-written"
    monkeypatch.setattr(fas_tf.data, "view_dataset", real_views)
    cache = load_or_build(teacher, faces, LAYOUT, SIZE, AugmentConfig(), 4, 0, root=tmp_path,
                          batch_size=8, log=quiet)
    assert cache.built
    shutil.rmtree(tmp_path / cache.key)
    stale.rename(tmp_path / f".{cache.key}.tmp-999999999")
    load_or_build(teacher, faces, LAYOUT, SIZE, AugmentConfig(), 4, 0, root=tmp_path,
                  log=quiet)
    assert [p.name for p in tmp_path.iterdir()] == [cache.key], "stale temp folder removed"


def test_train_with_the_cache_reuses_it_and_resumes_seeded(
    tmp_path, demo_faces, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    lines = []

    def run(name, callbacks=(), **changes):
        config = TrainConfig(
            output_dir=str(tmp_path / name), data=str(demo_faces), teacher="dlib", epochs=2,
            batch_size=3, input_size=SIZE, student="mobilenetv2", alpha=0.35, head_channels=8,
            seed=1, verbose=0,
            train_limit=7, teacher_cache=2, **changes,
        )
        metrics = train_tiny(config, log=lines.append, teacher=True, callbacks=callbacks)
        record = json.loads((tmp_path / name / "config.json").read_text())["teacher_cache"]
        # config.json: the cache as the run found it; metrics.json: what the run added
        assert metrics["teacher_cache"]["key"] == record["key"]
        assert record["computed_rows"] == 0
        return metrics["teacher_cache"], (tmp_path / name / "history.csv").read_text()

    first, straight = run("a")
    assert first["built"] and first["bytes"] > 0 and first["reused_rows"] == 0
    assert (first["faces"], first["views_per_face"], first["computed_rows"]) == (7, 2, 14)
    assert "cls_loss" in straight and len(straight.splitlines()) == 3

    with pytest.raises(Interrupt):
        run("b", callbacks=[killed_in_epoch()])
    second, resumed = run("b", resume=True)
    assert not second["built"] and second["key"] == first["key"]
    assert second["reused_rows"] == 14
    assert resumed == straight, "a killed and resumed cached run equals the straight one"
    assert sum(line.startswith("teacher cache: new") for line in lines) == 1
    assert sum(line.startswith("teacher cache: reused") for line in lines) == 2


def test_multiworker_refuses_the_cache():
    config = TrainConfig(strategy="multiworker", teacher_cache=4)
    with pytest.raises(UsageError, match="--teacher_cache"):
        config.validate()


def test_cached_step_under_mixed_precision(faces, tmp_path):
    teacher = counting_tiny_teacher()
    cache = load_or_build(teacher, faces, LAYOUT, SIZE, AugmentConfig(), 2, 0, root=tmp_path,
                          log=quiet)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = RegularizedLandmarkModel(small_student(), teacher)
        model.compile(keras.optimizers.Adam(1e-3), regularizers="cls,feat,sa,ca")
        ds = cache.attach(make_dataset(faces, LAYOUT, SIZE, batch_size=3, seed=0, views=2))
        images, _, stored = next(iter(ds))
        assert model.teacher_outputs(images, stored)["tap_8"].dtype == tf.float16
        CountingTeacher.calls = 0
        logs = model.fit(ds, epochs=1, verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert CountingTeacher.calls == 0
    assert all(np.isfinite(v[-1]) and v[-1] > 0 for v in logs.values())


def test_upright_training_faces_are_part_of_the_key(faces, demo_faces):
    """Upright canvases differ from framing-rule ones, and the key hashes the canvases."""
    from fas_tf.teacher_cache import cache_key

    keras.utils.set_random_seed(0)
    teacher = tiny_teacher()
    upright = load_faces(demo_faces, input_size=SIZE, upright=True).subset(range(6))
    assert [Path(p).name for p in upright.paths] == [Path(p).name for p in faces.paths]
    args = (LAYOUT, SIZE, AugmentConfig(rotation=10.0), 2, 0)
    assert cache_key(teacher, faces, *args) != cache_key(teacher, upright, *args)
    assert cache_key(teacher, upright, *args) == cache_key(teacher, upright, *args)


def test_replays_past_four_per_view_warn_with_the_k_to_use():
    from fas_tf.teacher_cache import replay_warning

    line = replay_warning(200, 16)
    assert line.startswith("warning: --teacher_cache=16 replays each cached view about 12 times "
                           "in 200 epochs") and line.endswith("use --teacher_cache >= 50")
    assert "\n" not in line
    assert replay_warning(200, 64) is None and replay_warning(200, 50) is None
    assert replay_warning(2000, 64).endswith(">= 500")


def file_hashes(folder: Path) -> dict[str, str]:
    from fas_tf.cli import sha256_of

    return {str(p.relative_to(folder)): sha256_of(p) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_cache_that_cannot_be_saved_costs_a_warning_never_the_run(
    tmp_path, demo_faces, monkeypatch, capsys
):
    """$XDG_CACHE_HOME unusable (here a file, so no folder can be made in it; read-only or
    full fails alike): the run still writes student.keras and metrics.json and removes its
    backup (issue 39 item 3: it ended before them, with the backup gone)."""
    xdg = tmp_path / "xdg"
    xdg.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    data_before = file_hashes(demo_faces)
    out = tmp_path / "run"
    config = TrainConfig(
        output_dir=str(out), data=str(demo_faces), teacher="dlib", epochs=2, batch_size=3,
        input_size=SIZE, student="mobilenetv2", alpha=0.35, head_channels=8, seed=1,
        verbose=0, train_limit=4, teacher_cache=2,
    )
    metrics = train_tiny(config, log=quiet, teacher=True)
    assert (out / "student.keras").is_file()
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["teacher_cache"]["computed_rows"] == 8
    assert not (out / "checkpoints" / "backup").exists()
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning: teacher cache")]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"warning: teacher cache: not saved to {xdg}/fas_tf/teacher_cache/")
    assert warnings[0].endswith("; the run is kept, the next run with this key computes its "
                                "views again")
    assert xdg.read_text() == "not a folder" and file_hashes(demo_faces) == data_before


def test_two_runs_saving_one_key_at_once_both_keep_their_rows(faces, tmp_path, monkeypatch):
    """The other run's copy lands between this run's two renames (ENOTEMPTY): this one merges
    it and tries again."""
    keras.utils.set_random_seed(0)
    args = (tiny_teacher(), faces, LAYOUT, SIZE, AugmentConfig(), 2, 0)
    mine, theirs = (open_cache(*args, root=tmp_path, log=quiet) for _ in range(2))
    for cache, epoch in ((mine, 0), (theirs, 1)):
        for _ in cache.attach(make_dataset(faces, LAYOUT, SIZE, batch_size=6, seed=0,
                                           initial_epoch=epoch, epochs=epoch + 1, views=2)):
            pass
    real_rename = os.rename

    def race(src, dst):
        if Path(src).name.startswith(f".{mine.key}.tmp") and not Path(dst).exists():
            monkeypatch.setattr(os, "rename", real_rename)
            theirs.save()  # lands first
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", race)
    mine.save()
    monkeypatch.setattr(os, "rename", real_rename)
    merged = open_cache(*args, root=tmp_path, log=quiet)
    assert merged.complete and merged.reused_rows == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.key], "no temp folder left"


@pytest.mark.parametrize("damage", ["empty npy", "meta list", "truncated npy", "nan rows",
                                    "a file"])
def test_a_damaged_cache_file_is_recomputed_with_one_line(faces, tmp_path, damage):
    keras.utils.set_random_seed(0)
    args = (tiny_teacher(), faces, LAYOUT, SIZE, AugmentConfig(), 2, 0)
    built = load_or_build(*args, root=tmp_path, log=quiet)
    folder = tmp_path / built.key
    if damage == "empty npy":
        (folder / "tap_16.npy").write_bytes(b"")
    elif damage == "meta list":
        (folder / "meta.json").write_text("[]")
    elif damage == "truncated npy":
        data = (folder / "embedding.npy").read_bytes()
        (folder / "embedding.npy").write_bytes(data[: len(data) // 2])
    elif damage == "nan rows":
        arr = np.load(folder / "tap_8.npy")
        arr[[1, 5]] = np.nan
        np.save(folder / "tap_8.npy", arr)
    else:
        shutil.rmtree(folder)
        folder.write_text("a stray file where the cache folder goes")
    lines = []
    cache = load_or_build(*args, root=tmp_path, log=lines.append)
    if damage == "a file":
        assert lines[0].startswith(f"teacher cache: new {folder}") and cache.computed_rows == 12
        assert [p.name for p in tmp_path.iterdir()] == [built.key], "nothing left beside it"
    elif damage == "nan rows":
        assert lines[0] == (f"teacher cache: 2 stored views in {folder} hold NaN or inf; "
                            "computing them anew")
        assert cache.computed_rows == 2
    else:
        file = {"empty npy": "tap_16.npy", "meta list": "meta.json",
                "truncated npy": "embedding.npy"}[damage]
        assert lines[0].startswith(f"teacher cache: {folder} is unreadable ({file} ")
        assert lines[0].endswith("; computing it anew") and "\n" not in lines[0]
        assert cache.computed_rows == 12
    for name in built.arrays:
        assert np.isfinite(np.asarray(cache.arrays[name], np.float32)).all()
        np.testing.assert_array_equal(cache.arrays[name], built.arrays[name])
    again = open_cache(*args, root=tmp_path, log=lines.append)
    assert again.complete and again.reused_rows == 12, "the repaired cache was saved"
