"""Teacher outputs computed once: K seeded views per face, replayed in training
(docs/teacher_cache.md; as FKD, Shen & Xing, ECCV 2022, and ReLabel, Yun et al., CVPR 2021).

View ``k`` of training face ``i`` is the augmented crop of the stateless seed
:func:`fas_tf.data.view_seed` ``(seed, i, k)``; the frozen teacher's outputs on it (embedding
and taps, float16) are row ``i * K + k`` of the cache. Training replays the views
(:func:`fas_tf.data.make_dataset` ``views=K``) and :meth:`TeacherCache.attach` puts each batch's
stored rows into the batch, so the train step does not run the teacher. A row not yet stored is
computed when a batch first needs it, by the input pipeline (ahead of the train step), with the
teacher converted to LiteRT on a CPU-only machine (:meth:`fas_tf.teachers.Teacher.litert_forward`),
else TensorFlow; :meth:`TeacherCache.fill` (:func:`load_or_build`) fills every row at once.

Storage: one folder per key (:func:`cache_key`: everything the stored numbers depend on) under
``$XDG_CACHE_HOME/fas_tf/teacher_cache/`` with ``meta.json``, one ``.npy`` per output and
``filled.npy`` (which rows are stored), written into a temporary folder renamed into place
(:meth:`TeacherCache.save`). A run with the same key (e.g. an ablation arm with other
regularizers or lambdas) reuses the cache.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import json
import math
import os
import secrets
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fas_tf import cli

if TYPE_CHECKING:
    import tensorflow as tf

    from fas_tf.augment import AugmentConfig
    from fas_tf.data import LabelledFaces
    from fas_tf.landmarks import Layout
    from fas_tf.teachers import Teacher

# Bump when the stored numbers of a key change meaning (the sources in _CODE are hashed too).
CACHE_VERSION = 2
OUTPUTS = ("embedding", "tap_8", "tap_16", "tap_32")
# The code a view's crop and the teacher's outputs on it depend on.
_CODE = ("fas_tf.augment", "fas_tf.data.faces", "fas_tf.data.pipeline", "fas_tf.framing",
         "fas_tf.teacher_cache", "fas_tf.teachers.base", "fas_tf.teachers.dlib",
         "fas_tf.teachers.facenet", "fas_tf.dlib_resnet", "fas_tf.face_warp")


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


@dataclass
class TeacherCache:
    """The teacher's outputs on ``faces x views`` views (row ``face * views + view``).

    Attributes:
        key: hex digest naming the cache (:func:`cache_key`).
        path: its folder.
        faces, views: how many faces and views per face it holds.
        arrays: output name -> (faces * views, ...) float16 array, in memory.
        filled: (faces * views,) bool, which rows hold the teacher's outputs.
        teacher: computes the rows not yet filled (None: every row must be filled).
        reused_rows: rows read from disk when the cache was opened.
        computed_rows, compute_seconds: rows this process computed, and the time it took
            (the teacher's conversion for its forward included).
        forward_backend: what ran the teacher's forward (``"litert"`` or ``"tensorflow"``),
            None before any row was computed.
    """

    key: str
    path: Path
    faces: int
    views: int
    arrays: dict[str, np.ndarray]
    filled: np.ndarray
    teacher: Teacher | None = None
    reused_rows: int = 0
    computed_rows: int = 0
    compute_seconds: float = 0.0
    forward_backend: str | None = None
    _meta: dict = field(default_factory=dict, repr=False, compare=False)
    _forward: object = field(default=None, repr=False, compare=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False,
                                   compare=False)
    _saved_rows: int = field(default=0, repr=False, compare=False)
    saver: threading.Thread | None = field(default=None, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())

    @property
    def built(self) -> bool:
        """True when this process computed any of its rows."""
        return self.computed_rows > 0

    def outputs(self, images: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """The stored outputs (float16, in :data:`OUTPUTS` order) of ``rows``, whose crops are
        ``images``; rows not yet filled are computed by the teacher first and kept (when the
        cache becomes complete it is saved, by a thread of its own)."""
        rows = np.asarray(rows, np.int64)
        if self.saver is not None:  # complete: the arrays no longer change, no lock needed
            return tuple(self.arrays[name][rows] for name in OUTPUTS)
        with self._lock:
            missing = np.flatnonzero(~self.filled[rows])
            if missing.size:
                todo, first = np.unique(rows[missing], return_index=True)
                self._compute(np.asarray(images)[missing[first]], todo, len(rows))
            if self.complete:
                # Written by a thread of its own while training goes on; save() waits for it.
                self.saver = threading.Thread(target=self._save_quietly,
                                               name="teacher-cache-save")
                self.saver.start()
            return tuple(self.arrays[name][rows] for name in OUTPUTS)

    def _save_quietly(self) -> None:
        try:
            self.save()
        except OSError:  # e.g. a full disk: the end-of-run save() tries again and reports it
            pass

    def _compute(self, images: np.ndarray, rows: np.ndarray, batch_size: int) -> None:
        if self.teacher is None:
            raise ValueError(f"teacher cache {self.path}: rows {rows[:5].tolist()} are not "
                             "stored and no teacher was given to compute them")
        start = time.perf_counter()
        if self._forward is None:
            self._forward = self._make_forward(batch_size, images.shape[1])
        result = self._forward(images)
        for name in OUTPUTS:
            self.arrays[name][rows] = np.asarray(result[name]).astype(np.float16)
        self.filled[rows] = True
        self.computed_rows += len(rows)
        self.compute_seconds += time.perf_counter() - start

    def _make_forward(self, batch_size: int, crop_size: int):
        """The teacher's forward on crops of ``crop_size``: LiteRT (:meth:`Teacher.litert_forward`
        at ``batch_size``) on a CPU-only machine with a float32 teacher, else TensorFlow (a GPU
        runs the teacher faster than any CPU path; a model LiteRT cannot convert, too)."""
        import tensorflow as tf

        self.forward_backend = "tensorflow"
        floats = str(self.teacher.model.output["tap_8"].dtype) == "float32"
        if floats and not tf.config.list_logical_devices("GPU"):
            try:
                forward = self.teacher.litert_forward(batch_size, crop_size)
                self.forward_backend = "litert"
                return forward
            except ValueError as err:
                print(f"teacher cache: {err}; the teacher runs in TensorFlow",
                      file=sys.stderr, flush=True)
        fn = tf.function(self.teacher.__call__, reduce_retracing=True)
        return lambda x: fn(tf.constant(x))

    def attach(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """``(images, targets, rows)`` batches -> ``(images, targets, outputs)``, ``outputs``
        the dict of :meth:`outputs`, computed in the input pipeline (prefetched, so rows not
        yet stored are computed ahead of the step where the step leaves CPU time idle)."""
        import tensorflow as tf

        shapes = {name: tuple(a.shape[1:]) for name, a in self.arrays.items()}

        def stage(images, targets, rows):
            found = tf.numpy_function(self.outputs, [images, rows], [tf.float16] * len(OUTPUTS),
                                      stateful=True)
            outputs = {}
            for name, value in zip(OUTPUTS, found, strict=True):
                value.set_shape((images.shape[0], *shapes[name]))
                outputs[name] = value
            return images, targets, outputs

        return dataset.map(stage).prefetch(tf.data.AUTOTUNE)

    def fill(self, faces: LabelledFaces, layout: Layout, input_size: int,
             augment: AugmentConfig, seed: int, batch_size: int = 32) -> None:
        """Compute every row not yet filled now (views of :func:`fas_tf.data.view_dataset`)."""
        import tensorflow as tf

        from fas_tf.data import view_dataset

        if self.complete:
            return
        rows = tf.constant(np.flatnonzero(~self.filled))
        for images, index in view_dataset(faces, layout, input_size, augment, seed, self.views,
                                          batch_size, rows=rows):
            with self._lock:
                self._compute(images.numpy(), index.numpy(), batch_size)
        self.save()

    def save(self) -> None:
        """Write the cache (every output and ``filled.npy``) into its folder, atomically; a no-op
        when nothing was computed since it was opened or last saved. Rows another run with the
        same key saved there meanwhile (e.g. a parallel ablation lane) are kept."""
        saver = self.saver
        if saver is not None and saver is not threading.current_thread():
            saver.join()
        with self._lock:  # the input pipeline may still be computing rows
            if self.computed_rows != self._saved_rows:
                self._write()

    def _write(self) -> None:
        root, key = self.path.parent, self.key
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_builds(root, key)
        for attempt in range(3):
            unique = f"{secrets.token_hex(4)}-{os.getpid()}"  # pid last: _remove_stale_builds
            try:
                self._write_once(root / f".{key}.tmp-{unique}", root / f".{key}.old-{unique}")
                break
            except OSError as err:
                # Another run with this key renamed its copy into place between this one's two
                # renames: merge its rows too and try again.
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 2:
                    raise
        self._saved_rows = self.computed_rows

    def _write_once(self, tmp: Path, old: Path) -> None:
        self._merge_saved()
        try:
            tmp.mkdir()
            for name, arr in self.arrays.items():
                np.save(tmp / f"{name}.npy", arr)
            np.save(tmp / "filled.npy", self.filled)
            meta = {**self._meta, "filled_rows": int(self.filled.sum()),
                    "compute_seconds": round(self.compute_seconds, 2)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            if self.path.exists():
                os.rename(self.path, old)
            os.rename(tmp, self.path)
        finally:
            _remove(tmp)
            _remove(old)  # the previous copy (a stray file in its place too)

    def _merge_saved(self) -> None:
        """Take the rows that the copy in :attr:`path` holds (finite) and this one does not."""
        if not self.path.is_dir():
            return
        shapes = {name: tuple(a.shape[1:]) for name, a in self.arrays.items()}
        try:
            arrays, filled = _open(self.path, self.key, len(self.filled), shapes, mmap=True)
        except (OSError, ValueError):
            return  # unreadable: replaced by this copy
        rows = np.flatnonzero(filled & ~self.filled)
        taken = {name: np.asarray(arr[rows]) for name, arr in arrays.items()}
        rows = rows[_finite_rows(taken, len(rows))]
        for name, arr in arrays.items():
            self.arrays[name][rows] = arr[rows]
        self.filled[rows] = True

    def describe(self) -> dict:
        return {
            "key": self.key,
            "path": str(self.path),
            "faces": self.faces,
            "views_per_face": self.views,
            "bytes": self.nbytes,
            "built": self.built,
            "reused_rows": self.reused_rows,
            "computed_rows": self.computed_rows,
            "compute_seconds": round(self.compute_seconds, 2),
            "forward_backend": self.forward_backend,
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
    digest = hashlib.sha256()
    for name in _CODE:
        source = Path(importlib.util.find_spec(name).origin).read_bytes()
        digest.update(name.encode() + b"\0" + source)
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


def _open(folder: Path, key: str, rows: int, shapes: dict,
          mmap: bool = False) -> tuple[dict, np.ndarray]:
    """The arrays and ``filled`` stored in ``folder``; ValueError naming the file when one is
    missing, empty, garbled or of another shape (OSError when it cannot be read)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"meta.json is not JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("key") != key:
        raise ValueError("meta.json does not name this key")
    filled = _load_npy(folder / "filled.npy")
    if filled.shape != (rows,) or filled.dtype != np.bool_:
        raise ValueError(f"filled.npy is {filled.dtype} {filled.shape}, expected bool {(rows,)}")
    arrays = {}
    for name, shape in shapes.items():
        arr = _load_npy(folder / f"{name}.npy", mmap_mode="r" if mmap else None)
        if arr.shape != (rows, *shape) or arr.dtype != np.float16:
            raise ValueError(f"{name}.npy is {arr.dtype} {arr.shape}, expected {(rows, *shape)}")
        arrays[name] = arr
    return arrays, filled


