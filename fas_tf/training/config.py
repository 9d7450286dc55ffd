"""The settings of a training run (:class:`TrainConfig`), declared once: each field carries its
help text, and is turned into an absl flag and read from recipe files.

A settings field is declared once with :func:`setting` (default, help, optional choices);
:func:`define_flags` makes one flag per field (the flag's type from the field's annotation),
:func:`read_recipe` reads a recipe (a JSON or YAML mapping of field names to values, e.g.
``recipes/default.yaml``) and :func:`config_from_flags` merges them: dataclass default < recipe
< flags given on the command line. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fas_tf.errors import UsageError

T = TypeVar("T")
RECIPE_SUFFIXES = (".json", ".yaml", ".yml")


def setting(default: Any = dataclasses.MISSING, help: str = "", *,
            choices: Iterable[str] | None = None, flag: bool = True, recipe: bool = True,
            to: Iterable[str] = (), default_factory: Any = dataclasses.MISSING) -> Any:
    """A settings field: ``help`` becomes the flag's help text, ``choices`` makes it an enum;
    ``flag=False`` keeps it out of the command line (library-only settings), ``recipe=False``
    out of recipes (how a run is driven, not what it trains: e.g. ``resume``); ``to`` names the
    builders it is passed to as a keyword argument (:func:`settings_for`): ``"student"`` (the
    student's builder, :func:`fas_tf.student.build_architecture`), ``"data"``
    (:func:`fas_tf.data.make_dataset`)."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "flag": flag,
                "recipe": recipe, "to": tuple(to)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settings_for(config: Any, target: str) -> dict[str, Any]:
    """The settings of ``config`` marked ``to=target`` (:func:`setting`), by name: what a run
    passes to that builder as keyword arguments (a new network setting is one field)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if target in f.metadata.get("to", ())}


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int, ``list[str]`` -> list, ``bool`` -> bool."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return typing.get_origin(annotation) or annotation


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, _base_type(hints[f.name])) for f in dataclasses.fields(cls)]


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def define_flags(cls: type, flag_values=None) -> None:
    """One absl flag per :func:`setting` field of ``cls`` (bool, integer, float, list, enum or
    string by the field's type), with the field's default and help text."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
              list: flags.DEFINE_list, str: flags.DEFINE_string}
    for f, kind in _fields(cls):
        if not f.metadata.get("flag", False):
            continue
        default, text = _default(f), f.metadata["help"]
        if f.metadata.get("choices"):
            flags.DEFINE_enum(f.name, default, list(f.metadata["choices"]), text, flag_values=fv)
        else:
            if kind is list:
                default = default or None  # absl: an empty list flag is None
            define[kind](f.name, default, text, flag_values=fv)


def _coerce(name: str, kind: Any, value: Any, choices: tuple[str, ...] | None) -> Any:
    """A recipe value as the field's type; ValueError naming what is wrong."""
    if value is None:
        return None
    if kind is list:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ValueError(f"{name}: expected a list of names, got {value!r}")
        return [v.strip() for v in items if v.strip()]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name}: expected {kind.__name__}, got {value!r}")
    if choices and value not in choices:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def _parse_unique_keys(text: str, yaml_text: bool) -> Any:
    """JSON or YAML text as Python data; a key given twice in one mapping is a ValueError (both
    parsers would keep the last value without a word)."""
    import yaml

    def unique(pairs: list) -> dict:
        keys = [k for k, _ in pairs]
        twice = [k for i, k in enumerate(keys) if k in keys[:i]]
        if twice:
            raise ValueError(f"{twice[0]!r} is given twice")
        return dict(pairs)

    if not yaml_text:
        return json.loads(text, object_pairs_hook=unique)

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            unique([(self.construct_object(k, deep=deep), None) for k, _ in node.value])
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no Python objects


