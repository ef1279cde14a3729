"""Download buttons of the dashboard (dashboard.downloads): every chart of the Compare, Movie and
Insights pages has PNG / SVG / PDF buttons, the Movie page a Report (HTML + PDF) of the explanation shown.
Nothing is drawn on a page run (the buttons' data are deferred callables); "clicking" runs the
callable the way Streamlit's server does, through the run's media file manager, and must hand
over the file the button names. Tiny data and checkpoints, under AppTest."""
from __future__ import annotations

import shutil
from pathlib import Path

import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import testing



def run_page(page: str, monkeypatch, data, checkpoints: Path) -> AppTest:
    at = testing.run_page(page, monkeypatch, data, checkpoints)
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def media(monkeypatch) -> list:
    """The media file managers AppTest makes (one per run): the last holds the buttons' callables."""
    from streamlit.testing.v1 import app_test
    made = []

    class Recording(app_test.MediaFileManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(app_test, "MediaFileManager", Recording)
    return made


def buttons(at: AppTest) -> list:
    """The page's chart and report download buttons (drawn on click only)."""
    found = [b.proto for b in at.get("download_button") if not b.proto.label.endswith("(CSV)")]
    assert all(b.deferred_file_id and not b.url for b in found)
    return found


def click(media: list, button) -> tuple[bytes, str]:
    """What the browser gets when ``button`` is clicked: (content, mime type)."""
    mgr = media[-1]
    url = mgr.execute_deferred(button.deferred_file_id)
    got = mgr._storage.get_file(url.rsplit("/", 1)[-1])
    return got.content, got.mimetype


def test_compare_page_charts_have_png_svg_pdf_buttons(monkeypatch, ui_checkpoints, media):
    at = run_page("compare", monkeypatch, "", ui_checkpoints)
    got = buttons(at)
    charts = len(at.get("plotly_chart"))
    assert charts >= 5 and [b.label for b in got] == ["PNG", "SVG", "PDF"] * charts  # one row per chart
    assert any("precision_recall_" in b.help for b in got)  # file names say what the chart is
    png, svg, pdf = (click(media, b) for b in got[:3])
    assert png[0].startswith(b"\x89PNG") and png[1] == "image/png"
    assert svg[0].lstrip().startswith((b"<svg", b"<?xml")) and svg[1] == "image/svg+xml"
    assert pdf[0].startswith(b"%PDF") and pdf[1] == "application/pdf"


def test_movie_page_has_chart_and_report_buttons(monkeypatch, tiny_data, ui_checkpoints, media):
    at = run_page("movie", monkeypatch, tiny_data, ui_checkpoints)
    at.selectbox(key="explain_model").select("cross_attention").run()
    assert not at.exception, [e.value for e in at.exception]
    got = {b.label: b for b in buttons(at)}
    assert [b.label for b in buttons(at)].count("PNG") >= 2  # probabilities, cross-attention (+ modality)
    page, mime = click(media, got["HTML report"])
    assert mime == "text/html" and page.startswith(b"<!DOCTYPE html>") and b"<script" not in page
    assert b"cross_attention" in page and b"data:image/svg+xml;base64," in page
    pdf, mime = click(media, got["PDF report"])
    assert mime == "application/pdf" and pdf.startswith(b"%PDF")
    assert got["PDF report"].help.endswith("_cross_attention.pdf")


def test_insights_page_charts_have_buttons(monkeypatch, tiny_data, ui_checkpoints, media, tmp_path):
    from mmgenre.explain_split import explain_split
    shutil.copytree(ui_checkpoints / "gmu", tmp_path / "ckpts" / "gmu")  # the shared ones stay read-only
    explain_split(tmp_path / "ckpts" / "gmu", tiny_data, "test", shard_size=4, limit=4, progress=False)
    at = run_page("insights", monkeypatch, tiny_data, tmp_path / "ckpts")
    charts = len(at.get("plotly_chart"))
    got = buttons(at)
    assert charts == 4 and [b.label for b in got] == ["PNG", "SVG", "PDF"] * charts
    assert {b.help for b in got[-3:]} == {f"download faithfulness_test.{f}" for f in ("png", "svg", "pdf")}
    content, mime = click(media, got[-1])
    assert content.startswith(b"%PDF") and mime == "application/pdf"


def test_button_data_draws_the_file_it_names(monkeypatch):
    """The callables handed to st.download_button draw the chart in the named format."""
    import streamlit as st

    from dashboard import downloads
    seen = {}
    monkeypatch.setattr(st, "plotly_chart", lambda fig, key=None, **kw: seen.setdefault("chart", key))

    class Row:
        def download_button(self, label, data, file_name, mime, **kw):
            seen[label] = (data(), file_name, mime, kw["key"], kw["on_click"])

    monkeypatch.setattr(st, "container", lambda **kw: Row())
    downloads.chart(go.Figure(go.Bar(y=[1, 2])), "per genre/F1 <x>")
    assert seen["chart"] is None  # a chart without a key keeps none
    png, svg, pdf = seen["PNG"], seen["SVG"], seen["PDF"]
    assert png[0].startswith(b"\x89PNG") and png[1:3] == ("per_genre_F1_x.png", "image/png")
    assert svg[0].lstrip().startswith((b"<svg", b"<?xml")) and svg[2] == "image/svg+xml"
    assert pdf[0].startswith(b"%PDF") and pdf[1] == "per_genre_F1_x.pdf"
    assert png[3] == "chart_per_genre_F1_x_dl_png" and png[4] == "ignore"
