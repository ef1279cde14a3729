"""Pictures of a what-if and of two models side by side: paired probability bars, a numbered
poster grid. Only numpy, PIL and plotly, like :mod:`mmgenre.viz`; every label is escaped."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw

from mmgenre.explain.whatif import cell_boxes
from mmgenre.genres import GENRES
from mmgenre.viz import _font, as_rgb_array, esc

PAIR_COLOURS = ("#7f7f7f", "#d62728")   # original, edited
MODEL_COLOURS = ("#1f77b4", "#ff7f0e")  # model A, model B
MIN_GRID_SIDE = 360                     # a small poster is enlarged (for display) so its numbers stay legible


def paired_probabilities_figure(first: Mapping[str, float], second: Mapping[str, float] | None,
                                names: Sequence[str] = ("original", "edited"), *,
                                title: str = "genre probabilities: original vs edited",
                                colours: Sequence[str] = PAIR_COLOURS) -> go.Figure:
    """Grouped horizontal bars of every genre's probability under two conditions (or models),
    the most probable genre (in either) first; the hover gives the change. ``second`` None: one set."""
    genres = [g for g in GENRES if g in first]
    top = {g: max(float(first[g]), float(second[g]) if second else 0.0) for g in genres}
    genres.sort(key=lambda g: -top[g])
    safe = [esc(g) for g in genres]
    fig = go.Figure()
    fig.add_bar(x=[float(first[g]) for g in genres], y=safe, orientation="h", name=esc(names[0]),
                marker_color=colours[0], hovertemplate="%{y}: %{x:.3f}<extra>" + esc(names[0]) + "</extra>")
    if second is not None:
        change = [float(second[g]) - float(first[g]) for g in genres]
        fig.add_bar(x=[float(second[g]) for g in genres], y=safe, orientation="h", name=esc(names[1]),
                    marker_color=colours[1], customdata=np.asarray(change)[:, None],
                    hovertemplate="%{y}: %{x:.3f} (change %{customdata[0]:+.3f})<extra>"
                                  + esc(names[1]) + "</extra>")
    fig.update_layout(title=esc(title), barmode="group", xaxis={"range": [0, 1], "title": "probability"},
                      yaxis={"autorange": "reversed"}, height=max(320, 30 * len(genres) + 120),
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"})
    return fig


def grid_image(poster, grid: tuple[int, int], selected: Sequence[int] = ()) -> Image.Image:
    """The poster with the what-if grid drawn on it, each cell numbered (selected cells shaded);
    a poster whose shorter side is under ``MIN_GRID_SIDE`` pixels is drawn enlarged."""
    img = Image.fromarray(as_rgb_array(poster))
    if min(img.size) < MIN_GRID_SIDE:
        scale = MIN_GRID_SIDE / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    arr = np.array(img)
    boxes = cell_boxes(arr.shape[:2], grid)
    chosen = {int(i) for i in selected}
    for i in chosen:
        if 0 <= i < len(boxes):
            r0, c0, r1, c1 = boxes[i]
            arr[r0:r1, c0:c1] = (0.4 * arr[r0:r1, c0:c1] + 0.6 * 128).astype(np.uint8)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    font = _font(max(10, min(arr.shape[:2]) // (3 * max(grid))))
    for i, (r0, c0, r1, c1) in enumerate(boxes):
        draw.rectangle((c0, r0, c1 - 1, r1 - 1), outline=(255, 255, 255), width=1)
        x, y = c0 + 3, r0 + 2
        tx0, ty0, tx1, ty1 = draw.textbbox((x, y), str(i), font=font)
        draw.rectangle((tx0 - 2, ty0 - 1, tx1 + 2, ty1 + 1), fill=(0, 0, 0))
        draw.text((x, y), str(i), fill=(255, 255, 0) if i in chosen else (255, 255, 255), font=font)
    return img
