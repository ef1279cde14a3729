"""Charts with a row of PNG / SVG / PDF download buttons, and the buttons of a movie's report.

Each button gets a callable as its data, so a file is drawn (``mmgenre.figure_export``, 0.05-1 s
a figure) only when its button is clicked, never on a page run; ``on_click="ignore"`` keeps a
download from rerunning the page.
"""
from __future__ import annotations

import re
from collections.abc import Callable

import streamlit as st

from mmgenre.figure_export import FORMATS, figure_bytes
from mmgenre.report import file_stem, report_html, report_pdf


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:80] or "chart"


def _drawer(fig, fmt: str) -> Callable[[], bytes]:
    return lambda: figure_bytes(fig, fmt)


def download_row(files: dict[str, tuple[Callable[[], bytes | str], str, str]], key: str, where=None) -> None:
    """A compact row of download buttons: ``files`` maps a button label to (data callable, file
    name, mime type); ``key`` prefixes the buttons' keys."""
    row = (where or st).container(horizontal=True, gap="small")
    for label, (data, file_name, mime) in files.items():
        row.download_button(label, data=data, file_name=file_name, mime=mime, key=f"{key}_dl_{label.lower()}",
                            type="tertiary", icon=":material/download:", on_click="ignore",
                            help=f"download {file_name}")


def chart(fig, name: str, key: str | None = None, where=None, **kwargs) -> None:
    """``st.plotly_chart(fig, key=key, **kwargs)`` (in ``where``, default the page) with PNG / SVG /
    PDF buttons under it; ``name`` is the file name (and, without ``key``, the buttons' key)."""
    where = where or st
    where.plotly_chart(fig, key=key, **kwargs)
    stem = _file_stem(name)
    download_row({fmt.upper(): (_drawer(fig, fmt), f"{stem}.{fmt}", mime) for fmt, mime in FORMATS.items()},
                 key=key or f"chart_{stem}", where=where)


def report_buttons(expl, movie, thresholds, key: str, where=None) -> None:
    """Download buttons for the HTML page and the PDF of ``expl`` (``mmgenre.report``), drawn
    from this explanation, never recomputed."""
    stem = file_stem(expl, movie)
    download_row({"HTML report": (lambda: report_html(expl, movie, thresholds), f"{stem}.html", "text/html"),
                  "PDF report": (lambda: report_pdf(expl, movie, thresholds), f"{stem}.pdf", "application/pdf")},
                 key=key, where=where)
