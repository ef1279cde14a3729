"""Test helper: a small set of trained checkpoints for the UI tests (built once per session)."""
from __future__ import annotations

from pathlib import Path

# One sequence head (cross-attention maps), one gated fusion, one unimodal, one baseline.
UI_MODELS = ("text_only", "gmu", "cross_attention", "tfidf_logreg")


def train_tiny_checkpoints(data: str | Path, out: str | Path, models=UI_MODELS) -> Path:
    """Train ``models`` for 2 epochs on ``data`` into ``out`` (+ leaderboard.csv); reuse ``out``
    when a previous call already finished it (``out/leaderboard.csv`` exists)."""
    from mmgenre.leaderboard import write_leaderboard
    from train.config import TrainConfig
    from train.loop import fit

    out = Path(out)
    if (out / "leaderboard.csv").is_file():
        return out
    cache = out.parent / f"{out.name}-features"
    for model in models:
        fit(TrainConfig(data=str(data), model=model, out=str(out), cache=str(cache), epochs=2,
                        n_boot=20, progress=False))
    write_leaderboard(out)
    return out


APP = Path(__file__).resolve().parent / "app.py"
PAGE_TIMEOUT_S = 240  # first runs import torch and load encoders


def run_page(page: str, monkeypatch, data: str | Path, checkpoints: str | Path, *, timeout: float = PAGE_TIMEOUT_S):
    """A streamlit ``AppTest`` of the dashboard switched to ``app_pages/<page>.py``, with the data and
    checkpoints folders set through the environment (``monkeypatch``: pytest's fixture)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MMGENRE_DATA", str(data))
    monkeypatch.setenv("MMGENRE_CHECKPOINTS", str(checkpoints))
    monkeypatch.delenv("MMGENRE_LOCK_PATHS", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.run()
    at.switch_page(f"app_pages/{page}.py").run()
    return at
