"""The proportion warp (issue 42): image and labels move alike, p=0 changes nothing, seeded."""

import numpy as np
import pytest
import tensorflow as tf

from fas_tf import face_warp as W
from fas_tf.augment import PROPORTION_RANGE, AugmentConfig, augment_sample
from fas_tf.data import LabelledFaces, make_dataset
from fas_tf.errors import UsageError
from fas_tf.landmarks import layout_for
from fas_tf.training.config import TrainConfig

SIZE = 128  # crop side; canvases are twice as large, the framing-rule crop is their centre
LAYOUT = layout_for(68)
DOTS = (0, 8, 33, 36, 39, 42, 45, 51)  # contour, chin, nose base, eye corners, upper lip
STILL = dict(rotation=0, scale=0, translation=0, brightness=0, contrast=0, blur=0, grayscale=0)


def face_points(rng=None) -> np.ndarray:
    """A 68-point face in canvas pixels (centre crop = canvas pixels 64..191); the points the
    warp uses where a face has them, the others on a ring (slightly jittered by ``rng``)."""
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    pts = np.stack([128 + 55 * np.cos(angles), 128 + 55 * np.sin(angles)], axis=1)
    named = {0: (75, 160), 8: (128, 180), 33: (128, 136), 36: (98, 110), 39: (117, 111),
             42: (139, 111), 45: (158, 110), 51: (128, 148), 62: (128, 155), 66: (128, 157)}
    for i, p in named.items():
        pts[i] = p
    if rng is not None:
        pts += rng.uniform(-2, 2, pts.shape)
    return pts.astype(np.float32)


def dot_canvas(points: np.ndarray) -> np.ndarray:
    """A black canvas with a Gaussian dot (sigma 1.5 px) at each of :data:`DOTS`."""
    yy, xx = np.mgrid[0 : 2 * SIZE, 0 : 2 * SIZE]
    img = np.zeros((2 * SIZE, 2 * SIZE), np.float64)
    for i in DOTS:
        img += np.exp(-((xx - points[i, 0]) ** 2 + (yy - points[i, 1]) ** 2) / (2 * 1.5**2))
    return np.repeat(np.clip(img * 250, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def centroid(image: np.ndarray, at: np.ndarray, r: int = 4) -> np.ndarray:
    x, y = np.round(at).astype(int)
    win = image[y - r : y + r + 1, x - r : x + r + 1, 0].astype(np.float64)
    yy, xx = np.mgrid[y - r : y + r + 1, x - r : x + r + 1]
    return np.array([(win * xx).sum(), (win * yy).sum()]) / win.sum()


def crop(canvas, points, seed, **cfg):
    image, pts = augment_sample(tf.constant(canvas), tf.constant(points), SIZE,
                                AugmentConfig(**{**STILL, **cfg}),
                                tf.constant(LAYOUT.flip_permutation(), tf.int32), True,
                                tf.constant(seed, tf.int64))
    return image.numpy(), pts.numpy()


@pytest.mark.parametrize("seed, flip, stretch, tolerance", [
    ((0, 1), 0.0, 1.25, 0.3), ((0, 2), 0.0, 1.25, 0.3), ((5, 3), 1.0, 1.25, 0.3),
    ((0, 1), 0.0, 1.5, 0.6), ((5, 3), 1.0, 1.5, 0.6)])  # fmt: skip
def test_warped_labels_land_on_the_warped_dots(seed, flip, stretch, tolerance):
    """Dots drawn at the landmarks: after the warp each dot's centroid is at its warped label."""
    points = face_points()
    canvas = dot_canvas(points)
    plain_img, plain = crop(canvas, points, seed, flip=flip)
    image, warped = crop(canvas, points, seed, flip=flip, proportion_warp=1.0,
                         proportion_stretch=stretch)
    dots = [int(LAYOUT.flip_permutation()[i]) if flip else i for i in DOTS]
    moved = np.linalg.norm(warped[dots] - plain[dots], axis=1)
    assert moved.max() > 1.0  # the warp did move the labels (by up to 2 px here)...
    assert moved[dots.index(int(LAYOUT.flip_permutation()[0]) if flip else 0)] < 0.05  # ...locally
    for i in dots:
        assert np.linalg.norm(centroid(plain_img, plain[i]) - plain[i]) < 0.05
        # within a fraction of a pixel (a dot in a strongly compressed spot is a little
        # lopsided, more so in the wider range)
        assert np.linalg.norm(centroid(image, warped[i]) - warped[i]) < tolerance, i


def test_stretch_face_gives_each_eye_its_factor():
    """The two eyes get their own factors exactly; the philtrum and lip lengths change in the
    direction of theirs; an image is warped, a degenerate face is left alone."""
    pts = face_points().astype(np.float64)
    img = dot_canvas(pts).astype(np.float32)
    factors = (0.8, 1.25, 1.2, 0.85)
    out, new = W.stretch_face(img, pts, factors)

    def length(p, a, b):
        return np.linalg.norm(p[b] - p[a])

    assert length(new, 36, 39) / length(pts, 36, 39) == pytest.approx(0.8, abs=1e-3)
    assert length(new, 42, 45) / length(pts, 42, 45) == pytest.approx(1.25, abs=1e-3)
    assert length(new, 33, 51) / length(pts, 33, 51) > 1.05
    assert np.abs(out - img).max() > 50
    same = pts.copy()
    same[39] = same[36]
    out, new = W.stretch_face(img, same, factors)
    assert out is img and new is same


def test_p0_adds_no_draw_and_p_changes_only_warped_views(monkeypatch):
    """p = 0 builds none of the warp's ops (batches as before the warp existed); a tiny p draws
    from its own stream, so the other draws and so the batches stay byte-identical."""
    faces = LabelledFaces(np.stack([dot_canvas(face_points())] * 4),
                          np.stack([face_points(np.random.default_rng(i)) for i in range(4)]),
                          [f"f{i}.png" for i in range(4)])

    def batches(p):
        ds = make_dataset(faces, LAYOUT, SIZE, batch_size=2, seed=3, epochs=2,
                          augment=AugmentConfig(proportion_warp=p))
        return [(b[0].numpy(), b[1]["landmarks"].numpy()) for b in ds]

    with_tiny, with_all = batches(1e-9), batches(1.0)
    import fas_tf.augment

    def never(*args):
        raise AssertionError("the proportion warp was built at p = 0")

    monkeypatch.setattr(fas_tf.augment, "proportion_warp", never)
    plain = batches(0.0)
    for (a, pa), (b, pb), (_, pc) in zip(plain, with_tiny, with_all, strict=True):
        assert a.tobytes() == b.tobytes() and pa.tobytes() == pb.tobytes()
        assert np.abs(pc - pa).max() > 0.5


def test_warp_is_a_function_of_the_seed():
    points = face_points()
    canvas = dot_canvas(points)
    first = crop(canvas, points, (7, 7), proportion_warp=1.0, flip=0.5)
    again = crop(canvas, points, (7, 7), proportion_warp=1.0, flip=0.5)
    other = crop(canvas, points, (7, 8), proportion_warp=1.0, flip=0.5)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again, strict=True))
    assert np.abs(first[1] - other[1]).max() > 0.1


