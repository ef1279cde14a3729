"""One movie's explanation as a report for a thesis: a self-contained HTML page and a PDF.

    python -m mmgenre report --checkpoint checkpoints/gmu --data DATA --id IMDB_ID --out reports/

The HTML page needs nothing else: pictures are PNG data URIs and charts static SVG images (data
URIs in ``<img>``, so nothing in them can run), and it has no script at all. The PDF has a
vector page per figure: the summary with the faithfulness figures, the poster and its Grad-CAM
overlays, the word scores of each genre, the genre probabilities and the modality use. Both are
built from an :class:`~mmgenre.explain.Explanation` already computed (the dashboard's Report
button) or from a dataset movie explained here (:func:`report_movie`); every piece of movie text
is escaped.
"""
from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import plotly.graph_objects as go

from mmgenre.atomic import write_bytes, write_text
from mmgenre.errors import InputError
from mmgenre.explain.text_attr import TEXT_METHOD_DESCRIPTIONS
from mmgenre.figure_export import figure_bytes, figures_pdf
from mmgenre.viz import cross_attention_figure, esc, highlight_words_html, html_page, modality_figure, \
    probabilities_figure
from mmgenre.viz_report import png_data_uri, poster_figure, poster_images, tables_figure, word_scores_figure

FAITHFULNESS_HEADER = ("genre", "probability", "deletion: top-20% drop", "random-20% drop", "beats random",
                       "IG completeness |delta|", "relative to the logit change")
_CSS = ("<style>table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
        "text-align:left}figure{display:inline-block;margin:0 .5em .5em 0}img.poster{height:260px}"
        "img.chart{max-width:100%}figcaption{font-size:90%;color:#555}</style>")


def _number(value, fmt: str) -> str:
    return "n/a" if value is None else format(float(value), fmt)


def method_label(exp) -> str:
    """Which plot-attribution method produced the word scores (and its IG steps)."""
    if exp.text_method is None:
        return "no Integrated Gradients word scores"
    steps = f", {exp.text_steps} steps" if exp.text_steps else ""
    return TEXT_METHOD_DESCRIPTIONS.get(exp.text_method, str(exp.text_method)) + steps


def summary_rows(exp, movie=None) -> list[tuple[str, str]]:
    """(field, value) lines describing the movie, the model and the method (plain text)."""
    rows = []
    if movie is not None:
        year = f" ({movie.year})" if movie.year else ""
        rows += [("movie", f"{movie.title or '(untitled)'}{year}"), ("IMDb id", movie.imdb_id),
                 ("split", movie.split or "none"), ("true genres", ", ".join(movie.genres) or "none")]
    rows += [("model", exp.model), ("predicted genres", ", ".join(exp.predicted) or "none"),
             ("explained genres", ", ".join(exp.genres) or "none"), ("plot attributions", method_label(exp))]
    if exp.timings.get("total") is not None:
        rows.append(("explained in", f"{exp.timings['total']:.1f} s"))
    if exp.cut_short:
        rows.append(("cut short (time limit)", ", ".join(exp.cut_short)))
    return rows


def faithfulness_rows(exp) -> list[tuple[str, ...]]:
    """One row per explained genre under :data:`FAITHFULNESS_HEADER` (plain text)."""
    faith = exp.faithfulness or {}
    rows = []
    for g in exp.genres:
        d = faith.get("deletion", {}).get(g) or {}
        c = faith.get("ig_completeness", {}).get(g) or {}
        beats = "n/a" if "beats_random" not in d else ("yes" if d["beats_random"] else "no")
        rows.append((g, _number(exp.probabilities.get(g), ".3f"), _number(d.get("top_drop"), "+.3f"),
                     _number(d.get("random_drop"), "+.3f"), beats, _number(c.get("abs"), ".4f"),
                     "n/a" if c.get("rel") is None else f"{100 * float(c['rel']):.1f}%"))
    return rows


Thresholds = Mapping[str, float] | Sequence[float] | None  # per genre, or in GENRES order


def chart_figures(exp, thresholds: Thresholds = None) -> list[tuple[str, go.Figure]]:
    """(plain-text name, chart) of the report's charts after the poster, in page order."""
    figs = [(f"word scores: {g}", word_scores_figure(exp.words, exp.token_scores[g], g))
            for g in exp.genres if exp.words and g in exp.token_scores]
    figs.append(("genre probabilities", probabilities_figure(exp.probabilities, thresholds, exp.predicted)))
    m = exp.modality or {}
    if m.get("ablation") or m.get("weights") or m.get("gate_text_share") is not None:
        figs.append(("modality use", modality_figure(m)))
    ca = exp.cross_attention
    if ca and ca.get("words"):
        figs.append(("cross-attention", cross_attention_figure(
            ca["words"], ca["grid"], ca["text_to_image_mean"], "text-to-image attention (mean over heads)")))
    return figs


