"""The What-if and Compare-two-models sections of the Movie page (Streamlit AppTest) and the
Gradio What-if tab's handler, on the tiny UI checkpoints (dashboard.testing)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download

import gradio as gr
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.gradio_app import TOP_GENRE, build_demo
from dashboard.gradio_whatif import whatif
from dashboard.testing import run_page
from mmgenre.data import MMIMDb

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def movie(tiny_data):
    return next(m for m in MMIMDb.load(tiny_data).split("test") if m.has_poster and m.has_plot)


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_movie_page_what_if_and_compare(monkeypatch, tiny_data, ui_checkpoints, movie):
    at = run_page("movie", monkeypatch, tiny_data, ui_checkpoints)
    at.selectbox(key="movie_id").select(movie.imdb_id).run()
    at.selectbox(key="explain_model").select("gmu").run()
    _ok(at)
    heads = [h.value for h in at.subheader]
    assert heads.index("Explanation") < heads.index("What-if") < heads.index("Compare two models")
    charts = len(at.get("plotly_chart"))
    key = f"{movie.imdb_id}_gmu"
    at.multiselect(key=f"wi_cells_{key}").set_value([0, 1])
    at.multiselect(key=f"wi_delete_{key}").set_value([0])
    at.text_input(key=f"wi_replace_{key}").input(f"1={HOSTILE}")
    at.get("form_submit_button")[0].click().run()
    _ok(at)
    assert len(at.get("plotly_chart")) == charts + 1  # original vs edited
    edited = next(m.value for m in at.markdown if m.value.startswith("**Edited movie**"))
    assert "greyed 2 cells of a 4 x 4 grid" in edited and "deleted 1 word of" in edited
    table = at.dataframe[-1].value
    assert len(table) == 23 and {"genre", "original", "edited", "change"} <= set(table.columns)
    assert all(HOSTILE not in h.value for h in at.get("html"))  # the replacement went through mmgenre.viz
    # a bad replacement box is a message, not a crash
    at.text_input(key=f"wi_replace_{key}").input("happy")
    at.get("form_submit_button")[0].click().run()
    assert not at.exception and any("position=new text" in e.value.replace("\\", "") for e in at.error)
    at.text_input(key=f"wi_replace_{key}").input("")
    at.selectbox(key="cmp_model").select("text_only").run()
    _ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Top-20% Grad-CAM overlap"] == "n/a"  # text_only reads no poster
    assert -1.0 <= float(metrics["Word rank correlation"]) <= 1.0
    assert float(metrics["Mean probability gap"]) >= 0.0


def test_gradio_what_if_handler(ui_checkpoints, movie):
    fig, shown, grid, words, notes = whatif(str(movie.poster_path), movie.plot, "gmu", "Drama", 4, "0, 5",
                                            "0-1", f"2={HOSTILE}", "nothing", ui_checkpoints)
    assert [t.name for t in fig.data] == ["original", "edited"] and len(fig.data[0].y) == 23
    assert shown is not None and grid is not None and grid.size[0] >= 360
    assert "<script>" not in words and "&lt;script&gt;" in words
    assert "greyed 2 cells of a 4 x 4 grid" in notes and "Largest changes" in notes
    # the plot of a plot-only model emptied: the original probabilities and a note, no crash
    every_word = "0-" + str(len(movie.plot.split()) - 1)
    fig, shown, grid, words, notes = whatif(str(movie.poster_path), movie.plot, "text_only", TOP_GENRE, 4, "",
                                            every_word, "", "nothing", ui_checkpoints)
    assert len(fig.data) == 1 and "(no plot)" in words
    assert "No edited prediction" in notes and "plot is empty" in notes
    fig, shown, grid, words, notes = whatif(None, movie.plot, "text_only", TOP_GENRE, 4, "", every_word, "",
                                            "nothing", ui_checkpoints)
    assert len(fig.data) == 1 and shown is None and grid is None and "nothing to predict from" in notes
    for bad in (dict(cells="99"), dict(delete="not-a-word-of-it"), dict(model=None)):
        args = dict(poster=str(movie.poster_path), plot=movie.plot, model="gmu", genre=TOP_GENRE, grid_side=4,
                    cells="", delete="", replace="", drop="nothing", checkpoints=ui_checkpoints) | bad
        with pytest.raises(gr.Error):
            whatif(**args)


def test_gradio_demo_has_a_what_if_endpoint(ui_checkpoints):
    demo = build_demo(ui_checkpoints, None)
    assert {"predict", "whatif"} <= {f.api_name for f in demo.fns.values()}
