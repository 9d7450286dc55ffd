"""Calibrate the box -> landmark-box mapping of the web page's BlazeFace detector.

``python benchmarks/web_blazeface_calibration.py [--data=../shared/data/infanface-train]
[--output=/tmp/blazeface_calibration.json]`` (needs ``web/dist``: ``cd web && npm ci && npm run
build``, and Debian's chromium + chromium-driver)

Runs the page's own detector (``web/src/blazeface.js``, MediaPipe BlazeFace short-range with
LiteRT.js, in headless Chromium) on every labelled image with a low score threshold (0.1), and
matches its faces to the ground-truth landmark box exactly as
``benchmarks/export_mtcnn_calibration.py`` does for MTCNN: the medians of the matched detections
(at the page's score threshold) are ``BOX_TO_CROP["blazeface"]`` of
``fas_tf.detection.calibration``. Also prints the
detection rate per score threshold and per image set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from export_mtcnn_calibration import DATA, match, summarize

MIN_SCORE = 0.1  # keep weak detections, to report the rate per threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--output", default="/tmp/blazeface_calibration.json")
    parser.add_argument("--page_min_score", type=float, default=0.5,
                        help="the page's detector threshold: constants from matches above it")
    args = parser.parse_args()

    from export.web import DIST, Page, StaticServer, missing_tools
    from fas_tf.data import list_folder, read_attributes, read_pts

    if missing_tools() or not (DIST / "index.html").is_file():
        sys.exit(f"error: {missing_tools() or 'web/dist is not built (cd web && npm run build)'}")
    data = Path(args.data)
    attrs = read_attributes(data / "attributes.csv")
    rows = []
    with StaticServer(DIST, {"/photos/": data}) as server, Page(server.url) as page:
        for image_path, pts_path in list_folder(data):
            name = Path(image_path).name
            faces = page.call("detectUrl", "/photos/" + name, MIN_SCORE)
            boxes = [((f["x"], f["y"], f["w"], f["h"]), f["score"]) for f in faces]
            row = {"stem": Path(name).stem, "set": attrs[Path(name).stem]["image_set"],
                   **match(boxes, read_pts(pts_path))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    usable = [r for r in rows if r["matched"] and r["score"] >= args.page_min_score]
    summary = summarize(rows, (0.1, 0.3, 0.5, 0.7))
    summary["constants"] = summarize(usable)["constants"]
    summary["constants_from"] = f"{len(usable)} matches with score >= {args.page_min_score}"
    found = {}
    for r in rows:
        n_found, n = found.get(r["set"], (0, 0))
        found[r["set"]] = (n_found + (r["matched"] and r["score"] >= args.page_min_score), n + 1)
    summary["found_by_set"] = {s: f"{a}/{n}" for s, (a, n) in sorted(found.items())}
    Path(args.output).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
