"""Teacher outputs computed once: K seeded views per face, replayed in training.

The teacher is frozen, so its outputs on a given crop never change (FKD, Shen & Xing, ECCV 2022,
stores soft labels per random crop with the crop's parameters; ReLabel, Yun et al., CVPR 2021,
stores label maps per image). View ``k`` of training face ``i`` is the augmented crop of the
stateless seed :func:`fas_tf.data.view_seed` ``(seed, i, k)``; the teacher's outputs on all
``faces x K`` views (embedding and taps, float16) are computed once, in batches, before ``fit``.
Training replays the views (:func:`fas_tf.data.make_dataset` ``views=K`` yields each crop with
its row ``i * K + k``) and the train step reads the stored outputs of those rows
(:meth:`TeacherCache.lookup`) instead of running the teacher. Crops are regenerated from their
seeds, so only the teacher's outputs are stored.

Storage: one folder per key under ``$XDG_CACHE_HOME/fas_tf/teacher_cache/`` (default
``~/.cache``) with ``meta.json`` and one ``.npy`` per output (rows ``i * K + k``), written into
a temporary folder renamed into place when complete. The key hashes everything the stored
numbers depend on (:func:`cache_key`), so a run with the same key (e.g. an ablation arm with
other regularizers or lambdas) reuses the cache and any other run builds its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

    from fas_tf.augment import AugmentConfig
    from fas_tf.data import LabelledFaces
    from fas_tf.landmarks import Layout
    from fas_tf.teachers import Teacher

# Bump when the stored numbers of a key change meaning (the sources in _CODE are hashed too).
CACHE_VERSION = 1
OUTPUTS = ("embedding", "tap_8", "tap_16", "tap_32")
# The code a view's crop and the teacher's outputs on it depend on.
_CODE = ("augment.py", "data.py", "teacher_cache.py", "teachers.py", "dlib_resnet.py")


# Replays of a view above which a run warns: measured on google2 (200 epochs, 96 px student,
# dlib and FaceNet teachers), K=16 (12x) cost 1.1-2.0 NME points against the online teacher,
# K=64 (3x) none.
MAX_REPLAYS = 4


def replay_warning(epochs: int, views: int) -> str | None:
    """A one-line warning when each cached view would be replayed more than :data:`MAX_REPLAYS`
    times in ``epochs`` (the student then sees ``views`` crops of a face instead of one fresh
    crop per epoch and overfits them), else None."""
    replays = epochs / views
    if replays <= MAX_REPLAYS:
        return None
    return (f"warning: --teacher_cache={views} replays each cached view about {replays:.0f} "
            f"times in {epochs} epochs; past {MAX_REPLAYS} replays the student overfits its "
            f"stored crops (measured: 12 replays cost 1.1-2.0 NME points, 3 none): use "
            f"--teacher_cache >= {math.ceil(epochs / MAX_REPLAYS)}")


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/fas_tf/teacher_cache`` (default ``~/.cache/fas_tf/teacher_cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "fas_tf" / "teacher_cache"


@dataclass
class TeacherCache:
    """The teacher's stored outputs on ``faces x views`` views (row ``face * views + view``).

    Attributes:
        key: hex digest naming the cache (:func:`cache_key`).
        path: its folder.
        faces, views: how many faces and views per face it holds.
        arrays: output name -> (faces * views, ...) float16 array (memory-mapped).
        built: True when this process computed it, False when it was reused.
        build_seconds: time to compute it (0 when reused).
    """

    key: str
    path: Path
    faces: int
    views: int
    arrays: dict[str, np.ndarray]
    built: bool = False
    build_seconds: float = 0.0
    _tensors: dict | None = field(default=None, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    def tensors(self) -> dict[str, tf.Tensor]:
        """The stored outputs as float16 eager tensors in host memory (loaded on first use)."""
        import tensorflow as tf

        if self._tensors is None:
            with tf.init_scope(), tf.device("/cpu:0"):
                self._tensors = {k: tf.constant(np.asarray(v)) for k, v in self.arrays.items()}
        return self._tensors

    def lookup(self, rows: tf.Tensor) -> dict[str, tf.Tensor]:
        """TF op: the stored outputs (float16) of ``rows``, gathered in host memory.

        Inside a ``tf.function`` the tensors are captured inputs (never serialized into the
        graph, never variables, so never in a checkpoint); only the gathered rows move to the
        step's device.
        """
        import tensorflow as tf

        tensors = self.tensors()
        with tf.device("/cpu:0"):
            return {k: tf.gather(v, rows) for k, v in tensors.items()}

    def describe(self) -> dict:
        return {
            "key": self.key,
            "path": str(self.path),
            "faces": self.faces,
            "views_per_face": self.views,
            "bytes": self.nbytes,
            "built": self.built,
            "build_seconds": round(self.build_seconds, 2),
        }


def weights_digest(teacher: Teacher) -> str:
    """sha256 of the teacher's weight values and shapes, in order (random weights included;
    not the layer names, which Keras numbers per process)."""
    digest = hashlib.sha256()
    for w in teacher.model.weights:
        value = np.ascontiguousarray(np.asarray(w.numpy()))
        digest.update(f"{value.dtype}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def code_digest() -> str:
    """sha256 of the sources the views and the teacher's outputs come from."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _CODE:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    return digest.hexdigest()


