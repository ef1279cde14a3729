"""The three encoder kinds and the batch entries each one owns (keys: :mod:`mmgenre.schema`).

A kind turns the input it ``reads`` (the plot or the poster) into its entries three ways:

* ``encode(items, ...)``: numpy columns for the feature cache (``mmgenre.features``);
* ``cached_entries(fs, rows, ...)``: batch arrays from such a cache (``mmgenre.batching``);
* ``entries(items, ...)``: live torch entries, gradients flowing (prediction, explanation,
  fine-tuning).

A new kind is a subclass here (or in its own module) added to ``KINDS``, plus its keys in
:mod:`mmgenre.schema`; nothing that reads batches asks which kind it has.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from mmgenre.errors import InputError
from mmgenre.lazy_rows import LazyRows
from mmgenre.schema import Batch

Progress = Callable[[int], Any]  # called with the number of movies just done


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

    base_weights_digest: str | None = None  # set by mmgenre.tuning before it changes the weights

    def weights_digest(self) -> str:
        """A short fingerprint of the weights: every tensor's name, shape and 64 evenly spaced values.

        Recorded in ``describe()``, hence in feature caches and checkpoints, so that a checkpoint
        trained on one weights file refuses another file of the same architecture and name (its
        features would not be the ones the head learned on). Sampling keeps it to milliseconds
        for MPNet; two independently trained or re-initialised models differ in nearly every value.
        A tuned encoder's ``describe()`` reports ``base_weights_digest``, the weights it was tuned from.
        """
        h = hashlib.sha256()
        with torch.no_grad():
            for name, tensor in sorted(self.state_dict().items()):
                flat = tensor.detach().reshape(-1)
                step = max(1, flat.numel() // DIGEST_SAMPLES)
                h.update(f"{name}:{tuple(tensor.shape)};".encode())
                h.update(flat[::step][:DIGEST_SAMPLES].to(device="cpu", dtype=torch.float32).numpy().tobytes())
        return h.hexdigest()[:16]


DIGEST_SAMPLES = 64  # values per tensor in FrozenModule.weights_digest


def _rows(array, rows: np.ndarray) -> np.ndarray:
    return np.asarray(array[rows])


class TextEncoder(FrozenModule):
    """Frozen text encoder: plots -> token ids -> pooled and per-token features."""

    kind: ClassVar[str] = "text"
    reads: ClassVar[str] = "plot"  # the input it reads (mmgenre.schema.SOURCE)
    default: ClassVar[str] = "mpnet"  # the offline default encoder
    cli_flag: ClassVar[str] = "--text-encoder"  # how the CLIs (and TrainConfig) name the choice
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

    # -- batch entries ---------------------------------------------------------------------
    @staticmethod
    def feature_entries(out: TextFeatures, present: Sequence[bool], max_tokens: int | None = None) -> Batch:
        """Entries from an encoder output; tokens past ``max_tokens`` (the head's window) dropped."""
        t = out.tokens.shape[1] if max_tokens is None else min(max_tokens, out.tokens.shape[1])
        has = torch.tensor(list(present), dtype=torch.bool, device=out.pooled.device)
        keep = has.to(out.pooled.dtype)[:, None]
        return {"text": out.pooled * keep, "text_tokens": out.tokens[:, :t] * keep[:, :, None],
                "text_mask": out.mask[:, :t] & has[:, None], "has_text": has}

    def entries(self, plots: Sequence[str], *, max_tokens: int | None = None, augment=None) -> Batch:
        """Live entries of cleaned plots ('' = no plot); ``augment`` does not apply to text."""
        toks = self.tokenize(list(plots))
        out = self(toks["input_ids"].to(self.device), toks["attention_mask"].to(self.device))
        return self.feature_entries(out, [bool(p) for p in plots], max_tokens)

    def encode(self, plots: Sequence[str], *, batch_size: int, max_tokens: int,
               progress: Progress = lambda n: None) -> dict[str, np.ndarray]:
        """Cache columns: pooled (N, D), seq (N, max_tokens, D) float16, seq_mask, present."""
        n = len(plots)
        pooled = np.zeros((n, self.dim), dtype=np.float16)
        seq = np.zeros((n, max_tokens, self.dim), dtype=np.float16)
        mask = np.zeros((n, max_tokens), dtype=bool)
        present = np.array([bool(p.strip()) for p in plots], dtype=bool)
        # Longest first, so each batch pads to similar lengths (2-3x faster than file order).
        order = sorted(np.flatnonzero(present), key=lambda i: -len(plots[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            toks = self.tokenize([plots[i] for i in idx])
            out = self(toks["input_ids"], toks["attention_mask"])
            t = min(max_tokens, out.tokens.shape[1])
            pooled[idx] = out.pooled.float().numpy()
            seq[idx, :t] = out.tokens[:, :t].float().numpy()
            mask[idx, :t] = out.mask[:, :t].numpy()
            progress(len(idx))
        progress(n - len(order))
        return {"pooled": pooled, "seq": seq, "seq_mask": mask, "present": present}

    @staticmethod
    def cached_entries(fs, rows: np.ndarray, *, sequences: bool, max_tokens: int | None) -> dict[str, np.ndarray]:
        out = {"text": _rows(fs.pooled, rows), "has_text": _rows(fs.present, rows).astype(bool)}
        if sequences:
            t = fs.seq.shape[1] if max_tokens is None else min(max_tokens, fs.seq.shape[1])
            mask = np.asarray(fs.seq_mask[rows, :t])
            # trim the columns no row of this table uses
            used = max(1, int(mask.any(axis=0).nonzero()[0].max() + 1) if mask.any() else 1)
            out["text_tokens"] = LazyRows(fs.seq, rows, used)  # read per batch, not held in RAM
            out["text_mask"] = mask[:, :used]
        return out


class ImageEncoder(FrozenModule):
    """Frozen image encoder: PIL poster -> pixels (its one transform) -> pooled and region features."""

    kind: ClassVar[str] = "image"
    reads: ClassVar[str] = "poster"  # the input it reads (mmgenre.schema.SOURCE)
    default: ClassVar[str] = "efficientnet-lite0"  # the offline default encoder
    cli_flag: ClassVar[str] = "--image-encoder"  # how the CLIs (and TrainConfig) name the choice
    name: str
    dim: int
    input_size: tuple[int, int]  # (H, W)
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    cpu_batch: ClassVar[int | None] = None  # cap on the extraction batch on CPU (None: the caller's)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        raise NotImplementedError

    def extraction_batch(self, batch_size: int) -> int:
        """The batch ``encode`` uses when asked for ``batch_size``: capped at ``cpu_batch`` on CPU."""
        return min(batch_size, self.cpu_batch) if self.cpu_batch and self.device.type == "cpu" else batch_size

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

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- batch entries ---------------------------------------------------------------------
    def pixels(self, posters: Sequence[Image.Image | None], augment=None) -> torch.Tensor:
        """(B, 3, H, W): each poster through ``augment`` (PIL -> PIL) then ``preprocess``; zeros
        for a missing poster."""
        blank = torch.zeros(3, *self.input_size)
        return torch.stack([blank if p is None else self.preprocess(augment(p) if augment else p)
                            for p in posters]).to(self.device)

    @staticmethod
    def feature_entries(out: ImageFeatures, present: Sequence[bool]) -> Batch:
        has = torch.tensor(list(present), dtype=torch.bool, device=out.pooled.device)
        keep = has.to(out.pooled.dtype)[:, None]
        return {"image": out.pooled * keep, "image_regions": out.regions * keep[:, :, None], "has_image": has}

    def entries(self, posters: Sequence[Image.Image | None], *, max_tokens: int | None = None,
                augment=None) -> Batch:
        """Live entries of posters (None = no poster); ``augment`` (training only) runs before
        ``preprocess``, so the normalisation stays the one used at inference."""
        return self.feature_entries(self(self.pixels(posters, augment)), [p is not None for p in posters])

    def encode(self, posters: Sequence[Image.Image | None], *, batch_size: int, max_tokens: int,
               progress: Progress = lambda n: None) -> dict[str, np.ndarray]:
        """Cache columns: pooled (N, D), seq (N, R, D) float16, seq_mask (N, R), present."""
        n = len(posters)
        present = np.array([p is not None for p in posters], dtype=bool)
        columns = None
        idx_all = np.flatnonzero(present)
        batch_size = self.extraction_batch(batch_size)
        for start in range(0, len(idx_all), batch_size):
            idx = idx_all[start:start + batch_size]
            out = self(self.preprocess_batch([posters[i] for i in idx]))
            if columns is None:
                columns = self._empty_columns(n, out.regions.shape[1])
            columns["pooled"][idx] = out.pooled.float().numpy()
            columns["seq"][idx] = out.regions.float().numpy()
            columns["seq_mask"][idx] = True
            progress(len(idx))
        progress(n - len(idx_all))
        if columns is None:  # no poster at all: probe the region count once
            columns = self._empty_columns(n, self(torch.zeros(1, 3, *self.input_size)).regions.shape[1])
        return {**columns, "present": present}

    def _empty_columns(self, n: int, r: int) -> dict[str, np.ndarray]:
        return {"pooled": np.zeros((n, self.dim), dtype=np.float16),
                "seq": np.zeros((n, r, self.dim), dtype=np.float16), "seq_mask": np.zeros((n, r), dtype=bool)}

    @staticmethod
    def cached_entries(fs, rows: np.ndarray, *, sequences: bool, max_tokens: int | None) -> dict[str, np.ndarray]:
        out = {"image": _rows(fs.pooled, rows), "has_image": _rows(fs.present, rows).astype(bool)}
        if sequences:
            out["image_regions"] = LazyRows(fs.seq, rows)
        return out


class Detector:
    """Frozen object detector turned into a fixed-length feature vector per poster."""

    kind: ClassVar[str] = "detector"
    reads: ClassVar[str] = "poster"  # the input it reads (mmgenre.schema.SOURCE)
    default: ClassVar[str] = "haar"  # the offline default encoder
    cli_flag: ClassVar[str] = "--detector"  # how the CLIs (and TrainConfig) name the choice
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

    # -- batch entries ---------------------------------------------------------------------
    def entries(self, posters: Sequence[Image.Image | None], *, max_tokens: int | None = None,
                augment=None) -> Batch:
        """Live entries; ``augment`` does not apply: the statistics are those of the poster."""
        return {"detector": torch.from_numpy(self.features_batch(list(posters))),
                "has_detector": torch.tensor([p is not None for p in posters], dtype=torch.bool)}

    def encode(self, posters: Sequence[Image.Image | None], *, batch_size: int, max_tokens: int,
               progress: Progress = lambda n: None) -> dict[str, np.ndarray]:
        """Cache columns: pooled (N, dim) float16 and present."""
        feats = np.zeros((len(posters), self.dim), dtype=np.float32)
        for i, img in enumerate(posters):
            if img is not None:
                feats[i] = self.features(img)
            progress(1)
        return {"pooled": feats.astype(np.float16), "present": np.array([p is not None for p in posters])}

    @staticmethod
    def cached_entries(fs, rows: np.ndarray, *, sequences: bool, max_tokens: int | None) -> dict[str, np.ndarray]:
        return {"detector": _rows(fs.pooled, rows), "has_detector": _rows(fs.present, rows).astype(bool)}


# kind name -> its interface; the registry (``mmgenre.encoders.base``) takes its kinds from here.
KINDS: dict[str, type] = {cls.kind: cls for cls in (TextEncoder, ImageEncoder, Detector)}
