"""Gradio demo: poster and/or plot in, genre probabilities, Grad-CAM overlay and highlighted
plot out. ``python -m dashboard.gradio_app [--port 7861]`` runs it alone (also the ``app_file``
of an ``sdk: gradio`` Hugging Face Space); ``python -m dashboard.serve`` mounts it at /gradio/.

Models are reached only through ``mmgenre.predict.Predictor``; uploads are read by
``mmgenre.data.load_poster`` (size / format / decompression-bomb checks) from Gradio's temp
folder and never written anywhere else.
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

from dashboard import views  # noqa: E402
from mmgenre import analysis as A  # noqa: E402
from mmgenre.data import DATA_ENV_VAR, MAX_UPLOAD_BYTES, MMIMDb, resolve_data_dir  # noqa: E402
from mmgenre.errors import EncoderUnavailableError, InputError  # noqa: E402
from mmgenre.genres import GENRES  # noqa: E402

CHECKPOINTS_ENV_VAR = "MMGENRE_CHECKPOINTS"
TOP_GENRE = "(top predicted genre)"
N_EXAMPLES = 6
EXAMPLE_PLOT_CHARS = 700
MAX_PLOT_INPUT = 20_000


def default_checkpoints() -> Path:
    return Path(os.environ.get(CHECKPOINTS_ENV_VAR, "").strip() or Path(_ROOT) / "checkpoints")


def _stamp(folder: Path) -> int:
    try:
        return (folder / "config.json").stat().st_mtime_ns
    except OSError:
        return 0


@functools.lru_cache(maxsize=6)
def _predictor(folder: str, stamp: int):
    from mmgenre.predict import Predictor
    return Predictor.from_checkpoint(folder)


def load_predictor(checkpoints: Path, name: str):
    """Shared Predictor of ``checkpoints/name`` (reloaded when its config changes)."""
    if name not in A.available_checkpoints(checkpoints):
        raise InputError(f"no checkpoint named {name!r} in {checkpoints}")
    folder = checkpoints / name
    return _predictor(str(folder), _stamp(folder))


def preferred_model(models: list[str], checkpoints: Path | None = None) -> str | None:
    """The model selected at start: the best on the leaderboard (micro-F1) among those that read
    both poster and plot, else the first such model, else the first."""
    from mmgenre.leaderboard import read_leaderboard
    from mmgenre.models import list_models, model_modalities
    ranked = list(models)
    if checkpoints is not None:
        try:
            board = read_leaderboard(checkpoints)
            order = [m for m in board.get("model", []) if m in models]
            ranked = order + [m for m in models if m not in order]
        except (OSError, ValueError, KeyError):
            pass  # no or unreadable leaderboard: registry order
    both = [m for m in ranked if m in list_models() and {"text", "image"} <= set(model_modalities(m))]
    return both[0] if both else (ranked[0] if ranked else None)


def examples_from_data(data_dir: str | Path | None, n: int = N_EXAMPLES) -> list[list]:
    """[poster image, plot excerpt] of the first ``n`` test movies that have both (or [])."""
    if not data_dir and not os.environ.get(DATA_ENV_VAR, "").strip():
        return []
    try:
        ds = MMIMDb.load(resolve_data_dir(data_dir), skip_bad=True)
    except InputError:
        return []
    split = "test" if "test" in ds.splits else next(iter(ds.splits), None)
    if split is None:
        return []
    from mmgenre.analysis import poster_thumbnail
    out = []
    for m in ds.split(split):
        if m.has_poster and m.has_plot:
            try:  # examples are shown as images, not file paths; a broken poster is skipped
                poster = poster_thumbnail(m.poster_path)
            except InputError:
                continue
            out.append([poster, m.plot[:EXAMPLE_PLOT_CHARS]])
        if len(out) >= n:
            break
    return out


class PosterInput(gr.Image):
    """``gr.Image`` that hands the uploaded file's path to mmgenre undecoded.

    Plain ``gr.Image`` opens every upload with PIL before the handler runs, so a zero-byte or
    non-image upload got Gradio's generic "error" instead of mmgenre's message naming the problem;
    ``mmgenre.data.load_poster`` does the decoding (and its checks) instead.
    """

    def get_block_name(self) -> str:
        return "image"  # the same front-end component as gr.Image

    def preprocess(self, payload):
        return None if payload is None else payload.path


def _error(exc: Exception) -> gr.Error:
    # gr.Error renders HTML: escape the message (it may quote user input).
    return gr.Error(html.escape(str(exc), quote=False))


def _notes_html(notes: list[str]) -> str:
    return "".join(f"<p>{html.escape(n, quote=False)}</p>" for n in notes)


def predict(poster: str | None, plot: str | None, model: str | None, genre: str | None,
            checkpoints: Path) -> Iterator[tuple[dict, object, str, str]]:
    """Gradio handler, a generator: first the probabilities (fast), then the explanation.

    Yields (probabilities, Grad-CAM overlay or None, highlighted plot HTML, notes HTML).
    """
    try:
        if not model:
            raise InputError(f"no trained model found in {checkpoints}: train one with "
                             "`python -m train --data $MMGENRE_DATA --models all --out checkpoints/`")
        if plot and len(plot) > MAX_PLOT_INPUT:
            raise InputError(f"plot: {len(plot):,} characters is too long (limit {MAX_PLOT_INPUT:,})")
        p = load_predictor(checkpoints, model)
        result = p.predict(poster=poster, plot=plot)
    except (InputError, EncoderUnavailableError) as exc:
        raise _error(exc) from None
    target = result["predicted"][0] if result["predicted"] else next(iter(result["probabilities"]))
    if genre and genre != TOP_GENRE:
        target = genre
    notes = [f"Model: {result['model']}. Predicted (tuned thresholds): "
             f"{', '.join(result['predicted']) or 'none'}. Explained genre: {target}."]
    used = [k for k, v in result["used"].items() if v]
    notes.append(f"Inputs used: {', '.join(used) or 'none'}.")
    if poster is not None and not result["used"]["poster"]:
        notes.append(f"{result['model']} does not read posters: choose a fusion model for Grad-CAM.")
    yield (result["probabilities"], None, "<p><em>Explaining the prediction ...</em></p>",
           _notes_html(notes))
    try:
        expl = p.explain(poster=poster, plot=plot, genres=[target])
    except (InputError, EncoderUnavailableError) as exc:
        raise _error(exc) from None
    overlay = views.cam_overlay(expl, target)
    words = views.words_html(expl, target)
    if words is None:
        why = "No plot was given." if not (plot or "").strip() else "This model does not read the plot."
        words = f"<p><em>{why}</em></p>"
    for text in (views.deletion_text(expl, target), views.completeness_text(expl, target),
                 views.modality_text(expl)):
        if text:
            notes.append(text)
    notes.append(f"Explained in {expl.timings.get('total', 0.0):.1f} s.")
    yield result["probabilities"], overlay, words, _notes_html(notes)


def build_demo(checkpoints_dir: str | Path | None = None, data_dir: str | Path | None = None) -> gr.Blocks:
    """The Blocks app (queue configured); launch it with :func:`launch_kwargs`."""
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
        with gr.Row():
            with gr.Column(scale=1):
                poster = PosterInput(type="filepath", image_mode=None, label="Poster", sources=["upload"],
                                  height=360)
                plot = gr.Textbox(label="Plot", lines=6, max_lines=14, max_length=MAX_PLOT_INPUT,
                                  placeholder="A retired detective is drawn back for one last case ...")
                model = gr.Dropdown(models, value=preferred_model(models, checkpoints), label="Model",
                                    interactive=True)
                genre = gr.Dropdown([TOP_GENRE, *GENRES], value=TOP_GENRE, label="Explain genre")
                button = gr.Button("Predict", variant="primary")
            with gr.Column(scale=1):
                label = gr.Label(num_top_classes=8, label="Genre probabilities")
                overlay = gr.Image(label="Grad-CAM on the poster", type="pil", interactive=False,
                                   height=360)
                words = gr.HTML(label="Plot words")
                notes = gr.HTML(label="Notes")
        examples = examples_from_data(data_dir)
        if examples:
            gr.Examples(examples, inputs=[poster, plot], label="Test movies from MM-IMDb")
        def handler(poster_path, plot_text, model_name, genre_name):
            yield from predict(poster_path, plot_text, model_name, genre_name, checkpoints)

        button.click(handler, inputs=[poster, plot, model, genre], outputs=[label, overlay, words, notes],
                     api_name="predict", concurrency_limit=2)
    demo.queue(default_concurrency_limit=2, max_size=64)
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
