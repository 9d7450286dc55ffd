"""The four teacher constraints: zero at agreement, positive otherwise, known values."""

import numpy as np
import pytest
import tensorflow as tf

from fas_tf import regularizers as R


def feats(seed, shapes):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.normal(size=s).astype("float32")) for s in shapes]


SHAPES = [(2, 8, 8, 4), (2, 4, 4, 6), (2, 2, 2, 5)]


def test_cls_zero_when_equal_and_known_value():
    e = tf.constant([[3.0, 4.0], [1.0, 0.0]])
    assert float(R.cls_loss(e, e)) == pytest.approx(0.0, abs=1e-7)
    # orthogonal unit vectors: ||a - b||^2 = 2; opposite: 4 -> mean 3
    s = tf.constant([[1.0, 0.0], [0.0, 2.0]])
    t = tf.constant([[0.0, 5.0], [0.0, -1.0]])
    assert float(R.cls_loss(s, t)) == pytest.approx(3.0, rel=1e-6)


def test_feat_zero_when_adapted_equals_normalized_teacher_and_known_value():
    t = feats(0, SHAPES)
    rms = [tf.sqrt(tf.reduce_mean(tf.square(x))) for x in t]
    adapted = [x / r for x, r in zip(t, rms, strict=True)]
    assert float(R.feat_loss(adapted, t)) == pytest.approx(0.0, abs=1e-6)
    # teacher of constant 2 -> normalized 1; student 0 -> squared error 1 everywhere
    t2 = [tf.fill((1, 3, 3, 2), 2.0)]
    assert float(R.feat_loss([tf.zeros((1, 3, 3, 2))], t2)) == pytest.approx(1.0, rel=1e-5)
    # scale-free: multiplying the teacher by 10 does not change the loss
    s = feats(1, SHAPES)
    a = float(R.feat_loss(s, t))
    b = float(R.feat_loss(s, [10 * x for x in t]))
    assert a == pytest.approx(b, rel=1e-5) and a > 0


def test_sa_zero_when_equal_positive_otherwise_and_known_value():
    s = feats(2, SHAPES)
    assert float(R.sa_loss(s, s)) == pytest.approx(0.0, abs=1e-5)
    # channel count does not matter for spatial attention
    wider = [tf.concat([x, x], axis=-1) for x in s]
    assert float(R.sa_loss(wider, s)) == pytest.approx(0.0, abs=1e-5)
    assert float(R.sa_loss(s, feats(3, SHAPES))) > 0.05
    # attention on two disjoint pixels: orthogonal unit vectors, distance sqrt(2)
    a = np.zeros((1, 2, 2, 1), "float32")
    b = np.zeros((1, 2, 2, 1), "float32")
    a[0, 0, 0, 0] = 1.0
    b[0, 1, 1, 0] = 3.0
    assert float(R.sa_loss([tf.constant(a)], [tf.constant(b)])) == pytest.approx(
        np.sqrt(2), rel=1e-5
    )


def test_ca_zero_when_equal_positive_otherwise_and_known_value():
    t = feats(4, SHAPES)
    assert float(R.ca_loss(t, t)) == pytest.approx(0.0, abs=1e-5)
    assert float(R.ca_loss(feats(5, SHAPES), t)) > 0.05
    a = np.zeros((1, 2, 2, 2), "float32")
    b = np.zeros((1, 2, 2, 2), "float32")
    a[..., 0] = 1.0
    b[..., 1] = 1.0
    assert float(R.ca_loss([tf.constant(a)], [tf.constant(b)])) == pytest.approx(
        np.sqrt(2), rel=1e-5
    )


def test_spatial_attention_resizes_student_map_to_teacher_size():
    s = tf.ones((2, 16, 16, 3))
    att = R.spatial_attention(s, (17, 17))
    assert att.shape == (2, 17 * 17)
    np.testing.assert_allclose(np.linalg.norm(att.numpy(), axis=1), 1.0, rtol=1e-5)


def test_gradients_finite_at_agreement():
    s = tf.Variable(feats(6, SHAPES)[0])
    t = tf.identity(s)
    with tf.GradientTape() as tape:
        loss = R.sa_loss([s], [t]) + R.ca_loss([s], [t])
    g = tape.gradient(loss, s)
    assert np.all(np.isfinite(g.numpy()))