def read_recipe(path: str | os.PathLike, cls: type) -> dict[str, Any]:
    """The settings of a recipe file for ``cls``: a JSON or YAML mapping of field names to values
    (a run's ``config.json``, whose settings are under ``"config"``, works too).

    Raises UsageError (one line naming the file) for a missing or unreadable file, an unknown
    setting, a setting given twice, a value of the wrong type or a flag-only field.
    """
    path = Path(path)
    if path.suffix not in RECIPE_SUFFIXES:
        raise UsageError(f"{path}: a recipe is a .json, .yaml or .yml file")
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = _parse_unique_keys(text, yaml_text=path.suffix != ".json")
    except OSError as err:
        raise UsageError(f"{path}: cannot read the recipe ({err.strerror or err})") from err
    except (ValueError, yaml.YAMLError) as err:  # JSONDecodeError is a ValueError
        raise UsageError(f"{path}: not a recipe ({' '.join(str(err).split())})") from err
    known = {f.name: (f, kind) for f, kind in _fields(cls)}
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "versions" in data:
        data = {k: v for k, v in data["config"].items()  # a run's config.json: its recipe part
                if k in known and known[k][0].metadata.get("recipe", True)}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a recipe is a mapping of settings to values")
    settings = {}
    for name, value in data.items():
        if name not in known:
            raise UsageError(f"{path}: unknown setting {name!r}")
        f, kind = known[name]
        if not f.metadata.get("recipe", True):
            raise UsageError(f"{path}: {name} is not a recipe setting (give it as a flag)")
        try:
            settings[name] = _coerce(name, kind, value, f.metadata.get("choices"))
        except ValueError as err:
            raise UsageError(f"{path}: {err}") from err
    return settings


def recipe_text(config: Any, comment: str = "") -> str:
    """The recipe YAML of a settings dataclass instance (every recipe setting, in field order;
    ``# comment`` lines first): what :func:`read_recipe` reads back into the same settings."""
    import yaml

    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                if f.metadata.get("recipe", True)}
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return head + yaml.safe_dump(settings, sort_keys=False, default_flow_style=False)


