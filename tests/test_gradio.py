"""Gradio demo: launched on a free port and called through gradio_client like a user would."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from dashboard.gradio_app import TOP_GENRE, build_demo, examples_from_data, launch_kwargs, load_predictor
from mmgenre.data import MMIMDb
from mmgenre.errors import InputError
from mmgenre.genres import GENRES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(ui_checkpoints, tiny_data, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio_tmp")))
    demo = build_demo(ui_checkpoints, tiny_data)
    _, url, _ = demo.launch(**launch_kwargs(prevent_thread_lock=True, server_name="127.0.0.1",
                                            server_port=_free_port(), quiet=True))
    try:
        yield Client(url, verbose=False, download_files=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _label(result) -> dict:
    probs = result[0]
    return {c["label"]: c["confidence"] for c in probs["confidences"]}


def test_predict_from_a_plot_only(client):
    job = client.submit(None, "A detective and a gangster plan a heist; murder follows.",
                        "text_only", TOP_GENRE, api_name="/predict")
    result = job.result(timeout=120)
    # Two updates: the probabilities first (fast), then the explanation.
    first = job.outputs()[0]
    assert len(job.outputs()) == 2 and _label(first) == _label(result) and "Explaining" in first[2]
    probs = _label(result)
    assert set(probs) <= set(GENRES) and probs and all(0 <= p <= 1 for p in probs.values())
    assert result[1] is None  # no poster, no Grad-CAM
    assert '<span class="w"' in result[2]  # highlighted words from mmgenre.viz
    assert "Inputs used: plot" in result[3]


def test_predict_with_a_poster_file_and_a_chosen_genre(client, tiny_data):
    movie = next(m for m in MMIMDb.load(tiny_data).split("test") if m.has_poster)
    result = client.predict(handle_file(str(movie.poster_path)), "", "gmu", "Comedy",
                            api_name="/predict")
    assert _label(result)
    overlay = result[1]
    assert overlay and Path(overlay["path"]).suffix in (".webp", ".png", ".jpeg")
    # Uploads and outputs live in the temp folder given to gradio, nowhere else.
    temp = Path(os.environ["GRADIO_TEMP_DIR"])
    assert Path(overlay["path"]).resolve().is_relative_to(temp.resolve())
    assert any(p.suffix == ".jpeg" for p in temp.rglob("*"))  # the uploaded poster
    assert "Explained genre: Comedy" in result[3] and "No plot was given" in result[2]


def test_user_text_is_escaped_in_the_html(client):
    result = client.predict(None, "<script>alert('x')</script> heist murder", "tfidf_logreg",
                            TOP_GENRE, api_name="/predict")
    assert "<script>" not in result[2] and "&lt;script&gt;" in result[2]


def test_bad_input_is_an_error_message_not_a_crash(client, tiny_data):
    with pytest.raises(AppError, match="nothing to predict from"):
        client.predict(None, "", "gmu", TOP_GENRE, api_name="/predict")
    poster = next(m for m in MMIMDb.load(tiny_data) if m.has_poster).poster_path
    with pytest.raises(AppError, match="reads the plot only"):
        client.predict(handle_file(str(poster)), "", "text_only", TOP_GENRE, api_name="/predict")
    with pytest.raises(AppError, match="not in the list of choices"):  # gradio refuses it first
        client.predict(None, "a plot", "../../etc", TOP_GENRE, api_name="/predict")
    # The app still answers after errors.
    assert _label(client.predict(None, "wizard dragon kingdom", "text_only", TOP_GENRE,
                                 api_name="/predict"))


def test_load_predictor_only_opens_listed_checkpoints(ui_checkpoints):
    with pytest.raises(InputError, match="no checkpoint named"):
        load_predictor(ui_checkpoints, "../ui_checkpoints/gmu")
    assert load_predictor(ui_checkpoints, "gmu") is load_predictor(ui_checkpoints, "gmu")  # cached


def test_examples_come_from_the_data(tiny_data, monkeypatch):
    examples = examples_from_data(tiny_data, n=3)
    assert len(examples) == 3 and all(e[1] for e in examples)
    assert all(e[0].size[0] <= 300 for e in examples)
    monkeypatch.delenv("MMGENRE_DATA", raising=False)
    assert examples_from_data(None) == []


def test_no_checkpoints_still_builds(tmp_path):
    demo = build_demo(tmp_path / "empty", None)
    assert "No trained checkpoints" in str(demo.config)
