"""Evaluate a landmark model (``student.keras`` or an exported ``.tflite``) on labelled faces.

``python -m fas_tf.evaluate --model=PATH --data=PATH [--attributes=CSV] [--sets=google2]
[--output=metrics.json] [--plot=ced.png]``

Crops follow the training framing rule around the ground-truth landmarks, without jitter.
Prints one summary line (``NME 6.52% FR@0.10 3.0% AUC@0.10 0.41 n=51``) and writes JSON with
``nme``, ``fr_08``, ``fr_10``, ``auc_10``, ``n``, ``per_landmark``, ``subsets`` (fractions).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fas_tf import cli
from fas_tf.data import LabelledFaces, load_faces, read_attributes
from fas_tf.metrics import NORMALIZATIONS, auc, ced_curve, failure_rate, point_errors

Predictor = Callable[[np.ndarray], np.ndarray]


class KerasPredictor:
    """Crops (B, S, S, 3) in [0, 255] -> landmarks (B, N, 2) with a Keras student."""

    def __init__(self, path: str | os.PathLike):
        import keras

        import fas_tf.heatmaps  # noqa: F401  (registers HeatmapDecoder for deserialization)
        from fas_tf.student import inference_model, student_geometry

        try:
            self.student = keras.models.load_model(path, compile=False)
        except Exception as err:  # Keras raises many types (ValueError, BadZipFile, ...)
            raise cli.UsageError(unreadable_keras(path, err)) from err
        self.input_size, self.stride, self.num_landmarks = student_geometry(self.student)
        self.model = inference_model(self.student)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(images, verbose=0, batch_size=32)["landmarks"])


def unreadable_keras(path: str | os.PathLike, err: Exception) -> str:
    """The one-line message for a ``.keras`` file that exists but cannot be loaded."""
    import zipfile

    if not zipfile.is_zipfile(path):  # Keras then says "File not found", which misleads
        reason = "not a zip archive"
    else:
        text = str(err).strip()
        reason = err.__class__.__name__ + (f": {text.splitlines()[0][:160]}" if text else "")
    return f"{path}: not a readable Keras model ({reason})"


def load_predictor(path: str | os.PathLike) -> KerasPredictor:
    """A predictor for a ``.keras`` student or a ``.tflite`` export (needs the export package)."""
    path = str(path)
    if not os.path.isfile(path):
        raise cli.UsageError(f"{path}: no such model file")
    try:
        if path.endswith(".tflite"):
            from export.tflite_runner import TFLiteLandmarker

            runner = TFLiteLandmarker(path)
            return _TFLiteAdapter(runner)
        return KerasPredictor(path)
    except cli.UsageError:
        raise
    except (ValueError, OSError) as err:
        reason = f"{err.__class__.__name__}: {err}"
        raise cli.UsageError(f"{path}: cannot load model ({reason})") from err


class _TFLiteAdapter:
    def __init__(self, runner):
        self.runner = runner
        self.input_size = runner.input_size
        self.num_landmarks = runner.num_landmarks

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.runner.predict(images)[0])


def framed_crops(faces: LabelledFaces, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Framing-rule crops (float32 [0, 255]) and landmarks in crop pixels, no jitter."""
    from fas_tf.augment import center_crop_sample

    crops, points = [], []
    for canvas, pts in zip(faces.canvases, faces.landmarks):
        image, p = center_crop_sample(canvas, pts, input_size)
        crops.append(np.asarray(image))
        points.append(np.asarray(p))
    return np.stack(crops).astype(np.float32), np.stack(points).astype(np.float32)


def evaluate_predictions(
    pred: np.ndarray,
    gt: np.ndarray,
    normalization: str = "interocular",
    groups: dict[str, list[int]] | None = None,
) -> dict:
    """Metrics dict for predicted vs ground-truth landmarks (same coordinates)."""
    errors = np.asarray(point_errors(pred, gt, normalization))  # (M, N)
    nmes = errors.mean(axis=1)

    def summary(idx) -> dict:
        v = nmes[idx]
        return {
            "nme": float(v.mean()),
            "fr_08": failure_rate(v, 0.08),
            "fr_10": failure_rate(v, 0.10),
            "auc_10": auc(v, 0.10),
            "n": int(len(v)),
        }

    result = summary(np.arange(len(nmes)))
    result["normalization"] = normalization
    result["per_landmark"] = [float(e) for e in errors.mean(axis=0)]
    if len(gt[0]) == 68:
        result["other_normalizations"] = {
            m: float(np.asarray(point_errors(pred, gt, m)).mean())
            for m in NORMALIZATIONS
            if m != normalization
        }
    result["per_face"] = [float(v) for v in nmes]
    result["subsets"] = {k: summary(np.asarray(v)) for k, v in (groups or {}).items() if v}
    return result


