"""Shared command-line plumbing: one-line errors, atomic writes, output guards.

A CLI's ``main`` raises one of :mod:`fas_tf.errors` for bad input; :func:`run` turns those (and
``OSError``, and flag parse errors) into a single ``error: ...`` line on stderr and exit status
2, never a traceback.

Output safety, the one home for every CLI: each output file is written by :func:`atomic_path`
(temp file + rename), and before any work :func:`check_outputs` refuses an output path that is
an input of the run, a folder, a dangling link, in a folder that cannot be written, or an
existing file that is not an earlier output of the same tool. Earlier outputs are recognised by
their content (:class:`Recogniser`): JSON by its ``"format"`` value (every JSON output carries
one), PNG by a ``Software`` text chunk naming the tool (:func:`write_png`), other files by their
first bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import secrets
import signal
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
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


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, a bad flag value reported as one ``error:`` line and exit status 2."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        fail(f"{err} (--helpfull lists the flags)")
        raise  # not reached


def define_float(name: str, default: float | None, help: str, lower: float | None = None,
                 upper: float | None = None) -> None:
    """An absl float flag whose value must be finite and within [``lower``, ``upper``] (None:
    open); anything else is a bad flag value (one line, exit status 2). Unset (None) passes."""
    from absl import flags

    flags.DEFINE_float(name, default, help)
    bounds = []
    if lower is not None:
        bounds.append(f">= {lower:g}")
    if upper is not None:
        bounds.append(f"<= {upper:g}")
    flags.register_validator(
        name,
        lambda v: v is None or (math.isfinite(v) and (lower is None or v >= lower)
                                and (upper is None or v <= upper)),
        message=" ".join(["must be a finite number", " and ".join(bounds)]).rstrip(),
    )


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` with expected errors reported as one line and exit status 2.

    A bad flag value is one line and exit status 2 too. SIGTERM ends the program like Ctrl-C:
    cleanup runs (no temp file of :func:`atomic_path` is left), then one line and exit status
    143. Printed text never fails on a file name that is not valid UTF-8 (backslash escapes).
    """
    from absl import app

    from fas_tf._quiet_tf import probe_gpus_quietly

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
    # absl shows INFO records: matplotlib's one-time "generated new fontManager" (Keras imports
    # pyplot) is not this tool's news
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    probe_gpus_quietly()  # before app.run's TensorFlow init callback logs it unfiltered

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

    app.run(guarded, flags_parser=_parse_flags)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The one way this package writes an output file. ``suffix`` ends the temp name (e.g.
    ``".keras"`` for ``keras.Model.save``, which checks the extension). The file gets the mode
    of any newly created file (0666 minus the umask), not mkstemp's 0600. An ``OSError``
    without a file name (a full disk: ``ENOSPC`` from ``write``) is raised again naming
    ``path``; folders created for ``path`` are removed again when the block fails.
    """
    path = Path(path)
    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    tmp, done = None, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # SIGINT/SIGTERM wait until ``tmp`` is known, so the cleanup below always sees the file.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            tmp = _new_temp_file(path, suffix)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        yield tmp
        os.replace(tmp, path)
        done = True
    except OSError as err:
        if err.filename in (None, tmp):  # name the user's file, not the temp file
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if not done:
            for folder in created:  # innermost first; only the empty ones we made
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _new_temp_file(path: Path, suffix: str) -> str:
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:  # like mkstemp (O_EXCL: never an existing file), but the kernel applies the umask
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write strict JSON atomically (output JSONs carry a ``"format"`` key:
    :func:`json_output`): a NaN or infinite float (which ``json`` would write as a bare ``NaN``,
    not JSON) is written as ``null``."""

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


