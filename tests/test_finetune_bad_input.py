"""Bad input to fine-tuning through ``python -m train`` (in-process): one clear error line, exit
code 2, before any training step, and an earlier checkpoint in --out left byte for byte.

The spec-level cases (rank 0, unknown targets, adapters that do not fit, another base encoder) are
in tests/test_tuning.py; here they go through the CLI, with unreadable dataset files.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil

import pytest

from mmgenre.data import MMIMDb
from mmgenre.encoders import build_encoder
from train.__main__ import main as train_main
from train.config import TrainConfig
from train.finetune import fit_finetune

TINY_TEXT = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}


def _tiny_encoders() -> dict:
    return {"text": build_encoder("text", "minilm", pretrained=False, **TINY_TEXT),
            "image": build_encoder("image", "vit-b16", pretrained=False, arch="vit_tiny_patch16_224", depth=1)}


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def earlier(tiny_data, tmp_path_factory):
    """--out holding a finished gmu checkpoint (tiny random encoders, fully tuned) and its digest."""
    out = tmp_path_factory.mktemp("earlier")
    fit_finetune(TrainConfig(data=str(tiny_data), model="gmu", out=str(out), epochs=1, batch_size=12, n_boot=0,
                             progress=False, device="cpu"), encoders=_tiny_encoders())
    return out, _digest(out / "gmu")


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if a training step would start."""
    def refuse(*args, **kwargs):
        pytest.fail("training started although the input was bad")
    monkeypatch.setattr("train.engine.train", refuse)


def _run(capsys, *argv) -> str:
    code = train_main([*map(str, argv), "--models", "gmu", "--text-encoder", "minilm", "--epochs", "1",
                       "--n-boot", "0", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("tuning, message", [
    (["--lora", "0"], "LoRA rank must be a positive integer, got 0"),
    (["--lora", "-3"], "LoRA rank must be a positive integer, got -3"),
    (["--lora-targets", "query"], "--lora-targets needs --lora R"),
    (["--lora", "4", "--tune-layers", "1"], "--lora and --tune-layers are two ways"),
    (["--tune-layers", "0"], "positive number of layers, got 0"),
])
def test_bad_tuning_options_fail_before_the_data_is_read(tuning, message, tmp_path, capsys, no_training):
    # --data does not exist: the tuning options are refused first
    line = _run(capsys, "--data", tmp_path / "absent", "--out", tmp_path / "out", *tuning)
    assert message in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tuning, message", [
    (["--lora", "4", "--lora-targets", "query,attn_q"],
     "LoRA target module 'attn_q' is not a Linear/Conv2d layer of the text encoder 'minilm'"),
    (["--lora", "4", "--lora-targets", "image:_depthwise_conv"], "grouped (depthwise) convolution"),
    (["--lora", "4", "--lora-targets", "detector:conv"], "the 'detector' encoder, which this model does not tune"),
    (["--tune-layers", "7"], "the text encoder 'minilm' has 6 blocks"),
])
def test_targets_the_encoder_lacks_fail_before_training(tuning, message, tiny_data, earlier, capsys, no_training):
    out, before = earlier
    line = _run(capsys, "--data", tiny_data, "--out", out, *tuning)
    assert message in line
    assert _digest(out / "gmu") == before


def _with_bad_file(tiny_data, tmp_path, suffix: str):
    """A copy of tiny_data whose first train movie with a poster has a garbage .json or .jpeg."""
    root = shutil.copytree(tiny_data, tmp_path / "data")
    movie = next(m for m in MMIMDb.load(root).split("train") if m.has_poster and m.has_plot)
    path = root / "dataset" / f"{movie.imdb_id}{suffix}"
    path.write_bytes(b"\x00 not what it claims to be")
    return root, path


@pytest.mark.parametrize("suffix", [".json", ".jpeg"])
def test_unreadable_files_fail_before_training(suffix, tiny_data, earlier, tmp_path, capsys, no_training):
    """A bad poster is found by decoding every poster up front: fine-tuning reads posters live,
    so it would otherwise surface mid-epoch, after minutes of work."""
    out, before = earlier
    root, bad = _with_bad_file(tiny_data, tmp_path, suffix)
    line = _run(capsys, "--data", root, "--out", out, "--lora", "4")
    assert str(bad) in line
    assert _digest(out / "gmu") == before


def test_skip_bad_trains_on_without_the_unreadable_poster(tiny_data, tmp_path, caplog):
    root, bad = _with_bad_file(tiny_data, tmp_path, ".jpeg")
    with caplog.at_level(logging.WARNING, logger="train.finetune"):
        res = fit_finetune(TrainConfig(data=str(root), model="gmu", out=str(tmp_path / "out"), epochs=1,
                                       batch_size=12, n_boot=0, progress=False, device="cpu", skip_bad=True),
                           encoders=_tiny_encoders())
    assert res.path.is_dir() and 0 <= res.metrics["test"]["micro_f1"] <= 1
    assert "1 unreadable poster(s) left out" in caplog.text and str(bad) in caplog.text
    assert json.loads((res.path / "config.json").read_text())["train"]["skip_bad"]
