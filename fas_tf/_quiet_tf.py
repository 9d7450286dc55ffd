"""Keep TensorFlow's start-up C++ log lines off the screen (imported by ``fas_tf/__init__``).

TF 2.21 writes ``I0000 ... port.cc`` / ``cudart_stub.cc`` lines (and absl's "All log messages
before absl::InitializeLog() ..." line) while ``import tensorflow`` loads its shared libraries;
``TF_CPP_MIN_LOG_LEVEL`` does not reach them, and neither do ``GLOG_minloglevel``,
``ABSL_MIN_LOG_LEVEL`` or ``GRPC_VERBOSITY`` (tried). So while ``tensorflow`` is first imported
after ``fas_tf``, file descriptor 2 goes through a small filter process that drops those lines
by their level (``TF_CPP_MIN_LOG_LEVEL``: 1 drops I lines, 2 also W and the GPU probe's
"failed call to cuInit" E line of a machine without a GPU driver, 3 all E; 0 keeps all) and
passes every other line through unchanged. :func:`fas_tf.cli.run` runs that GPU probe (which
``absl.app.run`` would run anyway, through a TensorFlow init callback) under the same filter.
A separate process, so that nothing is lost if the import crashes and nothing blocks while
TensorFlow's loaders hold the GIL. Anything unusual (no fd 2, no interpreter to start) falls
back to the plain import.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import subprocess
import sys

# The filter program (run with ``python -I -S``): argv[1] is the minimum level kept.
FILTER = r"""
import re, sys
level = int(sys.argv[1])
drop = "IWEF"[:level]
line_re = re.compile(rb"^([IWEF])\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] ")
absl_re = rb"WARNING: All log messages before absl::InitializeLog() is called"
out, skip_next = sys.stdout.buffer, False
for line in sys.stdin.buffer:
    m = line_re.match(line)
    if m and (m.group(1).decode() in drop or (
            level >= 2 and b"cuda_platform.cc" in line and b"failed call to cuInit" in line)):
        skip_next = b"cpu_feature_guard" in line  # its second line has no prefix
        continue
    if (skip_next and line.startswith(b"To enable the following instructions")) or (
            level >= 1 and line.startswith(absl_re)):
        skip_next = False
        continue
    skip_next = False
    out.write(line)
    out.flush()
"""


def min_log_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as 0..3 (0 when unset or not a number)."""
    try:
        return max(0, min(3, int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))))
    except ValueError:
        return 0


@contextlib.contextmanager
def filtered_stderr(level: int):
    """File descriptor 2 through :data:`FILTER` for the block (no-op at level 0 or on error)."""
    if level <= 0:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):
        yield
        return
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", FILTER, str(level)],
            stdin=subprocess.PIPE, stdout=saved, stderr=saved, close_fds=True,
        )
        os.dup2(proc.stdin.fileno(), 2)
    except (OSError, ValueError, subprocess.SubprocessError):
        os.close(saved)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def probe_gpus_quietly() -> None:
    """List the GPUs (once per process; TensorFlow logs a failed CUDA probe) under
    :func:`filtered_stderr`, if TensorFlow is imported; otherwise do nothing."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    with filtered_stderr(min_log_level()), contextlib.suppress(Exception):
        tf.config.list_physical_devices("GPU")


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` like the normal path finder; its first execution runs under
    :func:`filtered_stderr`. Removes itself from ``sys.meta_path`` once used."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def quiet_exec_module(module):
            with filtered_stderr(min_log_level()):
                exec_module(module)

        loader.exec_module = quiet_exec_module
        return spec


def install() -> None:
    """Put :class:`QuietTensorFlowImport` first in ``sys.meta_path`` unless TF is imported."""
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, QuietTensorFlowImport) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, QuietTensorFlowImport())
