"""The web page (``web/``) vs Python on the same model: landmarks, NME, faces found, latency.

``python benchmarks/web_parity.py MODEL.tflite [MODEL2.tflite ...]
[--data=../shared/data/infanface-train] [--sets=google2] [--mtcnn] [--noflip] [--runs=200]``
(needs ``web/dist`` built and Debian's chromium + chromium-driver; each model's ``model.json``
beside it)

Per model, on the faces of ``--sets``:

- crops: the page's decoded photos and crops vs ``fas_tf.data.load_image`` and
  ``fas_tf.framing.cut_square``, value for value (per photo: the framing-rule square, the
  upright square and four random squares, three turned by any angle, partly off the photo);
- same square: the page's landmarks vs :mod:`fas_tf.inference` on the framing-rule square of
  the ground truth (turned by 0 / 0.35 / -0.2 / 0.6 rad in turn), input-crop pixels;
- end to end: the page's own loop (BlazeFace in the page, first pass, upright pass) on the
  photos, NME (percent) and faces found, next to ``fas_tf.evaluate``'s GT-framed NME (one pass,
  and ``--upright``); ``--mtcnn`` adds MTCNN's face count (``fas_tf.predict``'s detector);
  the page and ``evaluate`` use test-time flip as the page does by default (``--noflip``: off);
- latency: the page's landmark model (LiteRT.js, WASM, one thread; one ``predict`` call with
  its tensor copies) and the Python LiteRT interpreter (one thread, ``invoke`` only), medians of
  ``--runs`` in interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from end_to_end import DATA

ANGLES = (0.0, 0.35, -0.2, 0.6)


def latency(page, model: str, runs: int, rounds: int = 10) -> dict:
    """Median ms of the page's and Python's landmark model, interleaved rounds."""
    from export.benchmark import _Timed

    python = _Timed(model, threads=1)
    python.run(20, record=False)
    page.call("benchmark", 1, 20)
    page_ms = []
    for _ in range(rounds):
        page_ms += page.call("benchmark", runs // rounds, 0)
        python.run(runs // rounds)
    return {"page_wasm_ms": float(np.median(page_ms)), "python_litert_ms":
            float(np.median(python.times)), "runs": len(page_ms)}


def mtcnn_count(paths: list[Path]) -> int:
    from fas_tf.data import load_image
    from fas_tf.predict import detect_faces

    return sum(bool(detect_faces(load_image(p))) for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--sets", default="google2")
    parser.add_argument("--mtcnn", action="store_true")
    parser.add_argument("--noflip", action="store_true", help="the page without test-time flip")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    from export.web import (
        DIST,
        Page,
        StaticServer,
        crop_differences,
        crop_squares,
        end_to_end,
        missing_tools,
        same_crop_parity,
    )
    from fas_tf.data import list_folder, load_image, read_attributes, read_pts, stems_in_sets
    from fas_tf.evaluate import evaluate_model
    from fas_tf.framing import crop_box
    from fas_tf.inference import exported_with_flip

    if missing_tools() or not (DIST / "index.html").is_file():
        sys.exit(f"error: {missing_tools() or 'web/dist is not built (cd web && npm run build)'}")
    data = Path(args.data)
    attributes = data / "attributes.csv"
    stems = stems_in_sets(read_attributes(attributes), args.sets.split(","))
    faces = [(Path(i), read_pts(p)) for i, p in list_folder(data) if Path(i).stem in stems]
    photos = [("/photos/" + path.name, path) for path, _ in faces]
    squares = [(*crop_box(pts), ANGLES[i % len(ANGLES)]) for i, (_, pts) in enumerate(faces)]
    gt = np.stack([pts for _, pts in faces])
    many = crop_squares(gt, [load_image(p).shape[:2] for p, _ in faces], np.random.default_rng(0))
    rows = []
    for model in args.models:
        model = Path(model).resolve()
        mounts = {"/photos/": data, "/model/": model.parent}
        with StaticServer(DIST, mounts) as server, \
                Page(f"{server.url}?model=/model/{model.with_suffix('.json').name}") as page:
            start = time.perf_counter()
            cut = crop_differences(page, photos, many, int(page.call("inputSize")))
            crops = same_crop_parity(page, model, photos, squares, flip=not args.noflip)
            e2e = end_to_end(page, photos, gt, flip=not args.noflip)
            seconds = time.perf_counter() - start
            speed = latency(page, str(model), args.runs)
        flip = not args.noflip and not exported_with_flip(model)  # not twice
        plain, _ = evaluate_model(model, data, str(attributes), args.sets.split(","), flip=flip)
        upright, _ = evaluate_model(model, data, str(attributes), args.sets.split(","),
                                    upright=True, flip=flip)
        row = {"model": str(model), "n": len(faces), "flip": e2e["flip"], "crops": cut,
               "same_square": crops,
               "page_nme_percent": e2e["nme_percent"], "page_found": e2e["found"],
               "evaluate_nme_percent": 100 * plain["nme"],
               "evaluate_upright_nme_percent": 100 * upright["nme"],
               "page_seconds_for_both_checks": seconds, **speed}
        if args.mtcnn:
            row["mtcnn_found"] = mtcnn_count([p for p, _ in faces])
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    print(f"\n{'model':<40} {'crop values differing':>22} {'same-square max/mean px':>24} "
          f"{'page NME':>9} {'eval NME':>9} "
          f"{'eval upright':>12} {'found':>6} {'page ms':>8} {'python ms':>9}")
    for r in rows:
        s = r["same_square"]
        c = r["crops"]
        print(f"{r['model'][-40:]:<40} {c['crop_differing']:>10}/{c['crop_values']:<11} "
              f"{s['max_px']:>11.3f} / {s['mean_px']:<10.4f} "
              f"{r['page_nme_percent']:>8.2f}% {r['evaluate_nme_percent']:>8.2f}% "
              f"{r['evaluate_upright_nme_percent']:>11.2f}% {r['page_found']:>3}/{r['n']:<2} "
              f"{r['page_wasm_ms']:>8.2f} {r['python_litert_ms']:>9.2f}")


if __name__ == "__main__":
    main()
