"""dashboard.core: settings from the environment, the page list, the shared predictor cache with
its one staleness rule, and the preferred-model rule (the same for Streamlit and Gradio)."""
from __future__ import annotations

import os
import shutil

import pytest

from dashboard import core
from mmgenre.errors import InputError


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(core.CHECKPOINTS_ENV_VAR, raising=False)
    assert core.default_checkpoints() == core.REPO_ROOT / "checkpoints"
    monkeypatch.setenv(core.CHECKPOINTS_ENV_VAR, f"  {tmp_path}  ")
    assert core.default_checkpoints() == tmp_path
    monkeypatch.setenv(core.DATA_ENV_VAR, " /data/mmimdb ")
    assert core.default_data() == "/data/mmimdb"
    monkeypatch.setenv(core.LOCK_PATHS_ENV_VAR, "0")
    assert not core.paths_locked()
    monkeypatch.setenv(core.LOCK_PATHS_ENV_VAR, "1")
    assert core.paths_locked()
    monkeypatch.delenv(core.GRADIO_URL_ENV_VAR, raising=False)
    assert core.gradio_url() is None


def test_page_list_points_at_real_pages():
    assert len({p.name for p in core.PAGES}) == len({p.url_path for p in core.PAGES}) == len(core.PAGES)
    assert all(p.file.is_file() for p in core.PAGES)
    pages_folder = {f.stem for f in core.PAGES[0].file.parent.glob("*.py")}
    assert pages_folder == {p.name for p in core.PAGES}, "every page file is listed, once"
    assert core.page_url(core.PAGES[0]) == "/" and core.page_url(core.PAGES[1]) == f"/{core.PAGES[1].url_path}"


def test_preferred_model_rule(ui_checkpoints, tmp_path):
    models = ["text_only", "tfidf_logreg", "gmu", "cross_attention"]
    # Without a leaderboard: the first model that reads poster and plot, in the given order.
    assert core.preferred_model(models) == "gmu"
    # With one: the best-ranked such model.
    board = tmp_path / "ck"
    board.mkdir()
    (board / "leaderboard.csv").write_text("model,micro_f1\ntext_only,0.9\ncross_attention,0.8\ngmu,0.7\n")
    assert core.preferred_model(models, board) == "cross_attention"
    assert core.preferred_model(models, board, browsed="tfidf_logreg") == "tfidf_logreg"
    assert core.preferred_model(models, board, browsed="not-there") == "cross_attention"
    assert core.preferred_model(["text_only", "odd-folder"]) == "text_only"  # no fusion model
    assert core.preferred_model([]) is None
    assert core.preferred_model(models, ui_checkpoints) in ("gmu", "cross_attention")


def test_predictor_is_shared_and_reloaded_when_its_checkpoint_changes(ui_checkpoints, tmp_path):
    root = tmp_path / "ck"
    shutil.copytree(ui_checkpoints / "text_only", root / "text_only")
    first = core.predictor(root, "text_only")
    assert core.predictor(root, "text_only") is first                      # cached
    stamp = core.checkpoint_stamp(root / "text_only")
    weights = root / "text_only" / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))          # "retrained"
    assert core.checkpoint_stamp(root / "text_only") != stamp
    assert core.predictor(root, "text_only") is not first                  # reloaded
    with pytest.raises(InputError, match="no checkpoint named"):
        core.predictor(root, "../ck/text_only")
