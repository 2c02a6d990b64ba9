#!/usr/bin/env python3
"""Screenshots of HTML pages and figures in headless Chromium, with a layout check.

    python tools/screenshots.py [--width 1280] [--out docs/screenshots] <page.html|figure.png> ...

Each HTML page is opened at a ``--width`` px wide window (1280: a laptop screen) and captured
whole (its full height); each PNG figure is shown in a page of that width at its own size (no
larger than the width), as a reader sees it. For every input the script measures in the page
whether it scrolls sideways (``scrollWidth > clientWidth``) and which elements reach past the
right edge, saves ``<out>/<name>.png`` and prints one JSON line per input; it exits 1 when any
page scrolls sideways or an image did not load.

Chromium is Debian's ``chromium`` (``tools/install.sh``), driven over the DevTools protocol with
``websocket-client``; nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def chromium_path() -> str | None:
    """The Chromium executable on PATH (Debian: chromium), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


class Chromium:
    """Headless Chromium driven over the DevTools protocol: ``call(method, **params)`` sends
    one command and returns its result; ``wait_event(method)`` returns the next such event."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000) -> None:
        import websocket

        exe = chromium_path()
        if exe is None:
            raise RuntimeError("no chromium on PATH (Debian package chromium; tools/install.sh)")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--hide-scrollbars", "--remote-debugging-port=0", "--remote-allow-origins=*",
             "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        for _ in range(600):
            if port_file.is_file() and port_file.read_text().strip():
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.proc.returncode}")
            time.sleep(0.1)
        else:
            self.proc.kill()
            raise RuntimeError("chromium did not open its DevTools port within 60 s")
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def wait_event(self, method: str) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == method:
                return msg
            self.events.append(msg)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (a promise is awaited)."""
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                      returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url: str, width: int) -> None:
        """Load ``url`` in a ``width`` px wide viewport and wait for its load event."""
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=800,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def screenshot(self, path: Path) -> tuple[int, int]:
        """The whole page (its full height) as a PNG; returns its (width, height) in px."""
        m = self.call("Page.getLayoutMetrics")
        size = m.get("cssContentSize") or m["contentSize"]
        w, h = int(m["cssLayoutViewport"]["clientWidth"]), int(size["height"])
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))
        return w, h

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:  # the browser may close the socket first
            pass
        self.ws.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# Sideways scrolling and its causes: the elements whose right edge (or content) passes the
# viewport's, the outermost of each nested run, leaving out what a scrolling box holds in; and
# every image's natural and shown size.
LAYOUT_JS = """
(() => {
  const de = document.documentElement, cw = de.clientWidth, wide = [];
  // inside a box that scrolls or clips on its own (a wide table's), an element moves no page
  const boxed = el => { for (let a = el.parentElement; a && a !== document.body; a = a.parentElement)
    if (getComputedStyle(a).overflowX !== 'visible') return true; return false; };
  for (const el of document.body.querySelectorAll('*')) {
    if (boxed(el)) continue;
    const r = el.getBoundingClientRect();
    // its box, or content that spills out of it (a <pre> line longer than the page)
    const spills = getComputedStyle(el).overflowX === 'visible' ? el.scrollWidth - el.clientWidth : 0;
    if (Math.max(r.right, r.left + el.clientWidth + spills) > cw + 0.5 && !wide.some(w => w.el.contains(el)))
      wide.push({el, what: el.tagName.toLowerCase() + (el.className ? '.' + el.className : ''),
                 right: Math.round(Math.max(r.right, r.left + el.clientWidth + spills)), text: (el.textContent || '').trim().slice(0, 80)});
  }
  return JSON.stringify({
    scrollWidth: de.scrollWidth, clientWidth: cw,
    overflow: wide.map(({el, ...w}) => w),
    images: [...document.images].map(i => ({src: i.getAttribute('src'),
      natural: [i.naturalWidth, i.naturalHeight], shown: [Math.round(i.width), Math.round(i.height)]})),
  });
})()
"""

_FIGURE_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{name}</title>
<style>body {{ margin: 0; padding: 16px; background: #fff; font-family: sans-serif; }}
img {{ display: block; max-width: 100%; height: auto; }} p {{ color: #555; margin: 0 0 8px; }}</style>
</head><body><p>{name} ({w} x {h} px)</p><img src="{src}" alt="{name}"></body></html>
"""


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def shoot(inputs: list[Path], out_dir: Path, width: int = 1280,
          names: list[str] | None = None) -> list[dict]:
    """Screenshot every input (an HTML page or a PNG figure) at ``width`` px into
    ``out_dir/<name>.png``; returns one layout report per input (see ``LAYOUT_JS``) with
    ``input``, ``screenshot``, ``size`` and ``scrolls_sideways``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = names or [p.stem if p.suffix == ".html" and p.stem != "index" else
                      (p.parent.name if p.suffix == ".html" else p.stem) for p in inputs]
    if len(set(names)) != len(names):
        raise ValueError(f"two inputs would share a screenshot name: {names}")
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        b = Chromium(tmp_dir / "profile", width=width)
        try:
            for p, name in zip(inputs, names, strict=True):
                p = p.resolve()
                if p.suffix == ".png":
                    w, h = _png_size(p)
                    page = tmp_dir / f"{name}.html"
                    page.write_text(_FIGURE_PAGE.format(name=html.escape(p.name), w=w, h=h,
                                                        src=p.as_uri()))
                    url = page.as_uri()
                else:
                    url = p.as_uri()
                b.open(url, width)
                b.evaluate("Promise.all([...document.images].map(i => i.complete ? 0 :"
                           " new Promise(r => { i.onload = i.onerror = r; })))")
                r = json.loads(b.evaluate(LAYOUT_JS))
                shot = out_dir / f"{name}.png"
                r["size"] = list(b.screenshot(shot))
                r.update(input=str(p), screenshot=str(shot),
                         scrolls_sideways=r["scrollWidth"] > r["clientWidth"])
                reports.append(r)
        finally:
            b.close()
    return reports


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("inputs", nargs="+", type=Path, help="HTML pages and PNG figures")
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"),
                    help="where the screenshots are written (<out>/<name>.png)")
    ap.add_argument("--width", type=int, default=1280, help="window width in px")
    ap.add_argument("--names", default=None,
                    help="screenshot names, comma-separated, one per input (default: the "
                         "file's stem, or the dir of an index.html)")
    args = ap.parse_args(argv)
    if chromium_path() is None:
        print("screenshots.py: no chromium on PATH (Debian package chromium; tools/install.sh)",
              file=sys.stderr)
        return 2
    for p in args.inputs:
        if not p.is_file():
            print(f"screenshots.py: no such file: {p}", file=sys.stderr)
            return 2
    bad = 0
    names = args.names.split(",") if args.names else None
    if names is not None and len(names) != len(args.inputs):
        print(f"screenshots.py: {len(names)} names for {len(args.inputs)} inputs", file=sys.stderr)
        return 2
    for r in shoot(args.inputs, args.out, args.width, names):
        broken = [i["src"] for i in r["images"] if i["natural"][0] == 0]
        bad += r["scrolls_sideways"] or bool(broken)
        print(json.dumps({k: r[k] for k in ("input", "screenshot", "size", "scrollWidth",
                                            "clientWidth", "scrolls_sideways", "overflow")}
                         | {"broken_images": broken}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
