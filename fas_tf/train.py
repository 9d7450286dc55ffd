"""Train a landmark student, optionally regularized by a frozen face-recognition teacher.

``python -m fas_tf.train --data=FOLDER_OR_CSV --output_dir=runs/x`` (see ``--help``). With no
``--data`` it trains on a generated synthetic demo set (not a clinical model).

Writes to ``--output_dir``: ``student.keras``, ``config.json`` (every setting, the teacher used,
package versions), ``metrics.json``, ``history.csv``, TensorBoard ``logs/`` and ``checkpoints/``
(``BackupAndRestore`` state, so ``--resume`` continues after a kill from the last checkpoint,
written every ``--checkpoint_every`` epochs and after the last, plus ``student_last.keras``).
The library entry point is :func:`train` with a :class:`TrainConfig`; absl flags live only in
:func:`main`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fas_tf import __version__, cli
from fas_tf.errors import DataError, WorkerLostError

if TYPE_CHECKING:
    from fas_tf.model import DistillSource

TEACHER_CHOICES = ("auto", "facenet", "dlib", "none")
# 60 epochs (600 steps on 159 faces) left the student far from converged: google2 NME 13.5%
# at 60 vs 8.x% at 200 epochs (docs/results.md, issue 5).
DEFAULT_EPOCHS = 200
DEMO_EPOCHS = 20
STRATEGIES = ("default", "mirrored", "multiworker")
# The names of fas_tf.regularizers.HEATMAP_LOSSES (here, so flags need not import TensorFlow).
HEATMAP_LOSS_CHOICES = ("mse", "awing")


@dataclass
class TrainConfig:
    """Every training setting (recorded in ``config.json``)."""

    output_dir: str = "runs/demo"
    data: str | None = None
    val_data: str | None = None
    attributes: str | None = None
    train_sets: list[str] = field(default_factory=list)
    val_sets: list[str] = field(default_factory=list)
    exclude: str | None = None
    teacher: str = "auto"
    teacher_weights: str | None = None
    regularizers: str = "cls,feat,sa,ca"
    lambda_cls: float = 1.0
    lambda_feat: float = 1.0
    lambda_sa: float = 1.0
    lambda_ca: float = 1.0
    distill_from: str | None = None  # a trained student.keras to distill from
    lambda_distill: float = 1.0
    epochs: int | None = None  # None: DEFAULT_EPOCHS, or DEMO_EPOCHS on the demo set
    batch_size: int = 16
    input_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    sigma: float = 1.5
    heatmap_loss: str = "mse"  # fas_tf.regularizers.HEATMAP_LOSSES
    heatmap_stride: int = 4  # crop pixels per heatmap cell (4: 32x32 at 128 px; 2: 64x64)
    student: str = "dlib_transfer"  # fas_tf.student.ARCHITECTURES
    alpha: float = 0.5
    head_channels: int = 64
    rotation: float = 45.0
    upright: bool = False  # training canvases cut with the true eyes level (fas_tf.framing)
    seed: int = 0
    teacher_cache: int = 0  # K stored teacher views per face; 0: run the teacher online
    train_limit: int | None = None
    checkpoint_every: int = 1  # epochs between checkpoints (--resume backup, student_last)
    resume: bool = False
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool = False
    strict: bool = False
    verbose: int = 1
    allow_download: bool = True

    def validate(self) -> None:
        """Raise UsageError (one line naming the setting) for an out-of-range value.

        The one home of these checks: :func:`train` calls it, so the CLI and the library reject
        the same values, before TensorFlow is imported. Names are the CLI flags.
        """
        checks = [
            ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("input_size", self.input_size,
             self.input_size >= 32 and self.input_size % 32 == 0, "a multiple of 32, >= 32"),
            ("learning_rate", self.learning_rate, self.learning_rate > 0, "> 0"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("sigma", self.sigma, self.sigma > 0, "> 0"),
            ("heatmap_stride", self.heatmap_stride, self.heatmap_stride in (2, 4), "2 or 4"),
            ("alpha", self.alpha, self.alpha > 0, "> 0"),
            ("head_channels", self.head_channels, self.head_channels >= 1, ">= 1"),
            ("rotation", self.rotation, 0 <= self.rotation <= 180, "in [0, 180] degrees"),
            ("seed", self.seed, 0 <= self.seed < 2**32, "in [0, 2**32)"),
            ("teacher_cache", self.teacher_cache, self.teacher_cache >= 0, ">= 0"),
            ("checkpoint_every", self.checkpoint_every, self.checkpoint_every >= 1, ">= 1"),
            ("verbose", self.verbose, self.verbose in (0, 1, 2), "0, 1 or 2"),
            *((f"lambda_{k}", v, v >= 0, ">= 0") for k, v in self.lambdas().items()),
            ("lambda_distill", self.lambda_distill, self.lambda_distill >= 0, ">= 0"),
        ]
        if self.epochs is not None:
            checks.append(("epochs", self.epochs, self.epochs >= 1, ">= 1"))
        if self.train_limit is not None:
            checks.append(("train_limit", self.train_limit, self.train_limit >= 1, ">= 1"))
        for name, value, ok, rule in checks:  # NaN fails every comparison
            if not ok or not math.isfinite(value):
                raise cli.UsageError(f"--{name} must be {rule}, got {value}")
        if self.heatmap_loss not in HEATMAP_LOSS_CHOICES:
            choices = ", ".join(HEATMAP_LOSS_CHOICES)
            raise cli.UsageError(f"--heatmap_loss must be one of {choices}, "
                                 f"got {self.heatmap_loss!r}")
        if self.teacher_cache and self.strategy == "multiworker":
            raise cli.UsageError("--teacher_cache does not support --strategy=multiworker yet; "
                                 "use --teacher_cache=0 there")

    def lambdas(self) -> dict[str, float]:
        return {
            "cls": self.lambda_cls,
            "feat": self.lambda_feat,
            "sa": self.lambda_sa,
            "ca": self.lambda_ca,
        }


# Settings a resumed run may change without changing the experiment.
_RESUME_FREE = {"resume", "verbose", "output_dir", "allow_download", "checkpoint_every"}


def demo_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "fas_tf" / "demo"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version(), "fas_tf": __version__}
    for name in ("tensorflow", "keras", "keras-facenet", "numpy", "opencv-python-headless"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def make_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":  # all GPUs, else every logical CPU device
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        task = cluster_task(name)
        check_peers_resolve(task)
        with cluster_start_guard(task):
            return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise cli.UsageError(f"--strategy: unknown {name!r}; choose from {', '.join(STRATEGIES)}")


# Seconds the workers of a --strategy=multiworker cluster have to start and reach each other.
CLUSTER_START_TIMEOUT = 600.0
RESOLVE_TIMEOUT = 20.0  # seconds to resolve a peer's host name


def check_peers_resolve(task: ClusterTask, timeout: float = RESOLVE_TIMEOUT) -> None:
    """UsageError naming the first peer whose address is not ``host:port`` or whose host does
    not resolve within ``timeout`` seconds (TensorFlow would wait for it forever, deaf to
    Ctrl-C)."""
    results: dict[str, object] = {}

    def resolve(address: str, host: str, port: str) -> None:
        try:
            socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            results[address] = True
        except OSError as err:
            results[address] = err.strerror or str(err)

    threads = []
    for name, address in task.peers:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise cli.UsageError(f"TF_CONFIG: {name} address {address!r} is not host:port")
        threads.append(threading.Thread(target=resolve, args=(address, host.strip("[]"), port),
                                        daemon=True))
        threads[-1].start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for name, address in task.peers:
        why = results.get(address, f"no answer within {timeout:g} s")
        if why is not True:
            raise cli.UsageError(
                f"TF_CONFIG: {name} at {address} does not resolve ({why}); fix its address in "
                "the cluster of TF_CONFIG (the same on every worker)"
            )


# Watches a cluster start-up from a process of its own: TensorFlow's start-up holds the GIL, so
# no thread of the training process runs meanwhile. argv: parent pid, timeout, task, peers (JSON).
_START_WATCHER = r"""
import json, os, select, signal, socket, sys
parent, timeout, task = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
peers = json.loads(sys.argv[4])
def stop(line):
    print(f"error: --strategy=multiworker: {task}: {line}", file=sys.stderr, flush=True)
    os.kill(parent, signal.SIGKILL)
    os._exit(0)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C ends the parent, then stdin ends here
