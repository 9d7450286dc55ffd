"""A synthetic batch for ``fas_tf.measure``'s HTML report, and its screenshot in headless Chromium.

Cartoon faces from :mod:`fas_tf.demo` (no photo of a real infant), some with their landmark
files edited so that every kind of refusal appears: eyes closed (upper lids moved onto the lower
ones), mouth wide open (lower inner lip moved down), brows raised, a head turned (the landmarks
replaced by a turned view of ``fas_tf.measurement.pose.HEAD_MODEL``), a low-resolution face, and a
corrupt image file. The edited landmarks no longer match the drawing; the batch only shows what
the report looks like. A measurement aid, not a diagnosis.

    python benchmarks/measure_report_demo.py --work=/tmp/measure_demo \
        --screenshot=docs/measure_report.png
    python benchmarks/measure_report_demo.py --work=/tmp/clinical_demo --sigma_floor=0.015 \
        --screenshot=docs/clinical_report.png
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from fas_tf import measure
from fas_tf import measurements as M
from fas_tf.data import read_pts, write_pts
from fas_tf.demo import make_demo_set
from fas_tf.measurement import pose as P


def turned_view(pts: np.ndarray, yaw: float) -> np.ndarray:
    """HEAD_MODEL turned by ``yaw`` degrees, placed over the face's eyes (orthographic)."""
    y = math.radians(yaw)
    rot = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    head = (rot @ P.HEAD_MODEL.T).T[:, :2]
    iod = float(np.hypot(*(pts[45] - pts[36])))
    return head * iod + (pts[36] + pts[45]) / 2 - (head[36] + head[45]) / 2 * iod


def build_batch(folder: Path) -> Path:
    """Demo faces (some edited) in ``folder/photos``; returns that folder."""
    photos = folder / "photos"
    make_demo_set(photos, 10, seed=3, size=320)
    edits = {
        "demo_0001": "eyes closed", "demo_0002": "mouth open", "demo_0003": "brows raised",
        "demo_0004": "turned", "demo_0005": "both eyes closed",
    }  # fmt: skip
    for stem, what in edits.items():
        p = read_pts(photos / f"{stem}.pts").astype(np.float64)
        iod = float(np.hypot(*(p[45] - p[36])))
        if "eyes closed" in what:
            p[[37, 38]] = p[[41, 40]]
            if what.startswith("both"):
                p[[43, 44]] = p[[47, 46]]
        elif what == "mouth open":
            p[65:68, 1] += 0.45 * iod
            p[56:59, 1] += 0.45 * iod
            p[7:10, 1] += 0.3 * iod
        elif what == "brows raised":
            p[17:27, 1] -= 0.25 * iod
        elif what == "turned":
            p = turned_view(p, 40.0)
        write_pts(photos / f"{stem}.pts", p)
    (photos / "scan_0099.jpg").write_bytes(b"not an image")
    return photos


def screenshot(html: Path, png: Path, width: int = 1366, height: int = 900) -> None:
    """Headless Chromium screenshot of ``html`` (Debian package ``chromium``)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("chromium not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={profile}",
                        "--hide-scrollbars", f"--window-size={width},{height}",
                        f"--screenshot={png.resolve()}", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
    from PIL import Image

    with Image.open(png) as im:  # a small file for the docs: 256-colour palette
        im.convert("RGB").quantize(256).save(png, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="scratch folder (batch and report)")
    ap.add_argument("--screenshot", help="PNG to write (e.g. docs/measure_report.png)")
    ap.add_argument("--sigma_floor", type=float, default=M.Thresholds().sigma_floor,
                    help="landmark noise floor in IODs (e.g. 0.015: some values turn amber, "
                    "too imprecise to tell the infant from a typical one)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    photos = build_batch(work)
    failures = measure.run([str(photos)], work / "report", use_landmarks=True,
                           thresholds=M.Thresholds(sigma_floor=args.sigma_floor))
    print(f"{work / 'report' / 'report.html'} ({failures} failed item(s))")
    if args.screenshot:
        screenshot(work / "report" / "report.html", Path(args.screenshot))
        print(f"wrote {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
