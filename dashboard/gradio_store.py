"""The Gradio demo's dataset examples, and their precomputed explanations.

Each example is a test movie of the data folder (poster thumbnail + plot excerpt). When a visitor
runs an example unchanged, the demo reads that movie's explanation from the checkpoint's store
(``mmgenre.explain_store``, written by ``python -m mmgenre explain-split``) instead of computing
it: the store explains the dataset movie itself (full-size poster, whole plot). An upload or an
edited plot is always explained live. Nothing here imports Gradio.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mmgenre.data import MMIMDb, resolve_data_dir
from mmgenre.errors import InputError
from mmgenre.explain_store import Lookup, load_explanation


@dataclass(frozen=True)
class ExampleMovie:
    imdb_id: str
    split: str
    poster_path: Path
    plot: str           # the whole plot (what the store explained)
    shown_plot: str     # what the example puts in the plot box
    thumbnail: Image.Image


@dataclass(frozen=True)
class ExampleSet:
    movies: list[ExampleMovie] = field(default_factory=list)
    data_fingerprint: str | None = None

    @property
    def rows(self) -> list[list]:
        """[poster thumbnail, plot excerpt] per example, for ``gr.Examples``."""
        return [[m.thumbnail, m.shown_plot] for m in self.movies]

    def get(self, imdb_id) -> ExampleMovie | None:
        return next((m for m in self.movies if m.imdb_id == imdb_id), None)


def load_examples(data_dir: str | Path | None, n: int, plot_chars: int) -> ExampleSet:
    """The first ``n`` test movies (else of the first split) that have a poster and a plot
    (an empty set without data); a movie whose poster is broken is skipped."""
    try:
        ds = MMIMDb.load(resolve_data_dir(data_dir), skip_bad=True)
    except InputError:
        return ExampleSet()
    split = "test" if "test" in ds.splits else next(iter(ds.splits), None)
    if split is None:
        return ExampleSet()
    from mmgenre.analysis import poster_thumbnail
    out = []
    for m in ds.split(split):
        if m.has_poster and m.has_plot:
            try:  # examples are shown as images, not file paths
                thumb = poster_thumbnail(m.poster_path)
            except InputError:
                continue
            out.append(ExampleMovie(m.imdb_id, split, m.poster_path, m.plot, m.plot[:plot_chars], thumb))
        if len(out) >= n:
            break
    return ExampleSet(out, ds.fingerprint())


def stored_explanation(examples: ExampleSet, imdb_id, checkpoints: Path, model: str, plot: str | None,
                       genres: list[str] | None, text_method: str) -> Lookup:
    """The stored explanation of example ``imdb_id`` by ``model``, when the plot box still holds
    that example's text; else (or without a valid store) no explanation, and maybe a note."""
    movie = examples.get(imdb_id)
    if movie is None or (plot or "") != movie.shown_plot:
        return Lookup(None)
    return load_explanation(Path(checkpoints) / model, examples.data_fingerprint, movie.imdb_id,
                            split=movie.split, text_method=text_method, genres=genres, poster=movie.poster_path)
