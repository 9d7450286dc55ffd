"""``--strategy=multiworker``: two worker processes on loopback train like one process."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fas_tf.training import distributed, loop
from fas_tf.training.config import TrainConfig
from tests.conftest import TINY_TRAIN, train_tiny

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}

# 8 faces and a global batch of 8: one step per epoch, so the logged loss of epoch 1 is the loss
# of the initial weights on all 8 faces, and epoch 2 shows one all-reduced update.
SETTINGS = {
    "train_limit": 8, "batch_size": 8, "epochs": 2, "input_size": 64, "alpha": 0.35,
    "head_channels": 16, "seed": 3, "student": "mobilenetv2",
}
TIMEOUT = 1200  # seconds; on a heavily shared 2-core machine the test took about 20 minutes


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def history(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def losses(path: Path) -> list[float]:
    return [float(row["loss"]) for row in history(path)]


def test_two_workers_on_loopback_write_one_run_and_train_like_one_process(tmp_path, demo_faces):
    out, scratch = tmp_path / "two", tmp_path / "scratch"
    scratch.mkdir()
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    flags = [f"--{name}={value}" for name, value in SETTINGS.items()]
    procs, logs = [], []
    try:
        for index in range(2):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = {**ENV, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(scratch)}
            logs.append(tmp_path / f"worker{index}.log")
            with open(logs[-1], "wb") as sink:  # a file, not a pipe nobody reads
                procs.append(subprocess.Popen(
                    [sys.executable, *TINY_TRAIN, f"--data={demo_faces}", *flags,
                     "--strategy=multiworker", f"--output_dir={out}", "--verbose=2"],
                    stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                ))
        # The single-process reference trains meanwhile, in this process (TensorFlow is loaded
        # already), from the same flags: same seed, same global batch.
        one = tmp_path / "one"
        config = TrainConfig(output_dir=str(one), data=str(demo_faces), verbose=0, **SETTINGS)
        train_tiny(config, teacher=True)
        codes = [proc.wait(timeout=TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)

    # One complete run, written by the chief (worker 0) only.
    for name in ("config.json", "history.csv", "metrics.json", "student.keras"):
        assert (out / name).is_file(), name
    assert (out / "logs").is_dir() and (out / "checkpoints" / "student_last.keras").is_file()
    assert not (out / "checkpoints" / "backup").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in one.iterdir())
    assert list(scratch.glob("fas_tf-*")) == []  # worker 1's backup (in its TMPDIR) is removed
    config = json.loads((out / "config.json").read_text())
    assert config["strategy"] == {"name": "multiworker", "replicas": 2, "workers": 2}
    assert "worker 1: done" in logs[1].read_text()
    assert {"cls_loss", "feat_loss", "sa_loss", "ca_loss"} <= set(history(out / "history.csv")[0])

    # Same global batch, same loss. The tiny student has no BatchNorm (tf.distribute does not
    # synchronize it: each worker would normalize its own 4 faces) and the crops are functions
    # of the seed, so only the all-reduce's float order differs: measured 1e-4 apart (epochs 1,
    # 2); an aggregation error (a sum instead of a mean over the 2 workers) doubles the loss.
    two, single = losses(out / "history.csv"), losses(one / "history.csv")
    assert len(two) == len(single) == 2
    assert two == pytest.approx(single, rel=1e-3)
    assert two[1] < two[0]  # the update was applied on both workers alike


def test_cluster_task_and_chief_from_tf_config(monkeypatch):
    from fas_tf.training.distributed import cluster_task, is_chief

    workers = {"worker": ["a:1", "b:1", "c:1"]}
    for index, chief in ((0, True), (2, False)):
        task = {"cluster": workers, "task": {"type": "worker", "index": index}}
        monkeypatch.setenv("TF_CONFIG", json.dumps(task))
        assert is_chief("multiworker") is chief
        assert cluster_task("multiworker").workers == 3
        assert is_chief("default")  # TF_CONFIG only matters to --strategy=multiworker
    with_chief = {**workers, "chief": ["d:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": with_chief,
                                                "task": {"type": "worker", "index": 0}}))
    assert not is_chief("multiworker") and cluster_task("multiworker").workers == 4
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        is_chief("multiworker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": "a:1"}}))  # not a list
    with pytest.raises(ValueError, match="TF_CONFIG: not a TensorFlow cluster description "
                                         r"\(its 'worker' is not a list of host:port addresses\)"):
        is_chief("multiworker")


def test_eval_batch_size_never_leaves_a_replica_empty():
    from fas_tf.training.distributed import eval_batch_size

    assert eval_batch_size(32, 16, 2) == 16  # no partial batch
    assert eval_batch_size(20, 16, 2) == 16  # last batch 4: 2 + 2
    assert eval_batch_size(17, 16, 2) == 15  # 16 would leave 1 face for 2 replicas
    assert eval_batch_size(9, 8, 4) == 5  # 8, 7, 6 leave 1, 2, 3 faces for 4 replicas
    for count in range(2, 60):
        size = eval_batch_size(count, 16, 4)
        if count < 4:
            assert size is None
        else:
            assert size is not None and 4 <= size <= 16
            assert count % size == 0 or count % size >= 4


def test_a_lost_worker_is_one_line_asking_for_resume(tmp_path, demo_faces, monkeypatch):
    import tensorflow as tf

    from fas_tf.errors import WorkerLostError

    # What the surviving worker's fit raised when its peer was killed with -9 (issue 17).
    lost = tf.errors.UnavailableError(None, None, (
        "Graph execution error:\n\nDetected at node adam_w/CollectiveReduceV2 defined at ...\n"
        "Collective ops is aborted by: recvmsg:Connection reset by peer\n"
        "\t [[{{node adam_w/CollectiveReduceV2}}]] [Op:__inference_multi_step_on_iterator_1]"
    ))

    def fit(*args):
        raise lost

    monkeypatch.setattr(loop, "_fit", fit)  # fit itself fails: no cluster starts
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 1}}))
    config = TrainConfig(output_dir=str(tmp_path / "run"), data=str(demo_faces),
                         teacher="none", epochs=1, strategy="multiworker",
                         student="mobilenetv2")
    with pytest.raises(WorkerLostError) as err:
        loop.train(config, log=lambda line: None)
    assert str(err.value) == (
        "worker 1: lost the cluster, another worker stopped or is unreachable (Collective ops "
        "is aborted by: recvmsg:Connection reset by peer); stop every worker and start them "
        "all again with --resume"
    )
    assert not (tmp_path / "run").exists()  # a non-chief writes nothing
    # Outside a multi-worker cluster the TensorFlow error is not relabelled.
    monkeypatch.delenv("TF_CONFIG")
    config.strategy, config.output_dir = "default", str(tmp_path / "one")
    with pytest.raises(tf.errors.UnavailableError):
        loop.train(config, log=lambda line: None)


@pytest.mark.parametrize("task, message", [
    ({"type": "worker", "index": 2}, "task worker 2 is not in its cluster (which has worker 0-1)"),
    ({"type": "worker", "index": -1}, "task worker -1 is not in its cluster"),
    ({"type": "chief", "index": 0}, "task chief 0 is not in its cluster (which has worker 0-1)"),
    ({"type": "ps", "index": 0}, "task ps 0 is not in its cluster"),
])
def test_a_task_outside_the_cluster_is_one_line(tmp_path, monkeypatch, task, message):
    from fas_tf.errors import UsageError

    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    config = TrainConfig(output_dir=str(tmp_path / "run"), strategy="multiworker")
    with pytest.raises(UsageError) as err:
        loop.train(config, log=lambda line: None)
    assert str(err.value).startswith(f"TF_CONFIG: {message}")
    assert str(err.value).endswith("give each process one of the cluster's tasks")
    assert not (tmp_path / "run").exists()


def test_a_peer_that_does_not_resolve_is_one_line_naming_it(monkeypatch):
    from fas_tf.errors import UsageError

    cluster = {"worker": ["127.0.0.1:1", "nohost.invalid:2222"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 0}}))
    task = distributed.cluster_task()
    assert task.peers == (("worker 1", "nohost.invalid:2222"),)
    with pytest.raises(UsageError) as err:
        distributed.make_strategy("multiworker")  # before TensorFlow starts the cluster
    assert str(err.value).startswith("TF_CONFIG: worker 1 at nohost.invalid:2222 does not "
                                     "resolve (")
    assert str(err.value).endswith("fix its address in the cluster of TF_CONFIG (the same on "
                                   "every worker)")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b"]},
                                                "task": {"type": "worker", "index": 0}}))
    with pytest.raises(UsageError, match="TF_CONFIG: worker 1 address 'b' is not host:port"):
        distributed.check_peers_resolve(distributed.cluster_task())


GUARDED_START = r"""
import sys
from fas_tf.training import distributed
task = distributed.ClusterTask("worker", 0, 2, False, (("worker 1", sys.argv[1]),))
with distributed.cluster_start_guard(task, timeout=float(sys.argv[2])):
    # stands for TensorFlow waiting for the peer: C code holding the GIL (no thread runs)
    sum(range(int(float(sys.argv[3]) * 1e8)))
print("started")
"""


def test_a_cluster_that_does_not_start_ends_with_one_line_naming_the_peer(tmp_path):
    (dead,) = free_ports(1)
    stuck = subprocess.run([sys.executable, "-c", GUARDED_START, f"127.0.0.1:{dead}", "1", "120"],
                           capture_output=True, text=True, env=ENV, cwd=REPO, timeout=100)
    assert stuck.returncode == -9 and stuck.stdout == ""  # ended by the watcher process
    assert stuck.stderr.strip() == (
        "error: --strategy=multiworker: worker 0: the cluster did not start within 1 s; not "
        f"reachable: worker 1 (127.0.0.1:{dead}); start every worker with the same TF_CONFIG "
        "cluster")
    started = subprocess.run([sys.executable, "-c", GUARDED_START, f"127.0.0.1:{dead}", "60",
                              "0"], capture_output=True, text=True, env=ENV, cwd=REPO,
                             timeout=100)
    assert started.returncode == 0 and started.stdout == "started\n"