def config_from_flags(cls: type[T], flag_values=None,
                      recipe: Mapping[str, Any] | None = None) -> tuple[T, set[str]]:
    """``cls`` from its defaults, then ``recipe``, then the flags given on the command line;
    also the names of the settings given (recipe or command line)."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    values = dict(recipe or {})
    for f, _ in _fields(cls):
        if f.metadata.get("flag", False) and f.name in fv and fv[f.name].present:
            value = fv[f.name].value
            values[f.name] = list(value) if isinstance(value, list) else value
    return cls(**values), set(values)


# Names of the registries' entries, kept here so that flags and recipes are checked without
# importing TensorFlow (tests/test_recipes.py checks them against the registries,
# fas_tf.student.STUDENTS and fas_tf.teachers.TEACHER_CHOICES).
STUDENT_CHOICES = ("dlib_transfer", "mobilenetv2", "mobilenetv2_lite")
TEACHER_CHOICES = ("auto", "facenet", "dlib", "none")
STRATEGIES = ("default", "mirrored", "multiworker")
DECODER_CHOICES = ("dark", "taylor")  # fas_tf.heatmaps.DECODERS
# The names of fas_tf.regularizers.HEATMAP_LOSSES (tests/test_regularizers.py ties them).
HEATMAP_LOSS_CHOICES = ("mse", "awing")
# 60 epochs (600 steps on 159 faces) left the student far from converged (docs/results.md,
# issue 5): the default is 200.
DEFAULT_EPOCHS = 200
DEMO_EPOCHS = 20


@dataclass
class TrainConfig:
    """Every training setting (recorded in ``config.json``; each one a flag of
    ``python -m fas_tf.train`` and a key of a recipe)."""

    output_dir: str = setting("runs/demo", "where the run is written")
    data: str | None = setting(None, "training faces: folder of images + .pts, or a CSV "
                               "(default: the synthetic demo set)")
    val_data: str | None = setting(None, "validation faces (same formats)")
    attributes: str | None = setting(None, "attributes CSV (stem, image_set, ...) for *_sets")
    train_sets: list[str] = setting(help="comma list of image_set values to train on",
                                    default_factory=list)
    val_sets: list[str] = setting(help="comma list of image_set values to validate on",
                                  default_factory=list)
    exclude: str | None = setting(None, "text file of image stems to leave out of training and "
                                  "validation, one per line (e.g. faces whose labels are wrong)")
    teacher: str = setting("auto", "teacher network (auto: the first pretrained one for the "
                           "student, fas_tf.teachers.auto_order)", choices=TEACHER_CHOICES)
    teacher_weights: str | None = setting(None, "teacher weights file, or 'random' (tests)")
    regularizers: str = setting("cls,feat,sa,ca", "comma list of cls,feat,sa,ca or none")
    lambda_cls: float = setting(1.0, "weight of cls")
    lambda_feat: float = setting(1.0, "weight of feat")
    lambda_sa: float = setting(1.0, "weight of sa")
    lambda_ca: float = setting(1.0, "weight of ca")
    distill_from: list[str] = setting(help="trained student.keras files (any input size), comma "
                                      "separated, whose heatmaps (averaged over the files: an "
                                      "ensemble) the student also learns (knowledge distillation)",
                                      default_factory=list)
    lambda_distill: float = setting(1.0, "weight of the distillation loss")
    epochs: int | None = setting(None, f"epochs (default {DEFAULT_EPOCHS}; {DEMO_EPOCHS} on the "
                                 "demo set)")
    batch_size: int = setting(16, "global batch size")
    input_size: int = setting(128, "crop side (multiple of 32)")
    learning_rate: float = setting(2e-3, "peak learning rate (cosine decay)")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    sigma: float = setting(1.5, "heatmap Gaussian sigma, in heatmap pixels", to=("data",))
    heatmap_loss: str = setting("mse", "the label loss on heatmaps: squared error or Adaptive "
                                "Wing with a weighted loss map", choices=HEATMAP_LOSS_CHOICES)
    lambda_coord: float = setting(0.0, "weight of the coordinate loss: the NME of the landmarks "
                                  "decoded (as --decoder) from the training heatmaps, which "
                                  "trains their sub-cell position; 0: off (docs/accuracy.md)")
    heatmap_stride: int = setting(4, "crop pixels per heatmap cell: 4 (input_size/4 heatmaps) "
                                  "or 2 (input_size/2)", to=("student",))
    decoder: str = setting("dark", "heatmap decoding saved with the model: dark (blurred by the "
                           "training --sigma, then the log-Taylor step; docs/accuracy.md) or "
                           "taylor (the log-Taylor step alone, the decoding of models saved "
                           "before this setting)", choices=DECODER_CHOICES)
    student: str = setting("dlib_transfer", "student network: dlib_transfer (dlib's pretrained "
                           "trunk, fine-tuned), mobilenetv2 or mobilenetv2_lite (without "
                           "MobileNetV2's 1280-channel top: the phone-sized student)",
                           choices=STUDENT_CHOICES)
    alpha: float = setting(0.5, "MobileNetV2 width multiplier of the student", to=("student",))
    head_channels: int | None = setting(None, "channels of the heatmap head (default: the "
                                        "student's own: 128 for dlib_transfer, 64 for "
                                        "the MobileNetV2 students)", to=("student",))
    rotation: float = setting(45.0, "max augmentation rotation, degrees")
    proportion_warp: float = setting(1.0, "probability per training view of the proportion "
                                     "warp: each eye, the philtrum and the upper lip stretched "
                                     "by independent factors in [1/S, S] (S: "
                                     "--proportion_stretch), image and landmarks alike, so the "
                                     "landmarks follow a real change of these lengths "
                                     "(fas_tf.augment; 68-point data only, off for other "
                                     "layouts; docs/clinical.md)")
    proportion_stretch: float = setting(2.0, "the proportion warp's largest length factor S: "
                                        "factors log-uniform in [1/S, S]")
    upright: bool = setting(False, "cut training crops with the face's true eyes level (then "
                            "--rotation of e.g. 10); validation crops stay framing-rule crops")
    seed: int = setting(0, "random seed: the same seed gives the same run")
    teacher_cache: int = setting(0, "K > 0: compute the teacher's outputs once on K seeded views "
                                 "per face (cached on disk by key) and replay them; 0: run the "
                                 "teacher online")
    train_limit: int | None = setting(None, "seeded subset of N training faces")
    checkpoint_every: int = setting(1, "epochs between checkpoints (the --resume backup and "
                                    "checkpoints/student_last.keras, about a second each on 2 "
                                    "CPU cores); the last epoch is always checkpointed")
    resume: bool = setting(False, "continue the run in --output_dir", recipe=False)
    strategy: str = setting("default", "tf.distribute strategy", choices=STRATEGIES)
    mixed_precision: bool = setting(False, "mixed_float16 compute")
    jit_compile: bool = setting(False, "XLA-compile the train step")
    strict: bool = setting(False, "any bad sample is fatal (default: skip it)")
    verbose: int = setting(1, "Keras progress: 0 silent, 1 bar, 2 line per epoch", recipe=False)
    allow_download: bool = setting(True, "whether a teacher's weights may be downloaded",
                                   flag=False, recipe=False)

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
            ("rotation", self.rotation, 0 <= self.rotation <= 180, "in [0, 180] degrees"),
            ("proportion_warp", self.proportion_warp, 0 <= self.proportion_warp <= 1,
             "a probability in [0, 1]"),
            ("proportion_stretch", self.proportion_stretch,
             1 < self.proportion_stretch <= 3, "in (1, 3]"),
            ("seed", self.seed, 0 <= self.seed < 2**32, "in [0, 2**32)"),
            ("teacher_cache", self.teacher_cache, self.teacher_cache >= 0, ">= 0"),
            ("checkpoint_every", self.checkpoint_every, self.checkpoint_every >= 1, ">= 1"),
            ("verbose", self.verbose, self.verbose in (0, 1, 2), "0, 1 or 2"),
            *((f"lambda_{k}", v, v >= 0, ">= 0") for k, v in self.lambdas().items()),
            ("lambda_distill", self.lambda_distill, self.lambda_distill >= 0, ">= 0"),
            ("lambda_coord", self.lambda_coord, self.lambda_coord >= 0, ">= 0"),
        ]
        if self.epochs is not None:
            checks.append(("epochs", self.epochs, self.epochs >= 1, ">= 1"))
        if self.train_limit is not None:
            checks.append(("train_limit", self.train_limit, self.train_limit >= 1, ">= 1"))
        if self.head_channels is not None:  # None: the student's own width
            checks.append(("head_channels", self.head_channels, self.head_channels >= 1, ">= 1"))
        for name, value, ok, rule in checks:  # NaN fails every comparison
            if not ok or not math.isfinite(value):
                raise UsageError(f"--{name} must be {rule}, got {value}")
        if self.heatmap_loss not in HEATMAP_LOSS_CHOICES:
            choices = ", ".join(HEATMAP_LOSS_CHOICES)
            raise UsageError(f"--heatmap_loss must be one of {choices}, "
                             f"got {self.heatmap_loss!r}")
        if self.teacher_cache and self.strategy == "multiworker":
            raise UsageError("--teacher_cache does not support --strategy=multiworker yet; "
                             "use --teacher_cache=0 there")

    def lambdas(self) -> dict[str, float]:
        return {
            "cls": self.lambda_cls,
            "feat": self.lambda_feat,
            "sa": self.lambda_sa,
            "ca": self.lambda_ca,
        }
