"""Reading labelled faces, checking them and cutting them into canvases.

Two on-disk formats are read:

- a folder of images with same-stem 300-W ``.pts`` files;
- a CSV whose first column is an image path (relative to the CSV) followed by
  ``x0,y0,...,xN-1,yN-1`` (a header row is optional).

Every sample is checked (image decodes fully, landmarks parse, are finite, have the dataset's
count and lie near the image). Bad samples are skipped with a one-line reason each, or are fatal
with ``strict=True``. Good samples are cut once into a square *canvas* around the face (twice the
crop side, so rotation and scale augmentation never run out of pixels) and kept in memory.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fas_tf.errors import DataError
from fas_tf.framing import crop_box, cut_square, upright_square

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# The canvas kept in memory is CANVAS_FACTOR times the framing-rule square (fas_tf.framing).
CANVAS_FACTOR = 2.0
# Points further than this fraction of the image size outside the image are rejected.
OUTSIDE_TOLERANCE = 0.25


@dataclass
class LabelledFaces:
    """Faces cut into canvases, with landmarks in canvas pixels.

    Attributes:
        canvases: (M, C, C, 3) uint8 RGB.
        landmarks: (M, N, 2) float32.
        paths: M source image paths.
        skipped: one ``"path: reason"`` line per skipped sample.
        excluded: the stems of ``exclude`` that matched an image and were left out.
    """

    canvases: np.ndarray
    landmarks: np.ndarray
    paths: list[str]
    skipped: list[str] = field(default_factory=list)
    excluded: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_landmarks(self) -> int:
        return int(self.landmarks.shape[1])

    def subset(self, indices) -> LabelledFaces:
        idx = np.asarray(indices, dtype=np.int64)
        return LabelledFaces(
            self.canvases[idx], self.landmarks[idx], [self.paths[i] for i in idx], self.skipped,
            self.excluded,
        )


# --------------------------------------------------------------------------- file formats


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """Read a 300-W ``.pts`` file into an (N, 2) float32 array; DataError when garbled."""
    path = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read landmarks ({err.__class__.__name__})") from err
    try:
        header = {}
        i = 0
        while i < len(lines) and lines[i] != "{":
            key, _, value = lines[i].partition(":")
            header[key.strip()] = value.strip()
            i += 1
        end = lines.index("}", i + 1)
        rows = [ln.split() for ln in lines[i + 1 : end]]
        pts = np.array([[float(r[0]), float(r[1])] for r in rows], dtype=np.float64)
        expected = int(header["n_points"])
    except (ValueError, KeyError, IndexError) as err:
        raise DataError(
            f"{path}: garbled .pts file (expected 300-W 'n_points' and {{ x y }})"
        ) from err
    if any(len(r) != 2 for r in rows):
        raise DataError(f"{path}: garbled .pts file (a point line does not have 2 numbers)")
    if len(pts) != expected:
        raise DataError(f"{path}: header says {expected} points but the file has {len(pts)}")
    if not len(pts):
        raise DataError(f"{path}: no points in the .pts file")
    return pts.astype(np.float32).reshape(-1, 2)


def write_pts(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write (N, 2) points as a 300-W ``.pts`` file."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    Path(path).write_text(f"version: 1\nn_points: {len(points)}\n{{\n{body}\n}}\n")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image fully into (H, W, 3) uint8 RGB.

    EXIF orientation is applied; grayscale, palette, RGBA (alpha dropped onto black) and 16-bit
    images are converted. DataError for a missing, unreadable or truncated file.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()  # raises on truncated data
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if arr.max() > 255 else 255.0
                arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (0, 0, 0, 255))
                im = Image.alpha_composite(background, im)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = "truncated" if "truncated" in str(err) else "unreadable or corrupt"
        raise DataError(f"{path}: cannot decode image ({reason})") from err


def list_folder(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """(image path, pts path) pairs of a folder, sorted; the pts path may not exist."""
    folder = Path(folder)
    pairs = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            pairs.append((str(p), str(p.with_suffix(".pts"))))
    return pairs


def list_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files of command-line arguments: folders are listed (sorted, non-images ignored);
    files named directly are kept even when missing or not images (reported per image)."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += [q for q in sorted(p.iterdir()) if q.suffix.lower() in IMAGE_EXTENSIONS]
        else:
            paths.append(p)  # a missing or bad file is reported per image
    return paths


def read_csv_labels(path: str | os.PathLike) -> list[tuple[str, np.ndarray | DataError]]:
    """Rows of a landmark CSV as (image path, (N, 2) points or the DataError of that row)."""
    path = Path(path)
    rows: list[tuple[str, np.ndarray | DataError]] = []
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip():
                continue
            image = str((path.parent / row[0].strip()).resolve())
            values = row[1:]
            try:
                coords = np.array([float(v) for v in values], dtype=np.float64)
            except ValueError as err:
                if line_no == 1:
                    continue  # header row
                rows.append((image, DataError(f"{path}:{line_no}: non-numeric coordinate")))
                del err
                continue
            if coords.size == 0 or coords.size % 2:
                rows.append(
                    (image, DataError(f"{path}:{line_no}: odd or empty coordinate list"))
                )
                continue
            rows.append((image, coords.reshape(-1, 2).astype(np.float32)))
    return rows


def check_points(path: str, points: np.ndarray, shape: tuple[int, ...], n: int | None) -> None:
    """Raise DataError (naming ``path``) for landmarks that are not finite, not ``n`` many
    (None: any count), far outside an image of ``shape``, or degenerate."""
    if not np.all(np.isfinite(points)):
        raise DataError(f"{path}: landmark coordinates contain NaN or inf")
    if n is not None and len(points) != n:
        raise DataError(f"{path}: {len(points)} landmarks, the dataset has {n}")
    h, w = shape[:2]
    tol = OUTSIDE_TOLERANCE * max(h, w)
    if (
        points[:, 0].min() < -tol
        or points[:, 1].min() < -tol
        or points[:, 0].max() > w - 1 + tol
        or points[:, 1].max() > h - 1 + tol
    ):
        raise DataError(f"{path}: landmarks lie far outside the {w}x{h} image")
    lo, hi = points.min(axis=0), points.max(axis=0)
    if max(hi - lo) < 2.0:
        raise DataError(f"{path}: landmarks are degenerate (all within 2 pixels)")


def _load_one(item, canvas_size: int, n: int | None, eyes: tuple[int, int] | None = None):
    image_path, label = item
    if isinstance(label, DataError):
        raise label
    if isinstance(label, str):
        if not os.path.isfile(label):
            raise DataError(f"{image_path}: no landmark file {Path(label).name}")
        label = read_pts(label)
    image = load_image(image_path)
    check_points(image_path, label, image.shape, n)
    cx, cy, side, angle = upright_square(label, eyes) if eyes else (*crop_box(label), 0.0)
    canvas, matrix = cut_square(image, cx, cy, side * CANVAS_FACTOR, canvas_size, angle)
    pts = label.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return canvas, pts.astype(np.float32)


def load_faces(
    path: str | os.PathLike,
    input_size: int = 128,
    strict: bool = False,
    limit: int | None = None,
    seed: int = 0,
    stems: set[str] | None = None,
    num_landmarks: int | None = None,
    workers: int = 4,
    upright: bool = False,
    exclude: Collection[str] = (),
) -> LabelledFaces:
    """Read, check and frame a labelled dataset (a folder of images + .pts, or a CSV).

    Args:
        path: folder or ``.csv`` file.
        input_size: network input side; canvases are ``CANVAS_FACTOR * input_size`` pixels.
        strict: raise on the first bad sample instead of skipping it.
        limit: keep a seeded random subset of this many good samples.
        seed: seed of that subset.
        stems: keep only images whose file stem is in this set (e.g. one collection batch).
        num_landmarks: required landmark count; by default the most common count in the data.
        workers: decoding threads.
        upright: cut each canvas turned so that the face's labelled outer eye corners are level
            (:func:`fas_tf.framing.upright_square`; 68-point layout only); its central square is
            then the framing rule in that frame.
        exclude: stems of images to leave out (:func:`read_exclusions`), before ``limit``.

    Raises:
        DataError: missing path, no usable sample, or (strict) any bad sample.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        items: list = list_folder(path)
    elif path.suffix.lower() == ".csv":
        try:
            items = read_csv_labels(path)
        except (OSError, ValueError, csv.Error) as err:  # ValueError: not UTF-8, a NUL byte
            raise DataError(f"{path}: cannot read CSV ({err})") from err
    else:
        raise DataError(f"{path}: expected a folder of images with .pts files or a .csv file")
    if stems is not None:
        items = [it for it in items if Path(it[0]).stem in stems]
    excluded = frozenset(Path(it[0]).stem for it in items) & frozenset(exclude)
    if excluded:
        items = [it for it in items if Path(it[0]).stem not in excluded]
    if not items:
        raise DataError(f"{path}: no images found")

    canvas_size = int(round(CANVAS_FACTOR * input_size))
    if num_landmarks is None:
        num_landmarks = _majority_count(items)
    eyes = None
    if upright:
        from fas_tf.landmarks import layout_for

        eyes = layout_for(num_landmarks).interocular if num_landmarks else None
        if eyes is None:
            raise DataError(f"{path}: upright crops need the eye corners of the 68-point layout "
                            f"(the data has {num_landmarks} landmarks)")

    def work(item):
        try:
            return _load_one(item, canvas_size, num_landmarks, eyes)
        except DataError as err:
            return err

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(work, items))
    skipped = [str(r) for r in results if isinstance(r, DataError)]
    if strict and skipped:
        raise DataError(skipped[0])
    good = [
        (r, it[0]) for r, it in zip(results, items, strict=True) if not isinstance(r, DataError)
    ]
    if not good:
        first = f" (e.g. {skipped[0]})" if skipped else ""
        raise DataError(f"{path}: no usable samples{first}")
    if limit is not None and limit < len(good):
        rng = np.random.default_rng(seed)
        keep = sorted(rng.choice(len(good), size=limit, replace=False))
        good = [good[i] for i in keep]
    canvases = np.stack([g[0][0] for g in good])
    landmarks = np.stack([g[0][1] for g in good])
    return LabelledFaces(canvases, landmarks, [g[1] for g in good], skipped, excluded)


