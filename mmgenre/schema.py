"""The batch every head reads: one ``dict[str, torch.Tensor]`` whose keys are named here only.

Each encoder kind writes the entries of its modality (``mmgenre.encoders.kinds``), from cached
features (training) or from live inputs (prediction, explanation, fine-tuning); heads read them.
The modality of an encoder kind has the kind's name, so ``dims`` / ``has_*`` / batch keys use the
same three words everywhere: ``text``, ``image``, ``detector``.

==================  ==============  ===========================================================
key                 shape           meaning
==================  ==============  ===========================================================
``text``            (B, Dt)         pooled plot features
``text_tokens``     (B, T, Dt)      per-token plot features (sequence heads only)
``text_mask``       (B, T) bool     True = real token, False = padding (sequence heads only)
``image``           (B, Di)         pooled poster features (zeros when there is no poster)
``image_regions``   (B, R, Di)      poster grid features, e.g. R = 49 for a 7x7 CNN grid
``detector``        (B, Dd)         object-detector statistics (counts, areas...; any scale)
``has_text``        (B,) bool       False: empty plot. Optional, defaults to all True
``has_image``       (B,) bool       False: no poster. Optional, defaults to all True
``has_detector``    (B,) bool       optional; defaults to ``has_image`` because the detector
                                    statistics are computed from the poster
==================  ==============  ===========================================================

Float features are float32; a missing modality's rows are zeros with ``has_*`` False.
"""
from __future__ import annotations

import torch

Batch = dict[str, torch.Tensor]

MODALITIES: tuple[str, ...] = ("text", "image", "detector")
# Which user input each modality is computed from; removing an input removes all its modalities.
SOURCE: dict[str, str] = {"text": "plot", "image": "poster", "detector": "poster"}
# Per-position features and their mask, for the modalities that have them.
SEQUENCE: dict[str, str] = {"text": "text_tokens", "image": "image_regions"}
MASK: dict[str, str] = {"text": "text_mask"}


def presence(modality: str) -> str:
    """The ``has_*`` key of ``modality``."""
    return f"has_{modality}"


def primary(source: str) -> str:
    """The first modality computed from ``source`` ("plot" -> text, "poster" -> image)."""
    return next(m for m in MODALITIES if SOURCE[m] == source)


def presence_keys(modality: str) -> tuple[str, ...]:
    """Where a head looks for ``modality``'s presence, in order: its own key, then the key of
    the primary modality of its source (``has_detector`` falls back to ``has_image``)."""
    own, fallback = presence(modality), presence(primary(SOURCE[modality]))
    return (own,) if own == fallback else (own, fallback)


def feature_keys(modality: str) -> tuple[str, ...]:
    """The float feature keys of ``modality``: pooled first, then per-position features."""
    return (modality,) + ((SEQUENCE[modality],) if modality in SEQUENCE else ())


def keys(modality: str) -> tuple[str, ...]:
    """Every key ``modality`` writes: features, mask and presence."""
    return feature_keys(modality) + ((MASK[modality],) if modality in MASK else ()) + (presence(modality),)


def from_source(source: str) -> tuple[str, ...]:
    """The modalities computed from ``source``."""
    return tuple(m for m in MODALITIES if SOURCE[m] == source)


def remove_rows(batch: Batch, source: str, rows: torch.Tensor) -> None:
    """In place: every modality computed from ``source`` removed from the rows where ``rows``
    (B,) bool is True (features zeroed, masks and ``has_*`` cleared); existing tensors are
    replaced, not written into."""
    for modality in from_source(source):
        for key in feature_keys(modality):
            if key in batch:
                x = batch[key]
                keep = (~rows).reshape(-1, *([1] * (x.dim() - 1)))
                batch[key] = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        if modality in MASK and MASK[modality] in batch:
            batch[MASK[modality]] = batch[MASK[modality]].bool() & ~rows.unsqueeze(1)
        key = presence(modality)
        if key in batch:
            batch[key] = batch[key].bool() & ~rows
