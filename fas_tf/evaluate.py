"""Evaluate a landmark model (``student.keras`` or an exported ``.tflite``) on labelled faces.

``python -m fas_tf.evaluate --model=PATH --data=PATH [--attributes=CSV] [--sets=google2]
[--flip] [--output=metrics.json] [--plot=ced.png]``

Crops follow the training framing rule around the ground-truth landmarks, without jitter.
``--flip`` averages each prediction with the one on the mirrored crop (test-time flip).
``--refine=K`` adds K passes that re-cut the framing-rule square around the model's own last
landmarks (from the face's canvas, with context beyond the crop); ``--upright`` turns those
squares so the predicted eyes are level (one pass if ``--refine`` is 0). The default (no pass)
scores the ground-truth-framed crop alone, the number README quotes unless it says otherwise.
Prints one summary line (``NME 6.52% FR@0.10 3.0% AUC@0.10 0.41 n=51``) and writes JSON with
``nme``, ``fr_08``, ``fr_10``, ``auc_10``, ``n``, ``per_landmark``, ``subsets`` (fractions).
``--output`` / ``--plot`` never replace an input or a file that is not an earlier output of
this tool (:func:`fas_tf.cli.check_outputs`); they are checked before the model runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from fas_tf import cli
from fas_tf.augment import center_crop_offset
from fas_tf.data import (
    framed_crops,
    load_faces,
    parse_sets,
    read_attributes,
    read_exclusions,
    stems_in_sets,
)
from fas_tf.inference import KerasLandmarker, load_landmarker, recrop
from fas_tf.metrics import (
    NORMALIZATIONS,
    auc,
    ced_curve,
    default_normalization,
    failure_rate,
    point_errors,
)
from fas_tf.training.config import DECODER_CHOICES

METRICS_FORMAT = "fas_tf.evaluate.metrics"
PNG_SOFTWARE = "fas_tf.evaluate"
METRICS_OUTPUT = cli.json_output(METRICS_FORMAT, legacy_keys=("nme", "per_face", "model"))
PLOT_OUTPUT = cli.png_output(PNG_SOFTWARE)


def evaluate_predictions(
    pred: np.ndarray,
    gt: np.ndarray,
    normalization: str | None = None,
    groups: dict[str, list[int]] | None = None,
) -> dict:
    """Metrics dict for predicted vs ground-truth landmarks (same coordinates).

    ``normalization`` None: :func:`fas_tf.metrics.default_normalization` of the layout.
    """
    normalization = normalization or default_normalization(gt.shape[1])
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


def plot_ced(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    title: str | None = None,
    dashed: Collection[str] = (),
) -> None:
    """Cumulative error distribution up to NME 0.10, one curve per label, written atomically.

    Args:
        curves: label -> per-face NMEs (fractions).
        path: the PNG to write.
        title: plot title (None: none).
        dashed: labels drawn dashed (e.g. control configurations).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for label, nmes in curves.items():
        levels, frac = ced_curve(np.asarray(nmes), 0.10)
        ax.plot(levels * 100, frac * 100, "--" if label in dashed else "-", label=label)
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("faces (%)")
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 100)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7 if len(curves) > 1 else None)
    fig.tight_layout()
    cli.write_png(path, cli.figure_png(fig), PNG_SOFTWARE)
    plt.close(fig)


