"""Settings, cached loaders and small rendering helpers shared by the Streamlit pages.

Datasets and explanations are ``st.cache_resource`` (one shared object, never mutated by a
page); tables are ``st.cache_data``; predictors are ``dashboard.core``'s (shared with Gradio).
Every cache key includes the modification time of the files it read, so retraining a
checkpoint or editing the data shows up on rerun. Settings come from ``dashboard.core``.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import core
from dashboard.core import CHECKPOINTS_ENV_VAR, DATA_ENV_VAR, checkpoint_stamp, mtime_ns
from mmgenre import analysis as A
from mmgenre.data import HOW_TO_GET_DATA, MMIMDb, resolve_data_dir
from mmgenre.errors import EncoderUnavailableError, InputError

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:=^&\"'])")


def md_escape(text: object) -> str:
    """Text shown through a Markdown-rendering element (captions, st.error, labels) exactly as
    written: every Markdown/HTML special character is backslash-escaped, newlines become spaces."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


# ------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Settings:
    data_dir: Path | None       # a valid MM-IMDb folder, or None
    data_problem: str | None    # why there is no data_dir (message for the user)
    checkpoints: Path


def sidebar() -> None:
    """The path settings, rendered in the sidebar on every page (app.py calls this)."""
    st.session_state.setdefault("data_dir", core.default_data())
    st.session_state.setdefault("checkpoints_dir", str(core.default_checkpoints()))
    locked = core.paths_locked()
    with st.sidebar:
        st.text_input("MM-IMDb folder", key="data_dir", disabled=locked,
                      help="The folder holding split.json and dataset/ "
                           f"(default: ${DATA_ENV_VAR}). Leave empty to browse checkpoints only.")
        st.text_input("Checkpoints folder", key="checkpoints_dir", disabled=locked,
                      help=f"One sub-folder per trained model (default: ${CHECKPOINTS_ENV_VAR} "
                           "or <repo>/checkpoints).")


def settings() -> Settings:
    raw = str(st.session_state.get("data_dir", core.default_data())).strip()
    ckpt = str(st.session_state.get("checkpoints_dir", "")).strip() or core.default_checkpoints()
    data_dir, problem = None, None
    if not raw:
        problem = f"No MM-IMDb folder is set. {HOW_TO_GET_DATA}"
    else:
        try:
            data_dir = resolve_data_dir(raw)
        except InputError as exc:
            problem = str(exc)
    return Settings(data_dir, problem, Path(ckpt).expanduser())


