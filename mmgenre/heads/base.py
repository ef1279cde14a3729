"""Shared pieces of the genre-classification heads.

Heads are trained on *cached* features of frozen encoders and, at explanation time, run on live
encoder outputs, so every head is an ordinary differentiable ``nn.Module`` of its input tensors.
The batch a head reads is a ``dict[str, torch.Tensor]`` whose keys are listed in
:mod:`mmgenre.schema`; ``dims = {"text": Dt, "image": Di, "detector": Dd}`` (a head only needs
the modalities it uses).

Missing modalities: every head replaces the projected representation of a missing modality by
a learned placeholder vector and/or masks it in its attention or gating, so a batch in which no
row has a poster still gives finite logits.

Explanations: a head whose extras explain something (gates, modality weights, attention) says so
in :meth:`Head.explain_extras`; ``mmgenre.explain`` asks every head and needs no change for a new one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from mmgenre import schema
from mmgenre.errors import InputError
from mmgenre.genres import N_GENRES
from mmgenre.schema import Batch


@dataclass
class HeadOutput:
    """What a head returns: genre logits and optional explainability tensors (see each head)."""

    logits: torch.Tensor  # (B, n_genres)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Head(nn.Module):
    """Base class: checks dims and hyperparameters and reads modalities out of a batch."""

    name: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = ()
    uses_sequences: ClassVar[bool] = False  # True if it reads text_tokens / image_regions
    # Training defaults a head may lower to stay fast on CPU (used when the config leaves them unset).
    default_hidden: ClassVar[int] = 256
    default_max_tokens: ClassVar[int] = 128

    def __init__(self, dims: dict[str, int], n_genres: int = N_GENRES, *, hidden: int = 256,
                 dropout: float = 0.2, **kw: Any) -> None:
        super().__init__()
        if kw:
            raise InputError(f"head {self.name!r}: unknown hyperparameter(s) {sorted(kw)}")
        self.dims = check_dims(self.name, self.modalities, dims)
        self.n_genres = _positive_int(n_genres, "n_genres")
        self.hidden = _positive_int(hidden, "hidden")
        if not 0.0 <= float(dropout) < 1.0:
            raise InputError(f"head {self.name!r}: dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self._hparams: dict[str, Any] = {"hidden": self.hidden, "dropout": self.dropout}

    def forward(self, batch: Batch) -> HeadOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        """JSON-serialisable kwargs: ``build_head(self.name, dims, n_genres, **hparams)`` rebuilds it."""
        return dict(self._hparams)

    @classmethod
    def input_keys(cls) -> tuple[str, ...]:
        """Float batch keys this head reads (the tensors an explainer may attribute to)."""
        return tuple(k for m in cls.modalities
                     for k in (schema.feature_keys(m) if cls.uses_sequences else (m,)))

    def explain_extras(self, out: HeadOutput, ctx: Any) -> dict[str, Any]:
        """Parts of an explanation read from ``out.extras`` (one movie: row ``ctx.row``).

        Returns ``{"modality": {...}}`` (merged into ``Explanation.modality``) and/or
        ``{"cross_attention": {...}}``; ``ctx`` is a ``mmgenre.explain.extras.ExtrasContext``
        (explained genres, the plot's words and token positions, the poster's region grid).
        The base head has no extras worth explaining.
        """
        return {}

    # ----- batch access -------------------------------------------------------------------
    def feature(self, batch: Batch, key: str, modality: str, ndim: int = 2) -> torch.Tensor:
        """``batch[key]`` after checking it exists, has ``ndim`` dims and last dim ``dims[modality]``."""
        if key not in batch:
            raise InputError(f"head {self.name!r}: batch has no {key!r} (keys: {sorted(batch)})")
        x = batch[key]
        if not torch.is_tensor(x) or x.dim() != ndim or x.shape[-1] != self.dims[modality]:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise InputError(f"head {self.name!r}: batch[{key!r}] has shape {shape}, expected "
                             f"{ndim} dims with last dim {self.dims[modality]}")
        return x

    def present(self, batch: Batch, modality: str, n: int) -> torch.Tensor:
        """(B,) bool: which rows have ``modality`` (see ``schema.presence_keys`` for defaults)."""
        key = next((k for k in schema.presence_keys(modality) if k in batch), None)
        if key is None:
            return torch.ones(n, dtype=torch.bool, device=self._device())
        mask = batch[key].to(device=self._device()).bool().reshape(-1)
        if mask.numel() != n:
            raise InputError(f"head {self.name!r}: batch[{key!r}] has {mask.numel()} rows, "
                             f"expected {n}")
        return mask

    def _device(self) -> torch.device:
        return next(self.parameters()).device


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{what} must be a positive int, got {value!r}")
    return value


def check_dims(head: str, modalities: tuple[str, ...], dims: dict[str, int]) -> dict[str, int]:
    """The dims a head needs, as a new dict; InputError names a missing or bad entry."""
    if not isinstance(dims, dict):
        raise InputError(f"head {head!r}: dims must be a dict like {{'text': 384}}, got {dims!r}")
    missing = [m for m in modalities if m not in dims]
    if missing:
        raise InputError(f"head {head!r} needs dims for {list(modalities)}; missing {missing}")
    return {m: _positive_int(dims[m], f"dims[{m!r}]") for m in modalities}


# ----- building blocks ----------------------------------------------------------------------
class SymLog(nn.Module):
    """sign(x) * log1p(|x|): tames counts and pixel areas whose scales differ by orders."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * torch.log1p(x.abs())