def evaluate_model(
    model_path: str | os.PathLike,
    data: str | os.PathLike,
    attributes: str | None = None,
    sets: list[str] | None = None,
    normalization: str | None = None,
    strict: bool = False,
    flip: bool = False,
    refine: int = 0,
    upright: bool = False,
    exclude: str | None = None,
    decoder: str | None = None,
) -> tuple[dict, list[str]]:
    """Evaluate a model file on a dataset; returns (metrics, skipped-sample lines).

    ``flip``: test-time flip (:class:`fas_tf.inference.FlipAveraged`). ``refine`` re-crop
    passes around the predicted landmarks, ``upright`` with the predicted eyes level
    (:func:`fas_tf.inference.recrop`; ``upright`` alone means one pass). ``exclude``: a
    text file of image stems to leave out (:func:`fas_tf.data.read_exclusions`). ``decoder``:
    a ``.keras`` student's heatmaps decoded by this method (``"taylor"``, ``"dark"``) instead
    of its own (:class:`fas_tf.inference.KerasLandmarker`).
    """
    landmarker = load_landmarker(model_path, flip=flip, decoder=decoder)
    attrs = read_attributes(attributes) if attributes else {}
    stems = None
    if sets:
        if not attrs:
            raise cli.UsageError("--sets needs --attributes with an image_set column")
        stems = stems_in_sets(attrs, sets)
    faces = load_faces(data, input_size=landmarker.input_size, strict=strict, stems=stems,
                       exclude=read_exclusions(exclude) if exclude else ())
    if landmarker.num_landmarks != faces.num_landmarks:
        raise cli.UsageError(
            f"{model_path}: the model predicts {landmarker.num_landmarks} landmarks, the data has "
            f"{faces.num_landmarks} ({data})"
        )
    crops, gt = framed_crops(faces, landmarker.input_size)
    pred, _ = landmarker.predict(crops)
    passes = max(refine, 1 if upright else 0)
    if passes:
        off = center_crop_offset(landmarker.input_size)
        pred, _ = recrop(list(faces.canvases), landmarker, pred + off, passes, upright)
        pred = pred - off
    groups = subset_groups(faces.paths, attrs) if attrs else {}
    metrics = evaluate_predictions(pred, gt, normalization, groups)
    metrics["format"] = METRICS_FORMAT
    metrics["model"] = str(model_path)
    metrics["flip"] = bool(flip)
    keras_model = getattr(landmarker, "base", landmarker)  # under FlipAveraged
    if isinstance(keras_model, KerasLandmarker):
        method, sigma = keras_model.decoding
        metrics["decoder"] = {"method": method, "sigma": sigma}
    metrics["refine"], metrics["upright"] = passes, bool(upright)
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
    cli.check_outputs([(f.output, METRICS_OUTPUT), (f.plot, PLOT_OUTPUT)],
                      inputs=[f.model, f.data, f.attributes, f.exclude])
    sets = parse_sets(f.sets)
    metrics, skipped = evaluate_model(
        f.model, f.data, f.attributes, sets, f.normalization, f.strict, f.flip,
        f.refine, f.upright, f.exclude, f.decoder,
    )
    if skipped:
        print(f"skipped {len(skipped)} of {len(skipped) + metrics['n']}: {skipped[0]}",
              file=sys.stderr)
    print(summary_line(metrics))
    if f.output:
        cli.write_json(f.output, metrics)
    if f.plot:
        plot_ced({Path(f.model).name: metrics["per_face"]}, f.plot)


def define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("model", None, "student.keras or model.tflite")
    flags.DEFINE_string("data", None, "folder of images + .pts, or a landmark CSV")
    flags.DEFINE_string("attributes", None, "CSV with stem, image_set/subset and flag columns")
    flags.DEFINE_string("sets", None, "comma list of image_set values to evaluate on")
    flags.DEFINE_string("exclude", None, "text file of image stems to leave out, one per line")
    flags.DEFINE_enum("normalization", None, list(NORMALIZATIONS), "NME normalization")
    flags.DEFINE_string("output", None, "write metrics JSON here (not over a file that is not "
                        "an earlier metrics JSON)")
    flags.DEFINE_string("plot", None, "write a CED plot PNG here (not over a file that is not "
                        "an earlier plot of this tool)")
    flags.DEFINE_bool("strict", False, "any bad sample is fatal")
    flags.DEFINE_bool("flip", False, "test-time flip: average with the mirrored crop's prediction")
    flags.DEFINE_enum("decoder", None, list(DECODER_CHOICES), "decode a .keras student's "
                      "heatmaps this way (dark: with its training sigma) instead of its own")
    flags.DEFINE_integer(
        "refine", 0, "re-crop passes around the predicted landmarks", lower_bound=0
    )
    flags.DEFINE_bool("upright", False, "re-crop passes level the predicted eyes (>= 1 pass)")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
    sys.exit(0)
