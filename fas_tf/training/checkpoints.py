"""Checkpoints and ``--resume``: the ``BackupAndRestore`` state a killed run continues from,
the student saved after each checkpointed epoch, ``history.csv`` rows, and the saved settings
a resumed run keeps."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from pathlib import Path

from fas_tf import cli
from fas_tf.errors import DataError
from fas_tf.training.config import TrainConfig

# Settings a resumed run may change without changing the experiment.
_RESUME_FREE = {"resume", "verbose", "output_dir", "allow_download", "checkpoint_every"}


def resolve_resume(config: TrainConfig, given: set[str] | None) -> TrainConfig:
    """The saved config of the run in ``output_dir``; a given setting that differs is an error."""
    saved_path = Path(config.output_dir) / "config.json"
    if not saved_path.is_file():
        raise cli.UsageError(f"{saved_path}: --resume needs the config.json of an earlier run")
    try:
        saved = json.loads(saved_path.read_text())["config"]
    except (ValueError, KeyError, TypeError) as err:
        raise cli.UsageError(f"{saved_path}: not a fas_tf config ({err})") from err
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    default = TrainConfig()
    if given is None:  # library callers: every setting that differs from the default
        given = {k for k in known if getattr(config, k) != getattr(default, k)}
    for name in sorted((set(given) & known) - _RESUME_FREE):
        # a setting newer than the saved config.json had its default value in that run
        mine, theirs = getattr(config, name), saved.get(name, getattr(default, name))
        if not _same_setting(mine, theirs):
            hint = " (a run cannot be extended; train into a new --output_dir)" \
                if name == "epochs" else ""
            raise cli.UsageError(
                f"--{name}={_flag_text(mine)} differs from {_flag_text(theirs)} saved in "
                f"{saved_path}{hint}; --resume keeps the saved settings: drop the flag (or "
                "the --config key) or use another --output_dir"
            )
    merged = {k: v for k, v in saved.items() if k in known and k not in _RESUME_FREE}
    return dataclasses.replace(config, **merged)


def _same_setting(a, b) -> bool:
    """Equal, or the same files (paths, or lists of paths: a comma string is a list)."""
    if a == b:
        return True
    if isinstance(a, list) or isinstance(b, list):
        a, b = (v.split(",") if isinstance(v, str) else v for v in (a, b))
        return (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
                and all(_same_setting(x, y) for x, y in zip(a, b, strict=True)))
    return isinstance(a, str) and isinstance(b, str) and os.path.realpath(a) == os.path.realpath(b)


def _flag_text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


# What a run writes into --output_dir.
RUN_OUTPUTS = ("config.json", "checkpoints", "history.csv", "metrics.json", "student.keras",
               "logs")


def check_fresh_output(out: Path) -> None:
    if (out / "config.json").exists() or (out / "checkpoints").exists():
        raise cli.UsageError(
            f"{out}: already holds a run; use --resume to continue it or another --output_dir"
        )
    if found := [name for name in RUN_OUTPUTS if (out / name).exists()]:
        raise cli.UsageError(
            f"{out}: already holds {', '.join(found)}, which a run would overwrite; use another "
            "--output_dir"
        )


def checkpoint_due(epochs_done: int, every: int = 1, last: int | None = None) -> bool:
    """Whether a checkpoint is written after ``epochs_done`` completed epochs: every ``every``
    epochs and after the ``last`` one."""
    return epochs_done % every == 0 or epochs_done == last


def student_checkpoint(student, path: Path, every: int = 1, last: int | None = None):
    """A Keras callback saving the student (only, no teacher) atomically after every ``every``
    epochs and after epoch ``last``."""
    import keras

    def save(epoch, logs):
        if checkpoint_due(epoch + 1, every, last):
            save_student(student, path)

    return keras.callbacks.LambdaCallback(on_epoch_end=save)


def stop_on_non_finite_loss(history: Path | None = None):
    """A callback ending ``fit`` with a DataError as soon as a logged loss or metric is NaN or
    infinite (Keras would train on, and write a model of NaN weights); the message names the
    epoch, the values and ``history`` (the last good epochs are in it)."""
    import keras
    import numpy as np

    class StopOnNonFiniteLoss(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            self._check(logs, f"epoch {self.epoch + 1}, step {batch + 1}")

        def on_epoch_end(self, epoch, logs=None):
            self._check(logs, f"epoch {epoch + 1}")

        def _check(self, logs, where):
            bad = {}
            for name, value in (logs or {}).items():
                try:
                    number = float(np.asarray(value))
                except (TypeError, ValueError):
                    continue
                if not math.isfinite(number):
                    bad[name] = number
            if bad:
                values = ", ".join(f"{k} {v}" for k, v in sorted(bad.items()))
                kept = f"; the epochs before it are in {history}" if history else ""
                raise DataError(
                    f"training stopped in {where}: {values}; no model written{kept}. Check the "
                    "data and teacher cache for NaN, or lower --learning_rate"
                )

    return StopOnNonFiniteLoss()


class _WeightsInMemory(io.BytesIO):
    """A buffer ``keras.Model.save_weights`` accepts: Keras' HDF5 store takes a ``BytesIO``,
    and the saving API checks the name's ``.weights.h5`` ending."""

    def __str__(self) -> str:
        return "in-memory.weights.h5"