def _majority_count(items) -> int | None:
    counts: dict[int, int] = {}
    for _, label in items[:200]:
        try:
            n = len(read_pts(label)) if isinstance(label, str) else len(label)
        except (DataError, TypeError):
            continue
        counts[n] = counts.get(n, 0) + 1
    return max(counts, key=counts.get) if counts else None


def skipped_summary(faces: LabelledFaces, total: int | None = None) -> str | None:
    """One summary line for skipped samples, or None when nothing was skipped."""
    if not faces.skipped:
        return None
    total = total or len(faces) + len(faces.skipped)
    shown = "; ".join(faces.skipped[:3]) + ("; ..." if len(faces.skipped) > 3 else "")
    return f"skipped {len(faces.skipped)} of {total}: {shown}"


def read_exclusions(path: str | os.PathLike) -> frozenset[str]:
    """The image stems listed in a text file (one per line; a file name's image extension is
    dropped; ``#`` starts a comment): faces to leave out, e.g. ones whose labels are wrong.

    Raises:
        DataError: the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM (Windows editors) dropped
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the exclusion list ({err})") from err
    stems = set()
    for line in text.splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            stems.add(Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name)
    return frozenset(stems)


def exclusion_summary(source: str | os.PathLike, exclude: Collection[str],
                      *faces: LabelledFaces) -> str:
    """One line: how many of the stems listed in ``source`` (``exclude``) matched an image of
    ``faces`` (:attr:`LabelledFaces.excluded`) and were left out, naming those that matched
    none (a typo, or a face of another dataset)."""
    matched = frozenset().union(*(f.excluded for f in faces))
    unmatched = sorted(set(exclude) - matched)
    line = f"data: left out {len(matched)} of the {len(exclude)} faces listed in {source}"
    if unmatched:
        shown = ", ".join(unmatched[:10]) + (f" and {len(unmatched) - 10} more"
                                             if len(unmatched) > 10 else "")
        line += f"; not in the data: {shown}"
    return line


def read_attributes(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``attributes.csv`` rows keyed by stem.

    Raises DataError (naming the file) when it is not UTF-8 text or has no ``stem`` column.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if "stem" not in columns:
                raise DataError(
                    f"{path}: the attributes CSV has no 'stem' column (its header: "
                    f"{', '.join(columns)[:200] or 'none, the file is empty'}); the first "
                    "line must name the columns, one of them 'stem' (image file name without "
                    "extension)"
                )
            return {row["stem"]: row for row in reader}
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: the attributes CSV is not UTF-8 text (byte {err.start}); "
                        "save it as UTF-8 CSV") from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from None


# --------------------------------------------------------------------------- dataset protocol


def parse_sets(value: str | Iterable[str] | None) -> list[str]:
    """Image-set names of a ``--sets``-style flag (``"ads,youtube2"``) or a list, in order."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return [s.strip() for s in items if s.strip()]


def stems_in_sets(attributes: Mapping[str, Mapping[str, str]], sets: Iterable[str]) -> set[str]:
    """The InfAnFace protocol: stems whose ``image_set`` column (attributes.csv) is in ``sets``.

    Training (``--train_sets``/``--val_sets``), evaluation and export (``--*sets``) and every
    benchmark select their faces with this.
    """
    wanted = set(parse_sets(sets))
    return {stem for stem, row in attributes.items() if row.get("image_set") in wanted}