def cache_key(
    teacher: Teacher,
    faces: LabelledFaces,
    layout: Layout,
    input_size: int,
    augment: AugmentConfig,
    views: int,
    seed: int,
) -> str:
    """The key of a cache: a sha256 over everything its stored numbers depend on.

    Teacher (name, input size, weight values, output dtype), data (file names, framed canvases
    and landmarks, flip pairs), augmentation settings, ``views``, ``seed``, the student input
    size, :data:`CACHE_VERSION`, the sources of :data:`_CODE` and the TensorFlow version.
    """
    import tensorflow as tf

    parts = {
        "version": CACHE_VERSION,
        "code": code_digest(),
        "tensorflow": tf.__version__,
        "teacher": teacher.name,
        "teacher_input_size": teacher.input_size,
        "teacher_weights": weights_digest(teacher),
        "teacher_dtype": str(teacher.model.output["tap_8"].dtype),
        "files": [Path(p).name for p in faces.paths],
        "input_size": int(input_size),
        "augment": augment.to_json(),
        "flip": layout.flip_permutation().tolist() if layout.can_flip else None,
        "views": int(views),
        "seed": int(seed),
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(faces.canvases).tobytes())
    digest.update(np.ascontiguousarray(faces.landmarks).tobytes())
    return digest.hexdigest()[:32]


def _shapes(teacher: Teacher) -> dict[str, tuple[int, ...]]:
    shapes = {"embedding": (teacher.embedding_dim,)}
    shapes.update({f"tap_{s}": tuple(shape) for s, shape in teacher.tap_shapes().items()})
    return shapes


def _open(folder: Path, key: str, rows: int, shapes: dict) -> dict[str, np.ndarray]:
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("key") != key:
        raise ValueError("meta.json names another key")
    arrays = {}
    for name, shape in shapes.items():
        arr = np.load(folder / f"{name}.npy", mmap_mode="r")
        if arr.shape != (rows, *shape) or arr.dtype != np.float16:
            raise ValueError(f"{name}.npy is {arr.dtype} {arr.shape}, expected {(rows, *shape)}")
        arrays[name] = arr
    return arrays


def _remove_stale_builds(root: Path, key: str) -> None:
    """Remove temporary folders of builds of ``key`` whose process is gone (killed -9)."""
    for tmp in root.glob(f".{key}.tmp-*"):
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # another user's live process
            pass


def load_or_build(
    teacher: Teacher,
    faces: LabelledFaces,
    layout: Layout,
    input_size: int,
    augment: AugmentConfig,
    views: int,
    seed: int,
    root: str | os.PathLike | None = None,
    batch_size: int = 32,
    log=print,
) -> TeacherCache:
    """The teacher cache of these settings: reused from ``root`` when its key exists, else built.

    Building runs the teacher on every view (:func:`fas_tf.data.view_dataset`) in batches of
    ``batch_size`` and writes its outputs as float16 into a temporary folder, renamed to
    ``root/<key>`` only when complete: an interrupted build leaves nothing behind (a killed
    one's folder is removed by the next build of that key). An unreadable cache is rebuilt.
    Logs one line.
    """
    import tensorflow as tf

    from fas_tf.data import view_dataset

    if views < 1:
        raise ValueError(f"a teacher cache needs at least 1 view per face, got {views}")
    root = Path(root) if root is not None else cache_root()
    key = cache_key(teacher, faces, layout, input_size, augment, views, seed)
    folder = root / key
    rows = len(faces) * views
    shapes = _shapes(teacher)

    if folder.is_dir():
        try:
            arrays = _open(folder, key, rows, shapes)
            cache = TeacherCache(key, folder, len(faces), views, arrays)
            log(f"teacher cache: reused {folder} ({cache.nbytes / 2**20:.1f} MiB, "
                f"{len(faces)} faces x {views} views)")
            return cache
        except (OSError, ValueError) as err:
            log(f"teacher cache: {folder} is unreadable ({err}); rebuilding it")
            shutil.rmtree(folder, ignore_errors=True)

    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root, key)
    tmp = root / f".{key}.tmp-{os.getpid()}"
    start = time.time()
    try:
        tmp.mkdir()
        out = {
            name: np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", np.float16, (rows, *shape))
            for name, shape in shapes.items()
        }
        run = tf.function(teacher.__call__)
        for images, index in view_dataset(
            faces, layout, input_size, augment, seed, views, batch_size
        ):
            result = run(images)
            index = index.numpy()
            for name in shapes:
                out[name][index] = np.asarray(result[name]).astype(np.float16)
        for arr in out.values():
            arr.flush()
        del out
        seconds = time.time() - start
        meta = {
            "key": key,
            "version": CACHE_VERSION,
            "teacher": teacher.describe(),
            "faces": len(faces),
            "files": [Path(p).name for p in faces.paths],
            "views_per_face": int(views),
            "seed": int(seed),
            "input_size": int(input_size),
            "augment": augment.to_json(),
            "shapes": {k: list(v) for k, v in shapes.items()},
            "build_seconds": seconds,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same key first: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cache = TeacherCache(key, folder, len(faces), views, _open(folder, key, rows, shapes),
                         built=True, build_seconds=seconds)
    log(f"teacher cache: built {folder} in {seconds:.1f} s ({cache.nbytes / 2**20:.1f} MiB, "
        f"{len(faces)} faces x {views} views)")
    return cache
