"""Heatmap decoders: DARK (blur by the training Gaussian, then the log-Taylor step) vs the
log-Taylor step alone, float vs int8 paths, and the decoding saved with a student."""

import json

import numpy as np
import pytest
import tensorflow as tf

from fas_tf.errors import UsageError
from fas_tf.heatmaps import (
    DECODERS,
    HeatmapDecoder,
    blur_heatmaps,
    decode,
    gaussian_kernel,
    render_heatmaps,
)
from fas_tf.inference import KerasLandmarker, load_student, training_sigma
from fas_tf.student import decoding_of, with_decoding

from .conftest import tiny_student

SIGMA = 1.5  # the default training sigma, heatmap cells


def centres_and_maps(noise: float, seed: int = 0):
    """16 x 68 known sub-pixel centres inside a 128-px crop and their 32x32 Gaussian heatmaps
    (sigma 1.5 cells) plus Gaussian noise of std ``noise`` (peak height 1)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(20, 108, (16, 68, 2)).astype(np.float32)
    clean = render_heatmaps(pts, 32, 4, SIGMA).numpy()
    return pts, (clean + rng.normal(0, noise, clean.shape)).astype(np.float32)


def mean_error(method: str, maps: np.ndarray, pts: np.ndarray, int8: bool = False) -> float:
    found, _ = decode(tf.constant(maps), 4, method, SIGMA, int8)
    return float(np.linalg.norm(np.asarray(found) - pts, axis=-1).mean())


def test_dark_recovers_subpixel_centres_of_noisy_heatmaps_better_than_taylor():
    pts, clean = centres_and_maps(0.0)
    # a clean Gaussian: the log-Taylor step is exact, and blurring keeps it (almost) so
    assert mean_error("taylor", clean, pts) < 1e-3
    assert mean_error("dark", clean, pts) < 0.01
    # noise of 5 % of the peak: taylor 0.62 crop px mean error, dark 0.21
    pts, noisy = centres_and_maps(0.05)
    taylor, dark = mean_error("taylor", noisy, pts), mean_error("dark", noisy, pts)
    assert taylor > 0.5 and dark < 0.3 and dark < taylor / 2
    # a sharper-than-Gaussian peak exp(-r / sigma): taylor 0.29 px, dark 0.04
    mu = (pts + 0.5) / 4 - 0.5
    grid = np.arange(32, dtype=np.float32)
    dx = grid[None, None, :, None] - mu[:, None, None, :, 0]
    dy = grid[None, :, None, None] - mu[:, None, None, :, 1]
    cone = np.exp(-np.sqrt(dx**2 + dy**2) / SIGMA).astype(np.float32)
    assert mean_error("taylor", cone, pts) > 0.2 > 0.06 > mean_error("dark", cone, pts)


def test_dark_float_and_int8_paths_agree():
    pts, noisy = centres_and_maps(0.05, seed=1)
    heat = tf.constant(noisy)
    fast, conf_f = decode(heat, 4, "dark", SIGMA, int8=True)
    slow, conf_s = decode(heat, 4, "dark", SIGMA)
    assert float(np.abs(np.asarray(fast) - np.asarray(slow)).max()) < 0.02
    # the confidence is the unblurred peak, as for taylor
    np.testing.assert_allclose(conf_f, conf_s, atol=1e-6)
    np.testing.assert_allclose(conf_s, np.clip(noisy.max(axis=(1, 2)), 0, 1), atol=1e-6)


def test_blur_is_a_normalized_gaussian_with_reflected_borders():
    kernel = gaussian_kernel(SIGMA)
    assert kernel.shape == (13, 13) and abs(float(kernel.sum()) - 1) < 1e-6
    assert gaussian_kernel(SIGMA, max_radius=2).shape == (5, 5)
    # a constant map stays constant (reflected, not zero-padded, borders) ...
    flat = np.full((1, 8, 8, 2), 0.3, np.float32)
    np.testing.assert_allclose(blur_heatmaps(flat, SIGMA), flat, atol=1e-6)
    # ... and a unit impulse becomes the kernel (its variance sigma^2 per axis)
    impulse = np.zeros((1, 32, 32, 1), np.float32)
    impulse[0, 16, 16, 0] = 1.0
    out = np.asarray(blur_heatmaps(impulse, SIGMA))[0, :, :, 0]
    np.testing.assert_allclose(out[10:23, 10:23], kernel, atol=1e-6)
    offsets = np.arange(32) - 16
    var = float((out.sum(axis=0) * offsets**2).sum())
    assert abs(var - SIGMA**2) < 0.01


def test_unknown_or_incomplete_decoding_is_refused():
    with pytest.raises(ValueError, match="unknown decoding method"):
        HeatmapDecoder(4, "argmax")
    with pytest.raises(ValueError, match="training sigma"):
        HeatmapDecoder(4, "dark")
    assert DECODERS == ("taylor", "dark")


def test_old_decoder_config_and_old_student_decode_with_taylor():
    old = HeatmapDecoder.from_config({"name": "decode", "stride": 4, "method": "taylor"})
    assert (old.method, old.sigma, old.int8) == ("taylor", None, False)
    assert decoding_of(tiny_student(input_size=64)) == ("taylor", None)


def test_saved_student_round_trips_its_decoding(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    plain = tiny_student(input_size=64)
    student = with_decoding(plain, "dark", 2.0)
    assert decoding_of(student) == ("dark", 2.0)
    assert len(student.weights) == len(plain.weights)
    # tagging again replaces the tag, it does not stack a second one
    assert len(with_decoding(student, "dark", 1.0).layers) == len(student.layers)
    path = tmp_path / "student.keras"
    student.save(path)
    loaded = load_student(path)
    assert decoding_of(loaded) == ("dark", 2.0)
    crops = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    own = KerasLandmarker(loaded)
    assert own.decoding == ("dark", 2.0)
    got, conf = own.predict(crops)
    heat = keras.Model(plain.input, plain.output["heatmaps"]).predict(crops, verbose=0)
    want, want_conf = decode(tf.constant(heat), 4, "dark", 2.0)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(conf, want_conf, atol=1e-6)
    # the other decoder on the same saved model, without retraining
    other = KerasLandmarker(path, decoder="taylor")
    assert other.decoding == ("taylor", None)
    np.testing.assert_allclose(other.predict(crops)[0], decode(tf.constant(heat), 4)[0],
                               atol=1e-4)


def test_dark_on_an_old_student_takes_the_sigma_of_its_run(tmp_path):
    student = tiny_student(input_size=64)
    path = tmp_path / "student.keras"
    student.save(path)
    with pytest.raises(UsageError, match="training sigma"):
        KerasLandmarker(path, decoder="dark")
    (tmp_path / "config.json").write_text(json.dumps({"config": {"sigma": 1.25}}))
    assert training_sigma(load_student(path), path) == 1.25
    assert KerasLandmarker(path, decoder="dark").decoding == ("dark", 1.25)
    assert KerasLandmarker(path).decoding == ("taylor", None)