def require_data(s: Settings) -> Path:
    """The data folder, or a clear message on how to get MM-IMDb and a stop of this page."""
    if s.data_dir is None:
        st.info("This page needs the MM-IMDb data. Set the **MM-IMDb folder** in the sidebar "
                f"or the `{DATA_ENV_VAR}` environment variable to the folder that holds "
                "`split.json` and `dataset/` (the official archive layout).\n\n" + HOW_TO_GET_DATA)
        if str(st.session_state.get("data_dir", "")).strip():
            st.warning(md_escape(s.data_problem or ""))  # names the user's path: escaped
        st.stop()
    return s.data_dir


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Show bad input as ``st.error`` instead of a traceback; the page stays usable."""
    try:
        yield
    except (InputError, EncoderUnavailableError) as exc:
        st.error(md_escape(exc))


# ------------------------------------------------------------------------------ stamps
# Every cache key below includes the stamps of what it read (core.checkpoint_stamp for a
# checkpoint folder: the one staleness rule the Gradio app uses too).
def data_stamp(root: Path) -> int:
    return mtime_ns(root / "split.json") + mtime_ns(root / "dataset")


def checkpoints_stamp(root: Path) -> tuple[tuple[str, int], ...]:
    return tuple((m, checkpoint_stamp(root / m)) for m in A.available_checkpoints(root)) + (
        ("leaderboard.csv", mtime_ns(root / "leaderboard.csv")),)


# ------------------------------------------------------------------------------ data
@st.cache_resource(show_spinner="Reading MM-IMDb ...", max_entries=2)
def dataset(root: str, stamp: int) -> MMIMDb:
    """The dataset (shared; pages only read it). Bad files are skipped and listed in .report."""
    return MMIMDb.load(root, skip_bad=True)


def load_dataset(root: Path) -> MMIMDb:
    return dataset(str(root), data_stamp(root))


@st.cache_data(show_spinner="Computing dataset statistics ...", max_entries=2)
def dataset_tables(root: str, stamp: int) -> dict[str, pd.DataFrame]:
    ds = dataset(root, stamp)
    return {"splits": A.split_counts(ds), "genres": A.genre_frequencies(ds),
            "lengths": A.plot_lengths(ds), "posters": A.poster_sizes(ds),
            "missing": A.missing_modalities(ds)}


@st.cache_data(max_entries=8)
def cooccurrence(root: str, stamp: int, split: str | None) -> pd.DataFrame:
    return A.cooccurrence(dataset(root, stamp), split)


# ------------------------------------------------------------------------------ checkpoints
@st.cache_data(max_entries=4)
def _leaderboard(root: str, stamp) -> pd.DataFrame:
    from mmgenre.leaderboard import read_leaderboard
    return read_leaderboard(root)


def leaderboard(root: Path) -> pd.DataFrame:
    return _leaderboard(str(root), checkpoints_stamp(root))


def models(root: Path) -> list[str]:
    return A.available_checkpoints(root)


@st.cache_data(max_entries=32)
def _predictions(folder: str, stamp: int) -> tuple[pd.DataFrame, np.ndarray]:
    return A.read_predictions(folder), A.read_thresholds(folder)


def predictions(root: Path, model: str) -> tuple[pd.DataFrame, np.ndarray]:
    """(predictions.csv frame, tuned thresholds) of one checkpoint; treat both as read-only."""
    folder = root / model
    return _predictions(str(folder), checkpoint_stamp(folder))


def all_predictions(root: Path) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    out = {}
    for m in models(root):
        with contextlib.suppress(InputError):
            out[m] = predictions(root, m)
    return out


@st.cache_data(max_entries=4)
def _per_genre(root: str, stamp, names: tuple[str, ...], split: str, value: str) -> pd.DataFrame:
    return A.per_genre_matrix(root, names, split, value)


def per_genre(root: Path, names: list[str], split: str = "test", value: str = "f1") -> pd.DataFrame:
    return _per_genre(str(root), checkpoints_stamp(root), tuple(names), split, value)


@st.cache_data(max_entries=64, show_spinner="Paired bootstrap ...")
def _paired(root: str, a: str, b: str, stamp, key: str, n_boot: int, split: str) -> dict:
    pa, ta = _predictions(str(Path(root) / a), checkpoint_stamp(Path(root) / a))
    pb, tb = _predictions(str(Path(root) / b), checkpoint_stamp(Path(root) / b))
    return A.paired_test(pa, ta, pb, tb, split=split, key=key, n_boot=n_boot)


def paired_test(root: Path, a: str, b: str, key: str, n_boot: int = 1000, split: str = "test") -> dict:
    stamp = (checkpoint_stamp(root / a), checkpoint_stamp(root / b))
    return _paired(str(root), a, b, stamp, key, n_boot, split)


# ------------------------------------------------------------------------------ models
def predictor(root: Path, model: str):
    """The shared :class:`mmgenre.predict.Predictor` of ``root/model`` (see ``core.predictor``)."""
    with st.spinner("Loading model ..."):  # shown only when loading takes a moment
        return core.predictor(root, model)


@st.cache_data(max_entries=2, show_spinner=False)
def data_fingerprint(root: str, stamp: int) -> str:
    return dataset(root, stamp).fingerprint()


def store_stamp(folder: Path) -> tuple:
    """Staleness of a checkpoint's explanation stores: their manifests' and shards' count and times."""
    from mmgenre.explain_store import MANIFEST, list_stores
    return tuple((f.name, mtime_ns(f / MANIFEST), len(list(f.glob("shard-*.safetensors"))))
                 for f, _, _ in list_stores(folder))


