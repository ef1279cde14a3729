"""Streamlit dashboard: every page under AppTest, with and without a data folder / checkpoints,
on the generated tiny MM-IMDb and checkpoints trained on it for 2 epochs (built once)."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.core import PAGES as APP_PAGES
from dashboard.loaders import md_escape
from dashboard.testing import run_page

PAGES = tuple(p.name for p in APP_PAGES)


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def count(at: AppTest, kind: str) -> int:
    return len(at.get(kind))


# ------------------------------------------------------------------------------ no data
@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_without_data_or_checkpoints(page, monkeypatch, tmp_path):
    at = run_page(page, monkeypatch, "", tmp_path / "no_checkpoints")
    no_exception(at)
    assert at.title and at.title[0].value == {p.name: p.title for p in APP_PAGES}[page]
    assert not at.error
    infos = " ".join(i.value for i in at.info)
    if page in ("dataset", "movie"):
        assert "MM-IMDb" in infos and "MMGENRE_DATA" in infos
        assert "archive.org" in infos  # how to get the data
    if page == "compare":
        assert "No trained checkpoints" in infos


def test_a_wrong_data_folder_is_a_message_not_a_crash(monkeypatch, tmp_path):
    at = run_page("dataset", monkeypatch, tmp_path / "nowhere", tmp_path)
    no_exception(at)
    assert "does not exist" in " ".join(w.value for w in at.warning).replace("\\", "")


# ------------------------------------------------------------------------------ with data
def test_dataset_page_shows_statistics_gallery_and_report(monkeypatch, tiny_data, tmp_path):
    at = run_page("dataset", monkeypatch, tiny_data, tmp_path)
    no_exception(at)
    assert at.title[0].value == "Dataset"
    assert count(at, "dataframe") >= 2 and count(at, "plotly_chart") >= 4
    assert at.metric[0].value == "48"
    assert count(at, "image") == 24  # first gallery page
    assert "48 movies" in at.code[0].value  # the validation report
    # Filters: a genre and a title search that matches nothing (markup in the query is harmless).
    at.selectbox(key="gallery_genre").select("Drama").run()
    no_exception(at)
    assert 0 < count(at, "image") <= 24
    at.text_input(key="gallery_query").input("<script>alert(1)</script>").run()
    no_exception(at)
    assert count(at, "image") == 0 and "No movie with a poster" in at.info[0].value


def test_compare_page_with_checkpoints(monkeypatch, ui_checkpoints):
    at = run_page("compare", monkeypatch, "", ui_checkpoints)  # needs no data folder
    no_exception(at)
    assert not at.error
    board = at.dataframe[0].value
    assert set(board["model"]) == {"text_only", "gmu", "cross_attention", "tfidf_logreg"}
    assert {"micro_f1", "macro_f1", "micro_f1_ci_low", "micro_f1_complete"} <= set(board.columns)
    assert count(at, "plotly_chart") >= 5  # metrics, per-genre F1, PR, ROC, gains/complete pairs
    labels = [m.label for m in at.metric]
    assert any(label.startswith("A: ") for label in labels) and "p-value (two-sided)" in labels
    at.selectbox(key="paired_b").select("tfidf_logreg").run()
    at.selectbox(key="curve_genre").select("Comedy").run()
    no_exception(at)


def test_movie_page_explains_and_browses_errors(monkeypatch, tiny_data, ui_checkpoints):
    at = run_page("movie", monkeypatch, tiny_data, ui_checkpoints)
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert set(table["model"]) == {"text_only", "gmu", "cross_attention", "tfidf_logreg"}
    at.selectbox(key="explain_model").select("cross_attention").run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert count(at, "html") == 1  # highlighted plot words (mmgenre.viz HTML)
    assert count(at, "plotly_chart") >= 2  # probabilities + cross-attention (+ modality)
    # A movie without a poster shows no Grad-CAM but still explains the plot.
    at.selectbox(key="explain_model").select("gmu").run()
    no_exception(at)
    # Error browsing and disagreement browsing.
    at.segmented_control(key="browse_mode").set_value("errors").run()
    no_exception(at)
    at.selectbox(key="err_kind").select("false_negative").run()
    no_exception(at)
    at.segmented_control(key="browse_mode").set_value("disagree").run()
    no_exception(at)
    assert any("disagree" in e.label.lower() for e in at.expander) or at.info


def test_predict_page_embeds_gradio_from_same_origin(monkeypatch, tmp_path):
    monkeypatch.setenv("MMGENRE_GRADIO_URL", "/gradio/")  # what dashboard.serve sets
    at = run_page("predict", monkeypatch, "", tmp_path)
    no_exception(at)
    frames = at.get("iframe")
    assert len(frames) == 1
    assert "/gradio/" in str(frames[0].proto)
    # Streamlit alone: no frame (it would show this app again), a note on how to run the demo.
    monkeypatch.delenv("MMGENRE_GRADIO_URL")
    at = run_page("predict", monkeypatch, "", tmp_path)
    no_exception(at)
    assert not at.get("iframe") and "dashboard.serve" in at.info[0].value


def test_md_escape_neutralises_markup():
    out = md_escape("**bold** <b>x</b> [link](javascript:alert(1)) :red[x]")
    assert "\\*\\*bold\\*\\*" in out and "\\<b\\>" in out and "\\[link\\]\\(javascript\\:" in out
    assert md_escape("a\nb") == "a b"
