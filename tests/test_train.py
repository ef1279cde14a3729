"""Training protocol, checkpoints and the train CLI, end to end on the generated tiny dataset."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mmgenre.batching import build_table
from mmgenre.checkpoint import load_checkpoint
from mmgenre.data import MMIMDb
from mmgenre.errors import InputError
from mmgenre.features import extract_features
from mmgenre.genres import GENRES
from mmgenre.heads import HEADS, build_head
from mmgenre.leaderboard import read_leaderboard
from mmgenre.metrics import LEADERBOARD_KEYS
from mmgenre.models import encoder_kinds, list_models
from train.__main__ import main as train_main
from train.config import TrainConfig
from train.loop import fit


@pytest.fixture(scope="module")
def trained(tiny_checkpoints, tiny_cache):
    return tiny_checkpoints, tiny_cache, None


@pytest.mark.parametrize("model", list_models())
def test_every_model_writes_a_complete_checkpoint(trained, model):
    out, _, results = trained
    path = out / model
    for name in ("config.json", "model.safetensors", "metrics.json", "predictions.csv"):
        assert (path / name).is_file(), name
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model"] == model and cfg["genres"] == list(GENRES) and len(cfg["thresholds"]) == 23
    assert set(cfg["encoders"]) == set(encoder_kinds(model))
    assert cfg["data"]["fingerprint"] and cfg["versions"]["torch"]
    metrics = json.loads((path / "metrics.json").read_text())
    for split in ("dev", "test"):
        for key in LEADERBOARD_KEYS:
            assert key in metrics[split]
        assert len(metrics[split]["per_genre"]) == 23
        assert "micro_f1" in metrics[split]["ci"]
    preds = pd.read_csv(path / "predictions.csv", dtype={"imdb_id": str})
    assert len(preds) == metrics["n"]["dev"] + metrics["n"]["test"] and set(preds["split"]) == {"dev", "test"}
    assert [c for c in preds.columns if c.startswith("p_")] == [f"p_{g}" for g in GENRES]


@pytest.mark.parametrize("model", list(HEADS))
def test_reloaded_head_reproduces_saved_predictions(trained, tiny_data, model):
    out, cache, _ = trained
    ckpt = load_checkpoint(out / model)
    head_cfg = ckpt.config["head"]
    head = build_head(model, head_cfg["dims"], **head_cfg["hparams"])
    head.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ckpt.weights.items()})
    head.eval()
    ds = MMIMDb.load(tiny_data)
    feats = {k: extract_features(ds, k, ckpt.config["encoders"][k]["name"], cache_root=cache, progress=False)
             for k in encoder_kinds(model)}
    preds = ckpt.predictions()
    ids = preds["imdb_id"].tolist()
    table = build_table(feats, ids, sequences=head_cfg["uses_sequences"], max_tokens=head_cfg["max_tokens"])
    with torch.no_grad():
        probs = torch.sigmoid(head(table.batch()).logits).numpy()
    np.testing.assert_allclose(probs, preds[[f"p_{g}" for g in GENRES]].to_numpy(), atol=2e-5)


def test_train_cli_end_to_end_writes_leaderboard(tiny_data, tmp_path, trained):
    _, cache, _ = trained
    rc = train_main(["--data", str(tiny_data), "--models", "text_only,early_fusion,tfidf_logreg",
                     "--out", str(tmp_path), "--cache", str(cache), "--epochs", "2", "--n-boot", "10",
                     "--no-progress"])
    assert rc == 0
    board = read_leaderboard(tmp_path)
    assert sorted(board["model"]) == ["early_fusion", "text_only", "tfidf_logreg"]
    for col in ("model", *LEADERBOARD_KEYS, "micro_f1_complete", "macro_f1_complete"):
        assert col in board.columns
    assert board["micro_f1"].between(0, 1).all()


def test_train_cli_rejects_unknown_model_and_missing_data(tmp_path, capsys):
    assert train_main(["--data", str(tmp_path), "--models", "nonsense", "--out", str(tmp_path)]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert train_main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_train_cli_extracts_in_bf16_into_its_own_cache_and_records_it(tiny_data, tmp_path, capsys):
    cache = tmp_path / "cache"
    rc = train_main(["--data", str(tiny_data), "--models", "text_only", "--text-encoder", "minilm",
                     "--feature-precision", "bf16", "--out", str(tmp_path / "out"), "--cache", str(cache),
                     "--epochs", "1", "--n-boot", "10", "--no-progress"])
    assert rc == 0
    assert load_checkpoint(tmp_path / "out" / "text_only").config["train"]["feature_precision"] == "bf16"
    (text_cache,) = [d for d in cache.iterdir() if d.name.startswith("text-minilm-")]
    assert text_cache.name.endswith("-bf16") and json.loads((text_cache / "meta.json").read_text())["precision"] == "bf16"
    with pytest.raises(SystemExit):
        train_main(["--data", str(tiny_data), "--feature-precision", "fp8", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(InputError, match="feature_precision 'fp16' is not one of fp32, bf16"):
        TrainConfig(feature_precision="fp16")
    from mmgenre.features import PRECISIONS
    from train.config import FEATURE_PRECISIONS
    assert FEATURE_PRECISIONS == PRECISIONS  # train's light copy of the library's list


def test_cross_validation_reports_out_of_fold_scores(tiny_data, tmp_path, trained):
    _, cache, _ = trained
    from train.cv import cross_validate
    res = cross_validate(TrainConfig(data=str(tiny_data), model="text_only", cv=3, cv_split="train",
                                     out=str(tmp_path), cache=str(cache), epochs=2, progress=False))
    assert res["k"] == 3 and res["n"] == 24 and len(res["folds"]) == 3
    assert 0 <= res["out_of_fold"]["micro_f1"] <= 1
    assert (tmp_path / "cv" / "text_only-train-k3.json").is_file()


def test_dev_share_moves_into_training(tiny_data, tmp_path, trained):
    _, cache, _ = trained
    res = fit(TrainConfig(data=str(tiny_data), model="text_only", out=str(tmp_path), cache=str(cache),
                          epochs=1, n_boot=0, train_on_dev_fraction=0.5, protocol="official", progress=False))
    assert res.metrics["n"]["train"] == 24 + 6 and res.metrics["n"]["dev"] == 6


@pytest.mark.parametrize("protocol", ["train-holdout", "complete-dev", "official"])
def test_protocols_partition_the_movies(tiny_data, protocol):
    from train.loop import load_dataset, protocol_splits
    cfg = TrainConfig(data=str(tiny_data), protocol=protocol)
    ds = load_dataset(cfg)
    parts = protocol_splits(ds, cfg)
    all_ids = parts["train"] + parts["dev"] + parts["test"]
    assert sorted(all_ids) == sorted(ds.movies) and len(set(all_ids)) == len(all_ids)
    assert parts["test"] == ds.splits["test"]
    if protocol == "complete-dev":
        assert all(ds[i].has_plot and ds[i].has_poster for i in parts["dev"])
    if protocol == "train-holdout":
        assert set(parts["dev"]) <= set(ds.splits["train"]) and set(ds.splits["dev"]) <= set(parts["train"])


def test_finetune_trains_encoders_end_to_end(tiny_data, tmp_path):
    from mmgenre.encoders import build_encoder
    from train.finetune import fit_finetune
    tiny_text = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    encoders = {"text": build_encoder("text", "minilm", pretrained=False, **tiny_text),
                "image": build_encoder("image", "vit-b16", pretrained=False, arch="vit_tiny_patch16_224", depth=1),
                "detector": build_encoder("detector", "haar")}
    before = {k: v.clone() for k, v in encoders["text"].state_dict().items()}
    res = fit_finetune(TrainConfig(data=str(tiny_data), model="detection_fusion", out=str(tmp_path), epochs=1,
                                   batch_size=12, n_boot=0, progress=False), encoders=encoders)
    ckpt = load_checkpoint(res.path)
    assert set(ckpt.config["encoders"]) == {"text", "image", "detector"}
    assert ckpt.config["head"]["dims"] == {"text": 32, "image": encoders["image"].dim, "detector": encoders["detector"].dim}
    assert ckpt.config["tuning"]["mode"] == "full" and ckpt.config["train"]["finetune"]
    assert not any(k.startswith("encoder.") for k in ckpt.weights)         # model.safetensors: the head only
    tuned = ckpt.encoder_tensors()                                         # encoders.safetensors: fp16 weights
    assert {k.partition(".")[0] for k in tuned} == {"text", "image"}       # the detector stays fixed
    assert all(v.dtype == np.float16 for v in tuned.values() if v.dtype.kind == "f")
    after = encoders["text"].state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items())   # the text encoder trained
    assert 0 <= res.metrics["test"]["micro_f1"] <= 1
    with pytest.raises(InputError, match="no neural head"):
        fit_finetune(TrainConfig(data=str(tiny_data), model="tfidf_logreg", out=str(tmp_path), finetune=True))
