"""FaceNet teacher: weight resolution, verified download from a loopback server, taps."""

import functools
import hashlib
import http.server
import threading

import h5py
import numpy as np
import pytest

from fas_tf import teachers
from fas_tf.teachers import TeacherUnavailableError, build_facenet, resolve_facenet_weights


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A FaceNet weights file in keras-facenet's (legacy HDF5) format, random values."""
    from keras.src.legacy.saving import legacy_h5_format
    from keras_facenet.inception_resnet_v1 import InceptionResNetV1

    net = InceptionResNetV1(input_shape=(160, 160, 3), classes=512)
    folder = tmp_path_factory.mktemp("served")
    path = folder / "20180402-114759-weights.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, net)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return path, sha, net.get_layer("Bottleneck").get_weights()[0]


@pytest.fixture()
def server(weights_file):
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(weights_file[0].parent)
    )
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{weights_file[0].name}"
    httpd.shutdown()


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def bottleneck(teacher):
    inner = teacher.model.get_layer("facenet_taps")
    return inner.get_layer("Bottleneck").get_weights()[0]


def test_download_verifies_sha_and_loads_weights(server, weights_file, home):
    path, sha, kernel = weights_file
    teacher = build_facenet(url=server, sha256=sha)
    cached = teachers.facenet_cache_path()
    assert cached.is_file() and str(cached).startswith(str(home))
    assert teacher.pretrained and teacher.weights_source == str(cached)
    np.testing.assert_array_equal(bottleneck(teacher), kernel)
    # second time: from the cache, no network (the URL is unreachable now)
    again = resolve_facenet_weights(url="http://127.0.0.1:9/none", sha256=sha)
    assert again == str(cached)


def test_sha_mismatch_leaves_nothing(server, home):
    with pytest.raises(TeacherUnavailableError, match="does not match"):
        resolve_facenet_weights(url=server, sha256="0" * 64)
    folder = teachers.facenet_cache_path().parent
    assert not folder.exists() or list(folder.iterdir()) == []


def test_unreachable_download_says_what_to_do(home):
    with pytest.raises(TeacherUnavailableError, match="--teacher_weights"):
        resolve_facenet_weights(url="http://127.0.0.1:9/nothing.h5")
    with pytest.raises(TeacherUnavailableError, match="not found"):
        resolve_facenet_weights(allow_download=False)


def test_explicit_path_and_missing_path(weights_file, home):
    path, _, kernel = weights_file
    teacher = build_facenet(weights=str(path))
    np.testing.assert_array_equal(bottleneck(teacher), kernel)
    with pytest.raises(TeacherUnavailableError, match="not found"):
        build_facenet(weights=str(home / "missing.h5"))


def test_facenet_interface_shapes_and_frozen():
    teacher = build_facenet("random")
    assert not teacher.pretrained and teacher.input_size == 160
    assert teacher.tap_shapes() == {8: (17, 17, 256), 16: (8, 8, 896), 32: (3, 3, 1792)}
    out = teacher(np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype("float32"))
    assert out["embedding"].shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, rtol=1e-4)
    assert teacher.model.trainable_weights == []


def test_auto_never_returns_a_random_teacher(home, monkeypatch):
    monkeypatch.setattr(
        teachers, "resolve_facenet_weights",
        lambda *a, **k: (_ for _ in ()).throw(TeacherUnavailableError("no facenet")),
    )
    try:
        teacher = teachers.build_teacher("auto", weights="random", allow_download=False)
    except TeacherUnavailableError:
        return
    assert teacher.pretrained and teacher.name != "facenet"
