"""Landmark layouts: names, horizontal-flip pairs and normalization indices.

The 68-point 300-W / Multi-PIE layout is built in (0-based indices: 0-16 jaw, 17-26 brows,
27-35 nose, 36-47 eyes, 48-67 mouth; 36 and 45 are the outer eye corners). Any other landmark
count works with a user-given flip-pair list (or none, which disables flipping).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Mirror pairs of the 68-point 300-W layout (0-based). Points not listed map to themselves.
FLIP_PAIRS_68: tuple[tuple[int, int], ...] = (
    # jaw
    (0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9),
    # brows
    (17, 26), (18, 25), (19, 24), (20, 23), (21, 22),
    # nose
    (31, 35), (32, 34),
    # eyes
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
    # mouth
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67),
)  # fmt: skip

_NAMES_68 = (
    [f"jaw_{i}" for i in range(17)]
    + [f"right_brow_{i}" for i in range(5)]
    + [f"left_brow_{i}" for i in range(5)]
    + [f"nose_bridge_{i}" for i in range(4)]
    + [f"nose_base_{i}" for i in range(5)]
    + [f"right_eye_{i}" for i in range(6)]
    + [f"left_eye_{i}" for i in range(6)]
    + [f"outer_lip_{i}" for i in range(12)]
    + [f"inner_lip_{i}" for i in range(8)]
)


@dataclass(frozen=True)
class Layout:
    """A landmark layout.

    Attributes:
        num_landmarks: N.
        names: one name per landmark.
        flip_pairs: index pairs swapped by a horizontal flip (empty: flipping is disabled).
        interocular: the two indices whose distance normalizes NME (the outer eye corners), or
            None when the layout has no eyes defined (NME then uses the box diagonal).
    """

    num_landmarks: int
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    interocular: tuple[int, int] | None

    @property
    def can_flip(self) -> bool:
        return len(self.flip_pairs) > 0

    def flip_permutation(self) -> np.ndarray:
        """Index permutation p such that flipped[k] = mirrored(original[p[k]])."""
        perm = np.arange(self.num_landmarks)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def to_json(self) -> dict:
        return {
            "num_landmarks": self.num_landmarks,
            "names": list(self.names),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "interocular": list(self.interocular) if self.interocular else None,
        }


def layout_for(
    num_landmarks: int, flip_pairs: list[tuple[int, int]] | None = None
) -> Layout:
    """The layout for N landmarks: the 300-W layout for 68, else a generic one.

    Args:
        num_landmarks: N.
        flip_pairs: mirror pairs for a non-68 layout; None disables flipping there. For 68
            points the 300-W pairs are used unless pairs are given.
    """
    if num_landmarks == 68 and flip_pairs is None:
        return Layout(68, tuple(_NAMES_68), FLIP_PAIRS_68, (36, 45))
    pairs = tuple((int(a), int(b)) for a, b in (flip_pairs or ()))
    for a, b in pairs:
        if not (0 <= a < num_landmarks and 0 <= b < num_landmarks):
            raise ValueError(f"flip pair ({a}, {b}) is outside 0..{num_landmarks - 1}")
    names = tuple(f"p{i}" for i in range(num_landmarks))
    interocular = (36, 45) if num_landmarks == 68 else None
    if num_landmarks == 68:
        names = tuple(_NAMES_68)
    return Layout(num_landmarks, names, pairs, interocular)
