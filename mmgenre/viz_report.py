"""Figures of a one-movie report (:mod:`mmgenre.report`) that :mod:`mmgenre.viz` has no chart for:
the poster beside its Grad-CAM overlays, the strongest word scores of one genre, and a table of
the faithfulness figures. Plotly only, so the same figures go to the HTML page (as SVG) and to
the PDF (as vector pages). Every label is escaped, like :mod:`mmgenre.viz`."""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from mmgenre.viz import esc, overlay_heatmap

TOP_WORDS = 20


def png_data_uri(image: Image.Image | np.ndarray) -> str:
    """``data:image/png;base64,...`` of a PIL image or an (H, W, 3) uint8 array."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def poster_images(exp) -> list[tuple[str, Image.Image]]:
    """(caption, image): the poster, then its Grad-CAM overlay for each explained genre that has one."""
    if exp.poster is None:
        return []
    shown = [("poster", Image.fromarray(exp.poster))]
    shown += [(f"Grad-CAM: {g}", overlay_heatmap(exp.poster, exp.poster_cam[g]))
              for g in exp.genres if g in exp.poster_cam]
    return shown


def poster_figure(exp) -> go.Figure | None:
    """The poster and its Grad-CAM overlays side by side (None without a poster)."""
    shown = poster_images(exp)
    if not shown:
        return None
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=[esc(c) for c, _ in shown],
                        horizontal_spacing=0.02)
    for i, (_, img) in enumerate(shown):
        fig.add_trace(go.Image(source=png_data_uri(img), hoverinfo="skip"), row=1, col=i + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    h, w = exp.poster.shape[:2]
    panel = 260
    fig.update_layout(title="poster and Grad-CAM (red: raises the genre)",
                      width=max(600, round(panel * w / h) * len(shown) + 80), height=panel + 130,
                      margin=dict(t=90, l=20, r=20, b=20))
    return fig


def word_scores_figure(words: Sequence[str], scores: np.ndarray, genre: str, top: int = TOP_WORDS) -> go.Figure:
    """Horizontal bars of the ``top`` plot words with the largest |score| for ``genre``, highest
    score first; red pushes the genre up, blue down. Rows are "word (position)" so repeated
    words stay apart."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64).reshape(-1))
    keep = np.argsort(-np.abs(scores), kind="stable")[:top]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    rows = [f"{esc(words[i])} ({i})" for i in keep]
    fig = go.Figure(go.Bar(x=scores[keep], y=rows, orientation="h",
                           marker_color=["#d62728" if scores[i] >= 0 else "#1f77b4" for i in keep],
                           hovertemplate="%{y}: %{x:+.4f}<extra></extra>"))
    fig.update_layout(title=f"plot words for {esc(genre)}: the {len(keep)} strongest of {len(scores)}",
                      xaxis={"title": "attribution (Integrated Gradients)", "zeroline": True},
                      yaxis={"autorange": "reversed"}, height=max(300, 22 * len(keep) + 140),
                      margin=dict(t=60))
    return fig


def tables_figure(title: str, tables: Sequence[tuple[Sequence[str], Sequence[Sequence[object]]]]) -> go.Figure:
    """Plotly tables stacked on one page: each ``(header, rows)``, every cell escaped."""
    rows_per = [len(rows) + 1 for _, rows in tables]
    fig = make_subplots(rows=len(tables), cols=1, specs=[[{"type": "table"}] for _ in tables],
                        row_heights=[n / sum(rows_per) for n in rows_per], vertical_spacing=0.04)
    for k, (header, rows) in enumerate(tables):
        columns = [[esc(r[j]) for r in rows] for j in range(len(header))]
        fig.add_trace(go.Table(header={"values": [f"<b>{esc(h)}</b>" for h in header], "align": "left",
                                       "height": 30},
                               cells={"values": columns, "align": "left", "height": 26}), row=k + 1, col=1)
    # Header cells wrap onto two lines: 40 px a header, 30 a row, plus the title.
    fig.update_layout(title=esc(title), width=1000, height=sum(40 + 30 * (n - 1) for n in rows_per) + 140,
                      margin=dict(t=70, l=30, r=30, b=20))
    return fig