def _table_html(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _svg_img(name: str, fig: go.Figure) -> str:
    uri = "data:image/svg+xml;base64," + base64.b64encode(figure_bytes(fig, "svg")).decode("ascii")
    return f'<img class="chart" alt="{esc(name)}" src="{uri}">'


def report_title(exp, movie=None) -> str:
    name = f"{movie.title or '(untitled)'}" if movie is not None else "one movie"
    return f"Explanation of {name} by {exp.model}"


def report_html(exp, movie=None, thresholds: Thresholds = None) -> str:
    """The self-contained HTML page (no script, no external URL)."""
    parts = [_CSS, "<h2>Summary</h2>", _table_html(("field", "value"), summary_rows(exp, movie))]
    shots = poster_images(exp)
    if shots:
        parts.append("<h2>Poster and Grad-CAM</h2>")
        parts += [f'<figure><img class="poster" alt="{esc(c)}" src="{png_data_uri(img)}">'
                  f"<figcaption>{esc(c)}</figcaption></figure>" for c, img in shots]
    parts += ["<h2>Faithfulness</h2>",
              "<p>Deletion: blurring the 20% of the poster the Grad-CAM ranks highest should lower the "
              "genre's logit more than blurring random regions of the same size. Completeness: the word "
              "scores should add up to the change of the logit from the empty plot to this plot.</p>",
              _table_html(FAITHFULNESS_HEADER, faithfulness_rows(exp))]
    if exp.words:
        parts.append("<h2>Plot words</h2><p>Red words push the genre up, blue words down "
                     f"({esc(method_label(exp))}).</p>")
        parts += [highlight_words_html(exp.words, exp.token_scores[g], genre=g)
                  for g in exp.genres if g in exp.token_scores]
    parts.append("<h2>Charts</h2>")
    parts += [f"<div>{_svg_img(name, f)}</div>" for name, f in chart_figures(exp, thresholds)]
    return html_page(report_title(exp, movie), "\n".join(parts))


def report_pdf(exp, movie=None, thresholds: Thresholds = None) -> bytes:
    """The PDF: a summary page (movie, model, method, faithfulness figures), then a page per chart."""
    title = report_title(exp, movie)
    summary = tables_figure(title, [(("field", "value"), summary_rows(exp, movie)),
                                    (FAITHFULNESS_HEADER, faithfulness_rows(exp))])
    poster = [f for f in [poster_figure(exp)] if f is not None]
    return figures_pdf([summary, *poster, *(f for _, f in chart_figures(exp, thresholds))], title=title)


def file_stem(exp, movie=None) -> str:
    """``<imdb id>_<model>`` (just the model without a movie), safe as a file name."""
    name = f"{movie.imdb_id}_{exp.model}" if movie is not None else str(exp.model)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "report"


def write_report(exp, out: str | Path, movie=None, thresholds: Thresholds = None) -> dict:
    """Draw both files, then write them (atomically) into ``out``; returns their paths."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    html, pdf = report_html(exp, movie, thresholds), report_pdf(exp, movie, thresholds)
    stem = file_stem(exp, movie)
    paths = {"html": out / f"{stem}.html", "pdf": out / f"{stem}.pdf"}
    write_text(paths["html"], html)
    write_bytes(paths["pdf"], pdf)
    return {k: str(p) for k, p in paths.items()}


def report_movie(checkpoint: str | Path, data: str | Path | None, imdb_id: str, out: str | Path, *,
                 genres: Sequence[str] | None = None, text_method: str = "fast") -> dict:
    """Explain dataset movie ``imdb_id`` with ``checkpoint`` and write its report into ``out``.

    Every input is checked before the model is loaded: a missing id, an unknown genre or an
    ``out`` that is a file is an ``InputError`` and nothing is written."""
    from mmgenre.data import MMIMDb, resolve_data_dir
    from mmgenre.genres import GENRES, normalize_genre
    from mmgenre.predict import Predictor
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    for g in genres or ():
        if normalize_genre(g) is None:
            raise InputError(f"--genres: unknown genre {str(g)[:80]!r}; choose from {', '.join(GENRES)}")
    root = resolve_data_dir(data)
    ds = MMIMDb.load(root)
    key = str(imdb_id).strip()
    if key not in ds:
        raise InputError(f"--id {key[:40]!r} is not in the data folder {root}: no movie has this IMDb id")
    movie = ds[key]
    predictor = Predictor.from_checkpoint(checkpoint)
    exp = predictor.explain(poster=movie.poster_path, plot=movie.plot, genres=list(genres) if genres else None,
                            text_method=text_method)
    files = write_report(exp, out, movie, predictor.thresholds)
    return {"model": exp.model, "imdb_id": movie.imdb_id, "genres": exp.genres, "text_method": exp.text_method,
            "files": files, "faithfulness": exp.to_dict()["faithfulness"]}
