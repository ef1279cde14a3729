"""Interruptions: feature extraction and training SIGKILLed at a random point and rerun give the
same result as an uninterrupted run; checkpoint writes killed mid-way never leave a broken folder.

The kill point is random (seeded by ``$MMGENRE_KILL_SEED`` if set, else by the clock; the seed is
in every failure message). Runs the real CLIs as subprocesses.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from mmgenre import atomic
from mmgenre.analysis import available_checkpoints
from mmgenre.checkpoint import load_checkpoint, save_checkpoint
from mmgenre.data import MMIMDb
from mmgenre.encoders import default_encoder
from mmgenre.errors import InputError
from mmgenre.features import cache_dir, extract_features, load_features
from mmgenre.testing import make_tiny_mmimdb
from train.__main__ import main as train_main
from train.config import TrainConfig
from train.loop import fit
from train.resume import STATE_DIR, EpochState, checkpoint_is_current

REPO = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("MMGENRE_KILL_SEED", time.time_ns() % 100_000))
SHARD = 2                      # movies per feature shard: 8 shards per kind for 16 movies
KINDS = ("text", "image")
MODELS = ("text_only", "gmu")  # the second one is killed or resumed while the first is done
EPOCHS = 8
TRAIN_ARGS = ["--epochs", str(EPOCHS), "--patience", str(EPOCHS), "--batch-size", "16", "--n-boot", "10"]


@pytest.fixture(autouse=True)
def one_thread():
    """Reference runs in this process and the CLI runs use one torch thread: the same kernels on
    both sides of every bit-for-bit comparison, and no fight with other CPU users (two threads on
    a busy two-core machine made an EfficientNet forward 50x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """``python -m args``: stdout to ``log``, stderr to ``log`` + ".err"."""
    with open(log, "wb") as out, open(_err(log), "wb") as err:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=_env(), stdout=out, stderr=err)


def _err(log: Path) -> Path:
    return log.with_name(log.name + ".err")


def _tail(log: Path) -> str:
    return (log.read_text(errors="replace") + _err(log).read_text(errors="replace"))[-3000:]


def _run(args: list[str], log: Path, timeout: float = 300) -> str:
    """Run to the end; returns its stdout."""
    proc = _start(args, log)
    proc.wait(timeout)
    assert proc.returncode == 0, f"seed {SEED}: {' '.join(args)} failed:\n{_tail(log)}"
    return log.read_text(errors="replace")


