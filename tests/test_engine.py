"""The training engine on HF Accelerate: 2 CPU processes (gloo) against 1, gradient accumulation,
mixed precision, and launches that must fail before any work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file

from train.config import TrainConfig
from train.loop import fit

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")
# Deterministic parts only: dropout and modality dropout draw from per-process streams, so with them
# on a launch matches one process in distribution, not number for number. "official" gives 24
# training movies, a multiple of the global batch of 8: no batch is padded by Accelerate's
# even_batches (it repeats a few first rows to fill an uneven last batch across processes).
ARGS = ["--models", "early_fusion", "--protocol", "official", "--batch-size", "8", "--epochs", "4",
        "--patience", "4", "--dropout", "0", "--modality-dropout", "0", "--n-boot", "10", "--no-progress",
        "--device", "cpu"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _launch(n: int, args: list[str], *launcher: str) -> subprocess.CompletedProcess:
    """``accelerate launch`` of ``python -m train`` on ``n`` CPU processes (torchrun + gloo)."""
    cmd = [str(ACCELERATE), "launch", *(launcher or ("--multi_gpu",)), "--num_processes", str(n),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(29500 + os.getpid() % 1000), "-m", "train", *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"model": "early_fusion", "protocol": "official", "batch_size": 8, "epochs": 4,
                          "patience": 4, "dropout": 0.0, "modality_dropout": 0.0, "n_boot": 10,
                          "progress": False, "device": "cpu", **kw})


def test_two_processes_write_the_checkpoint_one_process_writes(tiny_data, tiny_cache, tmp_path):
    one = fit(_config(data=str(tiny_data), cache=str(tiny_cache), out=str(tmp_path / "one"))).path
    run = _launch(2, ["--data", str(tiny_data), "--cache", str(tiny_cache), "--out", str(tmp_path / "two"), *ARGS])
    assert run.returncode == 0, run.stderr[-3000:]
    assert len([x for x in run.stdout.splitlines() if x.startswith('{"model"')]) == 1   # the main process speaks
    two = tmp_path / "two" / "early_fusion"
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    (ca, cb), (ma, mb) = ([json.loads((p / f).read_text()) for p in (one, two)] for f in ("config.json", "metrics.json"))
    assert ca.keys() == cb.keys() and ca["head"] == cb["head"] and ca["data"] == cb["data"]
    assert {**ca["train"], "out": None} == {**cb["train"], "out": None}
    assert ma["processes"] == 1 and mb["processes"] == 2 and ma.keys() == mb.keys()
    # Same global batches, gradients averaged by gloo instead of summed in one batch: only the float
    # summation order differs (~1e-7 per step; measured: weights within 6e-7 after 4 epochs). AdamW
    # can magnify that on near-zero gradients, hence 1e-4 on weights and probabilities; the F1s move
    # only if a probability sits within 1e-4 of its threshold, so they must agree to 1e-9.
    wa, wb = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(np.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
    pa, pb = (pd.read_csv(p / "predictions.csv", dtype={"imdb_id": str}) for p in (one, two))
    assert pa["imdb_id"].tolist() == pb["imdb_id"].tolist()       # gathered in dataset order, no padding
    probs = [c for c in pa.columns if c.startswith("p_")]
    np.testing.assert_allclose(pa[probs].to_numpy(), pb[probs].to_numpy(), atol=1e-4)
    np.testing.assert_allclose(ca["thresholds"], cb["thresholds"], atol=1e-4)
    for a, b in zip(ma["history"], mb["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["dev_macro_f1"] == pytest.approx(b["dev_macro_f1"], abs=1e-9)
    for split in ("dev", "test"):
        for key in ("micro_f1", "macro_f1", "samples_f1"):
            assert ma[split][key] == pytest.approx(mb[split][key], abs=1e-9), (split, key)


def test_launches_that_cannot_share_the_batch_fail_before_any_work(tiny_data, tmp_path):
    out = tmp_path / "out"
    odd = [a if a != "8" else "7" for a in ARGS]
    run = _launch(2, ["--data", str(tiny_data), "--out", str(out), *odd])
    assert run.returncode != 0 and "--batch-size 7 is the global batch and must be divisible by the 2 processes" in run.stderr
    assert not out.exists()
    # `accelerate launch --cpu` starts N processes only through mpirun: refused, not run as one
    run = _launch(2, ["--data", str(tiny_data), "--out", str(out), *ARGS], "--cpu")
    assert run.returncode != 0 and "only through mpirun" in run.stderr and not out.exists()


def test_gradient_accumulation_equals_the_larger_batch(tiny_data, tiny_cache, tmp_path):
    """Two accumulated batches of 4 are one optimiser step over 8 rows: the same training."""
    base = dict(data=str(tiny_data), cache=str(tiny_cache), epochs=3, patience=3, n_boot=0)
    big = fit(_config(out=str(tmp_path / "big"), **base))
    small = fit(_config(out=str(tmp_path / "acc"), batch_size=4, grad_accum=2, **base))
    wa, wb = (load_file(str(r.path / "model.safetensors")) for r in (big, small))
    assert all(np.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert big.metrics["test"]["micro_f1"] == pytest.approx(small.metrics["test"]["micro_f1"], abs=1e-9)


def test_bf16_autocast_trains_and_writes_fp32_weights(tiny_data, tiny_cache, tmp_path):
    res = fit(_config(data=str(tiny_data), cache=str(tiny_cache), out=str(tmp_path), epochs=1, n_boot=0,
                      model="gmu", mixed_precision="bf16"))
    weights = load_file(str(res.path / "model.safetensors"))
    assert all(v.dtype == np.float32 for v in weights.values())
    assert json.loads((res.path / "config.json").read_text())["train"]["mixed_precision"] == "bf16"
    assert 0 <= res.metrics["test"]["micro_f1"] <= 1


def test_train_modules_import_each_other_without_a_cycle():
    import grimp
    graph = grimp.build_graph("train")
    modules = sorted(m for m in graph.modules if m.startswith("train.") and not m.startswith("train.benchmarks"))
    cycles = [(a, b) for a in modules for b in graph.find_modules_directly_imported_by(a)
              if b in modules and graph.find_shortest_chain(importer=b, imported=a)]
    assert not cycles, cycles
