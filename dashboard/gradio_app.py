"""Gradio demo: poster and/or plot in, genre probabilities, Grad-CAM overlay and highlighted
plot out. ``python -m dashboard.gradio_app [--port 7861]`` runs it alone (also the ``app_file``
of an ``sdk: gradio`` Hugging Face Space); ``python -m dashboard.serve`` mounts it at /gradio/.
A second tab, What-if (``dashboard.gradio_whatif``), edits the inputs and shows every genre's
probability before and after.

Models are reached only through ``mmgenre.predict.Predictor``; uploads are read once by
``mmgenre.poster.load_poster`` (size / format / decompression-bomb checks, bounded size) from
Gradio's temp folder and never written anywhere else.

Hostile load: the queue is bounded (``QUEUE_SIZE`` waiting, then "busy, retry"), REST routes that
would skip it are closed, each request's explanation has a time budget (``EXPLAIN_BUDGET_S``;
the probabilities come first, a late explanation skips its optional parts and says so), and
error messages name the file as the visitor named it, never a server path.
"""
from __future__ import annotations

import argparse
import functools
import html
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # `python dashboard/gradio_app.py` (a Space's app_file) puts only dashboard/ there
    sys.path.insert(0, _ROOT)

import gradio as gr  # noqa: E402

from dashboard import core, views  # noqa: E402
from dashboard.gradio_store import ExampleSet, load_examples, stored_explanation  # noqa: E402
from dashboard.core import CHECKPOINTS_ENV_VAR, default_checkpoints, preferred_model  # noqa: E402
from dashboard.memory import Releaser  # noqa: E402
from dashboard.messages import display_name, public_message  # noqa: E402
from mmgenre import analysis as A  # noqa: E402
from mmgenre.budget import Deadline  # noqa: E402
from mmgenre.data import DATA_ENV_VAR, MAX_UPLOAD_BYTES  # noqa: E402
from mmgenre.errors import EncoderUnavailableError, InputError  # noqa: E402
from mmgenre.genres import GENRES  # noqa: E402
from mmgenre.poster import load_poster  # noqa: E402

TOP_GENRE = "(top predicted genre)"
N_EXAMPLES = 6
EXAMPLE_PLOT_CHARS = 700
MAX_PLOT_INPUT = 20_000
BUDGET_ENV_VAR = core.EXPLAIN_BUDGET_ENV_VAR
# A normal explanation takes about a second on a laptop CPU; past the budget (time in the queue
# for the model lock included) the optional parts are skipped, so a burst drains quickly.
EXPLAIN_BUDGET_S = 8.0
QUEUE_SIZE = 16      # requests waiting beyond the running ones; then "busy, retry"
# Requests in progress at once. The models still run one stage at a time, but the lock goes to the
# request that has had the least model time (mmgenre.scheduling), so a request that arrives behind
# long ones gets its probabilities and explanation without waiting for all of theirs.
CONCURRENCY = 4


# Checkpoints folder, cached predictors and the preferred model: dashboard.core's (shared with
# the Streamlit pages). A module-level name, so tests can replace the loader.
load_predictor = core.predictor


def examples_from_data(data_dir: str | Path | None, n: int = N_EXAMPLES) -> list[list]:
    """[poster image, plot excerpt] of the first ``n`` test movies that have both (or [])."""
    return example_set(data_dir, n).rows


def example_set(data_dir: str | Path | None, n: int = N_EXAMPLES) -> ExampleSet:
    """The example movies (``dashboard.gradio_store``): their rows and which dataset movie each is."""
    if not data_dir and not core.default_data():
        return ExampleSet()
    return load_examples(data_dir, n, EXAMPLE_PLOT_CHARS)


class Upload(str):
    """The server path of an uploaded file that remembers the name the visitor gave it."""

    orig_name: str | None

    def __new__(cls, path: str, orig_name: str | None = None) -> "Upload":
        self = super().__new__(cls, path)
        self.orig_name = orig_name
        return self


