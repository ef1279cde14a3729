"""The start and the end every run shares: checks before work, and thresholds, metrics, checkpoint.

:func:`start_run` does every check that can fail (data, splits, a resume state of another run,
the tracker's folder, processes vs batch size) before features are read or a step is taken;
:func:`finish_run` tunes the thresholds on dev, scores dev and test, and lets the main process
write the checkpoint and close the tracked run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from accelerate import Accelerator

from mmgenre import metrics as M
from mmgenre.checkpoint import save_checkpoint
from mmgenre.data import MMIMDb

from .config import TrainConfig
from .data import complete_pairs, encoder_names, load_dataset, predictions_frame, protocol_splits
from .resume import EpochState
from .runtime import make_accelerator
from .tracking import Run, check_tracking, tracking_folder


@dataclass
class FitResult:
    model: str
    path: Path | None
    metrics: dict
    seconds: float
    history: list = field(default_factory=list)


def evaluate_split(y: np.ndarray, probs: np.ndarray, thr: np.ndarray, complete: np.ndarray,
                   n_boot: int, seed: int) -> dict:
    out = M.compute_metrics(y, probs, thr)
    out["per_genre"] = M.per_genre_table(y, probs, thr).to_dict(orient="records")
    if n_boot:
        out["ci"] = {k: list(v) for k, v in M.bootstrap_ci(y, probs, thr, n_boot=n_boot, seed=seed).items()}
    if complete.any() and not complete.all():
        out["complete_pairs"] = M.compute_metrics(y[complete], probs[complete], thr)
    elif complete.all():
        out["complete_pairs"] = {k: v for k, v in out.items() if k not in ("per_genre", "ci")}
    return out


@dataclass
class RunContext:
    """One model's run: its data, splits, accelerator, resume state and tracked run."""

    cfg: TrainConfig
    ds: MMIMDb
    splits: dict[str, list[str]]
    acc: Accelerator
    state: EpochState
    tracked: Run
    started: float

    @property
    def movies(self) -> dict[str, list]:
        return {s: [self.ds[i] for i in ids] for s, ids in self.splits.items()}

    @property
    def labels(self) -> dict[str, np.ndarray]:
        return {s: self.ds.labels(ids) for s, ids in self.splits.items()}

    @property
    def state_extra(self) -> dict:
        return {"mlflow_run_id": self.tracked.run_id} if self.tracked.run_id else {}


def start_run(cfg: TrainConfig, ds: MMIMDb | None = None, *, fresh: bool = False) -> RunContext:
    """Every check before work (InputError); ``fresh`` discards a saved state of another run."""
    t0 = time.perf_counter()
    ds = ds or load_dataset(cfg)
    splits = protocol_splits(ds, cfg)
    state = EpochState(cfg.out, cfg, ds.fingerprint())
    meta = state.check(fresh=fresh) or {}
    uri = check_tracking(cfg)
    folder = tracking_folder(cfg)
    acc = make_accelerator(cfg, log_with="mlflow" if cfg.track else None,
                           project_dir=str(folder) if folder else None)
    tracked = Run(acc, cfg, uri).start(state.key, encoder_names(cfg), run_id=meta.get("mlflow_run_id"))
    return RunContext(cfg, ds, splits, acc, state, tracked, t0)


def finish_run(ctx: RunContext, probs: dict[str, np.ndarray], history: list, *, weights: dict,
               config: dict, encoder_tensors: dict | None = None) -> FitResult:
    """Thresholds on dev, dev/test figures, and (main process) the checkpoint; ``config`` holds the
    model-specific parts (head, encoders, tuning), the rest is added here."""
    cfg, ds, splits = ctx.cfg, ctx.ds, ctx.splits
    y, movies = ctx.labels, ctx.movies
    thr = M.tune_thresholds(y["dev"], probs["dev"], shrink=M.THRESHOLD_SHRINK)
    train_seconds = time.perf_counter() - ctx.started
    results = {s: evaluate_split(y[s], probs[s], thr, complete_pairs(movies[s]), cfg.n_boot, cfg.seed)
               for s in ("dev", "test")}
    results.update(train_seconds=train_seconds, history=history, n={s: len(ids) for s, ids in splits.items()},
                   processes=ctx.acc.num_processes)
    config = {"model": cfg.model, **config, "thresholds": [float(t) for t in thr], "train": cfg.to_dict(),
              "data": {"fingerprint": ds.fingerprint(), "folder": Path(ds.root).name, "n": results["n"]}}
    path = Path(cfg.out) / cfg.model
    if ctx.acc.is_main_process:
        preds = pd.concat([predictions_frame(ds, s, splits[s], probs[s]) for s in ("dev", "test")],
                          ignore_index=True)
        save_checkpoint(path, weights=weights, config=config, metrics=results, predictions=preds,
                        encoder_tensors=encoder_tensors or None)
        ctx.state.clear()  # the checkpoint is complete: nothing left to resume
    ctx.tracked.finish(results, path)
    ctx.acc.wait_for_everyone()  # no process reads <out> before the checkpoint is there
    ctx.acc.free_memory()
    return FitResult(cfg.model, path, results, time.perf_counter() - ctx.started, history)
