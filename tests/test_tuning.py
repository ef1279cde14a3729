"""Fine-tuning (mmgenre.tuning) on the real offline encoders, and tuned checkpoints that load everywhere."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from mmgenre.checkpoint import ENCODERS_FILE, load_checkpoint, save_checkpoint
from mmgenre.data import MMIMDb
from mmgenre.encoders import build_encoder, list_encoders
from mmgenre.errors import InputError
from mmgenre.families.neural import NeuralModel, _shared_encoder
from mmgenre.genres import GENRES
from mmgenre.heads import build_head
from mmgenre.inputs import prepare_inputs
from mmgenre.predict import Predictor
from mmgenre.tuning import TuningSpec, prepare_for_tuning, restore_tuned, tuned_tensors

PLOTS = ["A detective hunts a killer through the rain-soaked city at night.",
         "Two old friends fall in love during a summer wedding."]


@pytest.fixture(scope="module")
def minilm():
    """The real offline MiniLM, frozen; tests copy it before tuning."""
    return build_encoder("text", "minilm")


def _pooled(text, plots=PLOTS) -> torch.Tensor:
    with torch.no_grad():
        return text(**text.tokenize(plots)).pooled


def _train(encoders: dict, steps: int = 3, lr: float = 1e-2) -> None:
    """A few AdamW steps on a toy loss (push the pooled features towards a fixed direction)."""
    params = [p for enc in encoders.values() for p in enc.parameters() if p.requires_grad]
    assert params, "nothing to train"
    opt = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = torch.zeros(())
        for enc in encoders.values():
            out = enc(**enc.tokenize(PLOTS)) if enc.kind == "text" else enc(torch.rand(2, 3, *enc.input_size,
                                                                                           generator=gen))
            target = torch.linspace(-1, 1, out.pooled.shape[1])
            loss = loss + (out.pooled - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _nbytes(tensors) -> int:
    return sum(v.numel() * v.element_size() for v in tensors.values())


# -- the spec ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="lora", rank=0), "positive"),
    (dict(mode="lora", rank=-4), "positive"),
    (dict(mode="lora", rank=None), "integer rank"),
    (dict(mode="lora", rank=2.5), "integer rank"),
    (dict(mode="lora", rank=8, alpha=0), "alpha"),
    (dict(mode="lora", rank=8, targets=[]), "targets"),
    (dict(mode="lora", rank=8, targets="query"), "targets"),
    (dict(mode="full", rank=8), "applies to mode 'lora'"),
    (dict(mode="last-blocks", layers=0), "positive number of layers"),
    (dict(mode="full", layers=2), "applies to mode 'last-blocks'"),
    (dict(mode="adapters"), "tuning mode"),
])
def test_bad_specs_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        TuningSpec(**kwargs)


def test_spec_round_trips_through_its_dict():
    spec = TuningSpec("lora", rank=4, targets=["query", "image:_conv_head"])
    assert spec.alpha == 8.0  # default 2 * rank, stored resolved
    assert TuningSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert TuningSpec.from_dict({"mode": "frozen"}) == TuningSpec()
    with pytest.raises(InputError, match="unknown keys"):
        TuningSpec.from_dict({"mode": "lora", "rank": 4, "dropout": 0.1})


def test_unknown_target_is_refused_naming_what_exists(minilm):
    text = copy.deepcopy(minilm)
    with pytest.raises(InputError, match=r"'attn_q'.*minilm.*query, key, value"):
        prepare_for_tuning({"text": text}, TuningSpec("lora", rank=4, targets=["query", "attn_q"]))
    with pytest.raises(InputError, match="'image' encoder, which this model does not tune"):
        prepare_for_tuning({"text": text}, TuningSpec("lora", rank=4, targets=["image:_conv_head"]))
    with pytest.raises(InputError, match="has 6 blocks"):
        prepare_for_tuning({"text": text}, TuningSpec("last-blocks", layers=7))
    # refused before anything changed
    assert not hasattr(text, "peft_config") and not any(p.requires_grad for p in text.parameters())


# -- LoRA, full and last-blocks on the real MiniLM -------------------------------------------

def test_lora_on_minilm_stores_adapters_only_and_merges_back(minilm):
    spec = TuningSpec("lora", rank=8)
    text = copy.deepcopy(minilm)
    base_out = _pooled(minilm)
    prepare_for_tuning({"text": text}, spec)
    trainable = {n for n, p in text.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"query", "key", "value"}  # attention projections
    _train({"text": text})
    tuned_out = _pooled(text)
    assert not torch.allclose(tuned_out, base_out, atol=1e-4)  # the adapters learned something

    tensors = tuned_tensors({"text": text}, spec)
    assert tensors and all(k.startswith("text.") and ".lora_" in k for k in tensors)
    # r=8 on q/k/v of 6 layers, 384-d: 6 * 3 * 8 * (384 + 384) floats
    assert sum(v.numel() for v in tensors.values()) == 6 * 3 * 8 * 768
    assert _nbytes(tensors) < 0.5e6 < 0.03 * sum(p.numel() * 4 for p in minilm.parameters())

    fresh = copy.deepcopy(minilm)
    restore_tuned({"text": fresh}, spec, tensors)
    assert torch.allclose(_pooled(fresh), tuned_out, atol=1e-5)
    # merged: a plain module again, frozen, nothing of PEFT left
    assert type(fresh.model.encoder.layer[0].attention.self.query) is torch.nn.Linear
    assert not hasattr(fresh, "peft_config") and not any(p.requires_grad for p in fresh.parameters())
    assert set(fresh.state_dict()) == set(minilm.state_dict())


@pytest.mark.parametrize("spec, tuned_layers", [(TuningSpec("full"), {str(i) for i in range(6)}),
                                                (TuningSpec("last-blocks", layers=2), {"4", "5"})])
def test_full_and_last_blocks_round_trip_in_fp16(minilm, spec, tuned_layers):
    text = copy.deepcopy(minilm)
    prepare_for_tuning({"text": text}, spec)
    layers = {n.split(".")[3] for n, p in text.named_parameters() if p.requires_grad and ".layer." in n}
    assert layers == tuned_layers
    _train({"text": text}, lr=1e-3)
    tuned_out = _pooled(text)
    tensors = tuned_tensors({"text": text}, spec)
    assert all(v.dtype == torch.float16 for v in tensors.values() if v.is_floating_point())
    if spec.mode == "last-blocks":
        assert not any(".layer.3." in k or "embeddings" in k for k in tensors)
    fresh = copy.deepcopy(minilm)
    restore_tuned({"text": fresh}, spec, tensors)
    restored = _pooled(fresh)
    assert (restored - tuned_out).abs().max() < 1e-2  # fp16 weights
    assert (restored - tuned_out).abs().max() < 0.1 * (_pooled(minilm) - tuned_out).abs().max()
    assert next(fresh.parameters()).dtype == torch.float32 and not any(p.requires_grad for p in fresh.parameters())


def test_mpnet_lora_targets_its_attention_and_refuses_minilm_adapters(minilm):
    if "mpnet" not in list_encoders("text"):
        pytest.skip("mpnet is not registered")
    mpnet = build_encoder("text", "mpnet", pretrained=False, num_hidden_layers=2)  # same module names
    base = copy.deepcopy(mpnet)
    spec = TuningSpec("lora", rank=4)
    prepare_for_tuning({"text": mpnet}, spec)
    assert {n.split(".")[-4] for n, p in mpnet.named_parameters() if p.requires_grad} == {"q", "k", "v"}
    _train({"text": mpnet})
    restore_tuned({"text": base}, spec, tuned_tensors({"text": mpnet}, spec))
    assert torch.allclose(_pooled(base), _pooled(mpnet), atol=1e-5)

    lite = copy.deepcopy(minilm)
    prepare_for_tuning({"text": lite}, spec)
    with pytest.raises(InputError, match="another encoder"):
        restore_tuned({"text": build_encoder("text", "mpnet", pretrained=False, num_hidden_layers=2)}, spec,
                      tuned_tensors({"text": lite}, spec))


def test_image_lora_goes_on_pointwise_convs():
    image = build_encoder("image", "efficientnet-lite0")
    with pytest.raises(InputError, match="depthwise"):
        prepare_for_tuning({"image": image}, TuningSpec("lora", rank=4, targets=["image:_depthwise_conv"]))
    base = copy.deepcopy(image)
    spec = TuningSpec("lora", rank=4)
    prepare_for_tuning({"image": image}, spec)
    names = {n.split(".")[-4] for n, p in image.named_parameters() if p.requires_grad}
    assert names == {"_expand_conv", "_project_conv", "_conv_head"}
    _train({"image": image})
    pixels = torch.rand(1, 3, *image.input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tuned = image(pixels).pooled
        restore_tuned({"image": base}, spec, tuned_tensors({"image": image}, spec))
        assert torch.allclose(base(pixels).pooled, tuned, atol=1e-4)


# -- a tuned checkpoint through Predictor ------------------------------------------------------

@pytest.fixture(scope="module")
def tuned_checkpoint(tmp_path_factory, minilm):
    """An early_fusion checkpoint over LoRA-tuned MiniLM + EfficientNet-Lite0 (untrained head), and
    the in-memory model it was saved from."""
    spec = TuningSpec("lora", rank=8)
    encoders = {"text": copy.deepcopy(minilm), "image": build_encoder("image", "efficientnet-lite0")}
    prepare_for_tuning(encoders, spec)
    _train(encoders)
    torch.manual_seed(0)
    head = build_head("early_fusion", {k: e.dim for k, e in encoders.items()}, len(GENRES)).eval()
    model = NeuralModel(head, encoders, 64)
    weights, head_cfg = model.state()
    config = {"model": "early_fusion", "head": head_cfg, "thresholds": [0.3] * len(GENRES),
              "encoders": {k: e.describe() for k, e in encoders.items()},
              "tuning": spec.to_dict()}
    path = save_checkpoint(tmp_path_factory.mktemp("tuned") / "early_fusion", weights=weights, config=config,
                           encoder_tensors=tuned_tensors(encoders, spec))
    return path, model


def _movie(tiny_data):
    return next(m for m in MMIMDb.load(tiny_data).split("test") if m.has_poster and m.has_plot)


def test_tuned_checkpoint_loads_predicts_and_explains(tuned_checkpoint, tiny_data, minilm):
    path, model = tuned_checkpoint
    size = (path / ENCODERS_FILE).stat().st_size
    assert size < 1.5e6  # adapters of both encoders
    assert not any(k.startswith("encoder") for k in load_file(str(path / "model.safetensors")))
    pred = Predictor.from_checkpoint(path)
    assert load_checkpoint(path).encoder_bases() == {"image": "efficientnet-lite0", "text": "minilm"}
    movie = _movie(tiny_data)
    inputs = prepare_inputs(movie.poster_path, movie.plot)
    with torch.no_grad():
        expected = model.probabilities(inputs)
    assert np.allclose(pred.probabilities(inputs), expected, atol=1e-5)
    out = pred.predict(poster=movie.poster_path, plot=movie.plot)
    assert set(out["probabilities"]) == set(GENRES)
    # the tuned encoders are the checkpoint's own: the cache shared by frozen checkpoints is untouched
    assert pred.encoders["text"] is not _shared_encoder("text", "minilm", None, True)
    assert torch.allclose(_pooled(_shared_encoder("text", "minilm", None, True)), _pooled(minilm))
    assert not torch.allclose(_pooled(pred.encoders["text"]), _pooled(minilm), atol=1e-4)

    exp = pred.explain(poster=movie.poster_path, plot=movie.plot, genres=["Drama", "Crime"], ig_steps=4,
                       faithfulness=False)
    assert set(exp.poster_cam) == {"Drama", "Crime"} and set(exp.token_scores) == {"Drama", "Crime"}
    assert all(np.isfinite(cam).all() and cam.max() > 0 for cam in exp.poster_cam.values())
    assert len(exp.token_scores["Drama"]) == len(exp.words) > 0
    assert np.abs(exp.token_scores["Drama"]).sum() > 0


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _tampered(src, dst, *, config=None, tensors=None):
    shutil.copytree(src, dst)
    if config is not None:
        (dst / "config.json").write_text(json.dumps(config(json.loads((dst / "config.json").read_text()))))
    if tensors is not None:
        save_file(tensors(load_file(str(dst / ENCODERS_FILE))), str(dst / ENCODERS_FILE),
                  metadata={"text": "minilm", "image": "efficientnet-lite0"})
    return dst


def _drop_one(t):
    return {k: v for k, v in list(t.items())[1:]}


def _reshape_one(t):
    k = next(iter(t))
    return {**t, k: np.zeros((t[k].shape[0] + 1, *t[k].shape[1:]), t[k].dtype)}


@pytest.mark.parametrize("name, config, tensors, message", [
    ("dropped", None, _drop_one, "adapters do not match its base encoder"),
    ("reshaped", None, _reshape_one, "adapters do not match its base encoder"),
    ("other_rank", lambda c: {**c, "tuning": {**c["tuning"], "rank": 4}}, None, "adapters do not match"),
    ("other_base", lambda c: {**c, "encoders": {**c["encoders"], "text": {"name": "mpnet"}}}, None,
     "tuned on another encoder: its text encoder was tuned on 'minilm', not 'mpnet'"),
    ("says_frozen", lambda c: {**c, "tuning": {"mode": "frozen"}}, None, "config says the encoders were not tuned"),
    ("bad_tuning", lambda c: {**c, "tuning": {"mode": "lora", "rank": 0}}, None, "rank must be a positive"),
])
def test_mismatched_tuned_checkpoints_are_refused(tuned_checkpoint, tmp_path, name, config, tensors, message):
    path, _ = tuned_checkpoint
    before = _digest(path)
    bad = _tampered(path, tmp_path / name, config=config, tensors=tensors)
    tampered = _digest(bad)
    with pytest.raises(InputError, match=message):
        Predictor.from_checkpoint(bad)
    assert _digest(bad) == tampered and _digest(path) == before  # loading writes nothing


def test_tuned_checkpoint_without_its_encoder_file_or_with_another_encoder(tuned_checkpoint, tmp_path):
    path, _ = tuned_checkpoint
    bare = _tampered(path, tmp_path / "bare")
    (bare / ENCODERS_FILE).unlink()
    with pytest.raises(InputError, match="has no encoders.safetensors"):
        Predictor.from_checkpoint(bare)
    other = build_encoder("text", "mpnet", pretrained=False, num_hidden_layers=1, hidden_size=384,
                          num_attention_heads=4, intermediate_size=64)
    with pytest.raises(InputError, match="tuned on another encoder"):
        Predictor.from_checkpoint(path, encoders={"text": other})


def test_refused_save_leaves_the_old_checkpoint_whole(tuned_checkpoint, tmp_path):
    path, _ = tuned_checkpoint
    target = shutil.copytree(path, tmp_path / "target")
    before = _digest(target)
    ckpt = load_checkpoint(target)
    with pytest.raises(InputError):
        save_checkpoint(target, weights=ckpt.weights, config={**ckpt.config, "thresholds": [2.0]},
                        encoder_tensors=ckpt.encoder_tensors())
    assert _digest(target) == before
    Predictor.from_checkpoint(target)