def input_norm(modality: str, dim: int) -> nn.Module:
    """Per-sample normalisation applied to a raw feature before projection (no BatchNorm)."""
    if modality == "detector":
        return nn.Sequential(SymLog(), nn.LayerNorm(dim))
    return nn.LayerNorm(dim)


class ModalityEncoder(nn.Module):
    """norm -> Linear(hidden) -> GELU, with a learned placeholder for rows lacking the modality."""

    def __init__(self, modality: str, dim: int, hidden: int, activation: nn.Module | None = None):
        super().__init__()
        self.norm = input_norm(modality, dim)
        self.proj = nn.Linear(dim, hidden)
        self.act = activation if activation is not None else nn.GELU()
        self.placeholder = nn.Parameter(torch.randn(hidden) * 0.02)

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        h = self.act(self.proj(self.norm(x)))
        # torch.where keeps gradients for present rows and none through the placeholder rows.
        return torch.where(present.unsqueeze(-1), h, self.placeholder.to(h.dtype))


def classifier(in_dim: int, hidden: int, n_genres: int, dropout: float) -> nn.Sequential:
    """Dropout -> Linear -> GELU -> Dropout -> Linear(n_genres)."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(),
                         nn.Dropout(dropout), nn.Linear(hidden, n_genres))


def masked_softmax(scores: torch.Tensor, present: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax over ``dim`` restricted to present entries.

    A row with no present entry falls back to a plain softmax over all entries (they are then
    all learned placeholders), so the result always sums to 1 and is never NaN.
    """
    none = ~present.any(dim=dim, keepdim=True)
    keep = present | none
    return scores.masked_fill(~keep, float("-inf")).softmax(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of (B, L, D) over L where mask (B, L) is True; also returns (B,) 'any True'."""
    w = mask.to(x.dtype).unsqueeze(-1)
    count = w.sum(dim=1)
    return (x * w).sum(dim=1) / count.clamp_min(1.0), mask.any(dim=1)


# ----- training helper ----------------------------------------------------------------------
def modality_dropout(batch: Batch, p_text: float, p_image: float,
                     generator: torch.Generator | None = None) -> Batch:
    """Randomly mark the plot or the poster missing, to train for missing posters / plots.

    ``p_text`` is the chance per row of removing the plot, ``p_image`` the poster: every modality
    computed from it (``schema.from_source``) is zeroed, its mask cleared and its ``has_*`` False.
    An input is only dropped from a row that still has the other one, and never both from the
    same row. The input dict is not modified; a new dict is returned.
    """
    for p, what in ((p_text, "p_text"), (p_image, "p_image")):
        if not 0.0 <= float(p) <= 1.0:
            raise InputError(f"modality_dropout: {what} must be in [0, 1], got {p}")
    ref = next((batch[k] for m in schema.MODALITIES for k in schema.feature_keys(m) if k in batch), None)
    if ref is None:
        raise InputError("modality_dropout: batch has none of text/image features")
    n, device = ref.shape[0], ref.device

    def has(source: str) -> torch.Tensor:
        key = schema.presence(schema.primary(source))
        return batch[key].bool() if key in batch else torch.ones(n, dtype=torch.bool, device=device)

    has_text, has_image = has("plot"), has("poster")
    gen_device = generator.device if generator is not None else device
    u = torch.rand(3, n, generator=generator, device=gen_device).to(device)
    drop_t, drop_i = u[0] < p_text, u[1] < p_image
    both = drop_t & drop_i
    coin = u[2] < 0.5  # both drawn: keep only one of the two drops
    drop_t = drop_t & ~(both & coin) & has_image
    drop_i = drop_i & ~(both & ~coin) & has_text

    out = dict(batch)
    out["has_text"], out["has_image"] = has_text, has_image
    for source, drop in (("plot", drop_t), ("poster", drop_i)):
        schema.remove_rows(out, source, drop)
    return out


class SingleModalityHead(Head):
    """norm -> Linear(hidden) -> GELU -> Dropout -> Linear(n_genres) on one pooled modality.

    Rows missing the modality get a learned hidden placeholder (i.e. a learned prior).
    Subclasses set ``modalities = (<modality>,)`` and register themselves.
    """

    def __init__(self, dims: dict[str, int], n_genres: int = N_GENRES, **kw: Any) -> None:
        super().__init__(dims, n_genres, **kw)
        (self.modality,) = self.modalities
        self.encoder = ModalityEncoder(self.modality, self.dims[self.modality], self.hidden)
        self.out = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(self.hidden, self.n_genres))

    def forward(self, batch: Batch) -> HeadOutput:
        x = self.feature(batch, self.modality, self.modality)
        h = self.encoder(x, self.present(batch, self.modality, x.shape[0]))
        return HeadOutput(self.out(h))