signal.signal(signal.SIGTERM, lambda *_: stop("terminated (SIGTERM) while the cluster started"))
if select.select([sys.stdin], [], [], timeout)[0]:
    sys.exit(0)  # the parent closed the pipe: the cluster started, or the parent is gone
def accepts(address):
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        return True
    except (OSError, ValueError):
        return False
missing = [f"{name} ({address})" for name, address in peers if not accepts(address)]
why = (f"not reachable: {', '.join(missing)}; start every worker with the same TF_CONFIG "
       "cluster" if missing else "every peer accepts connections: check that all workers "
       "were given the same TF_CONFIG cluster")
stop(f"the cluster did not start within {timeout:g} s; {why}")
"""


@contextlib.contextmanager
def cluster_start_guard(task: ClusterTask, timeout: float = CLUSTER_START_TIMEOUT):
    """Around TensorFlow's cluster start-up, which blocks in C++ holding the GIL (no Python
    signal handler or thread runs): Ctrl-C ends the process at once (nothing is written yet),
    and a watcher process ends it after ``timeout`` seconds with one line naming the peers
    that accept no connection (or on a SIGTERM sent to the process group; TensorFlow's
    coordination agent swallows one sent to this process alone)."""
    import subprocess

    main_thread = threading.current_thread() is threading.main_thread()
    on_term = signal.getsignal(signal.SIGTERM)
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL) if main_thread else None
    watcher = subprocess.Popen(
        [sys.executable, "-c", _START_WATCHER, str(os.getpid()), str(timeout),
         f"{task.type} {task.index}", json.dumps(task.peers)],
        stdin=subprocess.PIPE,
    )
    try:
        yield
    finally:
        watcher.stdin.close()
        watcher.wait()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if main_thread and on_term is not None:  # taken over by TensorFlow meanwhile
            signal.signal(signal.SIGTERM, on_term)


@dataclass(frozen=True)
class ClusterTask:
    """This process in a ``--strategy=multiworker`` cluster (from ``TF_CONFIG``)."""

    type: str = "worker"
    index: int = 0
    workers: int = 1  # chief + workers
    has_chief: bool = False
    peers: tuple[tuple[str, str], ...] = ()  # (task, address) of every other task

    @property
    def is_chief(self) -> bool:
        """Task ``chief``, or ``worker`` 0 when the cluster has none (TF's multi-worker rule)."""
        return self.type == "chief" or (
            self.type == "worker" and self.index == 0 and not self.has_chief
        )


def cluster_task(strategy: str = "multiworker") -> ClusterTask:
    """This process's task; a lone worker unless ``strategy`` is ``multiworker`` with TF_CONFIG."""
    raw = os.environ.get("TF_CONFIG") if strategy == "multiworker" else None
    if not raw:
        return ClusterTask()
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
        chiefs, workers = cluster.get("chief", []), cluster.get("worker", [])
        kind, index = str(task.get("type", "worker")), int(task.get("index", 0))
        for job, addresses in (("chief", chiefs), ("worker", workers)):
            if not isinstance(addresses, list):
                raise TypeError(f"its {job!r} is not a list of host:port addresses")
    except (ValueError, TypeError, AttributeError) as err:
        raise cli.UsageError(f"TF_CONFIG: not a TensorFlow cluster description ({err})") from err
    tasks = {"chief": chiefs, "worker": workers}
    if kind not in tasks or not 0 <= index < len(tasks[kind]):
        have = ", ".join(f"{k} 0" + (f"-{len(v) - 1}" if len(v) > 1 else "")
                         for k, v in tasks.items() if v)
        raise cli.UsageError(
            f"TF_CONFIG: task {kind} {index} is not in its cluster (which has "
            f"{have or 'no chief or worker'}); give each process one of the cluster's tasks"
        )
    peers = tuple((f"{k} {i}", str(address)) for k, addresses in tasks.items()
                  for i, address in enumerate(addresses) if (k, i) != (kind, index))
    return ClusterTask(kind, index, len(chiefs) + len(workers), bool(chiefs), peers)


def is_chief(strategy: str = "multiworker") -> bool:
    """Whether this process writes ``--output_dir``: all but a multi-worker cluster's non-chiefs."""
    return cluster_task(strategy).is_chief


def worker_scratch_dir(output_dir: str | os.PathLike, index: int) -> Path:
    """Where non-chief worker ``index`` keeps its ``BackupAndRestore`` state for a run.

    On the worker's own machine (system temp dir), stable across restarts so ``--resume``
    finds it, removed when the run finishes; never inside ``--output_dir``.
    """
    digest = hashlib.sha1(os.path.abspath(output_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"fas_tf-{digest}-worker{index}"


# --teacher=auto's order for a student that starts from a pretrained network: that network
# first (regularized transfer: the fine-tuned trunk is held near its own pretrained behaviour).
AUTO_TEACHERS = {"dlib_transfer": ("dlib", "facenet")}


def select_teacher(config: TrainConfig, log=print):
    """Build the teacher asked for; ``auto`` says which it took and why, never a random one.

    ``auto`` tries real FaceNet, then dlib (for ``--student=dlib_transfer`` dlib first: the
    network whose trunk the student starts from, :data:`AUTO_TEACHERS`), moving on after any
    failure to build one (missing package or weights, unreadable file), and trains without a
    teacher when none builds.
    """
    from fas_tf.teachers import TEACHERS, build_auto_teacher, build_teacher

    if config.teacher == "none":
        return None
    if config.teacher not in TEACHER_CHOICES:
        raise cli.UsageError(
            f"--teacher: unknown {config.teacher!r}; choose from {', '.join(TEACHER_CHOICES)}"
        )
    if config.teacher == "auto":
        order = AUTO_TEACHERS.get(config.student, TEACHERS)
        teacher, skipped = build_auto_teacher(config.allow_download, order)
        for line in skipped:
            log(f"teacher: auto skipped {line}")
        if teacher is None:
            log("teacher: auto found no pretrained teacher, training without one")
            return None
        why = "the first pretrained teacher that loaded" if skipped else "preferred"
        if config.student in AUTO_TEACHERS:
            why += f" for --student={config.student}"
        log(f"teacher: auto chose {_teacher_line(teacher)} ({why})")
        return teacher
    try:
        teacher = build_teacher(config.teacher, config.teacher_weights, config.allow_download)
    except ValueError as err:
        raise cli.UsageError(f"--teacher={config.teacher}: {err}") from err
    log(f"teacher: {_teacher_line(teacher)}")
    return teacher


def _teacher_line(teacher) -> str:
    if not teacher.pretrained:
        return f"{teacher.name}, RANDOM weights (code-path check only)"
    variant = f" {teacher.variant}" if teacher.variant else ""
    return (f"{teacher.name}{variant} ({teacher.embedding_dim}-D), pretrained, "
            f"from {teacher.weights_source}")


def _load_sets(config: TrainConfig, log=print):
    from fas_tf.data import (
        exclusion_summary,
        load_faces,
        read_attributes,
        read_exclusions,
        skipped_summary,
        stems_in_sets,
    )
    from fas_tf.demo import demo_dirs

    train_path, val_path = config.data, config.val_data
    if train_path is None:
        train_path, val_path = demo_dirs(demo_root())
        log(f"data: no --data given, using the synthetic demo set in {demo_root()} "
            "(not clinical data)")
    attrs = read_attributes(config.attributes) if config.attributes else {}
    if (config.train_sets or config.val_sets) and not attrs:
        raise cli.UsageError("--train_sets/--val_sets need --attributes with an image_set column")

    exclude = read_exclusions(config.exclude) if config.exclude else frozenset()

    def stems(sets):
        return stems_in_sets(attrs, sets) if sets else None

    train = load_faces(
        train_path, config.input_size, config.strict, config.train_limit, config.seed,
        stems=stems(config.train_sets), upright=config.upright, exclude=exclude,
    )
    if (line := skipped_summary(train)) is not None:
        print(line, file=sys.stderr, flush=True)
    val = None
    if val_path is None and config.val_sets:
        val_path = train_path
    if val_path is not None:
        val = load_faces(
            val_path, config.input_size, config.strict, stems=stems(config.val_sets),
            num_landmarks=train.num_landmarks, exclude=exclude,
        )
        if (line := skipped_summary(val)) is not None:
            print(line, file=sys.stderr, flush=True)
    if config.exclude:
        faces = [f for f in (train, val) if f is not None]
        log(exclusion_summary(config.exclude, exclude, *faces))
    return train, val


def _resolve_resume(config: TrainConfig, given: set[str] | None) -> TrainConfig:
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
                f"{saved_path}{hint}; --resume keeps the saved settings: drop the flag or use "
                "another --output_dir"
            )
    merged = {k: v for k, v in saved.items() if k in known and k not in _RESUME_FREE}
    return dataclasses.replace(config, **merged)


def load_distill_source(config: TrainConfig, num_landmarks: int) -> DistillSource | None:
    """The :class:`fas_tf.model.DistillSource` of ``--distill_from`` (None without one).

    UsageError (one line naming the file) when the file is missing, not a landmark model,
    predicts another landmark count than the data, or, on ``--resume``, is not the file (by
    sha256) the run started with.
    """
    if not config.distill_from:
        return None
    from fas_tf.model import DistillSource

    try:
        source = DistillSource.load(config.distill_from)
    except cli.UsageError as err:
        raise cli.UsageError(f"--distill_from: {err}") from err
    if source.num_landmarks != num_landmarks:
        raise cli.UsageError(
            f"--distill_from: {source.path}: the model predicts {source.num_landmarks} "
            f"landmarks, the data has {num_landmarks}"
        )
    saved = Path(config.output_dir) / "config.json"
    if config.resume and saved.is_file():
        before = (json.loads(saved.read_text()).get("distill") or {}).get("sha256")
        if before is not None and before != source.sha256:
            raise cli.UsageError(
                f"--distill_from: {source.path} has changed since the run started (sha256 "
                f"{source.sha256[:12]}..., {before[:12]}... saved in {saved}); --resume needs "
                "the same source model"
            )
    return source


def _same_setting(a, b) -> bool:
    if a == b:
        return True
    return isinstance(a, str) and isinstance(b, str) and os.path.realpath(a) == os.path.realpath(b)


def _flag_text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


# What a run writes into --output_dir.
RUN_OUTPUTS = ("config.json", "checkpoints", "history.csv", "metrics.json", "student.keras",
               "logs")


def _check_fresh_output(out: Path) -> None:
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
            _save_student(student, path)

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
            with cli.atomic_path(self._weights_path, suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp, overwrite=True)
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


def _save_student(student, path: Path) -> None:
    with cli.atomic_path(path, suffix=".keras") as tmp:
        student.save(tmp)


def train(config: TrainConfig, log=print, given: Collection[str] | None = None) -> dict:
    """Train as configured; returns the metrics written to ``metrics.json``.

    With ``config.resume`` the run in ``output_dir`` continues from its last checkpoint
    (``config.checkpoint_every``; the ``history.csv`` rows of later epochs are dropped, as they
    are trained again) with its saved settings. The settings named in ``given`` (the CLI
    passes the flags set on the command line; None means every field that differs from the
    ``TrainConfig`` default) must equal the saved ones, else UsageError names the setting and
    both values; ``verbose``, ``allow_download`` and ``checkpoint_every`` may change. A
    finished run (``student.keras`` written) is not touched: it logs "already finished (N
    epochs)" and returns the saved metrics.
    """
    config.validate()
    out = Path(config.output_dir)
    # A non-chief worker never writes --output_dir; it reads the saved config when it can see
    # it (shared file system) and otherwise relies on being given the chief's flags.
    if config.resume and (is_chief(config.strategy) or (out / "config.json").is_file()):
        config = _resolve_resume(config, set(given) if given is not None else None)
        config.validate()
        if (out / "student.keras").is_file():
            log(f"{out}: already finished ({config.epochs} epochs); nothing to do")
            try:
                return json.loads((out / "metrics.json").read_text())
            except (OSError, ValueError):
                return {}
        log(f"resume: continuing {out} with its saved config")
    chief = is_chief(config.strategy)
    if chief and not config.resume:
        _check_fresh_output(out)
    if config.epochs is None:
        config = dataclasses.replace(
            config, epochs=DEMO_EPOCHS if config.data is None else DEFAULT_EPOCHS
        )
    created = cli.check_writable_dir(out) if chief else False
    try:
        if config.teacher in ("facenet", "dlib") and config.teacher_weights:
            from fas_tf.teachers import check_weights_file  # imports TensorFlow

            check_weights_file(config.teacher, config.teacher_weights)
        train_faces, val_faces = _load_sets(config, log)  # no TensorFlow needed up to here
        distill = load_distill_source(config, train_faces.num_landmarks)
        from fas_tf.model import parse_regularizers
        from fas_tf.student import ARCHITECTURES

        try:
            parse_regularizers(config.regularizers)
        except ValueError as err:
            raise cli.UsageError(f"--regularizers: {err}") from err
        if config.student not in ARCHITECTURES:
            raise cli.UsageError(
                f"--student: unknown {config.student!r}; choose from {', '.join(ARCHITECTURES)}"
            )
        return _fit(config, train_faces, val_faces, out, log, distill)
    except Exception as err:
        if config.strategy == "multiworker" and _lost_a_worker(err):
            raise WorkerLostError(
                f"worker {cluster_task().index}: lost the cluster, another worker stopped or "
                f"is unreachable ({_tf_reason(err)}); stop every worker and start them all "
                "again with --resume"
            ) from err
        raise
    finally:  # a run that failed before writing anything leaves no empty folder behind
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _lost_a_worker(err: BaseException) -> bool:
    """Whether ``err`` is TensorFlow's report of a peer lost mid-collective (killed, crashed)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(err, (tf.errors.UnavailableError, tf.errors.AbortedError))


def _tf_reason(err: BaseException) -> str:
    """The telling line of a TensorFlow error (its text starts with "Graph execution error:")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if any(word in line.lower() for word in ("aborted", "connect", "unavailable")):
            return line
    return type(err).__name__


def _fit(config: TrainConfig, train_faces, val_faces, out: Path, log, distill=None) -> dict:
    import keras
    import numpy as np

    from fas_tf.augment import AugmentConfig
    from fas_tf.data import steps_per_epoch
    from fas_tf.evaluate import evaluate_predictions
    from fas_tf.framing import framed_crops
    from fas_tf.landmarks import layout_for
    from fas_tf.model import RegularizedLandmarkModel
    from fas_tf.student import build_architecture, inference_model

    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy(config.strategy)
    task = cluster_task(config.strategy)
    layout = layout_for(train_faces.num_landmarks)
    augment = AugmentConfig(rotation=config.rotation)
    global_batch = config.batch_size
    steps = steps_per_epoch(len(train_faces), global_batch)
    if task.is_chief:
        backup = out / "checkpoints" / "backup"
    else:  # every worker backs up its own state (each restores its own), outside --output_dir
        backup = worker_scratch_dir(out, task.index)
        if not config.resume:
            shutil.rmtree(backup, ignore_errors=True)  # stale state of an earlier, killed run
    initial_epoch = backup_epoch(backup) if config.resume else 0
    if config.resume and task.is_chief:
        truncate_history(out / "history.csv", initial_epoch)
    with strategy.scope():
        student = build_architecture(
            config.student, layout.num_landmarks, config.input_size, config.alpha,
            config.head_channels, heatmap_stride=config.heatmap_stride,
        )
        teacher = select_teacher(config, log)
        model = RegularizedLandmarkModel(student, teacher, distill=distill)
        schedule = keras.optimizers.schedules.CosineDecay(
            config.learning_rate * 0.1,
            decay_steps=max(1, config.epochs * steps - min(steps * 2, config.epochs * steps // 5)),
            alpha=0.01,
            warmup_target=config.learning_rate,
            warmup_steps=min(steps * 2, config.epochs * steps // 5),
        )
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
        model.compile(
            optimizer,
            regularizers=config.regularizers,
            weights=config.lambdas(),
            distill_weight=config.lambda_distill,
            heatmap_loss=config.heatmap_loss,
            jit_compile=config.jit_compile,
        )
    cache = None
    if config.teacher_cache and model.regularizers:
        from fas_tf.teacher_cache import open_cache, replay_warning

        if (warning := replay_warning(config.epochs, config.teacher_cache)) is not None:
            print(warning, file=sys.stderr, flush=True)
        cache = open_cache(teacher, train_faces, layout, config.input_size, augment,
                           config.teacher_cache, config.seed, log=log)
    elif config.teacher_cache:
        log("teacher cache: not used (no teacher or no regularizer to feed)")
    train_ds, val_ds = _distributed_datasets(
        strategy, config, train_faces, val_faces, layout, augment, initial_epoch, cache, log,
    )
    log(
        f"training on {len(train_faces)} faces"
        + (f", validating on {len(val_faces)}" if val_faces is not None else "")
        + f"; regularizers: {', '.join(model.regularizers) or 'none'}"
    )
    if distill is not None:
        log(f"distill: from {distill.path} ({distill.input_size} px input, "
            f"{distill.heatmap_size}x{distill.heatmap_size} heatmaps; run online), "
            f"lambda {config.lambda_distill:g}")
    record = {
        "config": dataclasses.asdict(config),
        "teacher": teacher.describe() if teacher else None,
        "regularizers_active": list(model.regularizers),
        "teacher_cache": cache.describe() if cache else None,
        "distill": distill.describe() if distill else None,
        "layout": layout.to_json(),
        "augment": augment.to_json(),
        "num_train": len(train_faces),
        "num_val": len(val_faces) if val_faces is not None else 0,
        "train_images": [Path(p).stem for p in train_faces.paths],
        "versions": package_versions(),
        "strategy": {"name": config.strategy, "replicas": strategy.num_replicas_in_sync,
                     "workers": task.workers},
    }
    restart = ("the run cannot be resumed: train again without --resume into a new "
               f"--output_dir (or after deleting {out})")
    every = {"every": config.checkpoint_every, "last": config.epochs}
    # An epoch's history.csv row is written before its backup: a kill between the two makes
    # --resume train that epoch again and truncate_history drop its row, never lose it.
    callbacks = [stop_on_non_finite_loss(out / "history.csv" if task.is_chief else None)]
    history_log = None
    if task.is_chief:
        cli.write_json(out / "config.json", record)
        history_log = keras.callbacks.CSVLogger(str(out / "history.csv"), append=True)
        callbacks.append(history_log)
    # The backup outlives fit: it is removed once student.keras and metrics.json are written.
    callbacks += [backup_and_restore(backup, restart, **every, keep_after_fit=True),
                  data_starts_at_restored_epoch(initial_epoch)]
    if task.is_chief:
        callbacks += [
            student_checkpoint(student, out / "checkpoints" / "student_last.keras", **every),
            keras.callbacks.TensorBoard(str(out / "logs"), profile_batch=0),
        ]
    if task.workers > 1:
        callbacks.append(same_epoch_on_every_worker(strategy, backup))
    start = time.time()
    try:
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,  # the dataset holds every remaining epoch, one after the other
            callbacks=callbacks,
            verbose=config.verbose,
            shuffle=False,  # the tf.data pipeline shuffles
        )
    finally:
        if history_log is not None:
            history_log.on_train_end()  # closes history.csv also when fit raises (idempotent)
    elapsed = time.time() - start
    if cache is not None:
        try:  # the views computed in this run, for the next one with the same key
            cache.save()
        except OSError as err:  # an optimization: the run goes on without it
            where = f"{err.filename}: " if err.filename else ""
            print(f"warning: teacher cache: not saved to {cache.path} ({where}"
                  f"{err.strerror or err}); the run is kept, the next run with this key "
                  "computes its views again", file=sys.stderr, flush=True)
    final = {k: float(v[-1]) for k, v in history.history.items() if v}
    if not final and task.is_chief:  # resumed after the last epoch's backup: nothing trained
        final = last_history_row(out / "history.csv")
    metrics: dict = {
        "epochs": config.epochs,
        "fit_seconds_this_process": elapsed,
        "teacher_cache": cache.describe() if cache else None,
        "final_train": {k: v for k, v in final.items() if not k.startswith("val_")},
    }
    if not task.is_chief:
        shutil.rmtree(backup, ignore_errors=True)
        log(f"worker {task.index}: done; the chief writes {out}")
        return metrics
    if val_faces is not None:
        crops, gt = framed_crops(val_faces, config.input_size)
        pred = inference_model(student).predict(crops, verbose=0, batch_size=32)["landmarks"]
        val_metrics = evaluate_predictions(np.asarray(pred), gt)
        metrics["val"] = {k: v for k, v in val_metrics.items() if k not in ("per_face",)}
        log(
            f"validation: NME {val_metrics['nme'] * 100:.2f}% "
            f"FR@0.10 {val_metrics['fr_10'] * 100:.1f}% AUC@0.10 {val_metrics['auc_10']:.2f} "
            f"n={val_metrics['n']}"
        )
    # student.keras last: it marks the run finished; the backup goes only after it.
    cli.write_json(out / "metrics.json", metrics)
    _save_student(student, out / "student.keras")
    shutil.rmtree(backup, ignore_errors=True)
    log(f"wrote {out / 'student.keras'}")
    return metrics


def _distributed_datasets(
    strategy, config, train_faces, val_faces, layout, augment, initial_epoch: int, cache, log,
):
    """Training and validation input for ``strategy``.

    The training input holds epochs ``initial_epoch .. config.epochs - 1`` (each one's order
    and crops a function of ``config.seed`` and the epoch, :func:`fas_tf.data.make_dataset`),
    so ``fit`` needs ``steps_per_epoch``; a teacher ``cache``
    (:class:`fas_tf.teacher_cache.TeacherCache`) replays its views and adds the teacher's
    outputs on them to each batch (its ``attach``). One replica: the plain pipelines. Several
    replicas (``mirrored``, ``multiworker``): every input pipeline (one per worker) orders each
    epoch alike, pads it to whole global batches of ``--batch_size`` and keeps its shard of each
    (``shard``), so every batch is full and every worker runs the same number of steps.
    Validation is split by Keras (auto-shard by data) with a batch size that leaves no replica
    an empty batch.
    """
    import tensorflow as tf

    from fas_tf.data import make_dataset

    replicas = strategy.num_replicas_in_sync
    common = {"input_size": config.input_size, "sigma": config.sigma, "augment": augment,
              "stride": config.heatmap_stride,
              "seed": config.seed, "initial_epoch": initial_epoch, "epochs": config.epochs,
              "views": cache.views if cache is not None else 0}

    def with_teacher(ds: tf.data.Dataset) -> tf.data.Dataset:
        return cache.attach(ds) if cache is not None else ds

    if replicas == 1:
        train_ds = with_teacher(make_dataset(
            train_faces, layout, **common, batch_size=config.batch_size, training=True
        ))
        val_ds = None
        if val_faces is not None:
            val_ds = make_dataset(
                val_faces, layout, input_size=config.input_size, sigma=config.sigma,
                stride=config.heatmap_stride, batch_size=config.batch_size, training=False,
            )
        return train_ds, val_ds
    if config.batch_size % replicas:
        raise cli.UsageError(
            f"--batch_size={config.batch_size}: the global batch must split evenly over the "
            f"{replicas} replicas of --strategy={config.strategy}"
        )

    def train_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return with_teacher(make_dataset(
            train_faces, layout, **common,
            batch_size=context.get_per_replica_batch_size(config.batch_size), training=True,
            global_batch=config.batch_size,
            shard=(context.num_input_pipelines, context.input_pipeline_id),
        ))

    train_ds = strategy.distribute_datasets_from_function(train_fn)
    val_ds = None
    if val_faces is not None:
        val_batch = eval_batch_size(len(val_faces), config.batch_size, replicas)
        if val_batch is None:
            log(f"validation: {len(val_faces)} faces are too few to split over {replicas} "
                "replicas; only the final validation runs")
        else:
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA
            )
            val_ds = make_dataset(
                val_faces, layout, input_size=config.input_size, sigma=config.sigma,
                stride=config.heatmap_stride, batch_size=val_batch, training=False,
            ).with_options(options)
    return train_ds, val_ds


def eval_batch_size(count: int, batch_size: int, replicas: int) -> int | None:
    """The largest global batch <= ``batch_size`` whose last batch still gives each replica a face.

    (An empty per-replica batch would make that replica's mean loss NaN.) None if ``count``
    faces cannot be split over ``replicas`` at all.
    """
    for size in range(batch_size, replicas - 1, -1):
        rest = count % size
        if count >= replicas and (rest == 0 or rest >= replicas):
            return size
    return None


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


def same_epoch_on_every_worker(strategy, backup: Path):
    """A callback (after ``BackupAndRestore``) stopping a cluster whose workers restored
    different epochs, which would otherwise hang in a collective at the end of the shorter
    run (a worker killed between two workers' end-of-epoch backups, or a lost backup)."""
    import keras
    import tensorflow as tf

    class SameEpochOnEveryWorker(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            epoch = float(getattr(self.model, "_initial_epoch", None) or 0)
            n, s1, s2 = strategy.reduce(
                "SUM", tf.constant([1.0, epoch, epoch * epoch]), axis=None
            ).numpy()
            if n * s2 != s1 * s1:  # all equal iff n * sum(e^2) == sum(e)^2
                raise cli.UsageError(
                    f"--resume: the workers restored different epochs (this one {int(epoch)}, "
                    f"mean {s1 / n:g}); delete {backup} on every worker and restart without "
                    "--resume, or from a copy of the run"
                )

    return SameEpochOnEveryWorker()


def config_from_flags() -> TrainConfig:
    from absl import flags

    from fas_tf.data import parse_sets

    f = flags.FLAGS
    return TrainConfig(
        output_dir=f.output_dir, data=f.data, val_data=f.val_data, attributes=f.attributes,
        train_sets=parse_sets(f.train_sets), val_sets=parse_sets(f.val_sets), exclude=f.exclude,
        teacher=f.teacher,
        teacher_weights=f.teacher_weights, regularizers=f.regularizers,
        lambda_cls=f.lambda_cls, lambda_feat=f.lambda_feat, lambda_sa=f.lambda_sa,
        lambda_ca=f.lambda_ca, distill_from=f.distill_from, lambda_distill=f.lambda_distill,
        epochs=f.epochs, batch_size=f.batch_size,
        input_size=f.input_size, learning_rate=f.learning_rate, weight_decay=f.weight_decay,
        sigma=f.sigma, heatmap_loss=f.heatmap_loss, heatmap_stride=f.heatmap_stride,
        student=f.student, alpha=f.alpha,
        head_channels=f.head_channels,
        rotation=f.rotation,
        upright=f.upright, seed=f.seed, teacher_cache=f.teacher_cache, train_limit=f.train_limit,
        checkpoint_every=f.checkpoint_every, resume=f.resume, strategy=f.strategy,
        mixed_precision=f.mixed_precision, jit_compile=f.jit_compile, strict=f.strict,
        verbose=f.verbose,
    )


def define_flags() -> None:
    from absl import flags

    d = TrainConfig()
    flags.DEFINE_string("data", None, "training faces: folder of images + .pts, or a CSV "
                        "(default: the synthetic demo set)")
    flags.DEFINE_string("val_data", None, "validation faces (same formats)")
    flags.DEFINE_string("attributes", None, "attributes CSV (stem, image_set, ...) for *_sets")
    flags.DEFINE_string("train_sets", None, "comma list of image_set values to train on")
    flags.DEFINE_string("val_sets", None, "comma list of image_set values to validate on")
    flags.DEFINE_string("exclude", None, "text file of image stems to leave out of training and "
                        "validation, one per line (e.g. faces whose labels are wrong)")
    flags.DEFINE_enum("teacher", d.teacher, list(TEACHER_CHOICES), "teacher network")
    flags.DEFINE_string("teacher_weights", None, "teacher weights file, or 'random' (tests)")
    flags.DEFINE_string("regularizers", d.regularizers, "comma list of cls,feat,sa,ca or none")
    for name in ("cls", "feat", "sa", "ca"):
        flags.DEFINE_float(f"lambda_{name}", getattr(d, f"lambda_{name}"), f"weight of {name}")
    flags.DEFINE_string("distill_from", None, "a trained student.keras (any input size) whose "
                        "heatmaps the student also learns (knowledge distillation)")
    flags.DEFINE_float("lambda_distill", d.lambda_distill, "weight of the distillation loss")
    flags.DEFINE_integer(
        "epochs", None, f"epochs (default {DEFAULT_EPOCHS}; {DEMO_EPOCHS} on the demo set)"
    )
    flags.DEFINE_integer("batch_size", d.batch_size, "global batch size")
    flags.DEFINE_integer("input_size", d.input_size, "crop side (multiple of 32)")
    flags.DEFINE_float("learning_rate", d.learning_rate, "peak learning rate (cosine decay)")
    flags.DEFINE_float("weight_decay", d.weight_decay, "AdamW weight decay")
    flags.DEFINE_float("sigma", d.sigma, "heatmap Gaussian sigma, in heatmap pixels")
    flags.DEFINE_enum("heatmap_loss", d.heatmap_loss, list(HEATMAP_LOSS_CHOICES), "the label "
                      "loss on heatmaps: squared error or Adaptive Wing with a weighted loss map")
    flags.DEFINE_integer("heatmap_stride", d.heatmap_stride, "crop pixels per heatmap cell: 4 "
                         "(input_size/4 heatmaps) or 2 (input_size/2)")
    flags.DEFINE_float("alpha", d.alpha, "MobileNetV2 width multiplier of the student")
    flags.DEFINE_string("student", d.student, "student network: mobilenetv2, mobilenetv2_lite "
                        "(without MobileNetV2's 1280-channel top: the phone-sized student) or "
                        "dlib_transfer (dlib's pretrained trunk, fine-tuned)")
    flags.DEFINE_integer("head_channels", d.head_channels, "channels of the heatmap head")
    flags.DEFINE_float("rotation", d.rotation, "max augmentation rotation, degrees")
    flags.DEFINE_bool("upright", d.upright, "cut training crops with the face's true eyes level "
                      "(then --rotation of e.g. 10); validation crops stay framing-rule crops")
    flags.DEFINE_integer("seed", d.seed, "random seed: the same seed gives the same run")
    flags.DEFINE_integer(
        "teacher_cache", d.teacher_cache, "K > 0: compute the teacher's outputs once on K seeded "
        "views per face (cached on disk by key) and replay them; 0: run the teacher online"
    )
    flags.DEFINE_integer("train_limit", None, "seeded subset of N training faces")
    flags.DEFINE_string("output_dir", d.output_dir, "where the run is written")
    flags.DEFINE_bool("resume", False, "continue the run in --output_dir")
    flags.DEFINE_integer("checkpoint_every", d.checkpoint_every, "epochs between checkpoints "
                         "(the --resume backup and checkpoints/student_last.keras, about a second "
                         "each on 2 CPU cores); the last epoch is always checkpointed")
    flags.DEFINE_enum("strategy", d.strategy, list(STRATEGIES), "tf.distribute strategy")
    flags.DEFINE_bool("mixed_precision", False, "mixed_float16 compute")
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step")
    flags.DEFINE_bool("strict", False, "any bad sample is fatal (default: skip it)")
    flags.DEFINE_integer("verbose", 1, "Keras progress: 0 silent, 1 bar, 2 line per epoch")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from absl import flags

    config = config_from_flags()
    given = {f.name for f in dataclasses.fields(TrainConfig)
             if f.name in flags.FLAGS and flags.FLAGS[f.name].present}
    train(config, given=given)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
    sys.exit(0)
