"""mmgenre.viz: overlays, highlighted words and plotly figures; hostile text is always escaped."""
from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from mmgenre.errors import InputError
from mmgenre.genres import GENRES
from mmgenre.viz import (apply_colormap, cross_attention_figure, draw_objects, highlight_words_html, html_page,
                         modality_figure, overlay_heatmap, probabilities_figure, region_labels)

HOSTILE = "<script>alert(1)</script>"


def _poster(w: int = 40, h: int = 60) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_overlay_heatmap_blends_at_poster_size():
    poster = _poster()
    cam = np.zeros((7, 7), dtype=np.float32)
    cam[0, 0] = 1.0
    out = overlay_heatmap(poster, cam, alpha=0.5)
    assert isinstance(out, Image.Image) and out.size == (40, 60) and out.mode == "RGB"
    arr = np.asarray(out).astype(int)
    # alpha 0 gives the poster back unchanged; a PIL poster works the same as an array
    assert np.array_equal(np.asarray(overlay_heatmap(Image.fromarray(poster), cam, alpha=0.0)), poster)
    # the hot corner is red-ish (jet high end), the cold far corner blue-ish
    hot, cold = arr[0, 0] - poster[0, 0] * 0.5, arr[-1, -1] - poster[-1, -1] * 0.5
    assert hot[0] > hot[2] and cold[2] > cold[0]
    with pytest.raises(InputError):
        overlay_heatmap(poster, np.zeros((2, 2, 2)))
    with pytest.raises(InputError):
        overlay_heatmap(poster, cam, alpha=2.0)


def test_colormap_ends():
    rgb = apply_colormap(np.array([0.0, 1.0]), "jet")
    assert tuple(rgb[0]) == (0, 0, 128) and tuple(rgb[1]) == (128, 0, 0)
    with pytest.raises(InputError):
        apply_colormap(np.zeros(2), "nope")


def test_highlight_words_colours_titles_and_escaping():
    words = ["good", "bad", HOSTILE, '"onmouseover="alert(2)']
    html = highlight_words_html(words, [1.0, -0.5, 0.0, 0.25], genre=HOSTILE)
    assert "<script>" not in html and "alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '"onmouseover="' not in html  # quotes escaped too
    assert html.count('<span class="w"') == 4
    assert "rgba(220,40,40,0.850)" in html  # the strongest positive word: full red
    assert "rgba(40,90,220,0.425)" in html  # half as strong negative: blue, half intensity
    assert 'title="+1.0000"' in html and 'title="-0.5000"' in html
    with pytest.raises(InputError):
        highlight_words_html(["a"], [1.0, 2.0])


def test_html_page_escapes_title():
    page = html_page(HOSTILE, "<p>ok</p>")
    assert page.startswith("<!DOCTYPE html>") and "<p>ok</p>" in page
    assert HOSTILE not in page


def test_cross_attention_figure_labels_and_hover():
    words = ["a", HOSTILE, "c"]
    m = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    fig = cross_attention_figure(words, (2, 2), m, title=HOSTILE)
    assert isinstance(fig, go.Figure)
    hm = fig.data[0]
    assert list(hm.x) == region_labels((2, 2)) == ["r0c0", "r0c1", "r1c0", "r1c1"]
    assert len(hm.y) == 3 and "word: a<br>region: r1c1" in hm.text[0][3]
    # image-to-text matrices (R, n_words) are transposed to the same layout
    fig_t = cross_attention_figure(words, (2, 2), m.T)
    assert np.allclose(np.asarray(fig_t.data[0].z), m)
    page = fig.to_html(include_plotlyjs=False)
    assert HOSTILE not in page and HOSTILE not in json.dumps(fig.to_plotly_json())
    with pytest.raises(InputError):
        cross_attention_figure(words, (3, 3), m)


def test_modality_figure_shares_and_drops():
    modality = {"gate_text_share": 0.7, "weights": None,
                "ablation": {"Drama": {"p": 0.8, "without_poster": 0.7, "without_plot": 0.3},
                             HOSTILE: {"p": 0.5, "without_poster": 0.5, "without_plot": 0.5}}}
    fig = modality_figure(modality)
    shares = fig.data[0]
    assert list(shares.x) == ["text", "image"] and np.allclose(shares.y, [0.7, 0.3])
    drops = {trace.name: list(trace.y) for trace in fig.data[1:]}
    assert np.allclose(drops["drop without poster"], [0.1, 0.0])
    assert np.allclose(drops["drop without plot"], [0.5, 0.0])
    assert HOSTILE not in json.dumps(fig.to_plotly_json())
    weights = modality_figure({"gate_text_share": None, "weights": {"text": 0.2, "image": 0.5, "det": 0.3},
                               "ablation": {}})
    assert list(weights.data[0].x) == ["text", "image", "det"]


def test_draw_objects_draws_boxes():
    poster = np.full((80, 60, 3), 255, dtype=np.uint8)
    out = draw_objects(poster, [{"label": "face", "box": [10, 30, 40, 70], "score": 0.9}])
    arr = np.asarray(out)
    assert out.size == (60, 80)
    assert (arr[50, 10] != 255).any()      # left edge of the box is drawn
    assert (arr[50, 25] == 255).all()      # inside the box is untouched
    assert np.array_equal(np.asarray(draw_objects(poster, [])), poster)


def test_probabilities_figure_orders_and_marks_predicted():
    probs = {g: 1.0 / (i + 2) for i, g in enumerate(GENRES)}
    fig = probabilities_figure(probs, [0.4] * len(GENRES), ["Drama"])
    bars = fig.data[0]
    assert list(bars.y)[:2] == ["Drama", "Comedy"]
    assert bars.marker.color[0] != bars.marker.color[1]  # predicted genre highlighted
    assert np.allclose(fig.data[1].x, 0.4)
    fig2 = probabilities_figure({HOSTILE: 0.3}, None, [])
    assert HOSTILE not in json.dumps(fig2.to_plotly_json())