class PosterInput(gr.Image):
    """``gr.Image`` that hands the uploaded file to mmgenre undecoded, as an :class:`Upload`.

    Plain ``gr.Image`` opens every upload with PIL before the handler runs, so a zero-byte or
    non-image upload got Gradio's generic "error" instead of mmgenre's message naming the problem;
    ``mmgenre.poster.load_poster`` does the decoding (and its checks) instead.
    """

    def get_block_name(self) -> str:
        return "image"  # the same front-end component as gr.Image

    def preprocess(self, payload):
        return None if payload is None else Upload(payload.path, payload.orig_name)


def _error(exc: Exception) -> gr.Error:
    # Plain text (API clients get it verbatim) without server paths; the toast that renders it as
    # HTML sanitises it, and the one visitor-supplied part, the file name, carries no markup.
    return gr.Error(public_message(exc))


def poster_name(poster: str | None) -> str:
    """How messages name an uploaded poster: the visitor's file name, else "the poster"."""
    return display_name(getattr(poster, "orig_name", None) or (os.path.basename(poster) if poster else None))


@functools.lru_cache(maxsize=1)
def _releaser() -> Releaser:
    return Releaser()


def explain_budget() -> float:
    """Seconds per request for its explanation: ``$MMGENRE_EXPLAIN_BUDGET_S`` or the default."""
    raw = os.environ.get(BUDGET_ENV_VAR, "").strip()
    try:
        value = float(raw) if raw else EXPLAIN_BUDGET_S
    except ValueError:
        value = EXPLAIN_BUDGET_S
    return value if value > 0 else EXPLAIN_BUDGET_S


def _notes_html(notes: list[str]) -> str:
    return "".join(f"<p>{html.escape(n, quote=False)}</p>" for n in notes)


def predict(poster: str | None, plot: str | None, model: str | None, genre: str | None,
            checkpoints: Path, *, budget: float | None = None, text_method: str = "fast",
            examples: ExampleSet | None = None, example_id: str | None = None) -> Iterator[tuple[dict, object, str, str]]:
    """Gradio handler, a generator: first the probabilities (fast), then the explanation.

    Yields (probabilities, Grad-CAM overlay or None, highlighted plot HTML, notes HTML). The
    poster is decoded once, at a bounded size; the explanation gets ``budget`` seconds from the
    start of the request (default :func:`explain_budget`). ``text_method``: "fast" or "deep"
    plot attributions. ``example_id``: the dataset example (of ``examples``) the inputs still
    are; its explanation comes from the checkpoint's store when that holds a valid one (one
    update, no model call).
    """
    budget = explain_budget() if budget is None else budget
    deadline = Deadline(budget)
    try:
        if not model:
            raise InputError(f"no trained model found in {checkpoints}: train one with "
                             "`python -m train --data $MMGENRE_DATA --models all --out checkpoints/`")
        if plot and len(plot) > MAX_PLOT_INPUT:
            raise InputError(f"plot: {len(plot):,} characters is too long (limit {MAX_PLOT_INPUT:,})")
        p = load_predictor(checkpoints, model)
        store_note = None
        if examples is not None and example_id:
            stored, store_note = _from_store(examples, example_id, checkpoints, model, plot, genre, text_method)
            if stored is not None:
                yield stored
                return
        image = None if poster is None else load_poster(poster, name=poster_name(poster))
        result = p.predict(poster=image, plot=plot)
    except (InputError, EncoderUnavailableError) as exc:
        raise _error(exc) from None
    try:
        yield from _explained(p, result, image, plot, genre, deadline, budget, text_method, store_note)
    finally:
        del image
        _releaser().after_request()


def _target(result: dict, genre: str | None) -> str:
    if genre and genre != TOP_GENRE:
        return genre
    return result["predicted"][0] if result["predicted"] else next(iter(result["probabilities"]))


def _head_notes(result: dict, target: str, image) -> list[str]:
    notes = [f"Model: {result['model']}. Predicted (tuned thresholds): "
             f"{', '.join(result['predicted']) or 'none'}. Explained genre: {target}."]
    used = [k for k, v in result["used"].items() if v]
    notes.append(f"Inputs used: {', '.join(used) or 'none'}.")
    if image is not None and not result["used"]["poster"]:
        notes.append(f"{result['model']} does not read posters: choose a fusion model for Grad-CAM.")
    return notes


