"""Teachers by name, and the one rule for ``--teacher=auto``.

:data:`TEACHERS` maps each name to a builder ``(weights, allow_download) -> Teacher``; adding a
face-recognition network means one module with such a builder and one entry here.
:func:`select_teacher` is what a training run calls: ``none``, a name, or ``auto`` (the first
*pretrained* teacher of :func:`auto_order`, never a random one).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from fas_tf.errors import TeacherUnavailableError, UsageError
from fas_tf.teachers.base import Teacher
from fas_tf.teachers.dlib import build_dlib
from fas_tf.teachers.facenet import FACENET_VARIANTS, build_facenet, facenet_embedding_dim

TeacherBuilder = Callable[[str | None, bool], Teacher]


def _facenet(weights: str | None, allow_download: bool) -> Teacher:
    return build_facenet(weights, allow_download=allow_download)


def _dlib(weights: str | None, allow_download: bool) -> Teacher:
    return build_dlib(weights)  # shipped with the install: never downloads


# Every teacher by name, in the order --teacher=auto tries them for most students.
TEACHERS: dict[str, TeacherBuilder] = {"facenet": _facenet, "dlib": _dlib}
TEACHER_CHOICES = ("auto", *TEACHERS, "none")  # the values of TrainConfig.teacher
# A student that starts from a pretrained network takes that network first (regularized
# transfer: the fine-tuned trunk is held near its own pretrained behaviour).
AUTO_FIRST = {"dlib_transfer": "dlib"}


def auto_order(student: str | None = None, names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The order ``auto`` tries the teachers ``names`` (default :data:`TEACHERS`) in for
    ``student``: the network the student starts from first (:data:`AUTO_FIRST`), then the
    rest in their order."""
    names = tuple(TEACHERS) if names is None else names
    first = AUTO_FIRST.get(student or "")
    return (first, *(n for n in names if n != first)) if first in names else names


def build_auto_teacher(
    allow_download: bool = True,
    order: tuple[str, ...] | None = None,
    teachers: Mapping[str, TeacherBuilder] | None = None,
) -> tuple[Teacher | None, list[str]]:
    """The first *pretrained* teacher of ``order`` (default :func:`auto_order`) that builds,
    never a random one.

    Any failure to build a candidate (weights missing or unreadable, a package not installed,
    anything else) moves on to the next one.

    Returns:
        (teacher or None, one ``"name: why it was skipped"`` line per skipped candidate).
    """
    teachers = TEACHERS if teachers is None else teachers
    skipped = []
    for candidate in auto_order(names=tuple(teachers)) if order is None else order:
        try:
            teacher = teachers[candidate](None, allow_download)
        except Exception as err:  # noqa: BLE001 - auto must fall back on anything
            if isinstance(err, TeacherUnavailableError):
                reason = str(err)
            elif isinstance(err, ModuleNotFoundError):
                from fas_tf.cli import missing_package_message

                reason = missing_package_message(err)
            else:
                reason = f"{type(err).__name__}: {err}"
            skipped.append(f"{candidate}: {reason}")
            continue
        if teacher.pretrained:
            return teacher, skipped
        skipped.append(f"{candidate}: only random weights")
    return None, skipped


def build_teacher(
    name: str,
    weights: str | None = None,
    allow_download: bool = True,
    teachers: Mapping[str, TeacherBuilder] | None = None,
) -> Teacher:
    """Build a teacher by name (a key of ``teachers``, default :data:`TEACHERS`, or ``"auto"``).

    ``name="auto"`` returns the best *pretrained* teacher available (see
    :func:`build_auto_teacher`), never a random one, and raises
    :class:`TeacherUnavailableError` when none is available. ``weights`` is ignored for auto.
    """
    teachers = TEACHERS if teachers is None else teachers
    if name == "auto":
        teacher, skipped = build_auto_teacher(allow_download, teachers=teachers)
        if teacher is None:
            raise TeacherUnavailableError(
                "no pretrained teacher is available: " + "; ".join(skipped)
            )
        return teacher
    if name not in teachers:
        raise ValueError(f"unknown teacher {name!r}; choose from auto, none, {', '.join(teachers)}")
    return teachers[name](weights, allow_download)


def select_teacher(
    name: str,
    weights: str | None = None,
    student: str | None = None,
    allow_download: bool = True,
    log: Callable[[str], None] = print,
    teachers: Mapping[str, TeacherBuilder] | None = None,
) -> Teacher | None:
    """The teacher of a training run of ``student``: None for ``"none"``; for ``"auto"`` the
    first pretrained teacher of :func:`auto_order` (logging what it skipped, which it took and
    why; None, logged, when none builds); else the named one. UsageError for an unknown name."""
    teachers = TEACHERS if teachers is None else teachers
    if name == "none":
        return None
    if name == "auto":
        teacher, skipped = build_auto_teacher(
            allow_download, auto_order(student, tuple(teachers)), teachers)
        for line in skipped:
            log(f"teacher: auto skipped {line}")
        if teacher is None:
            log("teacher: auto found no pretrained teacher, training without one")
            return None
        why = "the first pretrained teacher that loaded" if skipped else "preferred"
        if student in AUTO_FIRST:
            why += f" for --student={student}"
        log(f"teacher: auto chose {teacher_line(teacher)} ({why})")
        return teacher
    try:
        teacher = build_teacher(name, weights, allow_download, teachers)
    except ValueError as err:
        raise UsageError(f"--teacher={name}: {err}") from err
    log(f"teacher: {teacher_line(teacher)}")
    return teacher


def teacher_line(teacher: Teacher) -> str:
    """One line naming ``teacher``: name, variant, size and where its weights came from."""
    if not teacher.pretrained:
        return f"{teacher.name}, RANDOM weights (code-path check only)"
    variant = f" {teacher.variant}" if teacher.variant else ""
    return (f"{teacher.name}{variant} ({teacher.embedding_dim}-D), pretrained, "
            f"from {teacher.weights_source}")


def check_weights_file(name: str, weights: str | None) -> None:
    """Cheap check, before any training output is written, that an explicit ``weights`` path
    is a file of teacher ``name``'s kind (FaceNet: HDF5 with a Bottleneck layer; dlib: the
    ``.dat`` header). Raises :class:`TeacherUnavailableError` naming the file."""
    if not weights or weights == "random" or weights in FACENET_VARIANTS:
        return
    if not os.path.isfile(weights):
        kind = "FaceNet weights" if name == "facenet" else "dlib face-recognition model"
        raise TeacherUnavailableError(f"{weights}: {kind} file not found")
    if name == "facenet":
        facenet_embedding_dim(weights)
    elif name == "dlib":
        with open(weights, "rb") as f:
            head = f.read(64)
        if b"loss_metric_" not in head:
            raise TeacherUnavailableError(
                f"{weights}: not a dlib face-recognition model file (no loss_metric header)"
            )
