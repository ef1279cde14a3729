"""Pictures of an explanation: heat-map overlays, highlighted words, plotly figures.

Only numpy, PIL and plotly (no UI framework), so the CLI export, the dashboards and the tests all
draw the same pictures. Every piece of user text (plot words, genre names, object labels) is
HTML-escaped before it reaches HTML or a plotly hover/label (plotly renders a subset of HTML in
labels, so a plot containing ``<script>`` must not get through unescaped).
"""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError

# Colormaps as (position, RGB) stops; linear interpolation between stops (matplotlib-like).
_COLORMAPS: dict[str, list[tuple[float, tuple[int, int, int]]]] = {
    "jet": [(0.0, (0, 0, 128)), (0.125, (0, 0, 255)), (0.375, (0, 255, 255)), (0.625, (255, 255, 0)),
            (0.875, (255, 0, 0)), (1.0, (128, 0, 0))],
    "inferno": [(0.0, (0, 0, 4)), (0.25, (87, 16, 110)), (0.5, (188, 55, 84)), (0.75, (249, 142, 9)),
                (1.0, (252, 255, 164))],
    "gray": [(0.0, (0, 0, 0)), (1.0, (255, 255, 255))],
}
_OBJECT_COLOURS = ((255, 64, 64), (64, 160, 255), (80, 220, 80), (255, 200, 0), (200, 80, 255))


def esc(text: object) -> str:
    """HTML-escaped ``str(text)`` (quotes included, so it is safe inside attributes too)."""
    return html.escape(str(text), quote=True)


def as_rgb_array(image: np.ndarray | Image.Image, what: str = "poster") -> np.ndarray:
    """(H, W, 3) uint8 RGB from a PIL image or an array (grey or RGBA arrays are converted)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what}: expected an (H, W, 3) image, got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(arr.dtype, np.floating) and arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[:, :, :3])


def apply_colormap(values: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Map values in [0, 1] to (…, 3) uint8 RGB."""
    if colormap not in _COLORMAPS:
        raise InputError(f"colormap must be one of {sorted(_COLORMAPS)}, got {colormap!r}")
    stops = _COLORMAPS[colormap]
    xs = np.array([s for s, _ in stops])
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0)
    rgb = [np.interp(v, xs, [c[k] for _, c in stops]) for k in range(3)]
    return np.stack(rgb, axis=-1).astype(np.uint8)


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to ``size`` = (H, W)."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape == tuple(size):
        return values
    img = Image.fromarray(values, mode="F").resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def overlay_heatmap(poster: np.ndarray | Image.Image, cam: np.ndarray, alpha: float = 0.45,
                    colormap: str = "jet") -> Image.Image:
    """The poster with ``cam`` (values in [0, 1]; resized to the poster if needed) blended on top."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    rgb = as_rgb_array(poster)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise InputError(f"cam: expected a 2-D map, got shape {cam.shape}")
    heat = apply_colormap(resize_map(cam, rgb.shape[:2]), colormap).astype(np.float32)
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heat
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _word_style(score: float, top: float) -> str:
    """Background colour: red for positive, blue for negative, opacity by |score| / max|score|."""
    strength = 0.0 if top <= 0 or not np.isfinite(score) else min(1.0, abs(score) / top)
    colour = "220,40,40" if score >= 0 else "40,90,220"
    return f"background-color: rgba({colour},{strength * 0.85:.3f}); border-radius: 3px; padding: 0 1px"


def highlight_words_html(words: Sequence[str], scores: Sequence[float] | np.ndarray,
                         genre: str | None = None) -> str:
    """An HTML fragment: each word on a red (supports the genre) / blue (against it) background.

    Every word (and the genre) is escaped; each span has a ``title`` with the word's score.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(words) != len(scores):
        raise InputError(f"highlight_words_html: {len(words)} words but {len(scores)} scores")
    finite = scores[np.isfinite(scores)]
    top = float(np.abs(finite).max()) if finite.size else 0.0
    spans = [f'<span class="w" style="{_word_style(float(s), top)}" title="{esc(f"{s:+.4f}")}">{esc(w)}</span>'
             for w, s in zip(words, scores)]
    head = f'<div class="genre">{esc(genre)}</div>' if genre is not None else ""
    return f'<div class="words">{head}<p style="line-height: 1.9">{" ".join(spans)}</p></div>'