def _kill_when(proc: subprocess.Popen, reached, log: Path, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``reached()`` is true (plus a few random milliseconds)."""
    rng = random.Random(SEED + 1)
    deadline = time.monotonic() + timeout
    while not reached():
        assert proc.poll() is None, f"seed {SEED}: ended ({proc.returncode}) before the kill point:\n{_tail(log)}"
        assert time.monotonic() < deadline, f"seed {SEED}: kill point not reached in {timeout} s"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.01))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


# ------------------------------------------------------------------------------ features
def test_feature_extraction_killed_and_rerun_equals_uninterrupted(tmp_path):
    data = make_tiny_mmimdb(tmp_path / "data", n_train=8, n_dev=4, n_test=4, seed=3)
    ds = MMIMDb.load(data)
    fp = ds.fingerprint()
    n_shards = math.ceil(len(ds) / SHARD)
    ref_root = tmp_path / "reference"
    reference = {k: extract_features(ds, k, default_encoder(k), cache_root=ref_root, shard_size=SHARD,
                                     batch_size=SHARD, progress=False) for k in KINDS}
    cache = tmp_path / "cache"
    dirs = [cache_dir(cache, k, default_encoder(k), fp) for k in KINDS]

    def shards_done() -> int:
        done = 0
        for d in dirs:
            if (d / "meta.json").exists():
                done += n_shards
                continue
            return done + len(list((d / "shards").glob("shard-*.npz")))
        return done

    kill_at = random.Random(SEED).randint(1, len(KINDS) * n_shards - 2)  # >= 1 shard still to go
    cmd = ["mmgenre", "features", "--data", str(data), "--cache", str(cache), "--kinds", ",".join(KINDS),
           "--shard-size", str(SHARD), "--batch-size", str(SHARD)]
    _kill_when(_start(cmd, tmp_path / "killed.log"), lambda: shards_done() >= kill_at, tmp_path / "killed.log")

    # Nothing half-written sits under a name a reader looks at: each shard is whole, and partial
    # writes are dot-named temporary files.
    for f in cache.rglob("shard-*.npz"):
        with np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}   # reads (and CRC-checks) every member
        assert len(arrays["ids"]) == len(arrays["pooled"]) == len(arrays["present"]) == SHARD, f.name
    strays = [p for p in cache.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert all(p.name.endswith(".tmp") for p in strays), strays
    # What a non-atomic writer would leave behind: a truncated file under the next shard's name.
    # It must be recomputed, never read.
    pending = next((d for d in dirs if not (d / "meta.json").exists()), None)
    present = sorted((pending / "shards").glob("shard-*.npz")) if pending is not None else []
    if present:
        missing = [pending / "shards" / f"shard-{s:05d}.npz" for s in range(n_shards)
                   if not (pending / "shards" / f"shard-{s:05d}.npz").exists()]
        if missing:
            missing[0].write_bytes(present[0].read_bytes()[: present[0].stat().st_size // 2])
        # Tag a whole shard (in its list of bad files, which ends up in meta.json): the rerun
        # must reuse it, not recompute it.
        with np.load(present[0], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        atomic.write_npz(present[0], **{**arrays, "bad": np.array([["reused", "shard"]])})

    out = json.loads(_run(cmd, tmp_path / "rerun.log"))
    if present:
        assert ["reused", "shard"] in json.loads((pending / "meta.json").read_text())["bad_files"]
    for kind, d in zip(KINDS, dirs):
        assert out[kind]["n"] == len(ds)
        got, want = load_features(d, mmap=False), reference[kind]
        assert got.ids == want.ids, f"seed {SEED}"
        for name in ("pooled", "present", "seq", "seq_mask"):
            a, b = getattr(got, name), getattr(want, name)
            assert (a is None) == (b is None) and (a is None or np.array_equal(a, b)), f"seed {SEED}: {kind} {name}"
        assert not (d / "shards").exists()   # consolidated: the shards are gone


# ------------------------------------------------------------------------------ training
def _fit_reference(tiny_data: Path, cache: Path, out: Path) -> None:
    for model in MODELS:
        fit(TrainConfig(data=str(tiny_data), model=model, out=str(out), cache=str(cache), epochs=EPOCHS,
                        patience=EPOCHS, batch_size=16, n_boot=10, progress=False))


def _same_checkpoint(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa), f"seed {SEED}: {b.name} weights"
    assert (a / "predictions.csv").read_bytes() == (b / "predictions.csv").read_bytes(), f"seed {SEED}: predictions"
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    assert ma["history"] == mb["history"] and ma["test"]["micro_f1"] == mb["test"]["micro_f1"]
    ca, cb = (json.loads((p / "config.json").read_text()) for p in (a, b))
    assert ca["thresholds"] == cb["thresholds"] and ca["data"] == cb["data"]


def test_training_killed_and_resumed_equals_uninterrupted(tiny_data, tiny_cache, tmp_path):
    ref = tmp_path / "reference"
    _fit_reference(tiny_data, tiny_cache, ref)   # also fills the feature cache the CLI reads
    out = tmp_path / "out"

    def epochs_done() -> int:
        done = 0
        for model in MODELS:
            if (out / model / "metrics.json").exists():
                done += EPOCHS
                continue
            try:  # never a JSONDecodeError: the state folder is swapped in whole
                return done + json.loads((out / STATE_DIR / model / "state.json").read_text())["epoch"]
            except FileNotFoundError:
                return done
        return done

    kill_at = random.Random(SEED).randint(1, len(MODELS) * EPOCHS - 1)
    cmd = ["train", "--data", str(tiny_data), "--models", ",".join(MODELS), "--out", str(out),
           "--cache", str(tiny_cache), "--no-progress", *TRAIN_ARGS]
    _kill_when(_start(cmd, tmp_path / "killed.log"), lambda: epochs_done() >= kill_at, tmp_path / "killed.log")
    finished = {m: (out / m / "model.safetensors").stat().st_mtime_ns for m in MODELS
                if (out / m / "metrics.json").exists()}
    states = {m: json.loads(f.read_text())["epoch"] for m in MODELS
              if (f := atomic.settled_dir(out / STATE_DIR / m) / "state.json").is_file() and m not in finished}

    lines = [json.loads(x) for x in _run(cmd, tmp_path / "rerun.log").splitlines() if x.startswith('{"model"')]
    for model, epoch in states.items():   # resumed where it stopped, not retrained from scratch
        assert f"resuming {model} after epoch {epoch}" in _err(tmp_path / "rerun.log").read_text(), f"seed {SEED}"
    assert [r["model"] for r in lines] == list(MODELS)
    for r in lines:  # models finished before the kill are skipped, not retrained
        assert r["skipped"] == (r["model"] in finished), f"seed {SEED}, kill at epoch {kill_at}: {r}"
    for model, mtime in finished.items():
        assert (out / model / "model.safetensors").stat().st_mtime_ns == mtime
    for model in MODELS:
        _same_checkpoint(ref / model, out / model)
        assert not (out / STATE_DIR / model).exists()   # cleared once the checkpoint is written


@pytest.mark.parametrize("tuning", [["--lora", "4"], ["--tune-layers", "1"]], ids=["lora", "last-blocks"])
def test_fine_tune_killed_and_resumed_equals_uninterrupted(tiny_data, tmp_path, tuning):
    """A real MiniLM tuned with the head, SIGKILLed after a random epoch and rerun: same checkpoint,
    bit for bit (encoders.safetensors too). Bit-identical because the state holds the exact fp32
    tensors, the optimiser moments and the scheduler, and every epoch reseeds its random streams
    from (seed, epoch, rank); across thread counts or machines the float kernels would differ."""
    epochs = 3
    args = ["--data", str(tiny_data), "--models", "text_only", "--epochs", str(epochs), "--patience", str(epochs),
            "--batch-size", "16", "--n-boot", "5", "--no-progress", "--device", "cpu", *tuning]
    ref, out = tmp_path / "reference", tmp_path / "out"
    _run(["train", *args, "--out", str(ref)], tmp_path / "reference.log")
    state = out / STATE_DIR / "text_only" / "state.json"

    def epochs_done() -> int:
        try:
            return json.loads(state.read_text())["epoch"]
        except FileNotFoundError:
            return 0

    kill_at = random.Random(SEED).randint(1, epochs - 1)
    cmd = ["train", *args, "--out", str(out)]
    _kill_when(_start(cmd, tmp_path / "killed.log"), lambda: epochs_done() >= kill_at, tmp_path / "killed.log")
    epoch = json.loads((atomic.settled_dir(state.parent) / "state.json").read_text())["epoch"]
    _run(cmd, tmp_path / "rerun.log")
    assert f"resuming text_only after epoch {epoch}" in _err(tmp_path / "rerun.log").read_text(), f"seed {SEED}"
    _same_checkpoint(ref / "text_only", out / "text_only")
    ea, eb = (load_file(str(p / "text_only" / "encoders.safetensors")) for p in (ref, out))
    assert ea.keys() == eb.keys() and all(np.array_equal(ea[k], eb[k]) for k in ea), f"seed {SEED}: encoders"
    assert not (out / STATE_DIR / "text_only").exists()


def test_finished_models_are_skipped_unless_forced(tiny_data, tiny_cache, tmp_path, capsys):
    args = ["--data", str(tiny_data), "--models", "text_only,tfidf_logreg", "--out", str(tmp_path),
            "--cache", str(tiny_cache), "--no-progress", "--epochs", "2", "--n-boot", "5"]
    assert train_main(args) == 0
    mtimes = {m: (tmp_path / m / "config.json").stat().st_mtime_ns for m in ("text_only", "tfidf_logreg")}
    capsys.readouterr()
    assert train_main(args) == 0
    runs = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [r["skipped"] for r in runs] == [True, True]
    assert all((tmp_path / m / "config.json").stat().st_mtime_ns == t for m, t in mtimes.items())
    # A different config (any field: the run key is the whole config) or --force trains again.
    assert train_main([*args, "--epochs", "3"]) == 0
    runs = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [r["skipped"] for r in runs] == [False, False]
    assert train_main([*args, "--force"]) == 0
    runs = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [r["skipped"] for r in runs] == [False, False]


def test_state_of_another_config_is_refused_before_work_unless_forced(tiny_data, tiny_cache, tmp_path, monkeypatch):
    base = dict(data=str(tiny_data), model="gmu", cache=str(tiny_cache), epochs=3, patience=3,
                batch_size=16, n_boot=5, progress=False)

    class Killed(Exception):
        pass

    def save_then_die(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise Killed

    original = EpochState.save
    monkeypatch.setattr(EpochState, "save", save_then_die)
    with pytest.raises(Killed):
        fit(TrainConfig(out=str(tmp_path / "out"), lr=5e-3, **base))
    monkeypatch.setattr(EpochState, "save", original)
    state = tmp_path / "out" / STATE_DIR / "gmu" / "state.json"
    before = state.read_bytes()
    # Another config: a clear error naming what differs, before any work; the state stays intact.
    with pytest.raises(InputError, match=r"lr: 0\.005 in the state, 0\.001 now.*--force"):
        fit(TrainConfig(out=str(tmp_path / "out"), **base))
    assert state.read_bytes() == before and not (tmp_path / "out" / "gmu").exists()
    assert train_main(["--data", str(tiny_data), "--models", "gmu", "--out", str(tmp_path / "out"), "--cache",
                       str(tiny_cache), "--epochs", "3", "--patience", "3", "--batch-size", "16", "--n-boot", "5",
                       "--no-progress"]) == 2
    assert state.read_bytes() == before
    fit(TrainConfig(out=str(tmp_path / "out"), **base), fresh=True)          # --force: starts over
    fit(TrainConfig(out=str(tmp_path / "fresh"), **base))
    _same_checkpoint(tmp_path / "fresh" / "gmu", tmp_path / "out" / "gmu")
    ds = MMIMDb.load(tiny_data)
    assert checkpoint_is_current(tmp_path / "out", TrainConfig(out=str(tmp_path / "out"), **base), ds.fingerprint())
    assert not checkpoint_is_current(tmp_path / "out", TrainConfig(out=str(tmp_path / "out"), **{**base, "seed": 1}),
                                     ds.fingerprint())


# ------------------------------------------------------------------------------ checkpoint writes
def _config(tag: str) -> dict:
    return {"model": "text_only", "thresholds": [0.5] * 23, "encoders": {}, "tag": tag}


def _writer(target: str) -> None:
    """Rewrite ``target`` forever, alternating two versions (killed by the test)."""
    weights = {tag: {"w": np.full(1_000_000, value, dtype=np.float32)} for tag, value in (("A", 1.0), ("B", 2.0))}
    i = 0
    while True:
        tag = "AB"[i % 2]
        save_checkpoint(target, weights=weights[tag], config=_config(tag), metrics={"i": i})
        i += 1


def _assert_whole(target: Path) -> str:
    ckpt = load_checkpoint(target)
    tag = ckpt.config["tag"]
    w = ckpt.weights["w"]
    assert w.shape == (1_000_000,) and (w == {"A": 1.0, "B": 2.0}[tag]).all(), f"seed {SEED}: mixed checkpoint"
    return tag


def test_checkpoint_writes_killed_at_random_never_leave_a_broken_folder(tmp_path):
    target = tmp_path / "model"
    save_checkpoint(target, weights={"w": np.full(1_000_000, 1.0, dtype=np.float32)}, config=_config("A"))
    rng = random.Random(SEED)
    ctx = multiprocessing.get_context("fork")  # no re-import: the child starts writing at once
    for _ in range(6):
        proc = ctx.Process(target=_writer, args=(str(target),), daemon=True)
        proc.start()
        time.sleep(rng.uniform(0.05, 0.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        _assert_whole(target)
        # half-written staging folders are dot-named: no listing of checkpoints shows them
        assert available_checkpoints(tmp_path) == ["model"], sorted(p.name for p in tmp_path.iterdir())


def test_a_kill_between_the_two_renames_keeps_the_old_checkpoint_readable(tmp_path):
    target = tmp_path / "model"
    save_checkpoint(target, weights={"w": np.full(1_000_000, 1.0, dtype=np.float32)}, config=_config("A"))
    os.replace(target, target.with_name(".model.old"))   # replace_dir's first rename, then SIGKILL
    assert _assert_whole(target) == "A"
    assert atomic.settled_dir(target).name == ".model.old"
    save_checkpoint(target, weights={"w": np.full(1_000_000, 2.0, dtype=np.float32)}, config=_config("B"))
    assert _assert_whole(target) == "B" and not target.with_name(".model.old").exists()
