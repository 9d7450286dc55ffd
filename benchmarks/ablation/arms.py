"""The ablation's configurations (arms), run keys, protocol constants and epoch schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fas_tf.train import DEFAULT_EPOCHS, TrainConfig

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "infanface-train"
TRAIN_SETS = ("ads", "youtube2")
VAL_SETS = ("google2",)
BATCHES = ("ads", "youtube2", "google2")
SIZES = (20, 40, 80, 159)
SEEDS = (0, 1, 2)
EPOCHS = DEFAULT_EPOCHS  # fas_tf.train's default for real data
BATCH_SIZE = TrainConfig().batch_size
QUICK_CONFIGS = ("none", "dlib_all", "dlib_random")
QUICK_SIZES = (20, 159)
QUICK_SEEDS = (0,)
QUICK_EPOCHS = 20


@dataclass(frozen=True)
class Arm:
    """One configuration of the ablation."""

    name: str
    label: str
    teacher: str  # "none", "dlib", "facenet"
    teacher_weights: str | None
    regularizers: str
    student: str = "mobilenetv2"  # TrainConfig.student
    note: str = ""

    @property
    def transfer(self) -> bool:
        """The transfer-learning baseline (dlib trunk fine-tuned) instead of the student."""
        return self.student == "dlib_transfer"


ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("none", "no teacher", "none", None, "none"),
        Arm("cls", "dlib: cls only", "dlib", None, "cls"),
        Arm("feat", "dlib: feat only", "dlib", None, "feat"),
        Arm("sa", "dlib: sa only", "dlib", None, "sa"),
        Arm("ca", "dlib: ca only", "dlib", None, "ca"),
        Arm("dlib_all", "dlib: cls+feat+sa+ca", "dlib", None, "cls,feat,sa,ca"),
        Arm("dlib_random", "random dlib: cls+feat+sa+ca", "dlib", "random", "cls,feat,sa,ca",
            note="control: dlib architecture, random weights"),
        Arm("transfer", "transfer: dlib trunk fine-tuned", "none", None, "none",
            student="dlib_transfer",
            note="pretrained dlib trunk + heatmap head, all weights trained, heatmap loss only"),
        Arm("facenet_random", "random FaceNet: all four (code-path check only)", "facenet",
            "random", "cls,feat,sa,ca",
            note="code-path check only: random weights, not a result"),
    )
}


@dataclass(frozen=True)
class RunKey:
    """One training run: a grid cell (``fold`` None) or a cross-validation fold."""

    arm: str
    n: int | None  # training-set size (None: all faces of the training batches)
    seed: int
    fold: str | None = None  # the held-out batch of a CV run

    @property
    def train_sets(self) -> tuple[str, ...]:
        return TRAIN_SETS if self.fold is None else tuple(b for b in BATCHES if b != self.fold)

    @property
    def val_sets(self) -> tuple[str, ...]:
        return VAL_SETS if self.fold is None else (self.fold,)

    def rel_dir(self) -> Path:
        if self.fold is None:
            return Path("grid") / self.arm / f"n{self.n}" / f"seed{self.seed}"
        return Path("cv") / self.arm / f"test_{self.fold}" / f"seed{self.seed}"


def steps_for(count: int, batch_size: int = BATCH_SIZE) -> int:
    return max(1, math.ceil(count / batch_size))


def epochs_for(n_train: int, epochs: int, min_steps: int) -> int:
    """Epochs of a run: ``epochs``, raised so that small sets get at least ``min_steps`` steps."""
    if min_steps <= 0:
        return epochs
    return max(epochs, math.ceil(min_steps / steps_for(n_train)))


def schedule_tag(epochs: int, min_steps: int) -> str:
    return f"e{epochs}" + (f"_min{min_steps}" if min_steps > 0 else "")


def grid_keys(arms: list[str], sizes: list[int], seeds: list[int]) -> list[RunKey]:
    return [RunKey(a, n, s) for a in arms for n in sizes for s in seeds]


def cv_keys(arms: list[str], seeds: list[int]) -> list[RunKey]:
    return [RunKey(a, None, s, fold) for a in arms for fold in BATCHES for s in seeds]