def _outputs(expl, target: str, plot: str | None, notes: list[str]) -> tuple[object, str, list[str]]:
    """(overlay, words HTML, notes + the explanation's own) of an explanation of ``target``."""
    overlay = views.cam_overlay(expl, target)
    words = views.words_html(expl, target)
    if words is None:
        why = "No plot was given." if not (plot or "").strip() else "This model does not read the plot."
        words = f"<p><em>{why}</em></p>"
    notes = list(notes)
    for text in (views.method_text(expl), views.deletion_text(expl, target), views.completeness_text(expl, target),
                 views.modality_text(expl)):
        if text:
            notes.append(text)
    return overlay, words, notes


def _from_store(examples: ExampleSet, example_id: str, checkpoints: Path, model: str, plot: str | None,
                genre: str | None, text_method: str) -> tuple[tuple | None, str | None]:
    """(the one update of an unchanged example explained from the store, or None; a note on the
    store when it was not used)."""
    wanted = [genre] if genre and genre != TOP_GENRE else None
    found = stored_explanation(examples, example_id, Path(checkpoints), model, plot, wanted, text_method)
    expl = found.explanation
    if expl is None:
        return None, found.note
    mods = core.model_modalities(model)
    result = {"model": expl.model, "probabilities": expl.probabilities, "predicted": expl.predicted,
              "used": {"poster": expl.poster is not None and bool(mods & {"image", "detector"}),
                       "plot": bool(expl.words) or ("text" in mods and bool(plot))}}
    target = _target(result, genre)
    if target not in expl.genres:
        return None, f"The explanation store does not explain {target} for this movie: computed live."
    overlay, words, notes = _outputs(expl, target, plot, _head_notes(result, target, None))
    notes.append("Precomputed in the explanation store for this dataset movie (its full-size poster and whole "
                 f"plot; explaining it took {expl.timings.get('total', 0.0):.1f} s when the store was written).")
    return (expl.probabilities, overlay, words, _notes_html(notes)), None


def _explained(p, result: dict, image, plot: str | None, genre: str | None, deadline: Deadline,
               budget: float, text_method: str = "fast", store_note: str | None = None
               ) -> Iterator[tuple[dict, object, str, str]]:
    target = _target(result, genre)
    notes = _head_notes(result, target, image)
    yield (result["probabilities"], None, "<p><em>Explaining the prediction ...</em></p>",
           _notes_html(notes))
    try:
        expl = p.explain(poster=image, plot=plot, genres=[target], deadline=deadline, text_method=text_method)
    except (InputError, EncoderUnavailableError) as exc:
        raise _error(exc) from None
    overlay, words, notes = _outputs(expl, target, plot, notes)
    notes.append(f"Explained in {expl.timings.get('total', 0.0):.1f} s.")
    if store_note:
        notes.append(store_note)
    if expl.cut_short:
        notes.append(cut_short_note(expl.cut_short, budget))
    yield result["probabilities"], overlay, words, _notes_html(notes)


def cut_short_note(skipped: list[str], budget: float) -> str:
    """The note shown when an explanation ran out of its time budget."""
    return (f"Explanation cut short: the {budget:g} s budget per request ran out, so these parts "
            f"were skipped: {', '.join(skipped)}. Try again when the demo is less busy.")


