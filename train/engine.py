"""The one training engine: epochs, early stopping on dev macro-F1, per-epoch state, on Accelerate.

Frozen-feature heads (``train.heads``) and end-to-end fine-tuning (``train.finetune``) both hand
the engine a :class:`Task`: a module, its parameter groups, and how rows of a split become
logits. The engine owns the rest: AdamW + warm-up, the loss, gradient accumulation and clipping,
the data order, dev evaluation gathered over processes, early stopping, and resume.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmgenre import metrics as M
from mmgenre.genres import GENRES

from .config import TrainConfig
from .optim import make_loss, warmup_linear
from .resume import EpochState, Progress, load_trainable, trainable_state
from .runtime import seed_epoch

log = logging.getLogger(__name__)
CLIP_NORM = 5.0


@dataclass
class Task:
    """What the engine trains.

    ``logits(model, split, idx, noise)``: logits of rows ``idx`` (sorted np.ndarray) of ``split``;
    ``noise`` is this process's generator while training ("train") and None when evaluating.
    ``y`` holds the 0/1 labels of "train" and "dev".
    """

    name: str
    model: nn.Module
    param_groups: list[dict]
    y: dict[str, np.ndarray]
    logits: Callable[[nn.Module, str, np.ndarray, torch.Generator | None], torch.Tensor]


class EpochBatches:
    """Batches of a seeded permutation of ``range(n)`` (rows sorted within a batch, which keeps
    reads local), the same on every process; Accelerate gives each its share of a batch."""

    drop_last = False

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator()

    def __iter__(self):
        perm = torch.randperm(self.n, generator=self.generator).numpy()
        for start in range(0, self.n, self.batch_size):
            yield np.sort(perm[start:start + self.batch_size]).tolist()

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


def _indices(rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def predict(acc: Accelerator, model: nn.Module, task: Task, split: str, n: int, batch_size: int) -> np.ndarray:
    """(n, n_genres) probabilities of ``split``, each process scoring its share (gathered)."""
    if n == 0:
        return np.zeros((0, len(GENRES)), dtype=np.float32)
    model.eval()
    loader = acc.prepare_data_loader(DataLoader(range(n), batch_size=batch_size, collate_fn=_indices))
    out = [acc.gather_for_metrics(torch.sigmoid(task.logits(model, split, idx.numpy(), None).float()))
           for idx in loader]
    return torch.cat(out).cpu().numpy()


def train(task: Task, cfg: TrainConfig, acc: Accelerator, state: EpochState | None = None,
          on_epoch: Callable[[dict], None] | None = None, state_extra: dict | None = None) -> tuple[nn.Module, list[dict]]:
    """Train ``task.model``; returns it (unwrapped, eval mode, best dev epoch's weights) and the history.

    With ``state``, the main process saves everything needed to continue after each epoch and a
    saved state of the same run is resumed first; the result is the same either way.
    """
    model = task.model
    n_train, n_dev = len(task.y["train"]), len(task.y["dev"])
    opt = torch.optim.AdamW(task.param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = EpochBatches(n_train, cfg.batch_size)
    steps = cfg.epochs * math.ceil(len(batches) / cfg.grad_accum)
    sched = warmup_linear(opt, steps, cfg.warmup_frac)
    done = (state.restore(model, opt, sched) if state is not None else None) or Progress()
    model, opt, sched = acc.prepare(model, opt, sched)
    loader = acc.prepare_data_loader(DataLoader(range(n_train), batch_sampler=batches, collate_fn=_indices))
    loss_fn = make_loss(cfg)
    target = torch.from_numpy(task.y["train"]).float()
    if cfg.label_smoothing:
        target = target * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
    best, history = (done.best_score, done.best_state, done.best_epoch), list(done.history)
    epochs = range(done.epoch, cfg.epochs) if not done.stopped else range(0)
    bar = tqdm(epochs, desc=task.name, unit="epoch", disable=not (cfg.progress and acc.is_main_process),
               leave=False, initial=done.epoch, total=cfg.epochs)
    for epoch in bar:
        order, noise = seed_epoch(cfg.seed, epoch, acc.process_index)
        batches.generator.set_state(order.get_state())
        model.train()
        total = torch.zeros(2, dtype=torch.float64)
        for idx in loader:
            with acc.accumulate(model):
                logits = task.logits(model, "train", idx.numpy(), noise).float()
                loss = loss_fn(logits, target[idx].to(logits.device))
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), CLIP_NORM)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            total += torch.tensor([float(loss.detach()) * len(idx), len(idx)], dtype=torch.float64)
        total = acc.reduce(total.to(acc.device), "sum").cpu()
        probs = predict(acc, model, task, "dev", n_dev, cfg.batch_size)
        score = M.compute_metrics(task.y["dev"], probs, M.tune_thresholds(task.y["dev"], probs))["macro_f1"]
        record = {"epoch": epoch + 1, "train_loss": float(total[0] / total[1]), "dev_macro_f1": score}
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", dev_macro_f1=f"{score:.3f}")
        stop = False
        if score > best[0]:
            best = (score, {k: v.detach().clone() for k, v in trainable_state(acc.unwrap_model(model)).items()}, epoch)
        elif epoch - best[2] >= cfg.patience:
            stop = True
        if on_epoch is not None:  # before the save: a kill in between re-runs (and re-logs) this epoch
            on_epoch(record)
        if state is not None and acc.is_main_process:
            state.save(Progress(epoch + 1, history, best[0], best[2], best[1], stop),
                       acc.unwrap_model(model), opt, sched, state_extra)
        if stop:
            break
    model = acc.unwrap_model(model, keep_fp32_wrapper=False)  # callers predict in fp32, outside autocast
    if best[1] is not None:
        load_trainable(model, best[1])
    return model.eval(), history
