"""A deterministic synthetic demo set: cartoon faces with exact 68-point 300-W landmarks.

It lets ``python -m fas_tf.train`` run end to end with no data. It is NOT a clinical dataset
and a model trained on it is not a clinical model.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from fas_tf.data import write_pts


def template_68() -> np.ndarray:
    """A frontal 68-point face in a unit frame (x right, y down, eyes near y = -0.2)."""
    pts = []
    for k in range(17):  # jaw, from the subject's right ear round the chin
        phi = math.pi - math.pi * k / 16
        pts.append((math.cos(phi), 1.2 * math.sin(phi)))
    for side in (-1, 1):  # brows: right (image left) then left
        for k in range(5):
            t = k / 4
            x = -0.8 + 0.65 * t if side < 0 else 0.15 + 0.65 * t
            pts.append((x, -0.45 - 0.1 * math.sin(math.pi * t)))
    for k in range(4):  # nose bridge
        pts.append((0.0, -0.3 + 0.55 * k / 3))
    for k in range(5):  # nose base
        x = -0.2 + 0.1 * k
        pts.append((x, 0.4 + 0.03 * (1 - abs(x) / 0.2)))
    ring = [(-1, 0), (-0.35, -1), (0.35, -1), (1, 0), (0.35, 1), (-0.35, 1)]
    for cx in (-0.45, 0.45):  # eyes, each from its image-left corner: 36-41 then 42-47
        pts += [(cx + 0.175 * u, -0.2 + 0.07 * v) for u, v in ring]
    for k in range(12):  # outer lip, from the right mouth corner over the top
        phi = math.pi + k * math.pi / 6
        pts.append((0.35 * math.cos(phi), 0.7 + 0.15 * math.sin(phi)))
    for k in range(8):  # inner lip
        phi = math.pi + k * math.pi / 4
        pts.append((0.25 * math.cos(phi), 0.7 + 0.05 * math.sin(phi)))
    return np.array(pts, dtype=np.float64)


def render_face(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One random cartoon face (RGB uint8) and its 68 landmarks in pixels."""
    shape = template_68() + rng.normal(0, 0.02, (68, 2))
    scale = rng.uniform(0.22, 0.32) * size
    angle = math.radians(rng.uniform(-30, 30))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    to_px = lambda p: (np.asarray(p) @ rot.T) * scale + centre  # noqa: E731

    y, x = np.mgrid[0:size, 0:size] / size
    bg = rng.uniform(40, 220, 3)
    grad = rng.uniform(-60, 60, 3)
    image = np.clip(bg + grad * (x[..., None] - 0.5) + rng.normal(0, 6, (size, size, 3)), 0, 255)
    image = np.ascontiguousarray(image.astype(np.uint8))

    skin = tuple(int(c) for c in rng.uniform([150, 110, 90], [240, 200, 180]))
    head = to_px(np.stack([np.cos(t := np.linspace(0, 2 * np.pi, 60)) * 1.05,
                           0.1 + np.sin(t) * 1.35], axis=1))  # fmt: skip
    cv2.fillPoly(image, [head.astype(np.int32)], skin, cv2.LINE_AA)
    pts = to_px(shape)
    dark = tuple(int(c) for c in rng.uniform(20, 90, 3))
    thick = max(1, int(scale * 0.04))
    for a, b in ((17, 22), (22, 27), (27, 31), (31, 36)):
        cv2.polylines(image, [pts[a:b].astype(np.int32)], False, dark, thick, cv2.LINE_AA)
    for a in (36, 42):
        cv2.fillPoly(image, [pts[a : a + 6].astype(np.int32)], (245, 245, 245), cv2.LINE_AA)
        centre_eye = pts[a : a + 6].mean(axis=0)
        cv2.circle(image, tuple(int(v) for v in centre_eye), max(1, int(scale * 0.05)), dark, -1)
        cv2.polylines(image, [pts[a : a + 6].astype(np.int32)], True, dark, 1, cv2.LINE_AA)
    lip = tuple(int(c) for c in rng.uniform([150, 40, 50], [220, 100, 110]))
    cv2.fillPoly(image, [pts[48:60].astype(np.int32)], lip, cv2.LINE_AA)
    cv2.fillPoly(image, [pts[60:68].astype(np.int32)], (60, 20, 30), cv2.LINE_AA)
    cv2.polylines(image, [pts[0:17].astype(np.int32)], False, dark, 1, cv2.LINE_AA)
    return image, pts.astype(np.float32)


def make_demo_set(folder: str | os.PathLike, count: int, seed: int = 0, size: int = 256) -> Path:
    """Write ``count`` synthetic faces (``demo_XXXX.jpg`` + ``.pts``) into ``folder``.

    Deterministic for a seed; existing complete sets are reused.
    """
    folder = Path(folder)
    marker = folder / f".complete_{count}_{seed}_{size}"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image, pts = render_face(rng, size)
        stem = folder / f"demo_{i:04d}"
        cv2.imwrite(str(stem) + ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        write_pts(str(stem) + ".pts", pts)
    marker.touch()
    return folder


def demo_dirs(root: str | os.PathLike) -> tuple[Path, Path]:
    """(train, validation) demo folders under ``root``, generated on first use."""
    root = Path(root)
    return (
        make_demo_set(root / "train", 96, seed=1),
        make_demo_set(root / "val", 24, seed=2),
    )
