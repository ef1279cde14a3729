"""End-to-end fine-tuning (``--finetune``, ``--lora R``, ``--tune-layers N``): encoders tuned with the head.

The encoders are built by name and handed to ``mmgenre.tuning.prepare_for_tuning`` with the run's
``TuningSpec`` (all weights, the last N blocks, or PEFT LoRA adapters). Tuned encoder parameters
train at ``lr * ENCODER_LR_SCALE``; posters get the seeds' augmentations (random resized crop,
horizontal flip, colour jitter) *before* the encoder's own preprocess, so the encoder's
normalisation stays the one used at inference. The checkpoint keeps the head in
``model.safetensors`` and the tuned encoder part (``tuned_tensors``: fp16 weights, or the LoRA
adapters only) in ``encoders.safetensors``, with ``config["tuning"]``; the detector stays fixed.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import torch
from torch import nn
from torchvision.transforms import v2 as T
from tqdm.auto import tqdm

from mmgenre.data import MMIMDb, Movie
from mmgenre.encoders import build_encoder
from mmgenre.errors import InputError
from mmgenre.families.neural import NeuralModel
from mmgenre.genres import GENRES
from mmgenre.heads import HEADS, build_head
from mmgenre.poster import load_poster

from . import engine
from .config import TrainConfig
from .data import encoder_names
from .results import FitResult, finish_run, start_run

log = logging.getLogger(__name__)
ENCODER_LR_SCALE = 0.1
AUGMENT = T.Compose([T.RandomResizedCrop((320, 224), scale=(0.7, 1.0), ratio=(0.6, 0.8)),
                     T.RandomHorizontalFlip(), T.ColorJitter(0.2, 0.2, 0.2, 0.02)])


class EndToEnd(nn.Module):
    """Encoders + head as one trainable module; ``forward(movies, augment)`` -> logits."""

    def __init__(self, encoders: dict, head: nn.Module, max_tokens: int):
        super().__init__()
        self.all_encoders = dict(encoders)  # every kind; the trainable ones are also submodules:
        self.encoders = nn.ModuleDict({k: v for k, v in encoders.items() if isinstance(v, nn.Module)})
        self.head = head
        self.max_tokens = max_tokens

    def forward(self, movies: list[Movie], augment: bool) -> torch.Tensor:
        sources = {"plot": [m.plot for m in movies],
                   "poster": [load_poster(m.poster_path) if m.poster_path else None for m in movies]}
        batch = {}
        for enc in self.all_encoders.values():
            batch.update(enc.entries(sources[enc.reads], max_tokens=self.max_tokens,
                                     augment=AUGMENT if augment else None))
        device = next(self.head.parameters()).device
        return self.head({k: v.to(device) for k, v in batch.items()}).logits


def fit_finetune(cfg: TrainConfig, ds: MMIMDb | None = None, *, encoders: dict | None = None,
                 encoder_build: dict | None = None, fresh: bool = False) -> FitResult:
    """Fine-tune ``cfg.model`` end to end. ``encoders`` may supply (tiny, random) encoders for tests;
    ``encoder_build`` records how to rebuild them ({kind: {"pretrained": bool, "overrides": {...}}})."""
    if cfg.model not in HEADS:
        raise InputError(f"{cfg.model} has no neural head; --finetune applies to: {', '.join(HEADS)}")
    from mmgenre.tuning import prepare_for_tuning, tuned_tensors
    cfg = replace(cfg, finetune=True)  # what the checkpoint's config records
    spec = cfg.tuning()  # a bad --lora / --tune-layers fails here, before the data is read
    ctx = start_run(cfg, ds, fresh=fresh)
    with ctx.tracked:
        names = encoder_names(cfg)
        kinds = list(HEADS[cfg.model].modalities)  # a modality is named after its encoder kind
        built = dict(encoders or {})
        for kind in kinds:
            built.setdefault(kind, build_encoder(kind, names[kind], device=ctx.acc.device))
        modules = {k: v for k, v in built.items() if k in kinds and isinstance(v, nn.Module)}
        torch.manual_seed(cfg.seed)  # LoRA's initial adapters, then the head's weights
        tuned = prepare_for_tuning(modules, spec)  # InputError for a target the encoder lacks
        built.update(tuned)
        dims = {kind: built[kind].dim for kind in kinds}
        max_tokens = cfg.max_tokens or HEADS[cfg.model].default_max_tokens
        head = build_head(cfg.model, dims, len(GENRES), hidden=cfg.hidden or HEADS[cfg.model].default_hidden,
                          dropout=cfg.dropout, **cfg.head_kwargs)
        model = EndToEnd({k: built[k] for k in kinds}, head, max_tokens)
        enc_params = [p for p in model.encoders.parameters() if p.requires_grad]
        groups = [{"params": list(head.parameters()), "lr": cfg.lr}]
        if enc_params:
            groups.append({"params": enc_params, "lr": cfg.lr * ENCODER_LR_SCALE})
        movies = ctx.movies
        if any(getattr(built[k], "reads", None) == "poster" for k in kinds):
            movies = _posters_checked(movies, cfg.skip_bad, cfg.progress)

        def logits(m, split, idx, noise):
            return m([movies[split][i] for i in idx], augment=noise is not None)

        y = ctx.labels
        task = engine.Task(cfg.model, model, groups, {"train": y["train"], "dev": y["dev"]}, logits)
        model, history = engine.train(task, cfg, ctx.acc, ctx.state, ctx.tracked.epoch, ctx.state_extra)
        probs = {s: engine.predict(ctx.acc, model, task, s, len(movies[s]), cfg.batch_size) for s in ("dev", "test")}
        weights, head_cfg = NeuralModel(model.head.cpu(), {}, max_tokens).state()
        build = encoder_build or {}
        enc_info = {k: built[k].describe() | {"name": names[k], **build.get(k, {})} for k in kinds}
        return finish_run(ctx, probs, history, weights=weights,
                          encoder_tensors=tuned_tensors({k: built[k] for k in tuned}, spec),
                          config={"head": head_cfg, "encoders": enc_info, "tuning": spec.to_dict()})


def _posters_checked(movies: dict[str, list[Movie]], skip_bad: bool, progress: bool) -> dict[str, list[Movie]]:
    """Every poster decoded once before the first step: posters are read live each epoch, so an
    unreadable one would otherwise stop the run mid-epoch. InputError naming the file; with
    ``skip_bad`` the movie keeps its plot and loses its poster (as feature extraction does)."""
    bad: list[str] = []
    out: dict[str, list[Movie]] = {}
    total = sum(len(ms) for ms in movies.values())
    with tqdm(total=total, desc="checking posters", unit="movie", disable=not progress, leave=False) as bar:
        for split, ms in movies.items():
            out[split] = []
            for m in ms:
                if m.poster_path is not None:
                    try:
                        load_poster(m.poster_path)
                    except InputError as exc:
                        if not skip_bad:
                            raise
                        bad.append(str(exc))
                        m = replace(m, poster_path=None)
                out[split].append(m)
                bar.update(1)
    if bad:
        log.warning("--skip-bad: %d unreadable poster(s) left out (their plots still train):\n  %s",
                    len(bad), "\n  ".join(bad))
    return out