@dataclass(frozen=True)
class Explained:
    """An explanation and where it came from: the checkpoint's store, or computed live (then
    ``note`` says why the store was not used, when there is one; ``problem``: it was ignored or
    corrupt)."""

    explanation: object
    stored: bool
    note: str | None = None
    problem: bool = False


@st.cache_resource(show_spinner="Explaining the prediction ...", max_entries=48)
def _explanation(root: str, model: str, stamp: int, data_root: str, data: int, imdb_id: str,
                 genres: tuple[str, ...], text_method: str = "fast", store: tuple = ()) -> Explained:
    from mmgenre.explain_store import load_explanation
    movie = dataset(data_root, data)[imdb_id]
    found = load_explanation(Path(root) / model, data_fingerprint(data_root, data), imdb_id, split=movie.split,
                             text_method=text_method, genres=list(genres), poster=movie.poster_path)
    if found.explanation is not None:
        return Explained(found.explanation, True)
    expl = core.predictor(root, model).explain(poster=movie.poster_path, plot=movie.plot, genres=list(genres),
                                               text_method=text_method)
    return Explained(expl, False, found.note, found.problem)


def explained(root: Path, model: str, data_root: Path, imdb_id: str, genres: list[str],
              text_method: str = "fast") -> Explained:
    """The ``Explanation`` of one dataset movie for ``genres`` (shared, read-only): from the
    checkpoint's explanation store when it holds a valid one, else computed live."""
    return _explanation(str(root), model, checkpoint_stamp(root / model), str(data_root),
                        data_stamp(data_root), imdb_id, tuple(genres), text_method, store_stamp(root / model))


def explanation(root: Path, model: str, data_root: Path, imdb_id: str, genres: list[str],
                text_method: str = "fast"):
    """The library's ``Explanation`` of one dataset movie for ``genres`` (see :func:`explained`)."""
    return explained(root, model, data_root, imdb_id, genres, text_method).explanation


# ------------------------------------------------------------------------------ explanation stores
def stores_stamp(root: Path) -> tuple:
    return tuple((m, checkpoint_stamp(root / m), store_stamp(root / m)) for m in models(root))


@st.cache_resource(show_spinner="Reading the explanation stores ...", max_entries=4)
def _stores(root: str, stamp: tuple, data_fp: str | None) -> list:
    from mmgenre.explain_store import list_stores, read_store
    return [read_store(Path(root) / m, folder, data_fp)
            for m, _, _ in stamp for folder, _, _ in list_stores(Path(root) / m)]


def stores(root: Path, data_root: Path | None) -> list:
    """``mmgenre.explain_store.StoreContents`` of every store of every checkpoint (shared,
    read-only); with a data folder, stores written for other data come back unusable, with a note."""
    fp = data_fingerprint(str(data_root), data_stamp(data_root)) if data_root is not None else None
    return _stores(str(root), stores_stamp(root), fp)


@st.cache_resource(show_spinner="Aggregating the stored explanations ...", max_entries=8)
def _insights(root: str, stamp: tuple, data_fp: str | None, split: str, method: str, names: tuple[str, ...]) -> dict:
    from mmgenre import insights as I
    chosen = {c.model: c.explanations for c in _stores(root, stamp, data_fp)
              if c.usable and c.split == split and c.text_method == method and c.model in names}
    faith = I.faithfulness_rows(chosen)
    return {"modality": I.modality_by_genre(chosen), "words": I.top_words(chosen), "cams": I.mean_cams(chosen),
            "faithfulness": faith, "faithfulness_summary": I.faithfulness_summary(faith)}


def insights(root: Path, data_root: Path | None, split: str, method: str, names: list[str]) -> dict:
    """The tables of ``mmgenre.insights`` over the chosen stores (shared, read-only)."""
    fp = data_fingerprint(str(data_root), data_stamp(data_root)) if data_root is not None else None
    return _insights(str(root), stores_stamp(root), fp, split, method, tuple(names))
