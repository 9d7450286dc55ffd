"""BlazeFace (MediaPipe face detection) run with LiteRT, and the fetch of its ``.tflite`` file.

The models ship as package data in the ``mediapipe`` wheels up to 0.10.21 on PyPI. Those wheels
pin ``protobuf<5`` and ``numpy<2`` (TensorFlow 2.21 needs ``protobuf>=6.31``) and bring
``opencv-contrib-python`` (a second ``cv2``), so mediapipe is not a dependency: ``python -m
fas_tf.detection fetch`` has pip download that one wheel (``--no-deps``, nothing installed), takes
the ``.tflite`` members out, checks their sha256 and caches them in
``$XDG_CACHE_HOME/fas_tf/detectors``. Offline afterwards.

Decoding follows MediaPipe's face detection graphs: SSD anchors, sigmoid scores, weighted
non-maximum suppression; six keypoints (right eye, left eye, nose tip, mouth, right and left
tragion: "right" is the subject's right, on the image's left).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from fas_tf.cli import atomic_path, sha256_of
from fas_tf.errors import UsageError

WHEEL_REQUIREMENT = "mediapipe==0.10.21"
# any one platform's wheel: the .tflite members are the same in all of them
WHEEL_PLATFORM = ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                  "--implementation", "cp", "--abi", "cp311"]
FETCH_COMMAND = "python -m fas_tf.detection fetch"

# name -> member of the wheel, its sha256, input side, SSD anchor layout, score threshold
MODELS: dict[str, dict] = {
    "short": {
        "member": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "sha256": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        "size": 128, "strides": (8, 16, 16, 16), "min_score": 0.5,
    },
    "full": {
        "member": "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "sha256": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        "size": 192, "strides": (4,), "min_score": 0.6,
    },
}
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fas_tf/detectors`` (default ``~/.cache/fas_tf/detectors``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "fas_tf" / "detectors"


def model_path(variant: str = "short") -> Path:
    """Where the fetched ``.tflite`` of a BlazeFace variant lives."""
    return cache_dir() / Path(MODELS[variant]["member"]).name


def _extract(wheel: Path, member: str, dest: Path, sha256: str) -> None:
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as err:
        raise UsageError(f"{wheel}: not a readable wheel ({err})") from err
    with archive, atomic_path(dest, suffix=".part") as tmp:
        try:
            data = archive.read(member)
        except KeyError:
            raise UsageError(f"{wheel}: has no {member}") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise UsageError(f"{wheel}: {member} has sha256 {digest}, expected {sha256}; not saved")
        Path(tmp).write_bytes(data)


def fetch(wheel: str | os.PathLike | None = None, pip: list[str] | None = None,
          log=print) -> list[Path]:
    """Put every BlazeFace variant of :data:`MODELS` into :func:`cache_dir`.

    ``wheel``: a ``mediapipe-0.10.21-*.whl`` already downloaded (skips pip); ``pip``: the pip
    launcher (default ``[sys.executable, "-m", "pip"]``). Raises UsageError (one line).
    """
    missing = {v: m for v, m in MODELS.items()
               if not (model_path(v).is_file() and sha256_of(model_path(v)) == m["sha256"])}
    if not missing:
        log(f"blazeface: {cache_dir()} already holds the models (sha256 ok)")
        return [model_path(v) for v in MODELS]
    with tempfile.TemporaryDirectory(prefix="fas_tf-fetch-") as tmp:
        if wheel is None:
            cmd = [*(pip or [sys.executable, "-m", "pip"]), "download", "--no-deps",
                   "--only-binary", ":all:", *WHEEL_PLATFORM, WHEEL_REQUIREMENT, "-d", tmp]
            log(f"blazeface: downloading the {WHEEL_REQUIREMENT} wheel (~36 MB) with pip")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = sorted(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or len(wheels) != 1:
                lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
                why = lines[-1].strip() if lines else f"exit status {proc.returncode}"
                raise UsageError(
                    f"pip could not download {WHEEL_REQUIREMENT} ({why}); download the wheel "
                    f"elsewhere and run `{FETCH_COMMAND} --wheel=PATH`")
            wheel = wheels[0]
        for variant, m in missing.items():
            _extract(Path(wheel), m["member"], model_path(variant), m["sha256"])
            log(f"blazeface: wrote {model_path(variant)} (sha256 ok)")
    return [model_path(v) for v in MODELS]


def anchors(size: int, strides: tuple[int, ...]) -> np.ndarray:
    """SSD anchor centres (A, 2) in [0, 1] (MediaPipe: offset 0.5, fixed unit size; layers of
    equal stride share one grid, two anchors per layer)."""
    out = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = 2 * (j - i) if len(strides) > 1 else 1
        grid = int(np.ceil(size / strides[i]))
        ys, xs = np.mgrid[0:grid, 0:grid]
        centres = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
        i = j
    return np.concatenate(out).astype(np.float64)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray,
                 iou: float = NMS_IOU) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's weighted NMS: each cluster (IoU > ``iou`` with its best box) becomes the
    score-weighted mean of its boxes and keypoints, with the best score. Boxes (K, 4) x0y0x1y1."""
    order = list(np.argsort(-scores))
    kept = []
    while order:
        best = order[0]
        b = boxes[best]
        x0 = np.maximum(b[0], boxes[order, 0])
        y0 = np.maximum(b[1], boxes[order, 1])
        x1 = np.minimum(b[2], boxes[order, 2])
        y1 = np.minimum(b[3], boxes[order, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        area = (boxes[order, 2] - boxes[order, 0]) * (boxes[order, 3] - boxes[order, 1])
        ious = inter / np.maximum(area + (b[2] - b[0]) * (b[3] - b[1]) - inter, 1e-12)
        cluster = [o for o, v in zip(order, ious, strict=True) if v > iou]
        w = scores[cluster][:, None]
        kept.append((
            (boxes[cluster] * w).sum(0) / w.sum(),
            float(scores[best]),
            (points[cluster] * w[:, :, None]).sum(0) / w.sum(),
        ))
        order = [o for o in order if o not in cluster]
    return kept


class BlazeFace:
    """One BlazeFace variant on RGB uint8 images of any size (letterboxed to the input square).

    ``detect(image)`` -> ``[(box (bx, by, bw, bh), score, keypoints (6, 2))]`` in image pixels.
    """

    def __init__(self, variant: str = "short", path: str | os.PathLike | None = None,
                 min_score: float | None = None):
        from ai_edge_litert.interpreter import Interpreter

        spec = MODELS[variant]
        path = Path(path or model_path(variant))
        if not path.is_file():
            raise UsageError(f"{path}: BlazeFace model not found; run `{FETCH_COMMAND}` once")
        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.interpreter.allocate_tensors()
        self.size = spec["size"]
        self.min_score = spec["min_score"] if min_score is None else min_score
        self.anchors = anchors(self.size, spec["strides"])
        outputs = sorted(self.interpreter.get_output_details(), key=lambda d: -d["shape"][-1])
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._regressors, self._scores = (d["index"] for d in outputs)

    def detect(self, image: np.ndarray) -> list[tuple[tuple[float, ...], float, np.ndarray]]:
        h, w = image.shape[:2]
        side = max(h, w)
        # letterbox: the image centred in a black square, as MediaPipe's ImageToTensor does
        pad_x, pad_y = (side - w) / 2.0, (side - h) / 2.0
        s = self.size / side
        matrix = np.float64([[s, 0, pad_x * s], [0, s, pad_y * s]])
        square = cv2.warpAffine(image, matrix, (self.size, self.size),
                                flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        x = square.astype(np.float32)[None] / 127.5 - 1.0
        self.interpreter.set_tensor(self._input, x)
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self._regressors)[0].astype(np.float64)
        logits = self.interpreter.get_tensor(self._scores)[0, :, 0].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100, 100)))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, scores, anc = raw[keep] / self.size, scores[keep], self.anchors[keep]
        centre = raw[:, :2] + anc
        boxes = np.concatenate([centre - raw[:, 2:4] / 2, centre + raw[:, 2:4] / 2], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
        found = []
        for box, score, pts in weighted_nms(boxes, scores, points):
            # [0, 1] of the letterboxed square -> image pixels
            box = box * side - np.float64([pad_x, pad_y, pad_x, pad_y])
            pts = pts * side - np.float64([pad_x, pad_y])
            found.append(((box[0], box[1], box[2] - box[0], box[3] - box[1]), score, pts))
        return found
