"""``--track mlflow``: runs in MLflow's local file store, read back with MLflow's own client."""
from __future__ import annotations

import json
import os

import pytest
import torch

from mmgenre.data import MMIMDb
from train.__main__ import main as train_main
from train.config import TrainConfig
from train.loop import fit
from train.resume import EpochState

mlflow = pytest.importorskip("mlflow")
ARGS = ["--epochs", "2", "--patience", "2", "--batch-size", "16", "--n-boot", "5", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _client(store):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient
    return MlflowClient(store.as_uri())


def test_a_tracked_run_logs_config_epochs_metrics_and_checkpoint(tiny_data, tiny_cache, tmp_path):
    store, out = tmp_path / "mlruns", tmp_path / "out"
    assert train_main(["--data", str(tiny_data), "--models", "text_only,tfidf_logreg", "--out", str(out),
                       "--cache", str(tiny_cache), "--track", "mlflow", "--track-uri", str(store), *ARGS]) == 0
    client = _client(store)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("mmgenre").experiment_id])}
    assert sorted(runs) == ["text_only", "tfidf_logreg"]          # one run per model, side by side
    run = runs["text_only"]
    assert run.info.status == "FINISHED"
    params, metrics = run.data.params, run.data.metrics
    ckpt_cfg = json.loads((out / "text_only" / "config.json").read_text())
    assert params["model"] == "text_only" and params["lr"] == "0.001" and params["epochs"] == "2"
    assert params["encoder.text"] == "mpnet" and params["encoder.image"] == "efficientnet-lite0"
    assert params["data.fingerprint"] == MMIMDb.load(tiny_data).fingerprint() == ckpt_cfg["data"]["fingerprint"]
    history = client.get_metric_history(run.info.run_id, "dev_macro_f1")
    saved = json.loads((out / "text_only" / "metrics.json").read_text())
    assert [(m.step, m.value) for m in history] == [(h["epoch"], h["dev_macro_f1"]) for h in saved["history"]]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    assert metrics["test/micro_f1"] == pytest.approx(saved["test"]["micro_f1"])
    assert metrics["test/macro_f1"] == pytest.approx(saved["test"]["macro_f1"]) and "dev/macro_f1" in metrics
    files = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert {"checkpoint/config.json", "checkpoint/model.safetensors", "checkpoint/metrics.json",
            "checkpoint/predictions.csv"} <= files


def test_a_resumed_run_continues_its_mlflow_run(tiny_data, tiny_cache, tmp_path, monkeypatch):
    store = tmp_path / "mlruns"
    cfg = TrainConfig(data=str(tiny_data), model="gmu", out=str(tmp_path / "out"), cache=str(tiny_cache), epochs=3,
                      patience=3, batch_size=16, n_boot=0, progress=False, track="mlflow", track_uri=str(store))

    class Killed(Exception):
        pass

    def save_then_die(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise Killed

    original = EpochState.save
    monkeypatch.setattr(EpochState, "save", save_then_die)
    with pytest.raises(Killed):
        fit(cfg)
    monkeypatch.setattr(EpochState, "save", original)
    fit(cfg)
    client = _client(store)
    (run,) = client.search_runs([client.get_experiment_by_name("mmgenre").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_macro_f1")] == [1, 2, 3]


def test_tracking_is_off_by_default_and_an_unwritable_store_fails_before_work(tiny_data, tiny_cache, tmp_path,
                                                                            monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["--data", str(tiny_data), "--models", "text_only", "--cache", str(tiny_cache), *ARGS]
    assert train_main([*base, "--out", "plain"]) == 0
    assert not (tmp_path / "mlruns").exists()
    (tmp_path / "a-file").write_text("not a folder")
    capsys.readouterr()
    assert train_main([*base, "--out", "tracked", "--track", "mlflow", "--track-uri", str(tmp_path / "a-file" / "runs")]) == 2
    err = capsys.readouterr().err
    assert "cannot write its folder" in err and "a-file" in err
    assert not (tmp_path / "tracked").exists()
