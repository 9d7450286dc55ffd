"""Frozen face-recognition teachers.

A teacher is a small interface (:class:`Teacher`) around one Keras model that takes RGB face
crops with values in [0, 255] at the teacher's own input size and returns a dict with

- ``"embedding"``: the L2-normalized identity embedding, shape (B, D);
- ``"tap_8"``, ``"tap_16"``, ``"tap_32"``: intermediate feature maps at about those strides.

Preprocessing (e.g. FaceNet's fixed standardization) is part of that model, so the caller only
resizes. Adding another face-recognition network means writing one ``build_*`` function that
returns a :class:`Teacher`; see :func:`build_facenet` and :func:`build_teacher`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from fas_tf.errors import TeacherUnavailableError

TAP_STRIDES: tuple[int, ...] = (8, 16, 32)

FACENET_MODEL = "20180402-114759"
# FaceNet layers used as taps at a 160x160 input: 17x17x256, 8x8x896, 3x3x1792.
FACENET_TAPS = {
    8: "Conv2d_4b_3x3_Activation",
    16: "Mixed_6a",
    32: "Mixed_7a",
}


@dataclass
class Teacher:
    """A frozen face-recognition network seen through the interface the regularizers need.

    Attributes:
        name: short identifier (``"facenet"``, ...).
        input_size: square input side the network expects.
        embedding_dim: D, the size of the embedding.
        model: Keras model, RGB [0, 255] input of ``input_size``; outputs ``embedding`` and
            ``tap_{stride}`` for each stride in :data:`TAP_STRIDES`.
        pretrained: True when real pretrained weights are loaded (False: random weights).
        weights_source: where the weights came from (a path, a URL, or ``"random"``).
    """

    name: str
    input_size: int
    embedding_dim: int
    model: keras.Model
    pretrained: bool
    weights_source: str

    def __post_init__(self) -> None:
        self.model.trainable = False

    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Run the teacher on RGB [0, 255] crops of any square size (resized bilinearly)."""
        size = (self.input_size, self.input_size)
        x = tf.image.resize(tf.cast(images, tf.float32), size, method="bilinear")
        return self.model(x, training=False)

    def tap_shapes(self) -> dict[int, tuple[int, int, int]]:
        """(height, width, channels) of each tap, by stride."""
        return {s: tuple(self.model.output[f"tap_{s}"].shape[1:]) for s in TAP_STRIDES}

    def describe(self) -> dict:
        return {
            "name": self.name,
            "input_size": self.input_size,
            "embedding_dim": self.embedding_dim,
            "pretrained": self.pretrained,
            "weights_source": self.weights_source,
        }


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_verified(
    url: str, path: str | os.PathLike, sha256: str, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``path`` (via a temp file, renamed only when the sha256 matches)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        got = sha256_of(tmp)
        if got != sha256:
            raise TeacherUnavailableError(
                f"{url}: sha256 {got} does not match the expected {sha256}; not saved"
            )
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def facenet_cache_path(model_name: str = FACENET_MODEL) -> Path:
    """keras-facenet's cache location of the Keras weights file."""
    from keras_facenet.metadata import MODEL_METADATA

    meta = MODEL_METADATA[model_name]
    return Path.home() / ".keras-facenet" / meta["dir_name"] / meta["keras_weights_filename"]


def resolve_facenet_weights(
    weights: str | None = None,
    model_name: str = FACENET_MODEL,
    url: str | None = None,
    sha256: str | None = None,
    allow_download: bool = True,
) -> str:
    """Find FaceNet's Keras weights: explicit path, keras-facenet's cache, or download.

    Args:
        weights: an explicit ``.h5`` path (used as is, must exist), ``"random"`` (returned as
            is), or None to look in the cache and then download.
        model_name: keras-facenet model key.
        url, sha256: override keras-facenet's release URL and checksum (tests use a loopback
            server).
        allow_download: when False, never touch the network.

    Returns:
        A local path to the weights, or ``"random"``.

    Raises:
        TeacherUnavailableError: with a one-line message saying what to do.
    """
    from keras_facenet.metadata import MODEL_METADATA

    if weights == "random":
        return weights
    if weights:
        if not os.path.isfile(weights):
            raise TeacherUnavailableError(f"{weights}: FaceNet weights file not found")
        return weights
    meta = MODEL_METADATA[model_name]
    cache = facenet_cache_path(model_name)
    expected = sha256 or meta["keras_weights_sha256"]
    if cache.is_file() and sha256_of(cache) == expected:
        return str(cache)
    if allow_download:
        source = url or meta["keras_weights_url"]
        try:
            return str(download_verified(source, cache, expected))
        except (OSError, ValueError) as err:  # URLError is an OSError
            reason = getattr(err, "reason", err)
            raise TeacherUnavailableError(
                f"FaceNet weights could not be downloaded from {source} ({reason}); "
                f"put {meta['keras_weights_filename']} at {cache} or pass "
                "--teacher_weights=PATH (or use --teacher=none)"
            ) from err
    raise TeacherUnavailableError(
        f"FaceNet weights not found at {cache}; pass --teacher_weights=PATH "
        "(or use --teacher=none)"
    )


def build_facenet(
    weights: str | None = None,
    model_name: str = FACENET_MODEL,
    url: str | None = None,
    sha256: str | None = None,
    allow_download: bool = True,
) -> Teacher:
    """FaceNet (Inception-ResNet-v1, keras-facenet) as a frozen teacher.

    Input 160x160 RGB, fixed standardization ``(x - 127.5) / 128``, 512-D embedding (for the
    default 20180402-114759 model). ``weights="random"`` gives random weights, for tests only.
    """
    from keras_facenet.inception_resnet_v1 import InceptionResNetV1
    from keras_facenet.metadata import MODEL_METADATA

    meta = MODEL_METADATA[model_name]
    path = resolve_facenet_weights(weights, model_name, url, sha256, allow_download)
    size = int(meta["image_size"])
    dim = int(meta["dimensions"])
    net = InceptionResNetV1(input_shape=(size, size, 3), classes=dim)
    if path != "random":
        net.load_weights(path)
    net.trainable = False
    image = keras.Input((size, size, 3), name="image")
    if meta.get("fixed_image_standardization", True):
        x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.5 / 128.0, name="standardize")(image)
    else:  # older models: per-image standardization
        x = keras.layers.Lambda(tf.image.per_image_standardization, name="standardize")(image)
    taps = keras.Model(
        net.input,
        {
            "embedding": net.get_layer("normalize").output,
            **{f"tap_{s}": net.get_layer(name).output for s, name in FACENET_TAPS.items()},
        },
        name="facenet_taps",
    )
    outputs = taps(x)
    model = keras.Model(image, outputs, name="facenet_teacher")
    return Teacher("facenet", size, dim, model, pretrained=path != "random", weights_source=path)


