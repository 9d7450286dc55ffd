"""Readers, sample checks, flipping, augmentation consistency, heatmap round trip."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fas_tf.augment import AugmentConfig, augment_sample, center_crop_sample
from fas_tf.data import (
    DataError,
    load_faces,
    load_image,
    make_dataset,
    read_csv_labels,
    read_pts,
    write_pts,
)
from fas_tf.framing import crop_box
from fas_tf.heatmaps import decode_heatmaps, render_heatmaps
from fas_tf.landmarks import layout_for

from .conftest import INFANFACE, needs_infanface


def test_pts_round_trip(tmp_path):
    pts = np.random.default_rng(0).uniform(0, 300, (68, 2)).astype("float32")
    write_pts(tmp_path / "a.pts", pts)
    np.testing.assert_allclose(read_pts(tmp_path / "a.pts"), pts, atol=1e-3)


@needs_infanface
def test_reads_real_300w_file():
    pts = read_pts(INFANFACE / "ads_1072.Still005.pts")
    assert pts.shape == (68, 2)
    assert pts[0] == pytest.approx([108.027, 277.691])


@pytest.mark.parametrize(
    "text, problem",
    [
        ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", "header says 3 points"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 x\n}\n", "garbled"),
        ("hello", "garbled"),
        ("version: 1\nn_points: 0\n{\n}\n", "no points"),  # was a zero-size ValueError
    ],
)
def test_bad_pts_named_in_error(tmp_path, text, problem):
    (tmp_path / "b.pts").write_text(text)
    with pytest.raises(DataError, match=problem) as err:
        read_pts(tmp_path / "b.pts")
    assert "b.pts" in str(err.value)


def test_landmark_csv_with_a_nul_byte_is_one_line(tmp_path):
    """A NUL byte in an image name was a ValueError traceback (a probe after issue 39)."""
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"image,x0,y0\na\x00b.jpg,1,2\n")
    with pytest.raises(DataError) as err:
        load_faces(labels, input_size=64)
    assert str(err.value) == f"{labels}: cannot read CSV (embedded null byte)"


def test_flip_permutation_maps_36_to_45_and_back():
    layout = layout_for(68)
    perm = layout.flip_permutation()
    assert perm[36] == 45 and perm[45] == 36
    assert perm[39] == 42 and perm[48] == 54 and perm[30] == 30
    np.testing.assert_array_equal(perm[perm], np.arange(68))


def test_flipped_face_swaps_outer_eye_corners():
    """Flip a face: the new landmark 36 is the mirror image of the old landmark 45."""
    size = 64
    canvas = np.zeros((2 * size, 2 * size, 3), np.uint8)
    pts = np.random.default_rng(1).uniform(40, 88, (68, 2)).astype("float32")
    layout = layout_for(68)
    cfg = AugmentConfig(rotation=0, scale=0, translation=0, flip=1.0, brightness=0,
                        contrast=0, blur=0, grayscale=0)
    _, out = augment_sample(tf.constant(canvas), tf.constant(pts), size, cfg,
                            tf.constant(layout.flip_permutation()), True, tf.constant([0, 0]))
    plain = pts - size / 2  # centre crop coordinates
    mirrored_45 = [size - 1 - plain[45, 0], plain[45, 1]]
    np.testing.assert_allclose(out.numpy()[36], mirrored_45, atol=1e-3)
    np.testing.assert_allclose(out.numpy()[45], [size - 1 - plain[36, 0], plain[36, 1]], atol=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bright_dot_lands_on_heatmap_peak_after_augmentation(seed):
    """Draw a dot at landmark k, augment randomly: the dot's new place is landmark k's peak."""
    size, stride = 64, 4
    rng = np.random.default_rng(seed)
    pts = rng.uniform(48, 80, (68, 2)).astype("float32")
    k = int(rng.integers(68))
    canvas = np.zeros((2 * size, 2 * size, 3), np.uint8)
    x, y = np.round(pts[k]).astype(int)
    pts[k] = [x, y]
    canvas[y - 1 : y + 2, x - 1 : x + 2] = 255
    layout = layout_for(68)
    cfg = AugmentConfig(flip=0.5, brightness=0, contrast=0, blur=0, grayscale=0)
    image, out = augment_sample(tf.constant(canvas), tf.constant(pts), size, cfg,
                                tf.constant(layout.flip_permutation()), True,
                                tf.constant([seed, 7]))
    gray = image.numpy().mean(axis=-1)
    dot = np.array(np.unravel_index(np.argmax(gray), gray.shape))[::-1]  # (x, y)
    heat = render_heatmaps(out[None], size // stride, stride, 1.0)
    idx = int(np.where(np.linalg.norm(out.numpy() - dot, axis=1) < 2.0)[0][0])
    # the landmark under the dot is k, or its mirror partner after a flip
    assert idx in (k, layout.flip_permutation()[k])
    decoded, _ = decode_heatmaps(heat, stride)
    assert np.linalg.norm(decoded.numpy()[0, idx] - dot) < 1.5


def test_heatmap_decoding_is_subpixel_exact():
    pts = np.array([[[10.3, 20.7], [100.2, 5.9], [63.5, 63.5]]], "float32")
    heat = render_heatmaps(pts, 32, 4, 1.5)
    assert heat.shape == (1, 32, 32, 3)
    decoded, conf = decode_heatmaps(heat, 4)
    np.testing.assert_allclose(decoded.numpy(), pts, atol=1e-3)
    assert np.all(conf.numpy() > 0.8)


def test_center_crop_follows_framing_rule(demo_faces):
    faces = load_faces(demo_faces, input_size=64)
    image, pts = center_crop_sample(faces.canvases[0], faces.landmarks[0], 64)
    cx, cy, side = crop_box(pts.numpy())
    assert side == pytest.approx(64 * 1.4 / 1.4, rel=0.02)  # box side fills crop / 1.4
    assert (cx, cy) == pytest.approx((31.5, 31.5), abs=0.05)
    assert image.shape == (64, 64, 3)


def test_dataset_batches_shapes(demo_faces):
    faces = load_faces(demo_faces, input_size=64)
    ds = make_dataset(faces, layout_for(68), input_size=64, batch_size=4, training=True)
    images, targets = next(iter(ds))
    assert images.shape == (4, 64, 64, 3)
    assert targets["heatmaps"].shape == (4, 16, 16, 68)
    assert targets["landmarks"].shape == (4, 68, 2)
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0


def landmark_batches(ds):
    return [batch[1]["landmarks"].numpy() for batch in ds]


def test_epochs_are_pure_functions_of_seed_and_epoch(demo_faces):
    faces = load_faces(demo_faces, input_size=64)
    layout = layout_for(68)
    two = landmark_batches(make_dataset(faces, layout, 64, batch_size=5, seed=3, epochs=2))
    assert [len(b) for b in two] == [5, 5, 2, 5, 5, 2], "epochs do not share a batch"
    again = landmark_batches(make_dataset(faces, layout, 64, batch_size=5, seed=3, epochs=2))
    for a, b in zip(two, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(two[0], two[3]), "each epoch draws a new order and new crops"
    # a resumed run's data start at its epoch and equal the uninterrupted run's
    later = landmark_batches(
        make_dataset(faces, layout, 64, batch_size=5, seed=3, initial_epoch=1, epochs=2)
    )
    for a, b in zip(two[3:], later, strict=True):
        np.testing.assert_array_equal(a, b)
    other = landmark_batches(make_dataset(faces, layout, 64, batch_size=5, seed=4, epochs=1))
    assert not np.allclose(other[0], two[0])


def test_shards_of_a_global_batch_are_disjoint_and_every_batch_is_full(demo_faces):
    faces = load_faces(demo_faces, input_size=64)
    layout = layout_for(68)
    common = {"batch_size": 2, "seed": 3, "epochs": 2, "global_batch": 8, "views": 5}
    shards = [
        [b[2].numpy() for b in make_dataset(faces, layout, 64, shard=(4, i), **common)]
        for i in range(4)
    ]
    assert [len(s) for s in shards] == [4] * 4  # 12 faces padded to 2 global batches, 2 epochs
    for step in range(4):
        rows = np.concatenate([s[step] for s in shards])
        assert len(set(rows.tolist())) == 8, "the 4 shards of a global batch are disjoint"
    epoch_1 = np.concatenate([s[j] for j in (0, 1) for s in shards]) // 5
    assert set(epoch_1.tolist()) == set(range(12)), "an epoch sees every face"


def test_csv_reader_with_header_and_relative_paths(tmp_path, demo_faces):
    src = sorted(demo_faces.glob("*.jpg"))[:2]
    rows = ["image," + ",".join(f"x{i},y{i}" for i in range(68))]
    for p in src:
        pts = read_pts(p.with_suffix(".pts"))
        rows.append(f"{p}," + ",".join(f"{v:.3f}" for v in pts.ravel()))
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    parsed = read_csv_labels(tmp_path / "labels.csv")
    assert len(parsed) == 2 and parsed[0][1].shape == (68, 2)
    faces = load_faces(tmp_path / "labels.csv", input_size=64)
    assert len(faces) == 2


def test_loader_skips_bad_samples_and_strict_fails(tmp_path, demo_faces):
    for p in sorted(demo_faces.glob("demo_000[0-5].*")):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    jpgs = sorted(tmp_path.glob("*.jpg"))
    jpgs[0].write_bytes(jpgs[0].read_bytes()[:300])  # truncated image
    pts = read_pts(jpgs[1].with_suffix(".pts"))
    pts[3] = np.nan
    write_pts(jpgs[1].with_suffix(".pts"), pts)
    jpgs[2].with_suffix(".pts").unlink()  # missing landmarks
    faces = load_faces(tmp_path, input_size=64)
    assert len(faces) == len(jpgs) - 3
    assert len(faces.skipped) == 3
    text = " ".join(faces.skipped)
    assert "cannot decode image" in text
    assert "NaN" in text and "no landmark file" in text
    with pytest.raises(DataError):
        load_faces(tmp_path, input_size=64, strict=True)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grayscale_rgba_16bit_images_become_rgb(tmp_path, mode):
    arr = np.full((20, 30), 200, np.uint16 if mode == "I;16" else np.uint8)
    if mode == "I;16":
        arr = arr * 257  # 16-bit full scale
        img = Image.fromarray(arr.astype("<u2"))
        assert img.mode == "I;16"
    elif mode == "RGBA":
        img = Image.fromarray(np.dstack([arr, arr, arr, np.full_like(arr, 255)]), mode="RGBA")
    else:
        img = Image.fromarray(arr, mode="L")
    img.save(tmp_path / "x.png")
    out = load_image(tmp_path / "x.png")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert abs(int(out[0, 0, 0]) - 200) <= 1


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (20, 10, 3)


def test_image_set_selection_is_one_protocol():
    from fas_tf.data import parse_sets, stems_in_sets

    assert parse_sets("ads, youtube2,,") == ["ads", "youtube2"]
    assert parse_sets(None) == [] and parse_sets(["google2"]) == ["google2"]
    rows = {"a": {"image_set": "ads"}, "b": {"image_set": "google2"}, "c": {}}
    assert stems_in_sets(rows, "ads,google2") == {"a", "b"}
    assert stems_in_sets(rows, ["youtube2"]) == set()


def eye_angles(landmarks: np.ndarray) -> np.ndarray:
    """Degrees of the line from outer eye corner 36 to 45 (0 = level), per face."""
    d = landmarks[:, 45] - landmarks[:, 36]
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


def test_upright_training_crops_have_level_true_eyes(demo_faces):
    layout = layout_for(68)
    plain = load_faces(demo_faces, input_size=64)
    upright = load_faces(demo_faces, input_size=64, upright=True)
    no_rotation = AugmentConfig(rotation=0.0)

    def angles(faces, augment, seed=0):
        batches = landmark_batches(make_dataset(faces, layout, 64, batch_size=12,
                                                augment=augment, seed=seed))
        return eye_angles(np.concatenate(batches))

    # the synthetic faces are tilted by up to 30 degrees; framing-rule crops keep the tilt
    assert np.abs(angles(plain, no_rotation)).max() > 15.0
    level = angles(upright, no_rotation)  # scale, shift and flips still drawn
    assert np.abs(level).max() < 1e-3
    # the augmentation rotation is then drawn from --rotation around the upright face
    turned = angles(upright, AugmentConfig(rotation=10.0))
    assert np.abs(turned).max() <= 10.0 + 1e-3 and np.abs(turned).max() > 3.0
    # same seed, same crops (the stateless augmentation is untouched)
    np.testing.assert_array_equal(turned, angles(upright, AugmentConfig(rotation=10.0)))
    # the unjittered upright crop is the framing rule in the upright frame
    image, pts = center_crop_sample(upright.canvases[0], upright.landmarks[0], 64)
    cx, cy, side = crop_box(pts.numpy())
    assert side == pytest.approx(64, rel=0.02) and (cx, cy) == pytest.approx((31.5, 31.5),
                                                                             abs=0.05)


def test_upright_needs_the_68_point_eyes(tmp_path, demo_faces):
    src = sorted(demo_faces.glob("*.jpg"))[:2]
    rows = [f"{p}," + ",".join(f"{v:.3f}" for v in read_pts(p.with_suffix(".pts"))[:5].ravel())
            for p in src]
    (tmp_path / "five.csv").write_text("\n".join(rows) + "\n")
    assert len(load_faces(tmp_path / "five.csv", input_size=64)) == 2
    with pytest.raises(DataError, match="five.csv: upright crops need the eye corners"):
        load_faces(tmp_path / "five.csv", input_size=64, upright=True)


def test_train_upright_cuts_only_the_training_faces(demo_faces):
    from fas_tf.training.config import TrainConfig
    from fas_tf.training.loop import load_sets

    config = TrainConfig(data=str(demo_faces), val_data=str(demo_faces), input_size=64,
                         upright=True)
    train, val = load_sets(config, log=lambda *_: None)
    assert np.abs(eye_angles(train.landmarks)).max() < 1e-3
    assert np.abs(eye_angles(val.landmarks)).max() > 15.0  # validation: framing-rule crops


def test_excluded_faces_leave_training_validation_and_the_list_file_is_checked(
    tmp_path, demo_faces
):
    from fas_tf.data import read_exclusions
    from fas_tf.training.config import TrainConfig
    from fas_tf.training.loop import load_sets

    listed = tmp_path / "label_errors.txt"
    # with the BOM and CRLF of a Windows editor
    listed.write_bytes(b"\xef\xbb\xbfdemo_0003.jpg\r\n# wrong labels\n\n"
                       b"  demo_0007  # off the face\nnot_there\n")
    assert read_exclusions(listed) == {"demo_0003", "demo_0007", "not_there"}
    config = TrainConfig(data=str(demo_faces), val_data=str(demo_faces), input_size=64,
                         exclude=str(listed))
    lines = []
    train, val = load_sets(config, log=lines.append)
    names = {p.name for p in demo_faces.glob("demo_*.jpg")}
    for faces in (train, val):
        kept = {Path(p).name for p in faces.paths}
        assert kept == names - {"demo_0003.jpg", "demo_0007.jpg"} and len(kept) == 10
    # Only 2 of the 3 listed stems are faces of the data: say so, and name the other.
    assert lines == [f"data: left out 2 of the 3 faces listed in {listed}; not in the data: "
                     "not_there"]
    listed.write_text("".join(f"typo_{i:02d}\n" for i in range(12)) + "demo_0003\n")
    config = TrainConfig(data=str(demo_faces), input_size=64, exclude=str(listed))
    load_sets(config, log=lines.append)
    assert lines[-1] == (f"data: left out 1 of the 13 faces listed in {listed}; not in the "
                         "data: " + ", ".join(f"typo_{i:02d}" for i in range(10))
                         + " and 2 more")
    with pytest.raises(DataError, match=r"missing\.txt: cannot read the exclusion list"):
        read_exclusions(tmp_path / "missing.txt")
