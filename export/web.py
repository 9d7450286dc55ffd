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
        """``await window.fasTf[hook](...args)`` (or ``await window.fasTf.ready``); its JSON value."""
        script = """
            const [hook, args, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
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
