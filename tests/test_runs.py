"""mmgenre.runs: the run list of a real tracked run's MLflow store, and its section on the Compare page."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mmgenre.errors import InputError
from mmgenre.runs import is_store, read_runs

pytest.importorskip("mlflow")
APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
ARGS = ["--epochs", "2", "--patience", "2", "--batch-size", "16", "--n-boot", "0", "--no-progress"]


@pytest.fixture(scope="module")
def tracked(tiny_data, tiny_cache, tmp_path_factory):
    """Two models trained with ``--track mlflow``: (store, checkpoints)."""
    import torch

    from train.__main__ import main as train_main
    root = tmp_path_factory.mktemp("tracked")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_main(["--data", str(tiny_data), "--models", "text_only,tfidf_logreg", "--out", str(root / "out"),
                           "--cache", str(tiny_cache), "--track", "mlflow", "--track-uri", str(root / "mlruns"),
                           "--lr", "0.002", *ARGS]) == 0
    finally:
        torch.set_num_threads(before)
    return root / "mlruns", root / "out"


def test_read_runs_gives_one_row_per_tracked_model(tracked):
    store, out = tracked
    assert is_store(store)
    runs = read_runs(store)
    assert sorted(runs["run"]) == ["text_only", "tfidf_logreg"]
    assert set(runs["status"]) == {"FINISHED"}
    assert runs["start_time"].is_monotonic_decreasing and str(runs["start_time"].dt.tz) == "UTC"
    row = runs.set_index("run").loc["text_only"]
    assert row["lr"] == 0.002 and row["epochs"] == 2 and row["batch_size"] == 16
    assert row["tuning"] == "frozen" and row["protocol"] == "train-holdout"
    assert "text:mpnet" in row["encoders"] and "image:efficientnet-lite0" in row["encoders"]
    saved = json.loads((out / "text_only" / "metrics.json").read_text())
    assert row["test/micro_f1"] == pytest.approx(saved["test"]["micro_f1"])
    assert row["dev/macro_f1"] == pytest.approx(saved["dev"]["macro_f1"])
    assert row["train_seconds"] > 0 and len(row["run_id"]) == 32


def test_read_runs_of_an_empty_or_missing_store(tracked, tmp_path):
    store, _ = tracked
    assert read_runs(store, experiment="no-such-experiment").empty
    assert not is_store(tmp_path / "nowhere") and not is_store(tmp_path)
    with pytest.raises(InputError, match="not an MLflow run store"):
        read_runs(tmp_path)


def _compare(monkeypatch, checkpoints: Path, store: Path):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("MMGENRE_DATA", "")
    monkeypatch.setenv("MMGENRE_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("MMGENRE_MLRUNS", str(store))
    monkeypatch.delenv("MMGENRE_LOCK_PATHS", raising=False)
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_compare_page_lists_tracked_runs_when_a_store_exists(tracked, monkeypatch, tmp_path):
    store, _ = tracked
    at = _compare(monkeypatch, tmp_path / "no_checkpoints", store)
    assert "Tracked runs (MLflow)" in [h.value for h in at.subheader]
    table = at.dataframe[0].value
    assert isinstance(table, pd.DataFrame) and sorted(table["run"]) == ["text_only", "tfidf_logreg"]
    assert "test/micro_f1" in table.columns


def test_compare_page_hides_the_section_without_a_store(monkeypatch, tmp_path):
    at = _compare(monkeypatch, tmp_path / "no_checkpoints", tmp_path / "mlruns")
    assert "Tracked runs (MLflow)" not in [h.value for h in at.subheader]
    assert not at.dataframe and "No trained checkpoints" in " ".join(i.value for i in at.info)