def test_teacher_side_gets_no_gradient():
    s = tf.Variable(feats(7, SHAPES)[1])
    t = tf.Variable(feats(8, SHAPES)[1])
    with tf.GradientTape() as tape:
        loss = (
            R.feat_loss([s], [t]) + R.sa_loss([s], [t]) + R.ca_loss([s], [t])
            + R.cls_loss(tf.reduce_mean(s, [1, 2]), tf.reduce_mean(t, [1, 2]))
        )
    gs, gt = tape.gradient(loss, [s, t])
    assert gt is None or float(tf.reduce_max(tf.abs(gt))) == 0.0
    assert float(tf.reduce_max(tf.abs(gs))) > 0


def test_heatmap_loss_known_value():
    pred = tf.zeros((2, 4, 4, 3))
    target = tf.ones((2, 4, 4, 3))
    assert float(R.heatmap_loss(pred, target)) == pytest.approx(16.0)


def test_awing_loss_zero_at_target_grows_with_offset_and_matches_mse_when_blank():
    from fas_tf.heatmaps import render_heatmaps

    pts = tf.constant([[[40.0, 52.0], [80.0, 35.0]]])
    target = render_heatmaps(pts, 32, 4, 1.5)
    losses = [float(R.awing_loss(render_heatmaps(pts + d, 32, 4, 1.5), target))
              for d in (0.0, 1.0, 4.0)]
    assert losses[0] == pytest.approx(0.0, abs=1e-6)
    assert 0.1 < losses[1] < losses[2]
    blank = tf.zeros_like(target)  # scaled to squared error's size at a blank prediction
    assert float(R.awing_loss(blank, target)) == pytest.approx(
        float(R.heatmap_loss(blank, target)), rel=0.05)
    assert R.HEATMAP_LOSSES["awing"] is R.awing_loss


def test_heatmap_loss_choices_are_the_losses_and_validate_refuses_others():
    from fas_tf.errors import UsageError
    from fas_tf.training.config import HEATMAP_LOSS_CHOICES, TrainConfig

    assert set(HEATMAP_LOSS_CHOICES) == set(R.HEATMAP_LOSSES)
    TrainConfig(heatmap_loss="awing").validate()
    with pytest.raises(UsageError, match="--heatmap_loss must be one of mse, awing, got 'l1'"):
        TrainConfig(heatmap_loss="l1").validate()


def test_coordinate_loss_is_the_nme_smoothed_at_zero():
    gt = np.zeros((1, 68, 2), np.float32)
    gt[0, :, 0] = np.linspace(0.0, 30.0, 68)  # points 36 and 45: 30 * 9/67 apart
    iod = 30.0 * 9 / 67
    pred = gt + np.array([3.0, 4.0], np.float32)  # every point 5 px off
    assert float(R.coordinate_loss(pred, gt)) == pytest.approx(5.0 / iod, rel=1e-4)
    assert float(R.coordinate_loss(gt, gt)) == pytest.approx(1e-3, rel=1e-3)  # eps, not 0
    with tf.GradientTape() as tape:
        at = tf.constant(gt)
        tape.watch(at)
        loss = R.coordinate_loss(at, gt)
    assert np.all(np.isfinite(tape.gradient(loss, at).numpy())), "finite at zero error"


@pytest.mark.parametrize("method", ["taylor", "dark"])
def test_coordinate_loss_trains_the_sub_cell_position_through_the_decoding(method):
    """Gradient steps on the heatmaps alone, through the decoding, move a decoded landmark to
    a point 0.3 cells away: the argmax cell stays, the log-Taylor step learns the offset."""
    from fas_tf.heatmaps import decode, render_heatmaps

    stride, sigma = 4, 1.5
    start = tf.constant([[[41.0, 50.0], [70.0, 30.0]]])
    goal = start + tf.constant([[[1.2, -1.2], [-1.2, 0.8]]])  # 0.3 / 0.2 cells
    heatmaps = tf.Variable(render_heatmaps(start, 32, stride, sigma))
    optimizer = tf.keras.optimizers.Adam(0.01)

    def error() -> float:
        points, _ = decode(heatmaps, stride, method, sigma)
        return float(tf.reduce_max(tf.norm(points - goal, axis=-1)))

    before = error()
    for _ in range(60):
        with tf.GradientTape() as tape:
            points, _ = decode(heatmaps, stride, method, sigma)
            loss = R.coordinate_loss(points, goal, "diagonal")
        optimizer.apply_gradients([(tape.gradient(loss, heatmaps), heatmaps)])
    assert before > 1.4
    assert error() < 0.3 * before
