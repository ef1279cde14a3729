"""The dashboard's one place for its settings, its page list and its models.

Shared by the Streamlit app (``app.py``, ``loaders.py``, the pages), the Gradio app, ``serve``,
the screenshots, the benchmarks and the tests, so each rule below exists once:

* the environment variables the dashboard reads (``MMGENRE_DATA`` is the library's own);
* the checkpoints folder (``$MMGENRE_CHECKPOINTS``, else ``<repo>/checkpoints``);
* the page list (``PAGES``: file, title and URL path of each Streamlit page; the first is the
  default page, served at ``/``);
* the cached predictors and their one staleness rule (:func:`checkpoint_stamp`: a predictor is
  reloaded when any file of its checkpoint folder changes);
* the preferred model (:func:`preferred_model`: what a page or the demo selects first).

Nothing here imports Streamlit or Gradio, or torch at import time.
"""
from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from mmgenre.analysis import available_checkpoints
from mmgenre.checkpoint import CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, WEIGHTS_FILE
from mmgenre.data import DATA_ENV_VAR  # noqa: F401 - the library owns this name; pages import it from here
from mmgenre.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
HERE = REPO_ROOT / "dashboard"

# ------------------------------------------------------------------------------ environment
CHECKPOINTS_ENV_VAR = "MMGENRE_CHECKPOINTS"
# "1" greys out the path settings (a public Space should not let visitors point it elsewhere).
LOCK_PATHS_ENV_VAR = "MMGENRE_LOCK_PATHS"
# Where the Predict page finds the Gradio demo; set by dashboard.serve (operator-only).
GRADIO_URL_ENV_VAR = "MMGENRE_GRADIO_URL"
# Seconds per Gradio request for its explanation (dashboard.gradio_app.explain_budget).
EXPLAIN_BUDGET_ENV_VAR = "MMGENRE_EXPLAIN_BUDGET_S"


def env(name: str) -> str:
    """The stripped value of environment variable ``name`` ("" when unset)."""
    return os.environ.get(name, "").strip()


def default_data() -> str:
    """``$MMGENRE_DATA`` as given ("" when unset)."""
    return env(DATA_ENV_VAR)


def default_checkpoints() -> Path:
    """``$MMGENRE_CHECKPOINTS``, else the repository's ``checkpoints/``."""
    return Path(env(CHECKPOINTS_ENV_VAR) or REPO_ROOT / "checkpoints").expanduser()


# The MLflow store of ``python -m train --track mlflow`` the Compare page lists runs from.
MLRUNS_ENV_VAR = "MMGENRE_MLRUNS"


def default_mlruns() -> Path:
    """``$MMGENRE_MLRUNS``, else the repository's ``mlruns/`` (train's default ``--track-uri``)."""
    return Path(env(MLRUNS_ENV_VAR) or REPO_ROOT / "mlruns").expanduser()


def paths_locked() -> bool:
    return env(LOCK_PATHS_ENV_VAR) == "1"


def gradio_url() -> str | None:
    """Where the Gradio demo is served: ``$MMGENRE_GRADIO_URL`` (``dashboard.serve`` sets it to
    ``/gradio/``, the same origin), or None when Streamlit runs alone. Operator-set only: a
    visitor can never choose what the Predict page embeds."""
    return env(GRADIO_URL_ENV_VAR) or None


# ------------------------------------------------------------------------------ pages
@dataclass(frozen=True)
class Page:
    name: str       # file stem in dashboard/app_pages/
    title: str
    url_path: str   # Streamlit URL path; the default (first) page is also served at "/"

    @property
    def file(self) -> Path:
        return HERE / "app_pages" / f"{self.name}.py"


PAGES: tuple[Page, ...] = (
    Page("dataset", "Dataset", "dataset"),
    Page("compare", "Compare models", "compare"),
    Page("movie", "Movie explorer", "movie"),
    Page("insights", "Insights", "insights"),
    Page("predict", "Predict", "predict"),
)


def page_url(page: Page) -> str:
    """The path a browser opens for ``page`` ("/" for the default page)."""
    return "/" if page == PAGES[0] else f"/{page.url_path}"


# ------------------------------------------------------------------------------ models
_FILES = (CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, WEIGHTS_FILE)


def mtime_ns(path: Path) -> int:
    """Modification time of ``path`` in ns (0 when it is missing)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def checkpoint_stamp(folder: Path) -> int:
    """The staleness rule of everything cached from a checkpoint folder: the sum of its files'
    modification times (a retrained or replaced checkpoint changes it)."""
    return sum(mtime_ns(Path(folder) / f) for f in _FILES)


_load_lock = threading.Lock()


@functools.lru_cache(maxsize=6)
def _predictor(folder: str, stamp: int):
    from mmgenre.predict import Predictor  # late: imports torch
    return Predictor.from_checkpoint(folder)


def predictor(checkpoints: str | Path, name: str):
    """The shared :class:`mmgenre.predict.Predictor` of ``checkpoints/name`` (thread-safe; never
    mutate it), reloaded when :func:`checkpoint_stamp` changes. Only names listed by
    ``available_checkpoints`` are opened, so a request cannot reach another folder."""
    checkpoints = Path(checkpoints)
    if name not in available_checkpoints(checkpoints):
        raise InputError(f"no checkpoint named {name!r} in {checkpoints}")
    folder = checkpoints / name
    with _load_lock:  # two first requests for one model load it once
        return _predictor(str(folder), checkpoint_stamp(folder))


def model_modalities(name: str) -> set[str]:
    """The modalities a checkpoint's model reads; empty for a folder that is not a registered
    model name."""
    from mmgenre.models import list_models, model_modalities as modalities
    return set(modalities(name)) if name in list_models() else set()


def preferred_model(models: list[str], checkpoints: str | Path | None = None,
                    browsed: str | None = None) -> str | None:
    """The model selected first: ``browsed`` when it is among ``models``; else the best on the
    leaderboard of ``checkpoints`` among those that read both poster and plot (they have the most
    to show), else the first such model in ``models``' order, else the first model."""
    if browsed in models:
        return browsed
    ranked = list(models)
    if checkpoints is not None:
        from mmgenre.leaderboard import read_leaderboard
        try:
            order = [m for m in read_leaderboard(checkpoints).get("model", []) if m in models]
        except (OSError, ValueError, KeyError):
            order = []  # no or unreadable leaderboard: the given order
        ranked = order + [m for m in models if m not in order]
    both = [m for m in ranked if {"text", "image"} <= model_modalities(m)]
    return both[0] if both else (ranked[0] if ranked else None)
