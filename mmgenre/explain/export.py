"""Write one explanation to a folder: pictures, standalone HTML pages and a JSON record.

    out/poster.png                 the poster as the model read it (upright RGB)
    out/gradcam_<genre>.png        Grad-CAM overlay per explained genre
    out/objects.png                detector boxes
    out/plot.html                  the plot with words highlighted, one section per genre
    out/cross_attention.html       plotly heat maps (cross_attention model only)
    out/explanation.json           Explanation.to_dict() + the list of files written
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from mmgenre.atomic import write_text
from mmgenre.errors import InputError
from mmgenre.explain import Explanation, explain_prediction
from mmgenre.inputs import prepare_inputs
from mmgenre.viz import (cross_attention_figure, draw_objects, highlight_words_html, html_page,
                         overlay_heatmap)


def _safe_name(genre: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", genre)


def plot_page(exp: Explanation) -> str:
    """Standalone HTML: the highlighted plot once per explained genre."""
    if not exp.words:
        body = "<p>The model read no plot for this prediction.</p>"
    else:
        sections = []
        for g in exp.genres:
            if g not in exp.token_scores:
                continue
            label = f"{g}  (p = {exp.probabilities.get(g, float('nan')):.3f}, IG delta = {exp.ig_delta.get(g, 0.0):+.2e})"
            sections.append(f"<section>{highlight_words_html(exp.words, exp.token_scores[g], genre=label)}</section>")
        legend = ("<p>Red words push the genre's score up, blue words push it down; the stronger the colour, "
                  "the larger the attribution. Hover over a word for its score.</p>")
        body = legend + "\n".join(sections)
    return html_page(f"Word attributions: {exp.model}", body)  # html_page escapes the title


def cross_attention_page(exp: Explanation) -> str | None:
    """Standalone HTML with the head-averaged text-to-image and image-to-text maps (plotly.js inlined)."""
    ca = exp.cross_attention
    if not ca or not ca["words"]:
        return None
    figs = [cross_attention_figure(ca["words"], ca["grid"], ca["text_to_image_mean"],
                                   "plot words attending to poster regions (mean over heads)"),
            cross_attention_figure(ca["words"], ca["grid"], ca["image_to_text_mean"],
                                   "poster regions attending to plot words (mean over heads)")]
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figs)]
    return html_page(f"Cross-attention: {exp.model}", "\n".join(parts))


def write_explanation(exp: Explanation, out: Path) -> list[str]:
    """Write ``exp``'s files into ``out`` (created); returns the file names written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    if exp.poster is not None:
        from PIL import Image
        Image.fromarray(exp.poster).save(out / "poster.png")
        files.append("poster.png")
        for g, cam in exp.poster_cam.items():
            name = f"gradcam_{_safe_name(g)}.png"
            overlay_heatmap(exp.poster, cam).save(out / name)
            files.append(name)
        draw_objects(exp.poster, exp.objects).save(out / "objects.png")
        files.append("objects.png")
    write_text(out / "plot.html", plot_page(exp))
    files.append("plot.html")
    page = cross_attention_page(exp)
    if page is not None:
        write_text(out / "cross_attention.html", page)
        files.append("cross_attention.html")
    record = exp.to_dict()
    record["files"] = files + ["explanation.json"]
    write_text(out / "explanation.json", json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    files.append("explanation.json")
    return files


def export_explanation(predictor, poster=None, plot=None, genres=None, out: Path | str = "explanation",
                       **kwargs) -> dict:
    """Explain one movie with ``predictor`` and write the files into ``out``; returns a summary."""
    inputs = prepare_inputs(poster, plot)
    exp = explain_prediction(predictor, inputs, genres=genres, **kwargs)
    files = write_explanation(exp, Path(out))
    return {"model": exp.model, "out": str(out), "files": files, "genres": exp.genres,
            "predicted": exp.predicted,
            "probabilities": {g: round(exp.probabilities[g], 4) for g in exp.genres},
            "faithfulness": json.loads(json.dumps(exp.to_dict()["faithfulness"])),
            "timings": {k: round(v, 3) for k, v in exp.timings.items()}}