@pytest.mark.parametrize("stretch", [None, 1.25])
def test_factors_span_the_range(stretch):
    """Many seeds: the eye factor (PFL ratio of the warped labels) fills PROPORTION_RANGE, or
    [1/S, S] with ``proportion_stretch=S``."""
    pts = face_points()
    canvas = dot_canvas(pts)
    wider = {} if stretch is None else {"proportion_stretch": stretch}
    ratios = []
    for k in range(40):
        _, plain = crop(canvas, pts, (k, 0))
        _, warped = crop(canvas, pts, (k, 0), proportion_warp=1.0, **wider)
        ratios.append(np.linalg.norm(warped[39] - warped[36])
                      / np.linalg.norm(plain[39] - plain[36]))
    lo, hi = PROPORTION_RANGE if stretch is None else (1 / stretch, stretch)
    inner = 0.15 * np.log(hi)  # 40 log-uniform draws come this close to both ends
    assert lo - 1e-3 <= min(ratios) < lo * np.exp(inner)
    assert hi * np.exp(-inner) < max(ratios) <= hi + 1e-3
    assert abs(np.mean(np.log(ratios))) < 0.06  # log-uniform: no bias to longer or shorter


def test_needs_the_68_point_layout_and_a_probability():
    faces = LabelledFaces(np.zeros((2, 2 * SIZE, 2 * SIZE, 3), np.uint8),
                          np.full((2, 5, 2), 128, np.float32), ["a.png", "b.png"])
    with pytest.raises(UsageError, match="68-point"):
        make_dataset(faces, layout_for(5), SIZE, augment=AugmentConfig(proportion_warp=0.5))
    with pytest.raises(UsageError, match="proportion_warp"):
        TrainConfig(proportion_warp=1.5).validate()
    assert TrainConfig().proportion_stretch == AugmentConfig().proportion_stretch \
        == PROPORTION_RANGE[1]
    TrainConfig(proportion_stretch=3.0).validate()
    for bad in (1.0, 3.5):
        with pytest.raises(UsageError, match="--proportion_stretch must be in"):
            TrainConfig(proportion_stretch=bad).validate()