def _load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode)
    except (EOFError, ValueError) as err:  # empty (EOFError), truncated or not a .npy
        raise ValueError(f"{path.name} is not a complete .npy file ({err})") from err


def _finite_rows(arrays: dict[str, np.ndarray], rows: int) -> np.ndarray:
    """(rows,) bool: which rows hold only finite numbers in every output."""
    finite = np.ones(rows, np.bool_)
    for arr in arrays.values():
        finite &= np.isfinite(arr).all(axis=tuple(range(1, arr.ndim)))
    return finite


def _remove(path: Path) -> None:
    """Remove a folder or file, if there is one (errors ignored)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _remove_stale_builds(root: Path, key: str) -> None:
    """Remove temporary folders of writes of ``key`` whose process is gone (killed -9)."""
    for tmp in [*root.glob(f".{key}.tmp-*"), *root.glob(f".{key}.old-*")]:
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            _remove(tmp)
        except PermissionError:  # another user's live process
            pass


def open_cache(
    teacher: Teacher,
    faces: LabelledFaces,
    layout: Layout,
    input_size: int,
    augment: AugmentConfig,
    views: int,
    seed: int,
    root: str | os.PathLike | None = None,
    log=print,
) -> TeacherCache:
    """The teacher cache of these settings, with the rows stored under its key in ``root``
    (none when there is no such folder or it is unreadable); the rest are computed when first
    needed (:meth:`TeacherCache.outputs`) or by :meth:`TeacherCache.fill`. Logs one line."""
    if views < 1:
        raise ValueError(f"a teacher cache needs at least 1 view per face, got {views}")
    root = Path(root) if root is not None else cli.cache_dir("teacher_cache")
    key = cache_key(teacher, faces, layout, input_size, augment, views, seed)
    folder = root / key
    rows = len(faces) * views
    shapes = _shapes(teacher)
    arrays = filled = None
    if folder.is_dir():
        try:
            arrays, filled = _open(folder, key, rows, shapes)
        except (OSError, ValueError) as err:
            log(f"teacher cache: {folder} is unreadable ({err}); computing it anew")
        else:
            bad = filled & ~_finite_rows(arrays, rows)
            if bad.any():  # a damaged file: recompute those views
                log(f"teacher cache: {int(bad.sum())} stored views in {folder} hold NaN or inf; "
                    "computing them anew")
                filled &= ~bad
    if arrays is None:
        arrays = {name: np.zeros((rows, *shape), np.float16) for name, shape in shapes.items()}
        filled = np.zeros(rows, np.bool_)
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
    }
    stored = int(filled.sum())
    cache = TeacherCache(key, folder, len(faces), views, arrays, filled, teacher,
                         reused_rows=stored, _meta=meta)
    size = f"{cache.nbytes / 2**20:.1f} MiB, {len(faces)} faces x {views} views"
    if stored == rows:
        log(f"teacher cache: reused {folder} ({size})")
    elif stored:
        log(f"teacher cache: reused {stored} of {rows} views from {folder} ({size}); the rest "
            "are computed when first used")
    else:
        log(f"teacher cache: new {folder} ({size}); each view is computed when first used")
    return cache


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
    """The complete teacher cache of these settings: :func:`open_cache`, then every row not
    stored is computed now (:meth:`TeacherCache.fill`, in batches of ``batch_size``) and the
    cache saved. An interrupted build leaves nothing behind. Logs one more line when it
    computed rows."""
    cache = open_cache(teacher, faces, layout, input_size, augment, views, seed, root, log)
    if not cache.complete:
        cache.fill(faces, layout, input_size, augment, seed, batch_size)
        log(f"teacher cache: built {cache.path} in {cache.compute_seconds:.1f} s "
            f"({cache.computed_rows} views computed)")
    return cache
