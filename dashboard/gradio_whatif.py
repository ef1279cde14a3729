"""The Gradio demo's "What-if" tab: a poster and/or plot as in the Predict tab, plus the edits
typed in boxes (grid cells to grey, words to delete or replace, a modality to drop); shows every
genre's probability before and after, the edited poster with its Grad-CAM and the edited words.

The edits, predictions and explanations are ``mmgenre.explain.whatif``'s; the uploaded poster is
read once by ``mmgenre.poster.load_poster`` like the Predict tab's, within the same time budget.
"""
from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from dashboard import core, views
from dashboard.gradio_app import (MAX_PLOT_INPUT, TOP_GENRE, PosterInput, _error, _notes_html, _releaser,
                                  explain_budget, poster_name)
from mmgenre.budget import Deadline
from mmgenre.errors import EncoderUnavailableError, InputError
from mmgenre.explain.whatif import FILLS, Edit, plot_words, what_if
from mmgenre.explain.whatif_text import parse_positions, parse_replacements
from mmgenre.genres import GENRES
from mmgenre.poster import load_poster
from mmgenre.viz_whatif import grid_image, paired_probabilities_figure

DROP_CHOICES = ["nothing", "poster", "plot"]
GRID_SIDES = [2, 3, 4, 6, 8]
N_TOP_CHANGES = 5

# A module-level name, so tests can replace the loader (as in dashboard.gradio_app).
load_predictor = core.predictor


def whatif(poster, plot: str | None, model: str | None, genre: str | None, grid_side: int | None,
           cells: str | None, delete: str | None, replace: str | None, drop: str | None,
           checkpoints: Path, *, budget: float | None = None, fill: str | None = "grey") -> tuple:
    """Gradio handler: (probabilities figure, edited poster with its Grad-CAM or None, numbered grid
    of the poster or None, edited plot HTML, notes HTML)."""
    deadline = Deadline(explain_budget() if budget is None else budget)
    image = None
    try:
        if not model:
            raise InputError(f"no trained model found in {checkpoints}")
        if plot and len(plot) > MAX_PLOT_INPUT:
            raise InputError(f"plot: {len(plot):,} characters is too long (limit {MAX_PLOT_INPUT:,})")
        side = int(grid_side or 4)
        p = load_predictor(checkpoints, model)
        image = None if poster is None else load_poster(poster, name=poster_name(poster))
        edit = Edit(grid=(side, side), grey_cells=tuple(parse_positions(cells)),
                    delete_words=tuple(parse_positions(delete, words=plot_words(plot))),
                    replace_words=parse_replacements(replace), drop=None if drop in (None, "nothing") else drop,
                    fill=fill or "grey")
        result = what_if(p, image, plot, edit, explain=False)
        target = genre if genre and genre != TOP_GENRE else (
            result.original["predicted"] or list(result.original["probabilities"]))[0]
        expl = None
        if result.edited is not None:
            # faithfulness figures are not shown here: skipped, like everything a budget would cut
            expl = p.explain(poster=result.poster, plot=result.plot, genres=[target], deadline=deadline,
                             faithfulness=False)
    except (InputError, EncoderUnavailableError) as exc:
        raise _error(exc) from None
    finally:
        _releaser().after_request()
    edited = None if result.edited is None else result.edited["probabilities"]
    fig = paired_probabilities_figure(result.original["probabilities"], edited)
    shown = None
    if result.poster is not None:
        shown = (views.cam_overlay(expl, target) if expl is not None else None) or result.poster
    grid = None if image is None else grid_image(image, (side, side), edit.grey_cells)
    words = views.words_html(expl, target) if expl is not None else None
    if words is None:
        words = f"<p>{html.escape(result.plot) or '<em>(no plot)</em>'}</p>"
    notes = [f"Model: {result.model}. Edits: {'; '.join(result.applied) or 'none'}.", *result.notes]
    if result.change is not None:
        top = sorted(result.change.items(), key=lambda kv: -abs(kv[1]))[:N_TOP_CHANGES]
        notes.append("Largest changes: " + ", ".join(f"{g} {d:+.3f}" for g, d in top) + ".")
        notes.append(f"Predicted after the edits: {', '.join(result.edited['predicted']) or 'none'} "
                     f"(before: {', '.join(result.original['predicted']) or 'none'}).")
    if expl is not None and expl.cut_short:
        notes.append("The explanation was cut short by the time budget: " + ", ".join(expl.cut_short) + ".")
    return fig, shown, grid, words, _notes_html(notes)


def build_tab(checkpoints: Path, models: list[str], concurrency: int) -> None:
    """The tab's components and event, inside the caller's ``gr.Tab``."""
    gr.Markdown("Edit a movie and see every genre's probability move. Grid cells are numbered row by "
                "row from the top-left, 0 first (the numbered grid appears after a run); words by their "
                "position in the plot, 0 first, or by the word itself. Greyed cells get a flat grey, or "
                "a blurred copy of the poster (what the Grad-CAM deletion test does).")
    with gr.Row():
        with gr.Column(scale=1):
            poster = PosterInput(type="filepath", image_mode=None, label="Poster", sources=["upload"], height=300)
            plot = gr.Textbox(label="Plot", lines=5, max_lines=12, max_length=MAX_PLOT_INPUT)
            model = gr.Dropdown(models, value=core.preferred_model(models, checkpoints), label="Model")
            genre = gr.Dropdown([TOP_GENRE, *GENRES], value=TOP_GENRE, label="Explain genre")
            with gr.Row():
                side = gr.Dropdown(GRID_SIDES, value=4, label="Grid (cells per side)")
                cells = gr.Textbox(label="Grey out cells", placeholder="0, 5, 9-11", max_length=500)
                fill = gr.Radio(list(FILLS), value="grey", label="Fill of greyed cells")
            delete = gr.Textbox(label="Delete words", placeholder="0, 3-5, detective", max_length=2000)
            replace = gr.Textbox(label="Replace words", placeholder="3=happy; 10=a sad day", max_length=2000)
            drop = gr.Radio(DROP_CHOICES, value="nothing", label="Drop")
            button = gr.Button("Predict original and edited", variant="primary")
        with gr.Column(scale=1):
            chart = gr.Plot(label="Genre probabilities: original vs edited")
            with gr.Row():
                edited = gr.Image(label="Edited poster (Grad-CAM)", type="pil", interactive=False, height=300)
                grid = gr.Image(label="Poster grid", type="pil", interactive=False, height=300)
            words = gr.HTML(label="Edited plot")
            notes = gr.HTML(label="Notes")

    def handler(*args):
        *fields, fill_choice = args
        return whatif(*fields, checkpoints, fill=fill_choice)

    button.click(handler, inputs=[poster, plot, model, genre, side, cells, delete, replace, drop, fill],
                 outputs=[chart, edited, grid, words, notes], api_name="whatif", concurrency_limit=concurrency)
