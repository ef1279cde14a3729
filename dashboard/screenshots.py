"""Screenshots of every page: ``python -m dashboard.screenshots [OUT] [--data DIR]`` (``make
screenshots``).

Starts ``dashboard.serve`` on a free port, then captures each Streamlit page of
``dashboard.core.PAGES`` (by its ``st.navigation`` URL path) and the Gradio app (``/gradio/``,
after one prediction) with headless Debian ``chromium`` (``apt-get install -y chromium``) into
OUT (default ``assets/``, which README shows). Each capture is cut to its top ``--max-height``
pixels, scaled to ``--width`` and stored as a palette PNG, so each file stays a few tens of KB.

Streamlit draws the page over a websocket after the HTML has loaded, so ``--screenshot`` with a
virtual-time budget catches only the loading skeleton. Instead chromium runs with a DevTools port
and this script (over the DevTools protocol) loads each URL, waits until the app reports no
running script, no spinner and no skeleton, sizes the window to the whole page and captures it.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

from dashboard.core import DATA_ENV_VAR, EXPLAIN_BUDGET_ENV_VAR, PAGES, REPO_ROOT, default_data, page_url
from dashboard.serve import Server, answers, free_port

# Query parameters set widgets bound with bind="query-params" (bound widgets with a format_func
# take the shown label in the URL).
PAGE_QUERY = {"movie": "?explain_model=gmu"}
# name -> URL path: one shot per page, then the Gradio app; the first page is served at "/".
SHOTS: dict[str, str] = {p.name: page_url(p) + PAGE_QUERY.get(p.name, "") for p in PAGES}
# the Movie page's What-if section after dropping the poster, and two models side by side
SHOTS["whatif"] = "/movie?explain_model=cross_attention"
SHOTS["side_by_side"] = "/movie?explain_model=cross_attention&cmp_model=gmu"
SHOTS["gradio"] = "/gradio/"
# Taken only when named with --only.
EXTRA_SHOTS: dict[str, str] = {
    "movie_cross_attention": "/movie?explain_model=cross_attention",
    "movie_errors": "/movie?browse_mode=Errors+of+one+model&err_model=gmu&err_genre=Comedy"
                    "&err_kind=false+positives&explain_model=gmu",
    "gradio_empty": "/gradio/",
}
# Where a shot starts (JS giving a y in page pixels) when the top of the page is not the point:
# the Movie page's explanation (Grad-CAM, word scores) rather than its movie picker.
CROP_TOP: dict[str, str] = {
    "movie": "(() => { const h = Array.from(document.querySelectorAll('h2, h3'))"
             ".find(e => e.textContent.trim() === 'Explanation');"
             " return h ? Math.max(0, h.getBoundingClientRect().top - 24) : 0; })()",
    **{name: "(() => { const h = Array.from(document.querySelectorAll('h2, h3'))"
             f".find(e => e.textContent.trim() === '{heading}');"
             " return h ? Math.max(0, h.getBoundingClientRect().top + window.scrollY - 24) : 0; })()"
       for name, heading in (("whatif", "What-if"), ("side_by_side", "Compare two models"))},
}
# Shots whose point lies further down than --max-height (the what-if chart under its form).
TALL: dict[str, int] = {"whatif": 2300}
# Clicks made after a page is ready, and what must be true before the shot is taken.
ACTIONS: dict[str, tuple[str, str]] = {
    "gradio": (
        "document.querySelector('tr.tr-body').click();"
        "setTimeout(() => Array.from(document.querySelectorAll('button.primary, button.lg'))"
        ".find(b => b.textContent.trim() === 'Predict').click(), 1500); true",  # not the tab named Predict
        "!document.querySelector('.pending') && !!document.querySelector('.w')"
        " && !!document.querySelector('[data-testid=\"label-output-value\"]')"),
    # What-if: drop the poster, blur-fill, press the form's button; ready when the edit is reported.
    "whatif": (
        "(() => { const pick = t => Array.from(document.querySelectorAll('label'))"
        ".find(l => l.textContent.trim() === t); pick('the poster').click();"
        " setTimeout(() => Array.from(document.querySelectorAll('button'))"
        ".find(b => b.textContent.trim() === 'Re-predict and explain').click(), 1500); return true; })()",
        "Array.from(document.querySelectorAll('p')).some(p => p.textContent.startsWith('Edited movie'))"
        " && !document.querySelector('[data-testid=\"stSpinner\"]')"),
}
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                "--disable-dev-shm-usage"]
WIDTH, MIN_HEIGHT, MAX_HEIGHT = 1400, 1000, 9000

# True once the page has finished drawing (Streamlit: no running script, spinner or skeleton;
# Gradio: its container is there and nothing is pending). Images must have loaded too.
READY_JS = """(() => {
  if (window.__mmgenreOld) return false;  // still the previous document
  const q = s => document.querySelector(s);
  const imgs = Array.from(document.images).every(i => i.complete);
  if (location.pathname.startsWith('/gradio')) {
    return !!q('.gradio-container') && !q('.pending') && imgs;
  }
  const running = q('[data-testid="stStatusWidget"]');
  return !!q('[data-testid="stMain"]') && !running && !q('[data-testid="stSpinner"]')
         && !q('[data-testid="stSkeleton"]') && !!q('h1') && imgs;
})()"""
HEIGHT_JS = """(() => {
  const m = document.querySelector('[data-testid="stMain"]') || document.scrollingElement;
  const inner = document.querySelector('[data-testid="stMainBlockContainer"]');
  return Math.max(document.body.scrollHeight, m ? m.scrollHeight : 0,
                  inner ? inner.getBoundingClientRect().height + 120 : 0);
})()"""


def find_chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)


class Browser:
    """Headless chromium driven over the DevTools protocol (one tab)."""

    def __init__(self, chrome: str):
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="mmgenre-chrome-")
        port = free_port()
        self.proc = subprocess.Popen(
            [chrome, *CHROME_FLAGS, f"--user-data-dir={self.profile}", f"--window-size={WIDTH},{MIN_HEIGHT}",
             f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not answers(f"http://127.0.0.1:{port}/json/version"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:  # noqa: S310
            page = next(t for t in json.load(r) if t["type"] == "page")
        # legacy=True: a plain connection object (no reconnecting context manager).
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=2**28, open_timeout=30, legacy=True,
                          ping_interval=None)
        self._id = 0
        self.call("Page.enable")

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def set_size(self, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1,
                  mobile=False)

    def wait_ready(self, timeout: float, extra: str | None = None, calm_s: float = 2.0,
                   poll_s: float = 0.1) -> float | None:
        """Wait until the page is drawn and stays so for ``calm_s`` (reruns, chart drawing);
        returns the monotonic time it first became ready, or None at the timeout."""
        deadline, since = time.monotonic() + timeout, None
        check = READY_JS if extra is None else f"({READY_JS}) && ({extra})"
        while time.monotonic() < deadline:
            now = time.monotonic()
            if self.evaluate(check):
                since = since or now
                if now - since >= calm_s:
                    return since
            else:
                since = None
            time.sleep(poll_s)
        return None

    def navigate(self, url: str) -> float:
        """Start loading ``url``; returns the monotonic start time."""
        self.evaluate("window.__mmgenreOld = true")  # the new document will not have it
        t0 = time.monotonic()
        self.call("Page.navigate", url=url)
        return t0

    def shoot(self, url: str, out: Path, timeout: float = 300.0,
              action: tuple[str, str] | None = None) -> bool:
        self.set_size(MIN_HEIGHT)
        self.navigate(url)
        ready = self.wait_ready(timeout) is not None
        if action is not None:
            self.evaluate(action[0])
            time.sleep(2.0)
            ready = self.wait_ready(timeout, action[1]) is not None
        height = int(min(MAX_HEIGHT, max(MIN_HEIGHT, self.evaluate(HEIGHT_JS) or MIN_HEIGHT)))
        self.set_size(height)
        # A taller window may draw more (lazy charts).
        ready = self.wait_ready(60, None if action is None else action[1]) is not None and ready
        data = self.call("Page.captureScreenshot", format="png")["data"]
        out.write_bytes(base64.b64decode(data))
        return ready

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


def shrink(path: Path, width: int, max_height: int, top: int = 0, colours: int = 128) -> tuple[int, int]:
    """Cut ``path`` to ``max_height`` pixels from ``top``, scale it to ``width`` and store it as
    an optimised palette PNG (UI pictures lose little at 128 colours); returns the new size."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        top = max(0, min(int(top), im.height - 1))
        im = im.crop((0, top, im.width, min(im.height, top + max_height)))
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
        im.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            path, optimize=True)
        return im.size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dashboard.screenshots", description=__doc__.split("\n")[0])
    p.add_argument("out", nargs="?", default=str(REPO_ROOT / "assets"), help="output folder (default assets/)")
    p.add_argument("--data", help="MM-IMDb folder (default $MMGENRE_DATA)")
    p.add_argument("--checkpoints", help="checkpoints folder (default $MMGENRE_CHECKPOINTS or ./checkpoints)")
    p.add_argument("--only", nargs="*", choices=[*SHOTS, *EXTRA_SHOTS], help="capture only these")
    p.add_argument("--width", type=int, default=800, help="width of the stored PNG (default 800 px)")
    p.add_argument("--max-height", type=int, default=1400,
                   help="keep this many pixels of the page, from its top (default 1400; 0: all)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a page to draw")
    args = p.parse_args(argv)
    chrome = find_chromium()
    if chrome is None:
        print("chromium is not installed: apt-get install -y chromium", file=sys.stderr)
        return 2
    if not (args.data or default_data()):
        print(f"the pages need real movies: pass --data DIR or set {DATA_ENV_VAR}", file=sys.stderr)
        return 2
    # A picture of a complete explanation, however busy this machine is (serve passes it on).
    os.environ.setdefault(EXPLAIN_BUDGET_ENV_VAR, "300")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = Server(port=port, host="127.0.0.1", streamlit_port=free_port(), gradio_port=free_port(),
                    data=args.data or None, checkpoints=args.checkpoints)
    browser = None
    try:
        server.start()
        browser = Browser(chrome)
        base = f"http://127.0.0.1:{port}"
        urls = {**SHOTS, **EXTRA_SHOTS}
        for name in args.only or SHOTS:
            target = out / f"{name}.png"
            t0 = time.perf_counter()
            ready = browser.shoot(base + urls[name], target, args.timeout, ACTIONS.get(name))
            top = browser.evaluate(CROP_TOP[name]) if name in CROP_TOP else 0
            w, h = shrink(target, args.width, max(args.max_height or MAX_HEIGHT, TALL.get(name, 0)), top or 0)
            note = "" if ready else "  (still drawing at the timeout)"
            print(f"{target}  {w}x{h}, {target.stat().st_size / 1024:.0f} KB  "
                  f"({time.perf_counter() - t0:.0f} s){note}", flush=True)
    finally:
        if browser is not None:
            browser.close()
        server.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
