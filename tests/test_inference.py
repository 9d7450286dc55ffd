"""Test-time flip (``FlipAveraged``): mirror geometry, permutation and equivariance."""

import numpy as np
import pytest

from fas_tf.errors import UsageError
from fas_tf.inference import FlipAveraged, KerasLandmarker, Landmarker
from fas_tf.landmarks import layout_for

S = 64


class FixedOffset(Landmarker):
    """Returns the same points shifted by +dx for any crop; records the crops it saw."""

    def __init__(self, points: np.ndarray, dx: float):
        self.path, self.input_size, self.num_landmarks = "", S, len(points)
        self.points, self.dx, self.seen = points, dx, []

    def predict(self, crops):
        self.seen.append(np.asarray(crops).copy())
        pts = np.repeat(self.points[None], len(crops), axis=0).copy()
        pts[..., 0] += self.dx
        conf = np.repeat(np.linspace(0, 1, self.num_landmarks)[None], len(crops), axis=0)
        return pts, conf


def symmetric_points() -> np.ndarray:
    """68 points whose mirror image (x -> S - 1 - x, pairs swapped) is themselves."""
    layout = layout_for(68)
    rng = np.random.default_rng(0)
    centre = (S - 1) / 2.0
    pts = np.zeros((68, 2))
    pts[:, 0] = centre
    pts[:, 1] = rng.uniform(0, S - 1, 68)
    for a, b in layout.flip_pairs:
        u, y = rng.uniform(1, 20), rng.uniform(0, S - 1)
        pts[a], pts[b] = (centre - u, y), (centre + u, y)
    return pts


def test_flip_cancels_a_horizontal_bias_and_sees_the_mirrored_crop():
    base = FixedOffset(symmetric_points(), dx=1.5)
    crops = np.random.default_rng(1).uniform(0, 255, (3, S, S, 3)).astype(np.float32)
    pts, conf = FlipAveraged(base).predict(crops)
    # one model run on the crops, one on their mirror images
    np.testing.assert_array_equal(base.seen[0], crops)
    np.testing.assert_array_equal(base.seen[1], crops[:, :, ::-1])
    # +1.5 px on the crop, -1.5 px once the mirror's answer is mapped back: the bias cancels
    np.testing.assert_allclose(pts, np.repeat(symmetric_points()[None], 3, axis=0), atol=1e-9)
    # confidences are averaged with the permuted mirror confidences
    perm = layout_for(68).flip_permutation()
    expected = (np.linspace(0, 1, 68) + np.linspace(0, 1, 68)[perm]) / 2
    np.testing.assert_allclose(conf[0], expected)
    assert abs(conf[0, 36] - conf[0, 45]) < 1e-12  # eye corners 36 <-> 45 get the same mean


def test_flip_averaged_real_student_is_mirror_equivariant():
    """Any model wrapped in FlipAveraged answers a mirrored crop with the mirrored answer."""
    import keras

    from fas_tf.student import build_architecture

    keras.utils.set_random_seed(0)
    student = build_architecture("mobilenetv2", 68, S, 0.35, 16)
    model = FlipAveraged(KerasLandmarker(student))
    crops = np.random.default_rng(2).uniform(0, 255, (2, S, S, 3)).astype(np.float32)
    pts, _ = model.predict(crops)
    mirrored, _ = model.predict(crops[:, :, ::-1])
    back = mirrored[:, layout_for(68).flip_permutation()].copy()
    back[..., 0] = S - 1 - back[..., 0]
    np.testing.assert_allclose(back, pts, atol=1e-3)
    plain, _ = KerasLandmarker(student).predict(crops)
    assert np.abs(plain - pts).max() > 0.01  # the wrapper does change a random model's answer


def test_flip_needs_known_mirror_pairs():
    base = FixedOffset(np.zeros((5, 2)), dx=0.0)
    with pytest.raises(UsageError, match="no mirror pairs are known for 5 landmarks"):
        FlipAveraged(base)


class DotFinder(Landmarker):
    """Reads three coloured dots off each crop: red = point 36, green = point 45, blue = the
    other 66 points (a fake model whose answer is exactly what it sees)."""

    def __init__(self):
        self.path, self.input_size, self.num_landmarks = "", S, 68
        self.seen = []

    def predict(self, crops):
        self.seen.append(np.asarray(crops).copy())
        pts = np.zeros((len(crops), 68, 2))
        for i, crop in enumerate(crops):
            for channel in range(3):
                others = np.delete(crop, channel, axis=-1).max(axis=-1)
                mask = (crop[..., channel] > 100) & (others < 60)
                ys, xs = np.nonzero(mask)
                where = {0: [36], 1: [45], 2: [k for k in range(68) if k not in (36, 45)]}
                pts[i, where[channel]] = (xs.mean(), ys.mean())
        return pts, np.ones((len(crops), 68))


def test_upright_recrop_levels_the_eyes_and_maps_back_to_the_image():
    import cv2

    from fas_tf.inference import recrop

    angle = np.deg2rad(30.0)
    centre = np.array([100.0, 90.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    # eyes 40 px apart, mouth 35 px below their midpoint, the whole face turned by 30 degrees
    spots = {0: (-20.0, 0.0), 1: (20.0, 0.0), 2: (0.0, 35.0)}
    image = np.zeros((200, 220, 3), np.uint8)
    truth = np.zeros((68, 2))
    for channel, offset in spots.items():
        p = rot @ offset + centre
        colour = [0, 0, 0]
        colour[channel] = 255
        cv2.circle(image, (int(round(p[0] * 16)), int(round(p[1] * 16))), 3 * 16, colour, -1,
                   shift=4)
        where = {0: [36], 1: [45], 2: [k for k in range(68) if k not in (36, 45)]}[channel]
        truth[where] = p
    model = DotFinder()
    pts, conf = recrop([image], model, truth[None], passes=1, upright=True)
    patch = model.seen[-1][0]
    seen, _ = model.predict(patch[None])
    assert abs(seen[0, 36, 1] - seen[0, 45, 1]) < 0.5  # level in the crop the model saw
    assert seen[0, 36, 0] < seen[0, 45, 0]  # and not upside down
    np.testing.assert_allclose(pts[0], truth, atol=0.5)  # mapped back to image pixels
    assert conf.shape == (1, 68)
    # without upright, the same crop keeps the 30 degree tilt
    recrop([image], model, truth[None], passes=1, upright=False)
    plain, _ = model.predict(model.seen[-1])
    tilt = np.degrees(np.arctan2(*(plain[0, 45] - plain[0, 36])[::-1]))
    assert abs(tilt - 30.0) < 2.0