def backup_and_restore(backup_dir: Path, restart_hint: str, every: int = 1,
                       last: int | None = None, keep_after_fit: bool = False):
    """Keras ``BackupAndRestore`` for ``backup_dir`` whose backups survive a kill mid-write.

    A backup is written after every ``every`` epochs and after epoch ``last`` (each costs
    about a second on 2 CPU cores; a resumed run repeats the epochs since the last one). Each
    save writes the weights, then the metadata (the epoch), to temporary files
    in ``backup_dir`` and renames each into place, so a kill leaves the previous backup or the
    new one, never a torn file, and the metadata never names an epoch whose weights are
    missing. A backup that cannot be read at restore raises :class:`fas_tf.errors.DataError`
    naming the file and ending with ``restart_hint`` (what the user can do instead). The
    backup is removed when ``fit`` ends, unless ``keep_after_fit`` (the caller removes it once
    the run's outputs are written).
    """
    import keras

    class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        def _save_model(self):  # called by on_epoch_end after it counted the epoch
            if not checkpoint_due(self._current_epoch, every, last):
                return
            os.makedirs(self.backup_dir, exist_ok=True)
            # HDF5 writes the weights in memory; the disk sees one plain write. A write that
            # fails inside HDF5 (a full disk) leaves its file open and failing again at exit.
            weights = _WeightsInMemory()
            self.model.save_weights(weights)
            with cli.atomic_path(self._weights_path, suffix=".weights.h5") as tmp:
                Path(tmp).write_bytes(weights.getvalue())
            metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
            with cli.atomic_path(self._training_metadata_path) as tmp:
                Path(tmp).write_text(json.dumps(metadata), encoding="utf-8")

        def _load_model(self):
            try:
                super()._load_model()
            except (OSError, ValueError, KeyError) as err:
                bad_json = isinstance(err, (json.JSONDecodeError, KeyError))
                path = self._training_metadata_path if bad_json else self._weights_path
                reason = " ".join(str(err).split()) or err.__class__.__name__
                raise DataError(
                    f"{path}: cannot restore this backup of the interrupted run ({reason}); "
                    f"{restart_hint}"
                ) from err

    return AtomicBackupAndRestore(str(backup_dir), delete_checkpoint=not keep_after_fit)


def save_student(student, path: Path) -> None:
    with cli.atomic_path(path, suffix=".keras") as tmp:
        student.save(tmp)


def truncate_history(path: Path, epochs: int) -> None:
    """Drop the rows of ``history.csv`` for epochs ``>= epochs`` (logged after the backup a
    resumed run restarts from, so they are trained again), atomically; no file: nothing.

    Blank lines and a last line cut short by a kill (no line end) are dropped too; any other
    row that does not start with an epoch number is a DataError naming the file and line.
    """
    if not path.exists():
        return
    try:
        with open(path, encoding="utf-8", newline="") as f:  # keeps CSVLogger's "\r\n"
            lines = f.read().splitlines(keepends=True)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a history.csv written by fas_tf ({err}); move it away "
                        "and --resume again (the resumed epochs start a new one)") from err
    keep = lines[:1]
    for number, row in enumerate(lines[1:], start=2):
        if not row.strip() or (number == len(lines) and not row.endswith("\n")):
            continue
        try:
            epoch = int(row.split(",", 1)[0])
        except ValueError:
            raise DataError(
                f"{path}: line {number} is not a row of epoch results ({row.strip()[:40]!r}); "
                "delete that line and --resume again"
            ) from None
        if epoch < epochs:
            keep.append(row)
    if len(keep) < len(lines):
        with cli.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write("".join(keep))


def last_history_row(path: Path) -> dict[str, float]:
    """The numbers of the last row of ``history.csv`` (without its epoch); {} without one."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.DictReader(f) if row.get("epoch")]
    except OSError:
        return {}
    numbers = {}
    for name, text in (rows[-1] if rows else {}).items():
        try:
            numbers[name] = float(text)
        except (TypeError, ValueError):  # CSVLogger's "NA" for a value not logged
            continue
    numbers.pop("epoch", None)
    return numbers


def backup_epoch(backup: Path) -> int:
    """The epoch a run resumes at: what ``keras.callbacks.BackupAndRestore`` saved in
    ``backup/training_metadata.json`` (``{"epoch": completed epochs, ...}``), 0 without one."""
    try:
        return int(json.loads((backup / "training_metadata.json").read_text())["epoch"])
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{backup / 'training_metadata.json'}: cannot restore this backup of the interrupted "
            f"run ({' '.join(str(err).split())}); the run cannot be resumed: train again without "
            "--resume into a new --output_dir"
        ) from err


def data_starts_at_restored_epoch(initial_epoch: int):
    """A callback (after ``BackupAndRestore``) checking that the epoch Keras restored is the one
    the training dataset starts at (read from the same backup before ``fit``)."""
    import keras

    class DataStartsAtRestoredEpoch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            restored = int(getattr(self.model, "_initial_epoch", None) or initial_epoch)
            if restored != initial_epoch:
                raise RuntimeError(
                    f"BackupAndRestore restored epoch {restored}, but the training data start "
                    f"at epoch {initial_epoch}"
                )

    return DataStartsAtRestoredEpoch()
