"""Exceptions for bad input, importable without TensorFlow (CLIs fail fast on them)."""


class UsageError(ValueError):
    """Bad command-line input; the message names the file or flag and the problem."""


class DataError(ValueError):
    """A problem with one input file or the dataset; the message names the file."""


class TeacherUnavailableError(RuntimeError):
    """Raised when a pretrained teacher's weights cannot be found or fetched."""


class WorkerLostError(RuntimeError):
    """Another worker of a ``--strategy=multiworker`` cluster stopped or became unreachable."""


class CheckFailedError(RuntimeError):
    """An output failed its acceptance check (e.g. export parity), so it was not written."""