def cache_dir(name: str) -> Path:
    """This package's cache folder ``name``: ``$XDG_CACHE_HOME/fas_tf/NAME`` (default
    ``~/.cache/fas_tf/NAME``); ``demo`` (the synthetic demo set), ``teachers`` (fetched teacher
    weights), ``teacher_cache`` (stored teacher outputs)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "fas_tf" / name


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


# --------------------------------------------------------------------------- output guard


@dataclasses.dataclass(frozen=True)
class Recogniser:
    """Tells an earlier output of a tool by its content: ``test(path) -> bool`` on an existing
    regular file; ``what`` names that kind of output in messages."""

    what: str
    test: Callable[[Path], bool]

    def __call__(self, path: Path) -> bool:
        try:
            return bool(self.test(path))
        except (OSError, ValueError):
            return False


def json_output(fmt: str, legacy_keys: Iterable[str] = ()) -> Recogniser:
    """An earlier JSON output whose ``"format"`` is ``fmt`` (or, written before outputs carried
    a format, a JSON object with all of ``legacy_keys``)."""
    legacy = frozenset(legacy_keys)

    def test(path: Path) -> bool:
        with open(path, "rb") as f:
            data = json.loads(f.read(64 << 20))
        if not isinstance(data, dict):
            return False
        return data.get("format") == fmt or bool(legacy) and legacy <= data.keys()

    return Recogniser(f"an earlier {fmt} JSON", test)


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    if data[:8] != PNG_SIGNATURE:
        return
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        yield kind, data[at + 8:at + 8 + length]
        if kind in (b"IDAT", b"IEND"):
            return
        at += 12 + length


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_software(path: str | os.PathLike) -> str | None:
    """The ``Software`` text chunk of a PNG file (before its image data), or None."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    for kind, body in _png_chunks(head):
        if kind == b"tEXt" and body.startswith(b"Software\0"):
            return body[len(b"Software\0"):].decode("latin-1")
    return None


def png_output(tool: str) -> Recogniser:
    """An earlier PNG of ``tool`` (its ``Software`` chunk, written by :func:`write_png`)."""
    return Recogniser(f"an earlier {tool} PNG", lambda p: png_software(p) == tool)


def file_output(what: str, head: bytes) -> Recogniser:
    """An earlier output whose first bytes contain ``head`` (CSV header, HTML title...)."""

    def test(path: Path) -> bool:
        with open(path, "rb") as f:
            return head in f.read(4096)

    return Recogniser(what, test)


def write_png(path: str | os.PathLike, png: bytes, tool: str) -> None:
    """Write encoded PNG bytes atomically with a ``Software: tool`` text chunk after the header
    (how :func:`png_output` recognises the file later)."""
    if png[:8] != PNG_SIGNATURE or png[12:16] != b"IHDR":
        raise ValueError("not PNG data")
    end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    body = b"tEXt" + b"Software\0" + tool.encode("latin-1")
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(png[:end] + chunk + png[end:])


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (for :func:`write_png`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _writable_dir(path: Path) -> bool:
    """Whether a file can be created at ``path``'s place (the nearest existing folder)."""
    folder = path.parent
    while not folder.exists():
        if folder.parent == folder:
            return False
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def check_outputs(
    outputs: Mapping[str | os.PathLike, Recogniser]
    | Iterable[tuple[str | os.PathLike | None, Recogniser]],
    inputs: Iterable[str | os.PathLike | None] = (),
) -> None:
    """Refuse (UsageError, one line naming the file) output paths that could lose a user's file.

    ``outputs``: each path the tool is about to write (pairs when two flags may name the same
    file; None: that output is not asked for), with the recogniser of its earlier outputs of
    that kind. Refused: a path that is one of ``inputs`` (after links), appears twice,
    is a folder or a dangling link, lies in a folder that cannot be written, or is an existing
    file that ``outputs[path]`` does not recognise. Call before any work or any write.
    """
    taken = {os.path.realpath(p): str(p) for p in inputs if p is not None and os.path.exists(p)}
    seen: dict[str, str] = {}
    pairs = outputs.items() if isinstance(outputs, Mapping) else outputs
    for path, ours in pairs:
        if path is None or path == "":
            continue
        path = Path(path)
        real = os.path.realpath(path)
        if real in taken:
            raise UsageError(f"{path}: is an input of this run ({taken[real]}); "
                             "choose another output name")
        if real in seen:
            raise UsageError(f"{path}: named for two outputs (also {seen[real]}); "
                             "choose different names")
        seen[real] = str(path)
        if os.path.isdir(path):
            raise UsageError(f"{path}: is a folder; the output must be a file name")
        if os.path.islink(path) and not os.path.exists(path):
            raise UsageError(f"{path}: is a dangling symbolic link; remove it or choose "
                             "another output name")
        if os.path.exists(path):
            if not os.path.isfile(path) or not ours(path):
                raise UsageError(f"{path}: exists and is not {ours.what}; not replaced "
                                 "(move it away or choose another output name)")
        if not _writable_dir(path):
            raise UsageError(f"{path}: its folder cannot be written; choose another output name")
