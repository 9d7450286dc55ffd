"""The offline screening page (``web/``) served on the loopback and driven in headless Chromium.

Used by ``tests/test_web.py`` and the ``benchmarks/web_*.py`` scripts to compare the page with
Python on the same photos:

- :func:`missing_tools`: why the page cannot be driven here (Chromium, its WebDriver, Node/npm);
- :func:`build_page`: ``npm ci`` (when ``web/node_modules`` is absent) and ``npm run build``;
- :class:`StaticServer`: a loopback static file server of the build folder, with extra folders
  mounted under URL prefixes (models, photos), recording every path it was asked for;
- :class:`Page`: Debian's ``chromium`` through Selenium and ``chromedriver``, with the page's
  ``window.fasTf`` hooks called from Python and the page's network requests listed.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path

WEB = Path(__file__).resolve().parents[1] / "web"
DIST = WEB / "dist"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def _which(names) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def missing_tools() -> str | None:
    """One line naming what is missing to build and drive the page, or None."""
    missing = [what for what, found in (
        ("chromium", _which(CHROMIUM)), ("chromedriver", _which([DRIVER])),
        ("node", _which(["node"])), ("npm", _which(["npm"])),
    ) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        return ("web page tests need " + ", ".join(missing)
                + " (apt-get install chromium chromium-driver nodejs npm)")
    return None


def build_page(web: Path = WEB) -> Path:
    """``npm ci`` when ``node_modules`` is absent, then ``npm run build``; returns ``dist``.

    Raises RuntimeError with npm's last output line when a step fails.
    """
    steps = ([["npm", "ci", "--no-audit", "--no-fund"]] if not (web / "node_modules").is_dir()
             else []) + [["npm", "run", "build"]]
    for step in steps:
        done = subprocess.run(step, cwd=web, capture_output=True, text=True)
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
            raise RuntimeError(f"{' '.join(step)} in {web} failed: {lines[-1]}")
    return web / "dist"


class _Handler(http.server.SimpleHTTPRequestHandler):
    mounts: dict[str, Path] = {}
    seen: list[str] = []

    def translate_path(self, path: str) -> str:
        url_path = urllib.parse.urlsplit(path).path
        self.seen.append(url_path)
        for prefix, folder in self.mounts.items():
            if url_path.startswith(prefix):
                rest = urllib.parse.unquote(url_path[len(prefix):])
                target = (folder / rest).resolve()
                if folder.resolve() in target.parents or target == folder.resolve():
                    return str(target)
                return str(folder / "__outside__")
        return super().translate_path(path)

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):  # quiet
        pass


class StaticServer:
    """Serve ``root`` on 127.0.0.1 (a free port); ``mounts`` map URL prefixes to folders.

    ``seen``: every URL path requested so far. Use as a context manager, or :meth:`stop`.
    """

    def __init__(self, root: Path, mounts: dict[str, Path] | None = None):
        handler = type("Handler", (_Handler,), {"mounts": dict(mounts or {}), "seen": []})
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
        self.seen = handler.seen
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> StaticServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class PageError(RuntimeError):
    """The page's JavaScript raised (its message)."""