def build_demo(checkpoints_dir: str | Path | None = None, data_dir: str | Path | None = None, *,
               queue_size: int = QUEUE_SIZE, concurrency: int = CONCURRENCY) -> gr.Blocks:
    """The Blocks app (queue configured: ``concurrency`` running, ``queue_size`` waiting, then
    "queue is full, try again"); launch it with :func:`launch_kwargs`."""
    checkpoints = Path(checkpoints_dir) if checkpoints_dir else default_checkpoints()
    models = A.available_checkpoints(checkpoints)
    with gr.Blocks(title="mmgenre: movie genres from poster and plot", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## mmgenre: movie genres from a poster and a plot\n"
                    "Upload a poster, type a plot, or both; choose a trained model. The heat map "
                    "shows the poster regions that raised the chosen genre (Grad-CAM); red plot "
                    "words pushed it up, blue ones down (Integrated Gradients).")
        if not models:
            gr.Markdown(f"**No trained checkpoints found** in `{html.escape(str(checkpoints))}`. "
                        "Train some with `python -m train --data $MMGENRE_DATA --models all "
                        "--out checkpoints/` or set `MMGENRE_CHECKPOINTS`.")
        with gr.Tab("Predict"):
            with gr.Row():
                with gr.Column(scale=1):
                    poster = PosterInput(type="filepath", image_mode=None, label="Poster", sources=["upload"],
                                      height=360)
                    plot = gr.Textbox(label="Plot", lines=6, max_lines=14, max_length=MAX_PLOT_INPUT,
                                      placeholder="A retired detective is drawn back for one last case ...")
                    model = gr.Dropdown(models, value=preferred_model(models, checkpoints), label="Model",
                                        interactive=True)
                    genre = gr.Dropdown([TOP_GENRE, *GENRES], value=TOP_GENRE, label="Explain genre")
                    exact = gr.Checkbox(False, label="Exact plot attributions (deep IG at the word embeddings; "
                                                     "slower than the default, IG at the text encoder's output)")
                    button = gr.Button("Predict", variant="primary")
                with gr.Column(scale=1):
                    label = gr.Label(num_top_classes=8, label="Genre probabilities")
                    overlay = gr.Image(label="Grad-CAM on the poster", type="pil", interactive=False,
                                       height=360)
                    words = gr.HTML(label="Plot words")
                    notes = gr.HTML(label="Notes")
            examples = example_set(data_dir)
            # Session state, not API inputs: which dataset example the inputs still are (cleared by
            # any edit; its explanation may come from the store), and the exact-method checkbox.
            chosen, deep = gr.State(None), gr.State(False)
            if examples.movies:
                ex = gr.Examples(examples.rows, inputs=[poster, plot], label="Test movies from MM-IMDb")
                ids = [m.imdb_id for m in examples.movies]
                ex.dataset.click(lambda sel: ids[sel[0]] if sel and 0 <= sel[0] < len(ids) else None,
                                 inputs=[ex.dataset], outputs=[chosen], queue=False, api_visibility="private")
                for edited in (plot.input, poster.upload, poster.clear):
                    edited(lambda: None, None, chosen, queue=False, api_visibility="private")
            exact.change(bool, exact, deep, queue=False, api_visibility="private")

        def handler(poster_path, plot_text, model_name, genre_name, example_id=None, exact_method=False):
            yield from predict(poster_path, plot_text, model_name, genre_name, checkpoints,
                               text_method="deep" if exact_method else "fast", examples=examples,
                               example_id=example_id)

        button.click(handler, inputs=[poster, plot, model, genre, chosen, deep], outputs=[label, overlay, words, notes],
                     api_name="predict", concurrency_limit=concurrency)
        with gr.Tab("What-if"):
            from dashboard.gradio_whatif import build_tab  # late: it imports this module
            build_tab(checkpoints, models, concurrency)
    # api_open=False: the REST routes (/run/predict) would run the handler beside the queue,
    # outside its size and concurrency limits; clients go through the queue (gradio_client does).
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size, api_open=False)
    return demo


def launch_kwargs(**overrides) -> dict:
    """Launch options shared by main(), serve and the tests: an upload size cap and no share link."""
    # show_error=False: unexpected exceptions are not echoed to visitors (gr.Error messages are).
    return {"max_file_size": MAX_UPLOAD_BYTES, "share": False, "show_error": False,
            "footer_links": ["api"], **overrides}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dashboard.gradio_app", description=__doc__.split("\n")[0])
    p.add_argument("--host", default=None, help="default $GRADIO_SERVER_NAME or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default $GRADIO_SERVER_PORT or 7860")
    p.add_argument("--root-path", default=None, help="URL prefix when behind a proxy, e.g. /gradio")
    p.add_argument("--checkpoints", default=None, help=f"default ${CHECKPOINTS_ENV_VAR} or ./checkpoints")
    p.add_argument("--data", default=None, help=f"MM-IMDb folder for examples (default ${DATA_ENV_VAR})")
    args = p.parse_args(argv)
    # Uploads go to a private temp folder unless the caller chose one.
    os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="mmgenre-gradio-"))
    demo = build_demo(args.checkpoints, args.data)
    demo.launch(**launch_kwargs(server_name=args.host, server_port=args.port, root_path=args.root_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
