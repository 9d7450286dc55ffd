"""Shared command-line plumbing: one-line errors, atomic writes.

A CLI's ``main`` raises one of :mod:`fas_tf.errors` for bad input; :func:`run` turns those (and
``OSError``) into a single ``error: ...`` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from fas_tf.errors import (
    CheckFailedError,
    DataError,
    TeacherUnavailableError,
    UsageError,
    WorkerLostError,
)

EXPECTED_ERRORS = (UsageError, DataError, TeacherUnavailableError, CheckFailedError,
                   WorkerLostError)

# Import name -> PyPI package where they differ beyond '_' -> '-', for "missing package"
# messages; only modules some import path of the project reaches.
PIP_NAMES = {
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "absl": "absl-py",
}


def missing_package_message(err: ModuleNotFoundError) -> str:
    """One line for a failed import: the missing package and the command that installs it."""
    top = (err.name or str(err)).split(".")[0]
    package = PIP_NAMES.get(top, top.replace("_", "-"))
    return (
        f"missing Python package {package!r} (import {top!r} failed); install it with "
        f"`pip install {package}`, or reinstall fas_tf with `pip install -e .` from its folder"
    )


def fail(message: str, code: int = 2) -> None:
    message = " ".join(str(message).split())  # one line, even for multi-line library errors
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so ``finally`` blocks (temp-file cleanup) run."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` with expected errors reported as one line and exit status 2.

    SIGTERM ends the program like Ctrl-C: cleanup runs (no temp file of
    :func:`atomic_path` is left), then one line and exit status 143.
    """
    from absl import app

    def guarded(argv: list[str]) -> None:
        signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            main(argv)
        except EXPECTED_ERRORS as err:
            fail(str(err))
        except ModuleNotFoundError as err:
            fail(missing_package_message(err))
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            fail(f"{where}{err.strerror or err}")
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Terminated:
            fail("terminated (SIGTERM)", 143)

    app.run(guarded)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The one way this package writes an output file. ``suffix`` ends the temp name (e.g.
    ``".keras"`` for ``keras.Model.save``, which checks the extension). The file gets the mode
    of any newly created file (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        # SIGINT/SIGTERM wait until ``tmp`` is known, so the cleanup below always sees the file.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            tmp = _new_temp_file(path, suffix)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _new_temp_file(path: Path, suffix: str) -> str:
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:  # like mkstemp (O_EXCL: never an existing file), but the kernel applies the umask
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write strict JSON atomically: a NaN or infinite float (which ``json`` would write as a
    bare ``NaN``, not JSON) is written as ``null``."""

    def strict(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: strict(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [strict(v) for v in value]
        return value

    text = json.dumps(strict(data), indent=2, sort_keys=True, allow_nan=False)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_writable_dir(path: str | os.PathLike) -> bool:
    """Raise UsageError unless ``path`` is (or can be made) a writable directory.

    Returns True when the directory had to be created (so a caller can remove it on failure).
    """
    path = Path(path)
    created = not path.exists()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: output path exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test"):
            pass
    except OSError as err:
        raise UsageError(f"{path}: output directory is not writable ({err.strerror})") from err
    return created
