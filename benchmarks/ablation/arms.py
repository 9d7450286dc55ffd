"""The ablation's configurations (arms), run keys, protocol constants and step schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fas_tf.data import steps_per_epoch
from fas_tf.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "infanface-train"
TRAIN_SETS = ("ads", "youtube2")
VAL_SETS = ("google2",)
BATCHES = ("ads", "youtube2", "google2")
SIZES = (20, 40, 80, 159)
SEEDS = (0, 1, 2)
STEPS = 2000  # optimizer steps per run, whatever N (200 epochs of the 159 faces)
CHECKPOINT_STEPS = 200  # a --resume backup about every 200 optimizer steps
STUDENT = "0.5:96:64"  # ALPHA:INPUT:HEAD of the MobileNetV2 student (the 96 px mobile student)
LAMBDA = 1.0  # default weight of each regularizer (all four jointly)
BATCH_SIZE = TrainConfig().batch_size
REGULARIZERS = ("cls", "feat", "sa", "ca")
QUICK_CONFIGS = ("none", "dlib_all", "dlib_random")
QUICK_SIZES = (20, 159)
QUICK_SEEDS = (0,)
QUICK_STEPS = 200


@dataclass(frozen=True)
class Arm:
    """One configuration of the ablation."""

    name: str
    label: str
    teacher: str  # "none", "dlib", "facenet"
    teacher_weights: str | None  # None: the pretrained weights; "random": the control
    regularizers: str
    student: str = "mobilenetv2"  # TrainConfig.student
    note: str = ""

    @property
    def transfer(self) -> bool:
        """The transfer-learning baseline (dlib trunk fine-tuned) instead of the student."""
        return self.student == "dlib_transfer"

    @property
    def weighted(self) -> bool:
        """Whether the arm has regularizer terms, so a weight ``lambda`` applies."""
        return self.teacher != "none"


def _arms() -> list[Arm]:
    out = [Arm("none", "no teacher", "none", None, "none")]
    for t, name in (("facenet", "FaceNet"), ("dlib", "dlib")):
        out.append(Arm(f"{t}_all", f"{name}: cls+feat+sa+ca", t, None, ",".join(REGULARIZERS)))
        out.append(Arm(f"{t}_random", f"random {name}: cls+feat+sa+ca", t, "random",
                       ",".join(REGULARIZERS),
                       note=f"control: {name} architecture, random weights"))
        out += [Arm(f"{t}_{r}", f"{name}: {r} only", t, None, r) for r in REGULARIZERS]
    out.append(Arm("transfer", "transfer: dlib trunk fine-tuned", "none", None, "none",
                   student="dlib_transfer",
                   note="pretrained dlib trunk + heatmap head, all weights trained, heatmap "
                   "loss only"))
    return out


ARMS: dict[str, Arm] = {a.name: a for a in _arms()}
CONTROLS = {"facenet_all": "facenet_random", "dlib_all": "dlib_random"}  # real -> random teacher


def grid_configs(single_teacher: str = "facenet") -> list[str]:
    """The issue's grid: none, both teachers (all four) and their random controls, the four
    single regularizers with ``single_teacher``, and ``transfer``."""
    return (["none", "facenet_all", "facenet_random", "dlib_all", "dlib_random"]
            + [f"{single_teacher}_{r}" for r in REGULARIZERS] + ["transfer"])


@dataclass(frozen=True)
class RunKey:
    """One training run: a grid cell (``fold`` "") or a cross-validation fold.

    ``lam`` is the weight of every regularizer term (None for arms without a teacher).
    """

    arm: str
    n: int | None  # training-set size (None: all faces of the training batches)
    seed: int
    fold: str = ""  # the held-out batch of a CV run
    lam: float | None = None

    @property
    def train_sets(self) -> tuple[str, ...]:
        return TRAIN_SETS if not self.fold else tuple(b for b in BATCHES if b != self.fold)

    @property
    def val_sets(self) -> tuple[str, ...]:
        return VAL_SETS if not self.fold else (self.fold,)


def epochs_for(n_train: int, steps: int, batch_size: int = BATCH_SIZE) -> int:
    """Epochs giving at least ``steps`` optimizer steps on ``n_train`` faces."""
    return max(1, math.ceil(steps / steps_per_epoch(n_train, batch_size)))


def checkpoint_every(n_train: int, batch_size: int = BATCH_SIZE) -> int:
    """Epochs between a run's checkpoints (``TrainConfig.checkpoint_every``): about every
    ``CHECKPOINT_STEPS`` optimizer steps, not every epoch (at N=20 an epoch is 2 steps, and
    each checkpoint costs about a second)."""
    return max(1, CHECKPOINT_STEPS // steps_per_epoch(n_train, batch_size))


def schedule_tag(steps: int) -> str:
    """``"s2000"``: a schedule of 2000 optimizer steps (rounded up to whole epochs)."""
    return f"s{steps}"


def lambda_text(lam: float | None) -> str:
    """The ``lambda`` cell of a row: ``""`` for arms without a teacher, else e.g. ``"0.1"``."""
    return "" if lam is None else f"{lam:g}"


def grid_keys(arms: list[str], sizes: list[int], seeds: list[int],
              lambdas: list[float] = (LAMBDA,)) -> list[RunKey]:
    """Every (arm, lambda, N, seed); arms without a teacher run once, whatever ``lambdas``."""
    return [RunKey(a, n, s, "", lam) for a in arms
            for lam in (lambdas if ARMS[a].weighted else [None]) for n in sizes for s in seeds]


def grid_twin(key: RunKey) -> RunKey | None:
    """The grid run that is the same training as CV fold ``key``, else None.

    The fold that holds out the grid's validation batch trains on every face of
    :data:`TRAIN_SETS`, as the grid does at its largest N (all 159 faces: ``train_limit`` no
    smaller than the faces draws no subset), with the same seed, schedule and student: one run
    serves both (none seed 0 gave identical per-face errors both ways).
    """
    if key.fold and key.val_sets == VAL_SETS:
        return RunKey(key.arm, SIZES[-1], key.seed, "", key.lam)
    return None


def cv_keys(arms: list[str], seeds: list[int], folds: list[str] = BATCHES,
            lambdas: list[float] = (LAMBDA,)) -> list[RunKey]:
    return [RunKey(a, None, s, fold, lam) for a in arms
            for lam in (lambdas if ARMS[a].weighted else [None]) for fold in folds for s in seeds]