def build_dlib(weights: str | None = None) -> Teacher:
    """dlib's face-recognition ResNet (150x150 input, 128-D) as a frozen teacher, offline.

    The weights are read with NumPy from ``dlib_face_recognition_resnet_model_v1.dat``
    (``weights``, or the copy shipped by the ``face-recognition-models`` package); dlib itself
    is not needed. Taps: ends of the 64-, 128- and 256-channel levels (17x17, 8x8, 4x4).
    ``weights="random"`` gives random weights, for tests only. See :mod:`fas_tf.dlib_resnet`.
    """
    from fas_tf import dlib_resnet as dr

    if weights == "random":
        model = dr.build_dlib_resnet(None, name="dlib_teacher")
        return Teacher("dlib", dr.DLIB_INPUT_SIZE, dr.DLIB_EMBEDDING_DIM, model, False, "random")
    path = weights or dr.dlib_model_path()
    if path is None:
        raise TeacherUnavailableError(
            f"dlib teacher: {dr.DLIB_MODEL_FILE} not found; pip install face-recognition-models "
            "or pass --teacher_weights=PATH to that file"
        )
    if not os.path.isfile(path):
        raise TeacherUnavailableError(f"{path}: dlib face-recognition model file not found")
    model = dr.build_dlib_resnet(dr.load_dlib_resnet(path), name="dlib_teacher")
    return Teacher("dlib", dr.DLIB_INPUT_SIZE, dr.DLIB_EMBEDDING_DIM, model, True, str(path))


TEACHERS = ("facenet", "dlib")


def build_teacher(name: str, weights: str | None = None, allow_download: bool = True) -> Teacher:
    """Build a teacher by name.

    ``name="auto"`` returns the best *pretrained* teacher available (FaceNet when its weights
    can be found or downloaded, else dlib's ResNet from face-recognition-models) and never a
    random one; :class:`TeacherUnavailableError` when none is available.
    """
    if name == "facenet":
        return build_facenet(weights, allow_download=allow_download)
    if name == "dlib":
        return build_dlib(weights)
    if name == "auto":
        errors = []
        for candidate in TEACHERS:
            try:
                teacher = build_teacher(candidate, weights, allow_download)
            except TeacherUnavailableError as err:
                errors.append(str(err))
                continue
            if teacher.pretrained:
                return teacher
        raise TeacherUnavailableError(
            "no pretrained teacher is available: " + "; ".join(errors)
        )
    raise ValueError(f"unknown teacher {name!r}; choose from auto, none, {', '.join(TEACHERS)}")