class Page:
    """Headless Chromium on ``url`` (Selenium + chromedriver); :meth:`call` runs ``fasTf`` hooks."""

    def __init__(self, url: str, timeout: float = 120.0, size: tuple[int, int] = (1200, 1400)):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = _which(CHROMIUM)
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    f"--window-size={size[0]},{size[1]}", "--disable-gpu",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(_which([DRIVER])))
        self.driver.set_script_timeout(timeout)
        self.requests: list[str] = []
        self.driver.get(url)
        self.call("ready")

    def call(self, hook: str, *args):
        """``await window.fasTf[hook](...args)`` (``hook="ready"``: the page's start); JSON."""
        script = """
            const [hook, args] = [arguments[0], arguments[1]];
            const done = arguments[arguments.length - 1];
            const wait = () => window.fasTf ? Promise.resolve() :
                new Promise((ok) => setTimeout(() => wait().then(ok), 50));
            wait().then(() => hook === 'ready' ? window.fasTf.ready : window.fasTf[hook](...args))
              .then((value) => done(JSON.stringify({value: value === undefined ? null : value})),
                    (err) => done(JSON.stringify({error: String(err && err.stack || err)})));
        """
        out = json.loads(self.driver.execute_async_script(script, hook, list(args)))
        if "error" in out:
            raise PageError(out["error"].splitlines()[0] if out["error"] else "error")
        return out["value"]

    def wait_for(self, condition: str) -> None:
        """Wait (up to the script timeout) until the JavaScript expression ``condition`` holds."""
        self.driver.execute_async_script("""
            const [test, done] = [new Function('return ' + arguments[0]), arguments[1]];
            const wait = () => test() ? done(true) : setTimeout(wait, 100);
            wait();""", condition)

    def network_requests(self) -> list[str]:
        """URLs of every request the page made so far (from Chromium's performance log)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
        return list(self.requests)

    def text(self, element_id: str) -> str:
        return self.driver.find_element("id", element_id).text

    def screenshot(self, path: str | os.PathLike) -> None:
        self.driver.save_screenshot(str(path))

    def reload(self) -> None:
        self.driver.refresh()
        self.call("ready")

    def close(self) -> None:
        self.driver.quit()

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- page vs Python


def square_dict(square) -> dict:
    """A crop square (cx, cy, side, angle) as the page takes it."""
    cx, cy, side, angle = (float(v) for v in square)
    return {"cx": cx, "cy": cy, "side": side, "angle": angle}


def _page_bytes(text: str, shape):
    """Bytes the page sent as base64, as a uint8 array of ``shape``."""
    import base64

    import numpy as np

    return np.frombuffer(base64.b64decode(text), np.uint8).reshape(shape)


def crop_squares(landmark_sets, image_shapes, rng) -> list[list[tuple]]:
    """Squares (cx, cy, side, angle) to compare crops on, per face: the framing-rule square of
    its landmarks, their upright (eyes-level) square, and four random squares (centre anywhere
    in the photo, side 0.2-2x the photo's shorter side, three turned by any angle)."""
    import numpy as np

    from fas_tf.framing import crop_box, upright_square

    out = []
    for pts, (h, w) in zip(landmark_sets, image_shapes, strict=True):
        sqs = [(*crop_box(pts), 0.0), upright_square(pts, (36, 45))]
        for k in range(4):
            sqs.append((rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.2, 2.0) * min(h, w),
                        rng.uniform(-np.pi, np.pi) if k else 0.0))
        out.append(sqs)
    return out


def crop_differences(page: Page, photos: list[tuple[str, Path]], squares, size: int) -> dict:
    """The page's decoded photos and crops vs Python's, value for value.

    ``photos``: (page URL, file) pairs; ``squares``: per photo, a list of (cx, cy, side, angle).
    Python decodes with :func:`fas_tf.data.load_image` and cuts with
    :func:`fas_tf.framing.cut_square` at ``size``. Returns the number of photos, crops and crop
    values, and how many decoded pixel values and crop values differ (``*_differing``) with the
    largest difference.
    """
    import numpy as np

    from fas_tf.data import load_image
    from fas_tf.framing import cut_square

    out = {"photos": 0, "decoded_values": 0, "decoded_differing": 0, "crops": 0,
           "crop_values": 0, "crop_differing": 0, "max_crop_diff": 0}
    for (url, path), sqs in zip(photos, squares, strict=True):
        image = load_image(path)
        seen = page.call("pixelsUrl", url)
        decoded = _page_bytes(seen["rgb"], (seen["height"], seen["width"], 3))
        out["photos"] += 1
        out["decoded_values"] += image.size
        out["decoded_differing"] += int(np.sum(decoded != image)) if decoded.shape == image.shape \
            else image.size
        for text, sq in zip(page.call("cropsUrl", url, [square_dict(q) for q in sqs], size), sqs,
                            strict=True):
            ours = _page_bytes(text, (size, size, 3))
            theirs, _ = cut_square(image, *sq[:3], size, sq[3])
            out["crops"] += 1
            out["crop_values"] += theirs.size
            out["crop_differing"] += int(np.sum(ours != theirs))
            out["max_crop_diff"] = max(out["max_crop_diff"],
                                       int(np.abs(ours.astype(int) - theirs).max()))
    return out


