"""Fine-tune -> load -> predict -> explain on REAL movies and the real offline encoders.

A few dozen mmimdb-lite movies (copied into tmp_path, never into the repository) train MiniLM
(LoRA) under ``text_only`` and MiniLM + EfficientNet-Lite0 (last block of each) under ``gmu`` for
one short epoch; ``Predictor.from_checkpoint`` must rebuild the tuned encoders: it reproduces the
test predictions the training run wrote (which the untuned base encoders do not), and Grad-CAM /
Integrated Gradients run through them. Skipped when the lite data is absent.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgenre.checkpoint import ENCODERS_FILE, load_checkpoint
from mmgenre.data import MMIMDb
from mmgenre.families.neural import NeuralModel, _shared_encoder
from mmgenre.genres import GENRES
from mmgenre.inputs import prepare_inputs
from mmgenre.predict import Predictor
from train.config import TrainConfig
from train.loop import fit

SIZES = {"train": 24, "dev": 6, "test": 6}
N_COMPARED = 4  # test movies compared with the saved predictions (two forward passes each)
MAX_PLOT_CHARS = 400  # short plots: few tokens, a fast epoch


@pytest.fixture(scope="module")
def lite_subset(lite_data: Path, tmp_path_factory) -> Path:
    """The first movies of each lite split with a poster and a short plot, in the official layout."""
    out = tmp_path_factory.mktemp("lite_subset")
    (out / "dataset").mkdir()
    splits = json.loads((lite_data / "split.json").read_text())
    chosen: dict[str, list[str]] = {}
    for split, n in SIZES.items():
        chosen[split] = []
        for imdb_id in splits[split]:
            record, poster = lite_data / "dataset" / f"{imdb_id}.json", lite_data / "dataset" / f"{imdb_id}.jpeg"
            if not (record.is_file() and poster.is_file()):
                continue
            plot = json.loads(record.read_text(encoding="utf-8")).get("plot") or []
            if not plot or sum(map(len, plot)) > MAX_PLOT_CHARS:
                continue
            shutil.copy(record, out / "dataset")
            shutil.copy(poster, out / "dataset")
            chosen[split].append(imdb_id)
            if len(chosen[split]) == n:
                break
    if any(len(ids) < SIZES[s] for s, ids in chosen.items()):
        pytest.skip(f"the lite data has too few movies with a poster and a short plot: {chosen}")
    (out / "split.json").write_text(json.dumps(chosen))
    return out


def _finetune(data: Path, out: Path, model: str, **tuning) -> Path:
    cfg = TrainConfig(data=str(data), model=model, out=str(out), text_encoder="minilm", epochs=1, batch_size=6,
                      lr=3e-3, n_boot=0, protocol="official", device="cpu", progress=False, **tuning)
    return fit(cfg).path


def _base_model(pred: Predictor) -> NeuralModel:
    """The same head over the untuned (shared, pretrained) encoders."""
    base = {kind: _shared_encoder(kind, enc.name, None, True) for kind, enc in pred.encoders.items()}
    return NeuralModel(pred.model.head, base, pred.model.max_tokens)


def _check_reloaded(path: Path, data: Path, atol: float) -> tuple[Predictor, object]:
    """The reloaded model gives the test probabilities the training run saved (5-decimal CSV);
    the untuned base encoders do not. Returns the predictor and one test movie."""
    pred = Predictor.from_checkpoint(path)
    ds = MMIMDb.load(data)
    saved = load_checkpoint(path).predictions()
    saved = saved[saved["split"] == "test"]
    assert len(saved) == SIZES["test"]
    saved = saved.head(N_COMPARED)
    base = _base_model(pred)
    gaps, base_gaps = [], []
    for _, row in saved.iterrows():
        movie = ds[row["imdb_id"]]
        inputs = prepare_inputs(movie.poster_path, movie.plot)
        want = row[[f"p_{g}" for g in GENRES]].to_numpy(dtype=np.float64)
        gaps.append(np.abs(pred.probabilities(inputs) - want).max())
        base_gaps.append(np.abs(base.probabilities(inputs) - want).max())
    assert max(gaps) < atol, gaps
    assert min(base_gaps) > 5 * atol, base_gaps  # the tuned encoder weights are the ones used
    return pred, ds[saved["imdb_id"].iloc[0]]


def _check_explains(pred: Predictor, movie, *, poster: bool) -> None:
    out = pred.predict(poster=movie.poster_path, plot=movie.plot)
    genres = list(out["probabilities"])[:2]
    exp = pred.explain(poster=movie.poster_path, plot=movie.plot, genres=genres, ig_steps=8, faithfulness=False)
    assert exp.text_method == "fast" and set(exp.token_scores) == set(genres)
    for scores in exp.token_scores.values():
        assert len(scores) == len(exp.words) > 0 and np.isfinite(scores).all() and np.abs(scores).sum() > 0
    if poster:
        assert set(exp.poster_cam) == set(genres)
        for cam in exp.poster_cam.values():
            assert cam.size and np.isfinite(cam).all() and cam.max() > 0
    json.dumps(exp.to_dict())  # the form the pages and the CLI serve


def test_lora_minilm_text_only_loads_predicts_and_explains(lite_subset, tmp_path):
    path = _finetune(lite_subset, tmp_path, "text_only", lora=4)
    ckpt = load_checkpoint(path)
    assert ckpt.config["tuning"] == {"mode": "lora", "rank": 4, "alpha": 8.0, "targets": None, "layers": None}
    assert ckpt.config["train"]["lora"] == 4 and ckpt.config["train"]["finetune"]
    assert ckpt.encoder_bases() == {"text": "minilm"}
    tensors = ckpt.encoder_tensors()
    # adapters only: r=4 on query/key/value of MiniLM's 6 layers, (384 + 384) floats each
    assert all(k.startswith("text.") and ".lora_" in k for k in tensors)
    assert sum(v.size for v in tensors.values()) == 6 * 3 * 4 * (384 + 384)
    assert (path / ENCODERS_FILE).stat().st_size < 0.3e6
    assert sum(f.stat().st_size for f in path.iterdir()) < 2e6  # adapters + head: shippable
    # model.safetensors: the head only, no encoder weight (they once ended up there, "encoder.text.model...")
    assert not any(".model." in k or "lora_" in k for k in ckpt.weights)

    pred, movie = _check_reloaded(path, lite_subset, atol=3e-5)
    assert pred.encoders["text"] is not _shared_encoder("text", "minilm", None, True)  # a private tuned copy
    _check_explains(pred, movie, poster=False)


def test_last_block_gmu_loads_predicts_and_explains(lite_subset, tmp_path):
    path = _finetune(lite_subset, tmp_path, "gmu", tune_layers=1)
    ckpt = load_checkpoint(path)
    assert ckpt.config["tuning"] == {"mode": "last-blocks", "rank": None, "alpha": None, "targets": None,
                                     "layers": 1}
    assert ckpt.config["train"]["tune_layers"] == 1
    assert ckpt.encoder_bases() == {"image": "efficientnet-lite0", "text": "minilm"}
    tensors = ckpt.encoder_tensors()
    layers = {k.split(".")[4] for k in tensors if k.startswith("text.model.encoder.layer.")}
    blocks = {k.split(".")[3] for k in tensors if k.startswith("image.net._blocks.")}
    assert layers == {"5"} and blocks == {"15"}  # MiniLM's last layer, EfficientNet-Lite0's last block
    assert all(v.dtype == np.float16 for v in tensors.values() if v.dtype.kind == "f")

    pred, movie = _check_reloaded(path, lite_subset, atol=2e-3)  # fp16 encoder weights
    # the tuned weights are the ones in the predictor's encoders (fp16 -> fp32 exactly)
    live = {kind: enc.state_dict() for kind, enc in pred.encoders.items()}
    for key, value in tensors.items():
        kind, _, name = key.partition(".")
        assert torch.equal(live[kind][name], torch.from_numpy(value).to(live[kind][name].dtype)), key
    full_fp32 = sum(p.numel() * 4 for enc in pred.encoders.values() for p in enc.parameters())
    assert (path / ENCODERS_FILE).stat().st_size < 0.1 * full_fp32
    _check_explains(pred, movie, poster=True)
