"""Plotly figures as PNG / SVG / PDF bytes, offline and without a browser on the machine.

    figure_bytes(fig, "svg") -> b'<svg ...'
    figures_pdf([fig1, fig2]) -> one PDF, one vector page per figure

plotly's own ``fig.to_image`` needs kaleido >= 1, which drives a Chrome installed on the machine
(none on a fresh CI machine). kaleido 0.2.1, pinned in requirements.txt, ships its own headless
Chromium, so this module drives that executable itself (plotly 7 no longer does). Started as
kaleido starts it, that Chromium often never finishes starting (the kaleido 0.2.1 hang of
plotly/Kaleido#134: 18 of 60 starts here, on two busy cores); with ``--single-process`` none of
60 did. Every start and every answer still has a time limit, and a hung process is killed and
started again. One long-lived process serves the whole Python process, one figure at a time.
"""
from __future__ import annotations

import atexit
import base64
import io
import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Iterable

import plotly
import plotly.graph_objects as go
import plotly.io as pio

from mmgenre.errors import InputError

FORMATS = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}
DEFAULT_SIZE = (900, 500)  # (width, height) in layout pixels when the figure sets none
PNG_SCALE = 2  # PNGs at twice the layout size: sharp in print
START_TIMEOUT_S = 10.0  # a healthy start takes ~1 s (2-3 s on busy cores)
ANSWER_TIMEOUT_S = 30.0  # a figure takes 0.03-1 s
ATTEMPTS = 3


class FigureExportError(RuntimeError):
    """The image exporter could not run or could not draw the figure; the message says why."""


def check_format(fmt: str) -> str:
    """``fmt`` lower-cased if it is one of :data:`FORMATS`, else a clear ``InputError``."""
    name = str(fmt).strip().lower()
    if name not in FORMATS:
        raise InputError(f"figure format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return name


def _pump(stream, lines: queue.Queue) -> None:
    """Move the exporter's stdout lines into ``lines``; None at end of stream (then close it)."""
    with stream:
        for line in iter(stream.readline, b""):
            lines.put(line)
    lines.put(None)


class _Exporter:
    """The kaleido 0.2.1 executable as a long-lived subprocess, with time limits."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue | None = None
        self._lock = threading.Lock()

    def _command(self) -> list[str]:
        try:
            from kaleido.scopes.plotly import PlotlyScope
        except ImportError as exc:
            raise FigureExportError("figure export needs kaleido 0.2.1: pip install -r requirements.txt") from exc
        plotly_js = os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")
        # Without --plotlyjs kaleido fetches plotly.js from a CDN; the installed plotly's copy is offline.
        # --single-process: the start hangs on 18 of 60 tries without it, 0 of 60 with it (here, 2 cores).
        return [PlotlyScope.executable_path(), "plotly", f"--plotlyjs={plotly_js}",
                *PlotlyScope.default_chromium_args(), "--single-process"]

    def _read(self, timeout: float) -> bytes:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            raise BrokenPipeError("the exporter exited")
        return line

    def _start(self) -> None:
        # Own session: the executable is a shell script whose Chromium children a kill of the
        # group reaches too.
        self._proc = subprocess.Popen(self._command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        self._lines = queue.Queue()
        threading.Thread(target=_pump, args=(self._proc.stdout, self._lines), daemon=True).start()
        started = json.loads(self._read(START_TIMEOUT_S))
        if started.get("code", 0) != 0:
            self.stop()
            raise FigureExportError(f"the image exporter did not start: {started.get('message')}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        try:
            proc.stdin.close()  # stdout is closed by its reader thread, at the end of the stream
        except OSError:
            pass

    def render(self, spec: bytes) -> dict:
        with self._lock:
            for _ in range(ATTEMPTS):
                try:
                    if self._proc is None or self._proc.poll() is not None:
                        self.stop()
                        self._start()
                    self._proc.stdin.write(spec + b"\n")
                    self._proc.stdin.flush()
                    return json.loads(self._read(ANSWER_TIMEOUT_S))
                except (TimeoutError, OSError, ValueError):  # hung, died, or garbled: start afresh
                    self.stop()
            raise FigureExportError(f"the image exporter (kaleido) hung or died {ATTEMPTS} times in a row")


_EXPORTER = _Exporter()
atexit.register(_EXPORTER.stop)


def figure_bytes(fig: go.Figure | dict, fmt: str, *, width: int | None = None, height: int | None = None,
                 scale: float | None = None) -> bytes:
    """``fig`` drawn as ``fmt`` ("png", "svg" or "pdf"). Size: ``width``/``height``, else the
    figure's layout size, else :data:`DEFAULT_SIZE`; PNGs are drawn at ``scale`` (default
    :data:`PNG_SCALE`) times that size."""
    fmt = check_format(fmt)
    layout = (fig.to_dict() if isinstance(fig, go.Figure) else fig).get("layout", {})
    width = int(width or layout.get("width") or DEFAULT_SIZE[0])
    height = int(height or layout.get("height") or DEFAULT_SIZE[1])
    scale = float(scale or (PNG_SCALE if fmt == "png" else 1))
    head = json.dumps({"format": fmt, "width": width, "height": height, "scale": scale})
    spec = (head[:-1] + ', "data": ' + pio.to_json(fig, validate=False, remove_uids=False) + "}").encode()
    answer = _EXPORTER.render(spec)
    if answer.get("code", 0) != 0 or answer.get("result") is None:
        raise FigureExportError(f"the figure could not be drawn as {fmt}: {answer.get('message')}")
    result = answer["result"]
    return result.encode() if fmt == "svg" else base64.b64decode(result)


def figures_pdf(figs: Iterable[go.Figure], *, title: str | None = None) -> bytes:
    """One PDF with a vector page per figure (kaleido's PDFs merged with pypdf)."""
    from pypdf import PdfWriter
    writer = PdfWriter()
    for fig in figs:
        writer.append(io.BytesIO(figure_bytes(fig, "pdf")))
    if not writer.pages:
        raise InputError("figures_pdf: no figures to write")
    if title:
        writer.add_metadata({"/Title": title})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