def html_page(title: str, body: str) -> str:
    """A standalone HTML page; ``title`` is escaped, ``body`` must already be safe HTML."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;}"
            ".genre{font-weight:bold;margin-top:1em}</style></head>"
            f"<body><h1>{esc(title)}</h1>\n{body}\n</body></html>\n")


def region_labels(grid: tuple[int, int]) -> list[str]:
    """Row-major region names "r{row}c{col}" of an (h, w) grid."""
    h, w = int(grid[0]), int(grid[1])
    return [f"r{r}c{c}" for r in range(h) for c in range(w)]


def cross_attention_figure(words: Sequence[str], grid: tuple[int, int], matrix: np.ndarray,
                           title: str = "cross-attention") -> go.Figure:
    """Heat map of a (n_words, R) attention matrix; hover shows word, region and weight.

    A matrix of shape (R, n_words) (image-to-text) is transposed so words are always the rows.
    """
    labels = region_labels(grid)
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim != 2:
        raise InputError(f"cross_attention_figure: matrix must be 2-D, got shape {m.shape}")
    if m.shape == (len(labels), len(words)) and m.shape != (len(words), len(labels)):
        m = m.T
    if m.shape != (len(words), len(labels)):
        raise InputError(f"cross_attention_figure: matrix shape {m.shape} does not match "
                         f"{len(words)} words x {len(labels)} regions")
    safe_words = [esc(w) for w in words]
    # Word rows are labelled "i: word" so repeated words stay distinct rows.
    rows = [f"{i}: {w}" for i, w in enumerate(safe_words)]
    hover = [[f"word: {w}<br>region: {r}<br>weight: {m[i, j]:.4f}" for j, r in enumerate(labels)]
             for i, w in enumerate(safe_words)]
    fig = go.Figure(go.Heatmap(z=m, x=labels, y=rows, text=hover, hoverinfo="text", colorscale="Viridis",
                               colorbar={"title": "weight"}))
    fig.update_layout(title=esc(title), xaxis_title="poster region", yaxis_title="plot word",
                      yaxis={"autorange": "reversed"}, height=max(300, 18 * len(words) + 150))
    return fig


def modality_figure(modality: Mapping) -> go.Figure:
    """Bars: the model's modality shares (gate or weights) and, per genre, the probability drop
    when the poster or the plot is removed (ablation)."""
    fig = go.Figure()
    shares: dict[str, float] = {}
    if modality.get("gate_text_share") is not None:
        t = float(modality["gate_text_share"])
        shares = {"text": t, "image": 1.0 - t}
    elif modality.get("weights"):
        shares = {str(k): float(v) for k, v in modality["weights"].items()}
    if shares:
        names = [esc(k) for k in shares]
        fig.add_bar(x=names, y=list(shares.values()), name="model share", xaxis="x", yaxis="y",
                    hovertemplate="%{x}: %{y:.3f}<extra>share</extra>")
    ablation = modality.get("ablation") or {}
    genres = [esc(g) for g in ablation]
    for key, label in (("without_poster", "drop without poster"), ("without_plot", "drop without plot")):
        drops = [float(a["p"]) - float(a[key]) for a in ablation.values()]
        fig.add_bar(x=genres, y=drops, name=label, xaxis="x2", yaxis="y2",
                    hovertemplate="%{x}: %{y:+.3f}<extra>" + label + "</extra>")
    fig.update_layout(
        title="modality use", barmode="group",
        xaxis={"domain": [0.0, 0.3], "title": "modality"}, yaxis={"title": "share", "range": [0, 1]},
        xaxis2={"domain": [0.4, 1.0], "title": "genre", "anchor": "y2"},
        yaxis2={"title": "probability drop", "anchor": "x2"}, legend={"orientation": "h", "y": -0.25})
    if not shares:  # no share panel: the drops take the whole width
        fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, xaxis2={"domain": [0.0, 1.0]})
    return fig


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_objects(poster: np.ndarray | Image.Image, objects: Sequence[Mapping]) -> Image.Image:
    """The poster with each detection's box and "label score" drawn on it."""
    img = Image.fromarray(as_rgb_array(poster))
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 150))
    font = _font(max(10, round(min(img.size) / 25)))
    labels = sorted({str(o["label"]) for o in objects})
    for obj in objects:
        x0, y0, x1, y1 = (float(v) for v in obj["box"])
        colour = _OBJECT_COLOURS[labels.index(str(obj["label"])) % len(_OBJECT_COLOURS)]
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        text = f"{obj['label']} {float(obj.get('score', 1.0)):.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), text, font=font)
        ty = y0 - (ty1 - ty0) - 2 if y0 - (ty1 - ty0) - 2 >= 0 else y0
        draw.rectangle((x0, ty, x0 + tx1 - tx0 + 4, ty + ty1 - ty0 + 2), fill=colour)
        draw.text((x0 + 2, ty - (ty0 - y0)), text, fill=(0, 0, 0), font=font)
    return img


def probabilities_figure(probabilities: Mapping[str, float], thresholds: Mapping[str, float] | Sequence[float] | None,
                         predicted: Sequence[str]) -> go.Figure:
    """Horizontal bars of every genre's probability (predicted ones highlighted) with its threshold."""
    genres = sorted(probabilities, key=lambda g: -float(probabilities[g]))
    if thresholds is not None and not isinstance(thresholds, Mapping):
        from .genres import GENRES
        thresholds = dict(zip(GENRES, (float(t) for t in thresholds)))
    pred = set(predicted)
    safe = [esc(g) for g in genres]
    fig = go.Figure(go.Bar(
        x=[float(probabilities[g]) for g in genres], y=safe, orientation="h",
        marker_color=["#d62728" if g in pred else "#7f7f7f" for g in genres],
        hovertemplate="%{y}: %{x:.3f}<extra></extra>", name="probability"))
    if thresholds:
        fig.add_scatter(x=[float(thresholds.get(g, np.nan)) for g in genres], y=safe, mode="markers",
                        marker={"symbol": "line-ns-open", "size": 14, "color": "black"}, name="threshold",
                        hovertemplate="%{y} threshold: %{x:.3f}<extra></extra>")
    fig.update_layout(title="genre probabilities", xaxis={"range": [0, 1], "title": "probability"},
                      yaxis={"autorange": "reversed"}, height=max(300, 22 * len(genres) + 120))
    return fig
