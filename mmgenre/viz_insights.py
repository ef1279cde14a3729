"""Charts of the dataset-level views (:mod:`mmgenre.insights`): interactive plotly figures; every
label (model names, genres, plot words) is escaped, like :mod:`mmgenre.viz`."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mmgenre.genres import GENRES
from mmgenre.viz import esc

MEASURES = {"plot_reliance": "plot reliance: |plot drop| / (|plot drop| + |poster drop|)",
            "drop_without_poster": "probability drop without the poster",
            "drop_without_plot": "probability drop without the plot",
            "gate_text_share": "gate: share of the text"}


def _genre_order(genres) -> list[str]:
    present = set(genres)
    return [g for g in GENRES if g in present]


def modality_figure(table: pd.DataFrame, measure: str = "plot_reliance") -> go.Figure:
    """Grouped bars, one group per genre and one bar per model, of ``measure`` (a column of
    ``insights.modality_by_genre``); the hover gives the number of movies averaged."""
    fig = go.Figure()
    order = _genre_order(table["genre"]) if len(table) else []
    for model, df in table.groupby("model", sort=False):
        if measure not in df or df[measure].isna().all():
            continue
        df = df.set_index("genre").reindex(order)
        fig.add_bar(x=[esc(g) for g in order], y=df[measure].to_numpy(dtype=float), name=esc(model),
                    customdata=df["movies"].fillna(0).to_numpy()[:, None],
                    hovertemplate="%{x}: %{y:.3f} (%{customdata[0]} movies)<extra>" + esc(model) + "</extra>")
    fig.update_layout(title=esc(MEASURES.get(measure, measure)), barmode="group", xaxis={"title": "genre"},
                      yaxis={"title": esc(measure), **({"range": [0, 1]} if measure in ("plot_reliance",
                                                                                          "gate_text_share") else {})},
                      legend={"orientation": "h", "y": -0.3}, margin=dict(t=50))
    return fig


def words_figure(words: pd.DataFrame, title: str) -> go.Figure:
    """Horizontal bars of ``sum_positive`` per word (rows of ``insights.top_words`` for one model
    and genre, best first); the hover gives in how many plots it occurs and pushes the genre up."""
    safe = [esc(w) for w in words["word"]]
    fig = go.Figure(go.Bar(x=words["sum_positive"].to_numpy(dtype=float), y=safe, orientation="h",
                           customdata=words[["pushes_up", "movies", "mean_score"]].to_numpy(),
                           hovertemplate="%{y}: %{x:.3f} summed; pushes up in %{customdata[0]} of "
                                         "%{customdata[1]} plots (mean %{customdata[2]:+.3f})<extra></extra>",
                           marker_color="#d62728"))
    fig.update_layout(title=esc(title), yaxis={"autorange": "reversed"}, xaxis={"title": "summed positive attribution"},
                      height=max(300, 24 * len(safe) + 120), margin=dict(t=50))
    return fig


def mean_cams_figure(cams: Mapping[str, tuple[np.ndarray, int]], title: str, cols: int = 6) -> go.Figure:
    """Small multiples: the mean Grad-CAM of each genre (``{genre: (map, n)}``), one colour scale."""
    genres = _genre_order(cams)
    rows = max(1, -(-len(genres) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{esc(g)} ({cams[g][1]})" for g in genres],
                        horizontal_spacing=0.02, vertical_spacing=0.08)
    for i, g in enumerate(genres):
        fig.add_trace(go.Heatmap(z=cams[g][0], coloraxis="coloraxis",
                                 hovertemplate=esc(g) + ": %{z:.3f}<extra></extra>"), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(title=esc(title), coloraxis={"colorscale": "Jet", "cmin": 0, "cmax": 1},
                      height=260 * rows + 80, margin=dict(t=70))
    return fig


def faithfulness_figure(rows: pd.DataFrame) -> go.Figure:
    """Box plots per model: the deletion-vs-random gap (left) and the relative IG completeness
    delta (right, log scale)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Grad-CAM deletion: top drop - random drop",
                                                        "IG completeness delta (relative)"))
    for model, df in rows.groupby("model", sort=False):
        gap, rel = df["gap"].dropna(), df["ig_rel"].dropna()
        if len(gap):
            fig.add_trace(go.Box(y=gap, name=esc(model), legendgroup=esc(model), boxpoints="outliers"), row=1, col=1)
        if len(rel):
            fig.add_trace(go.Box(y=np.maximum(rel, 1e-6), name=esc(model), legendgroup=esc(model),
                                 boxpoints="outliers", showlegend=not len(gap)), row=1, col=2)
    fig.add_hline(y=0, line_dash="dot", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(title="faithfulness per model", margin=dict(t=70), showlegend=False)
    return fig