def same_crop_parity(page: Page, model_path, photos: list[tuple[str, Path]], squares,
                     flip: bool = False) -> dict:
    """The page's landmark model vs :mod:`fas_tf.inference` on the same squares of the photos.

    ``photos``: (page URL, file) pairs; ``squares``: (cx, cy, side, angle) per photo. Python cuts
    with :func:`fas_tf.framing.cut_square` and runs :class:`fas_tf.inference.LiteRTLandmarker`
    (``flip``: the page's test-time flip is switched on, and Python's answer is
    :class:`fas_tf.inference.FlipAveraged`'s; a model exported with ``--flip`` flips itself).
    Returns the largest and mean landmark distance (input-crop pixels) and the share within
    0.5 px, the largest crop pixel difference, and ``runtime_max_px``: Python on the page's own
    crops (the runtimes alone).
    """
    import numpy as np

    from fas_tf.data import load_image
    from fas_tf.framing import cut_square
    from fas_tf.inference import FlipAveraged, LiteRTLandmarker, exported_with_flip

    page.call("setFlip", flip)
    model = LiteRTLandmarker(model_path)
    size = model.input_size
    if flip and not exported_with_flip(model_path):
        model = FlipAveraged(model)
    shifts, runtime, pixels = [], [], []
    for (url, path), square in zip(photos, squares, strict=True):
        answer = page.call("inSquareUrl", url, square_dict(square))
        page_pts = np.asarray(answer["cropPoints"], np.float64)
        crop, _ = cut_square(load_image(path), *square[:3], size, square[3])
        python_pts, _ = model.predict(crop[None].astype(np.float32))
        page_crop = np.asarray(answer["crop"], np.float32).reshape(size, size, 3)
        on_page_crop, _ = model.predict(page_crop[None])
        shifts.append(np.linalg.norm(page_pts - python_pts[0], axis=-1))
        runtime.append(np.linalg.norm(page_pts - on_page_crop[0], axis=-1))
        pixels.append(float(np.abs(page_crop - crop).max()))
    shifts_all = np.concatenate(shifts)
    return {"n": len(photos), "flip": flip, "max_px": float(shifts_all.max()),
            "mean_px": float(shifts_all.mean()),
            "share_within_half_px": float(np.mean(shifts_all <= 0.5)),
            "runtime_max_px": float(np.concatenate(runtime).max()),
            "max_crop_pixel_diff": max(pixels)}


def end_to_end(page: Page, photos: list[tuple[str, Path]], gt, flip: bool = True) -> dict:
    """The page's whole loop (its detector, first pass, upright pass) on photos, NME vs ``gt``.

    ``gt``: (M, 68, 2) ground truth in the photos' pixels. NME (percent, the layout's default
    normalization, as ``fas_tf.evaluate``) over the faces the page found. ``flip``: the page's
    test-time flip (its default) on or off; ``flip`` in the result says whether the answers
    were flip-averaged (also true for a model exported with ``--flip``).
    """
    import numpy as np

    from fas_tf.metrics import per_sample_nme

    flipped = page.call("setFlip", flip)
    found, nmes, results = [], [], []
    for (url, _), truth in zip(photos, gt, strict=True):
        r = page.call("analyzeUrl", url)
        results.append(r)
        found.append(bool(r["found"]))
        if r["found"]:
            pred = np.asarray(r["second"]["points"], np.float32)[None]
            nme = per_sample_nme(pred, np.asarray(truth, np.float32)[None])
            nmes.append(float(np.asarray(nme)[0]))
    return {"n": len(photos), "flip": flipped, "found": int(sum(found)),
            "nme_percent": 100.0 * float(np.mean(nmes)) if nmes else float("nan"),
            "per_face": nmes, "results": results}


def measurement_mismatches(page: Page, landmarks, confidence) -> list[str]:
    """Where the page's measurements differ from :func:`fas_tf.measurements.measure` (empty: equal).

    Verdicts and reason codes must be equal; values to 1e-6 and uncertainties to 1e-4 relative,
    pose angles to 0.01 degrees (OpenCV's Levenberg-Marquardt in ``estimate_pose`` stops up to
    0.002 degrees short of the least-squares minimum the page's reaches; the pose's own sigma
    is degrees).
    """
    import math

    from fas_tf.measurements import measure

    ours = page.call("measure", [[float(x), float(y)] for x, y in landmarks],
                     [float(c) for c in confidence])
    ref = measure(landmarks, confidence)
    out = []

    def close(a, b, rel, abs_=0.0) -> bool:
        if a is None or b is None:
            return a is None and b is None
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)

    for key in ("verdict", "reason_codes"):
        if ours["face"][key] != ref["face"][key]:
            out.append(f"face {key}: page {ours['face'][key]} python {ref['face'][key]}")
    for key in ("yaw_deg", "pitch_deg", "roll_deg"):
        if not close(ours["face"][key], ref["face"][key], 0.0, 1e-2):
            out.append(f"face {key}: page {ours['face'][key]} python {ref['face'][key]}")
    for group, value in (("distances", "value_px"), ("ratios", "value")):
        for name, r in ref[group].items():
            o = ours[group][name]
            for key in ("verdict", "reason_codes"):
                if o[key] != r[key]:
                    out.append(f"{name} {key}: page {o[key]} python {r[key]}")
            sigma = value.replace("value", "sigma")
            if not close(o[value], r[value], 1e-6) or not close(o[sigma], r[sigma], 1e-4):
                out.append(f"{name}: page {o[value]} +- {o[sigma]}, python {r[value]} +- "
                           f"{r[sigma]}")
    return out
