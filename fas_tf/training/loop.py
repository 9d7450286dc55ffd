"""One training run: data, student, teacher, losses, callbacks and the fit.

:func:`train` with a :class:`~fas_tf.training.config.TrainConfig` is the library entry point
(``python -m fas_tf.train`` calls it). It writes to ``output_dir``: ``student.keras``,
``config.json`` (every setting, the teacher used, package versions), ``metrics.json``,
``history.csv``, TensorBoard ``logs/`` and ``checkpoints/`` (the ``--resume`` state and
``student_last.keras``). What a run builds (student, teacher, extra callbacks) can be replaced
through :class:`Builders` (tests: a tiny student and teacher).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fas_tf import __version__, cli
from fas_tf.errors import WorkerLostError
from fas_tf.training import checkpoints as ckpt
from fas_tf.training import distributed as dist
from fas_tf.training.config import DEFAULT_EPOCHS, DEMO_EPOCHS, TrainConfig

if TYPE_CHECKING:
    from fas_tf.model import DistillSource


@dataclass(frozen=True)
class Builders:
    """What a run builds, each replaceable (tests: a tiny student and teacher, a kill mid-run).

    Attributes:
        student: ``(name, num_landmarks, input_size, **settings) -> keras.Model``, the settings
            being those marked ``to="student"`` in :class:`TrainConfig`; None:
            :func:`fas_tf.student.build_architecture` (the students by name).
        teacher: ``(config, log) -> Teacher | None``; None: :func:`fas_tf.teachers.select_teacher`
            with the run's ``teacher``, ``teacher_weights`` and ``student``.
        callbacks: more Keras callbacks, after the run's own.
    """

    student: Callable[..., Any] | None = None
    teacher: Callable[[TrainConfig, Callable[[str], None]], Any] | None = None
    callbacks: Sequence[Any] = ()


def _teacher_of(config: TrainConfig, log: Callable[[str], None]):
    from fas_tf.teachers import select_teacher

    return select_teacher(config.teacher, config.teacher_weights, config.student,
                          config.allow_download, log)


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version(), "fas_tf": __version__}
    for name in ("tensorflow", "keras", "keras-facenet", "numpy", "opencv-python-headless"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def load_sets(config: TrainConfig, log=print):
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
        demo = cli.cache_dir("demo")
        train_path, val_path = demo_dirs(demo)
        log(f"data: no --data given, using the synthetic demo set in {demo} (not clinical data)")
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


def load_distill_source(config: TrainConfig, num_landmarks: int) -> DistillSource | None:
    """The :class:`fas_tf.model.DistillSource` of ``--distill_from`` (None without one; several
    files: their ensemble).

    UsageError (one line naming the file) when a file is missing, not a landmark model,
    predicts another landmark count than the first file or the data, or, on ``--resume``, is
    not the file (by sha256) the run started with.
    """
    paths = config.distill_from
    if isinstance(paths, str):  # a config.json written before --distill_from took a list
        paths = [p for p in paths.split(",") if p]
    if not paths:
        return None
    from fas_tf.model import DistillSource

    try:
        source = DistillSource.load(paths)
    except cli.UsageError as err:
        raise cli.UsageError(f"--distill_from: {err}") from err
    if source.num_landmarks != num_landmarks:
        raise cli.UsageError(
            f"--distill_from: {source.models[0].path}: the model predicts "
            f"{source.num_landmarks} landmarks, the data has {num_landmarks}"
        )
    saved = Path(config.output_dir) / "config.json"
    if config.resume and saved.is_file():
        before = json.loads(saved.read_text()).get("distill") or {}
        before = before.get("models", [before])  # one model: the record before ensembles
        for model, was in zip(source.models, before, strict=False):
            if was.get("sha256") is not None and was["sha256"] != model.sha256:
                raise cli.UsageError(
                    f"--distill_from: {model.path} has changed since the run started (sha256 "
                    f"{model.sha256[:12]}..., {was['sha256'][:12]}... saved in {saved}); "
                    "--resume needs the same source models"
                )
    return source


def train(config: TrainConfig, log=print, given: Collection[str] | None = None,
          builders: Builders | None = None) -> dict:
    """Train as configured; returns the metrics written to ``metrics.json``.

    ``builders`` replaces what the run builds (:class:`Builders`; default: the registries).

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
    if config.resume and (dist.is_chief(config.strategy) or (out / "config.json").is_file()):
        config = ckpt.resolve_resume(config, set(given) if given is not None else None)
        config.validate()
        if (out / "student.keras").is_file():
            log(f"{out}: already finished ({config.epochs} epochs); nothing to do")
            try:
                return json.loads((out / "metrics.json").read_text())
            except (OSError, ValueError):
                return {}
        log(f"resume: continuing {out} with its saved config")
    chief = dist.is_chief(config.strategy)
    if chief and not config.resume:
        ckpt.check_fresh_output(out)
    if config.epochs is None:
        config = dataclasses.replace(
            config, epochs=DEMO_EPOCHS if config.data is None else DEFAULT_EPOCHS
        )
    created = cli.check_writable_dir(out) if chief else False
    try:
        if config.teacher in ("facenet", "dlib") and config.teacher_weights:
            from fas_tf.teachers import check_weights_file  # imports TensorFlow

            check_weights_file(config.teacher, config.teacher_weights)
        train_faces, val_faces = load_sets(config, log)  # no TensorFlow needed up to here
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
        return _fit(config, train_faces, val_faces, out, log, distill, builders or Builders())
    except Exception as err:
        if config.strategy == "multiworker" and dist.lost_a_worker(err):
            raise WorkerLostError(
                f"worker {dist.cluster_task().index}: lost the cluster, another worker stopped or "
                f"is unreachable ({dist.tf_reason(err)}); stop every worker and start them all "
                "again with --resume"
            ) from err
        raise
    finally:  # a run that failed before writing anything leaves no empty folder behind
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _fit(config: TrainConfig, train_faces, val_faces, out: Path, log, distill,
         builders: Builders) -> dict:
    import keras
    import numpy as np

    from fas_tf.augment import PROPORTION_WARP_POINTS, AugmentConfig
    from fas_tf.data import framed_crops, steps_per_epoch
    from fas_tf.evaluate import evaluate_predictions
    from fas_tf.landmarks import layout_for
    from fas_tf.model import RegularizedLandmarkModel
    from fas_tf.student import build_architecture, inference_model, with_decoding
    from fas_tf.training.config import settings_for

    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = dist.make_strategy(config.strategy)
    task = dist.cluster_task(config.strategy)
    layout = layout_for(train_faces.num_landmarks)
    warp = config.proportion_warp
    if warp > 0 and layout.num_landmarks != PROPORTION_WARP_POINTS:
        log(f"proportion warp: off (it needs the 68-point layout; these faces have "
            f"{layout.num_landmarks} points)")
        warp = 0.0
    augment = AugmentConfig(rotation=config.rotation, proportion_warp=warp,
                            proportion_stretch=config.proportion_stretch)
    global_batch = config.batch_size
    steps = steps_per_epoch(len(train_faces), global_batch)
    if task.is_chief:
        backup = out / "checkpoints" / "backup"
    else:  # every worker backs up its own state (each restores its own), outside --output_dir
        backup = dist.worker_scratch_dir(out, task.index)
        if not config.resume:
            shutil.rmtree(backup, ignore_errors=True)  # stale state of an earlier, killed run
    initial_epoch = ckpt.backup_epoch(backup) if config.resume else 0
    if config.resume and task.is_chief:
        ckpt.truncate_history(out / "history.csv", initial_epoch)
    with strategy.scope():
        student = (builders.student or build_architecture)(
            config.student, layout.num_landmarks, config.input_size,
            **settings_for(config, "student"),
        )
        student = with_decoding(student, config.decoder, config.sigma)
        teacher = (builders.teacher or _teacher_of)(config, log)
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
            coordinate_weight=config.lambda_coord,
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
    train_ds, val_ds = dist.distributed_datasets(
        strategy, config, train_faces, val_faces, layout, augment, initial_epoch, cache, log,
    )
    log(
        f"training on {len(train_faces)} faces"
        + (f", validating on {len(val_faces)}" if val_faces is not None else "")
        + f"; regularizers: {', '.join(model.regularizers) or 'none'}"
    )
    if distill is not None:
        log(f"distill: from {distill.summary()}; run online, lambda {config.lambda_distill:g}")
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
    callbacks = [ckpt.stop_on_non_finite_loss(out / "history.csv" if task.is_chief else None)]
    history_log = None
    if task.is_chief:
        cli.write_json(out / "config.json", record)
        history_log = keras.callbacks.CSVLogger(str(out / "history.csv"), append=True)
        callbacks.append(history_log)
    # The backup outlives fit: it is removed once student.keras and metrics.json are written.
    callbacks += [ckpt.backup_and_restore(backup, restart, **every, keep_after_fit=True),
                  ckpt.data_starts_at_restored_epoch(initial_epoch)]
    if task.is_chief:
        callbacks += [
            ckpt.student_checkpoint(student, out / "checkpoints" / "student_last.keras", **every),
            keras.callbacks.TensorBoard(str(out / "logs"), profile_batch=0),
        ]
    if task.workers > 1:
        callbacks.append(dist.same_epoch_on_every_worker(strategy, backup))
    callbacks += list(builders.callbacks)
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
        final = ckpt.last_history_row(out / "history.csv")
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
    ckpt.save_student(student, out / "student.keras")
    shutil.rmtree(backup, ignore_errors=True)
    log(f"wrote {out / 'student.keras'}")
    return metrics
