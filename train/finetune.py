"""End-to-end fine-tuning (``--finetune``): encoders unfrozen, posters augmented, for GPU users.

The frozen-feature path (``loop.fit``) is the default on CPU. Here text and image encoders
train with the head at ``lr * encoder_lr_scale``; posters get the seeds' augmentations
(random resized crop, horizontal flip, colour jitter) *before* the encoder's own preprocess,
so the encoder's normalisation stays the one used at inference. The checkpoint stores the
fine-tuned encoder weights next to the head's (``encoder.<kind>.*``), and ``Predictor``
loads them back. The detector (Haar/YOLO statistics) stays fixed.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchvision.transforms import v2 as T
from tqdm.auto import tqdm

from mmgenre import metrics as M
from mmgenre.checkpoint import save_checkpoint
from mmgenre.data import MMIMDb, Movie
from mmgenre.encoders import build_encoder
from mmgenre.errors import InputError
from mmgenre.genres import GENRES
from mmgenre.heads import HEADS, build_head
from mmgenre.poster import load_poster

from .config import TrainConfig
from .loop import FitResult, complete_pairs, encoder_names, evaluate_split, load_dataset, make_loss, predictions_frame, protocol_splits, warmup_linear

ENCODER_LR_SCALE = 0.1
AUGMENT = T.Compose([T.RandomResizedCrop((320, 224), scale=(0.7, 1.0), ratio=(0.6, 0.8)),
                     T.RandomHorizontalFlip(), T.ColorJitter(0.2, 0.2, 0.2, 0.02)])


class EndToEnd(nn.Module):
    """Encoders + head as one trainable module; ``forward(movies, augment)`` -> logits."""

    def __init__(self, encoders: dict, head: nn.Module, max_tokens: int, device: str):
        super().__init__()
        self.all_encoders = dict(encoders)  # every kind; the trainable ones are also submodules:
        self.encoders = nn.ModuleDict({k: v for k, v in encoders.items() if isinstance(v, nn.Module)})
        self.head = head
        self.max_tokens = max_tokens
        self.device = device

    def forward(self, movies: list[Movie], augment: bool) -> torch.Tensor:
        sources = {"plot": [m.plot for m in movies],
                   "poster": [load_poster(m.poster_path) if m.poster_path else None for m in movies]}
        batch = {}
        for enc in self.all_encoders.values():
            batch.update(enc.entries(sources[enc.reads], max_tokens=self.max_tokens,
                                     augment=AUGMENT if augment else None))
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return self.head(batch).logits


def unfreeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(True)
    return module


@torch.no_grad()
def _predict(model: EndToEnd, movies: list[Movie], batch_size: int) -> np.ndarray:
    model.eval()
    out = [torch.sigmoid(model(movies[i:i + batch_size], augment=False)).cpu()
           for i in range(0, len(movies), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, len(GENRES)), dtype=np.float32)


def fit_finetune(cfg: TrainConfig, ds: MMIMDb | None = None, *, encoders: dict | None = None,
                 encoder_build: dict | None = None) -> FitResult:
    """Fine-tune ``cfg.model`` end to end. ``encoders`` may supply (tiny, random) encoders for tests;
    ``encoder_build`` records how to rebuild them ({kind: {"pretrained": bool, "overrides": {...}}})."""
    if cfg.model not in HEADS:
        raise InputError(f"{cfg.model} has no neural head; --finetune applies to: {', '.join(HEADS)}")
    t0 = time.perf_counter()
    ds = ds or load_dataset(cfg)
    splits = protocol_splits(ds, cfg)
    names = encoder_names(cfg)
    kinds = list(HEADS[cfg.model].modalities)  # a modality is named after its encoder kind
    encoders = dict(encoders or {})
    for kind in kinds:
        encoders.setdefault(kind, build_encoder(kind, names[kind], device=cfg.device))
    for enc in encoders.values():
        if isinstance(enc, nn.Module):  # detector statistics stay fixed
            unfreeze(enc)
    dims = {kind: encoders[kind].dim for kind in kinds}
    torch.manual_seed(cfg.seed)
    head = build_head(cfg.model, dims, len(GENRES), hidden=cfg.hidden or HEADS[cfg.model].default_hidden, dropout=cfg.dropout, **cfg.head_kwargs)
    model = EndToEnd(encoders, head, cfg.max_tokens or HEADS[cfg.model].default_max_tokens, cfg.device).to(cfg.device)
    enc_params = [p for p in model.encoders.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": head.parameters(), "lr": cfg.lr},
                             {"params": enc_params, "lr": cfg.lr * ENCODER_LR_SCALE}],
                            weight_decay=cfg.weight_decay)
    movies = {s: [ds[i] for i in ids] for s, ids in splits.items()}
    y = {s: ds.labels(ids) for s, ids in splits.items()}
    steps = cfg.epochs * math.ceil(len(movies["train"]) / cfg.batch_size)
    sched = warmup_linear(opt, steps, cfg.warmup_frac)
    loss_fn = make_loss(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, history = (-1.0, None, 0), []
    for epoch in tqdm(range(cfg.epochs), desc=f"finetune {cfg.model}", disable=not cfg.progress):
        model.train()
        perm = torch.randperm(len(movies["train"]), generator=gen).tolist()
        for start in range(0, len(perm), cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            logits = model([movies["train"][i] for i in idx], augment=True)
            loss = loss_fn(logits, torch.from_numpy(y["train"][idx]).to(cfg.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
        probs = _predict(model, movies["dev"], cfg.batch_size)
        score = M.compute_metrics(y["dev"], probs, M.tune_thresholds(y["dev"], probs))["macro_f1"]
        history.append({"epoch": epoch + 1, "dev_macro_f1": score})
        if score > best[0]:
            best = (score, copy.deepcopy(model.state_dict()), epoch)
        elif epoch - best[2] >= cfg.patience:
            break
    model.load_state_dict(best[1])
    probs = {s: _predict(model, movies[s], cfg.batch_size) for s in ("dev", "test")}
    thr = M.tune_thresholds(y["dev"], probs["dev"])
    complete = {s: complete_pairs(movies[s]) for s in ("dev", "test")}
    results = {s: evaluate_split(y[s], probs[s], thr, complete[s], cfg.n_boot, cfg.seed) for s in ("dev", "test")}
    results.update(train_seconds=time.perf_counter() - t0, history=history,
                   n={s: len(v) for s, v in splits.items()})
    weights = {k: v.detach().cpu().numpy() for k, v in head.state_dict().items()}
    for kind, enc in model.encoders.items():
        weights.update({f"encoder.{kind}.{k}": v.detach().cpu().numpy() for k, v in enc.state_dict().items()})
    build = encoder_build or {}
    enc_info = {k: encoders[k].describe() | {"name": names[k], "finetuned": k in model.encoders,
                                             **build.get(k, {})} for k in kinds}
    config = {"model": cfg.model, "encoders": enc_info, "thresholds": [float(t) for t in thr],
              "head": {"name": cfg.model, "dims": dims, "n_genres": len(GENRES), "hparams": head.hparams(),
                       "uses_sequences": HEADS[cfg.model].uses_sequences, "max_tokens": cfg.max_tokens or HEADS[cfg.model].default_max_tokens},
              "train": cfg.to_dict(), "data": {"fingerprint": ds.fingerprint(), "folder": Path(ds.root).name,
                                               "n": results["n"]}}
    preds = pd.concat([predictions_frame(ds, s, splits[s], probs[s]) for s in ("dev", "test")], ignore_index=True)
    path = save_checkpoint(Path(cfg.out) / cfg.model, weights=weights, config=config, metrics=results,
                           predictions=preds)
    return FitResult(cfg.model, path, results, time.perf_counter() - t0, history)