def subset_groups(paths: list[str], attributes: dict[str, dict[str, str]]) -> dict[str, list[int]]:
    """Indices per subset: by ``subset`` (or ``image_set``) value, and per binary flag column."""
    rows = [attributes.get(Path(p).stem, {}) for p in paths]
    groups: dict[str, list[int]] = {}
    columns = set().union(*(r.keys() for r in rows)) - {"stem"}
    for col in ("subset", "image_set"):
        if col in columns and len({r.get(col) for r in rows}) > 1:
            for i, r in enumerate(rows):
                groups.setdefault(f"{col}={r.get(col)}", []).append(i)
    for col in sorted(columns - {"subset", "image_set"}):
        values = {r.get(col) for r in rows}
        if values <= {"0", "1", "0.0", "1.0", None, ""}:
            groups[col] = [i for i, r in enumerate(rows) if r.get(col) in ("1", "1.0")]
    return groups


def summary_line(metrics: dict) -> str:
    return (
        f"NME {metrics['nme'] * 100:.2f}% FR@0.10 {metrics['fr_10'] * 100:.1f}% "
        f"AUC@0.10 {metrics['auc_10']:.2f} n={metrics['n']}"
    )


def plot_ced(nmes: list[float], path: str | os.PathLike, label: str = "model") -> None:
    """Cumulative error distribution up to NME 0.10, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels, frac = ced_curve(np.asarray(nmes), 0.10)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(levels * 100, frac * 100, label=label)
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("faces (%)")
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    with cli.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def evaluate_model(
    model_path: str | os.PathLike,
    data: str | os.PathLike,
    attributes: str | None = None,
    sets: list[str] | None = None,
    normalization: str | None = None,
    strict: bool = False,
) -> tuple[dict, list[str]]:
    """Evaluate a model file on a dataset; returns (metrics, skipped-sample lines)."""
    predictor = load_predictor(model_path)
    attrs = read_attributes(attributes) if attributes else {}
    stems = None
    if sets:
        if not attrs:
            raise cli.UsageError("--sets needs --attributes with an image_set column")
        stems = {s for s, r in attrs.items() if r.get("image_set") in set(sets)}
    faces = load_faces(data, input_size=predictor.input_size, strict=strict, stems=stems)
    model_points = getattr(predictor, "num_landmarks", None)
    if model_points is not None and model_points != faces.num_landmarks:
        raise cli.UsageError(
            f"{model_path}: the model predicts {model_points} landmarks, the data has "
            f"{faces.num_landmarks} ({data})"
        )
    crops, gt = framed_crops(faces, predictor.input_size)
    pred = predictor(crops)
    norm = normalization or ("interocular" if gt.shape[1] == 68 else "diagonal")
    groups = subset_groups(faces.paths, attrs) if attrs else {}
    metrics = evaluate_predictions(pred, gt, norm, groups)
    metrics["model"] = str(model_path)
    metrics["data"] = str(data)
    metrics["images"] = [Path(p).stem for p in faces.paths]
    return metrics, faces.skipped


def main(argv: list[str]) -> None:
    from absl import flags

    f = flags.FLAGS
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not f.model or not f.data:
        raise cli.UsageError("--model and --data are required")
    sets = [s for s in (f.sets or "").split(",") if s]
    metrics, skipped = evaluate_model(
        f.model, f.data, f.attributes, sets, f.normalization, f.strict
    )
    if skipped:
        print(f"skipped {len(skipped)} of {len(skipped) + metrics['n']}: {skipped[0]}",
              file=sys.stderr)
    print(summary_line(metrics))
    if f.output:
        cli.write_json(f.output, metrics)
    if f.plot:
        plot_ced(metrics["per_face"], f.plot, label=Path(f.model).name)


def define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("model", None, "student.keras or model.tflite")
    flags.DEFINE_string("data", None, "folder of images + .pts, or a landmark CSV")
    flags.DEFINE_string("attributes", None, "CSV with stem, image_set/subset and flag columns")
    flags.DEFINE_string("sets", None, "comma list of image_set values to evaluate on")
    flags.DEFINE_enum("normalization", None, list(NORMALIZATIONS), "NME normalization")
    flags.DEFINE_string("output", None, "write metrics JSON here")
    flags.DEFINE_string("plot", None, "write a CED plot PNG here")
    flags.DEFINE_bool("strict", False, "any bad sample is fatal")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
    sys.exit(0)