def test_training_warps_68_point_faces_by_default_and_says_so_for_others(tmp_path, demo_faces):
    import json

    from .conftest import train_tiny
    from .test_cli import five_point_copy

    def applied(data, name):
        lines = []
        train_tiny(TrainConfig(output_dir=str(tmp_path / name), data=str(data), teacher="none",
                               epochs=1, batch_size=2, train_limit=2, input_size=32, verbose=0),
                   log=lines.append)  # fmt: skip
        return json.loads((tmp_path / name / "config.json").read_text())["augment"], lines

    augment, lines = applied(demo_faces, "68")
    assert augment["proportion_warp"] == 1.0 and augment["proportion_stretch"] == 2.0
    assert not any("proportion warp" in line for line in lines)
    augment, lines = applied(five_point_copy(demo_faces, tmp_path / "five", 3), "5")
    assert augment["proportion_warp"] == 0.0
    assert "proportion warp: off (it needs the 68-point layout; these faces have 5 points)" in lines


def coordinate_image(size: int) -> np.ndarray:
    """A float32 image whose pixel (x, y) holds (x, y, 0): a resampled pixel tells where it
    was taken from."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.stack([xx, yy, np.zeros_like(xx)], axis=-1)


@pytest.mark.parametrize("factor", [0.5, 1.15, 2.0, 2.5])
def test_every_pixel_comes_from_where_the_warp_moves_it(factor):
    """Each output pixel q is sampled at the p with p + d(p) = q, also where a stretch's
    amplitude exceeds 1 (factor > ~1.8), where plain fixed-point iteration diverges."""
    s = W.stretch_between([100.0, 120.0], [140.0, 125.0], factor)
    out = W.warp_image(coordinate_image(256), [s])
    q = np.stack(np.meshgrid(np.arange(40.0, 216.0), np.arange(40.0, 216.0)), axis=-1)
    source = out[40:216, 40:216, :2].astype(np.float64)
    assert np.abs(W.warp_points(source, [s]) - q).max() < 0.01
    assert np.abs(source - q).max() > 2  # it did move


def test_proportion_stages_are_one_to_one_on_a_turned_face():
    """Extreme factors (1/2 or 2 each, and 1/3 or 3: ``--proportion_stretch=3``, beyond one
    stretch's one-to-one range, so as two stretches each) on a turned face, whose eyes'
    stretches overlap: the composed map keeps a positive Jacobian determinant, every eye and
    the philtrum change in the direction of their factor, and the image is resampled where the
    map moves it."""
    pts = face_points().astype(np.float64)
    pts[42:48] -= (12.0, 0.0)  # the far eye foreshortened, its inner corner near the other's
    pts[45, 0] = pts[42, 0] + 8.0
    grid = np.stack(np.meshgrid(np.arange(60.0, 200.0), np.arange(60.0, 200.0)), axis=-1)
    for factors in ((2.0, 2.0, 2.0, 0.5), (2.0, 2.0, 2.0, 2.0), (0.5, 0.5, 0.5, 2.0),
                    (3.0, 3.0, 3.0, 1 / 3), (1 / 3, 1 / 3, 1 / 3, 3.0)):
        stages = W.proportion_stages(pts, factors)
        assert (len(stages) == 4) is (max(factors) <= 2), factors  # 2 stages beyond 2.5
        moved, new = W.warp_points_staged(grid, stages), W.warp_points_staged(pts, stages)
        dx, dy = np.gradient(moved, axis=1), np.gradient(moved, axis=0)
        assert (dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0]).min() > 0.02, factors
        for (a, b), f in (((36, 39), factors[0]), ((42, 45), factors[1]), ((33, 51), factors[2])):
            ratio = np.linalg.norm(new[b] - new[a]) / np.linalg.norm(pts[b] - pts[a])
            assert (ratio > 1.25) if f > 1 else (ratio < 0.8), (factors, a, b, ratio)
        out, _ = W.stretch_face(coordinate_image(256), pts, factors)
        source = W.warp_points_staged(out[60:200, 60:200, :2], stages)
        assert np.abs(source - grid).max() < 0.05, factors  # stages inverted to 1e-3 px each
