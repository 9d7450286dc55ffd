"""tf.distribute plumbing of a training run: the strategy, this process's task in a
``--strategy=multiworker`` cluster (``TF_CONFIG``), each replica's share of the input, and the
checks that keep a cluster's workers in step (docs/distributed.md)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fas_tf import cli
from fas_tf.training.config import STRATEGIES


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


def lost_a_worker(err: BaseException) -> bool:
    """Whether ``err`` is TensorFlow's report of a peer lost mid-collective (killed, crashed)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(err, (tf.errors.UnavailableError, tf.errors.AbortedError))


def tf_reason(err: BaseException) -> str:
    """The telling line of a TensorFlow error (its text starts with "Graph execution error:")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if any(word in line.lower() for word in ("aborted", "connect", "unavailable")):
            return line
    return type(err).__name__


def distributed_datasets(
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
    from fas_tf.training.config import settings_for

    replicas = strategy.num_replicas_in_sync
    targets = {"input_size": config.input_size, "stride": config.heatmap_stride,
               **settings_for(config, "data")}  # e.g. sigma
    common = {**targets, "augment": augment, "seed": config.seed,
              "initial_epoch": initial_epoch, "epochs": config.epochs,
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
                val_faces, layout, **targets, batch_size=config.batch_size, training=False,
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
                val_faces, layout, **targets, batch_size=val_batch, training=False,
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
