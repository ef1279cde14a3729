"""Resumable training: per-epoch state under ``<out>/.state/<model>/``, and skipping finished models.

One state folder per model, replaced whole after every epoch (by the main process only)::

    state.safetensors   tensors: the model's trainable weights and buffers (``model.*``: a head,
                        or a head plus its tuned encoder or LoRA adapters), the best-so-far
                        copy of them (``best.*``) and the optimiser's moments (``opt.<i>.<key>``)
    state.json          the run key (training config + data fingerprint), epochs done, history,
                        best score and epoch, early-stop flag, optimiser groups and scalars, the
                        scheduler and the tracker's run id

Both files are written into a staging folder that :func:`mmgenre.atomic.replace_dir` swaps in, so
a SIGKILL at any instant leaves the last complete state (or the one before), never a mix; nothing
is pickled. The random streams need no saving: every epoch reseeds them from (seed, epoch, rank)
(``runtime.seed_epoch``), so a resumed run draws what the uninterrupted one drew and ends
bit-identical to it (same machine, library versions and process count).

A state of *another* run (config or data changed) is never resumed and never silently dropped:
:meth:`EpochState.check` raises before any work, naming what differs, unless told to start over.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from mmgenre import atomic
from mmgenre.checkpoint import load_checkpoint
from mmgenre.errors import InputError

from .config import TrainConfig

log = logging.getLogger(__name__)

STATE_DIR = ".state"
STATE_VERSION = 2
TENSORS_FILE = "state.safetensors"
JSON_FILE = "state.json"
# Config fields that do not change what is trained: paths (the data is identified by its
# fingerprint instead), the device, progress bars, tracking, and skip_bad (its effect shows in
# the fingerprint).
IGNORED_FIELDS = ("data", "out", "cache", "progress", "skip_bad", "device", "track", "track_uri")


def run_key(cfg: TrainConfig, fingerprint: str) -> dict:
    """What identifies a training run: its config without ``IGNORED_FIELDS``, plus the data."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in IGNORED_FIELDS}
    return json.loads(json.dumps({"train": d, "fingerprint": fingerprint}, sort_keys=True))


def key_differences(stored: dict, current: dict) -> list[str]:
    """Readable differences between two run keys ("lr: 0.005 in the state, 0.001 now")."""
    out = [f"{k}: {stored['train'].get(k)!r} in the state, {v!r} now"
           for k, v in current["train"].items() if stored.get("train", {}).get(k) != v]
    if stored.get("fingerprint") != current["fingerprint"]:
        out.append(f"data fingerprint: {stored.get('fingerprint')} in the state, {current['fingerprint']} now")
    return out


def checkpoint_is_current(out: str | Path, cfg: TrainConfig, fingerprint: str) -> bool:
    """True when ``<out>/<model>/`` is a complete, loadable checkpoint of this very run."""
    try:
        ckpt = load_checkpoint(Path(out) / cfg.model)
    except InputError:
        return False
    train = ckpt.config.get("train")
    if not isinstance(train, dict) or not (ckpt.path / "metrics.json").is_file():
        return False
    try:
        stored = TrainConfig(**{k: v for k, v in train.items() if k in cfg.to_dict()})
    except (InputError, TypeError):
        return False
    return run_key(stored, str(ckpt.config.get("data", {}).get("fingerprint"))) == run_key(cfg, fingerprint)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What changes while ``model`` trains: parameters that require grad, and every buffer."""
    keep = {n for n, p in model.named_parameters() if p.requires_grad} | {n for n, _ in model.named_buffers()}
    return {k: v for k, v in model.state_dict(keep_vars=False).items() if k in keep}


def load_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load :func:`trainable_state` back; a key it lacks must be a frozen parameter."""
    result = model.load_state_dict(tensors, strict=False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    missing = [k for k in result.missing_keys if k not in frozen]
    if result.unexpected_keys or missing:
        raise KeyError(f"unexpected {result.unexpected_keys[:3]}, missing {missing[:3]}")


# -------------------------------------------------------------------------------- state
@dataclass
class Progress:
    """Where training stands after ``epoch`` completed epochs."""

    epoch: int = 0
    history: list = field(default_factory=list)
    best_score: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None      # trainable_state of the best epoch so far
    stopped: bool = False               # early stopping fired


class EpochState:
    """Saves and restores the training state of one model (see the module docstring)."""

    def __init__(self, out: str | Path, cfg: TrainConfig, fingerprint: str):
        self.path = Path(out) / STATE_DIR / cfg.model
        self.key = run_key(cfg, fingerprint)

    def _meta(self) -> dict | None:
        where = atomic.settled_dir(self.path)  # killed mid-swap: the previous complete state
        try:
            return json.loads((where / JSON_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("training state %s is unreadable (%s); starting over", where, exc)
            return None

    def check(self, *, fresh: bool = False) -> dict | None:
        """Before any work: the saved state's JSON when it is this run's (None when there is none).

        A state of another run raises InputError naming the differences, and stays on disk,
        unless ``fresh`` (``--force``), which deletes it.
        """
        meta = self._meta()
        if meta is None:
            return None
        if fresh:
            log.info("--force: discarding the training state %s", self.path)
            self.clear()
            return None
        if meta.get("version") != STATE_VERSION:
            log.info("training state %s has an older format; starting over", self.path)
            return None
        if meta.get("key") != self.key:
            diff = key_differences(meta.get("key", {}), self.key)
            raise InputError(f"{self.path} holds a killed run of {self.path.name} with another config or data "
                             f"({'; '.join(diff[:4])}). Rerun with the same options to resume it, or pass "
                             "--force to discard it and start over")
        return meta

    # -- writing ----------------------------------------------------------------------------
    def save(self, progress: Progress, model: torch.nn.Module, opt: torch.optim.Optimizer, sched,
             extra: dict | None = None) -> None:
        tensors = {f"model.{k}": v for k, v in trainable_state(model).items()}
        if progress.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in progress.best_state.items()})
        opt_sd = opt.state_dict()
        opt_scalars: dict[str, dict] = {}
        for idx, slots in opt_sd["state"].items():
            for name, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"opt.{idx}.{name}"] = value
                else:
                    opt_scalars.setdefault(str(idx), {})[name] = value
        arrays = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in tensors.items()}
        meta = {"version": STATE_VERSION, "key": self.key, "epoch": progress.epoch,
                "history": progress.history, "best_score": progress.best_score,
                "best_epoch": progress.best_epoch, "has_best": progress.best_state is not None,
                "stopped": progress.stopped, "opt_param_groups": opt_sd["param_groups"],
                "opt_scalars": opt_scalars, "opt_indices": sorted(opt_sd["state"]),
                "scheduler": sched.state_dict(), **(extra or {})}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        try:
            save_file(arrays, str(staging / TENSORS_FILE))
            with open(staging / TENSORS_FILE, "rb") as fh:
                os.fsync(fh.fileno())                    # on disk before the swap makes it visible
            atomic.write_json(staging / JSON_FILE, meta)  # fsynced by atomic.write_json
            atomic.replace_dir(staging, self.path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def clear(self) -> None:
        """Forget the state (called once the model's checkpoint is written)."""
        for p in (self.path, self.path.with_name(f".{self.path.name}.old")):
            shutil.rmtree(p, ignore_errors=True)
        try:
            self.path.parent.rmdir()   # <out>/.state/ goes once no model has a state left
        except OSError:
            pass

    def clear_if_this_run(self) -> None:
        """Drop a state of this very run (killed between writing its checkpoint and clearing)."""
        meta = self._meta()
        if meta is not None and meta.get("key") == self.key:
            self.clear()

    # -- reading ----------------------------------------------------------------------------
    def restore(self, model: torch.nn.Module, opt: torch.optim.Optimizer, sched) -> Progress | None:
        """Load the saved state into ``model``, ``opt`` and ``sched`` (before Accelerate wraps them).

        None (and nothing changed) when there is no usable state for this run key.
        """
        meta = self._meta()
        if meta is None or meta.get("version") != STATE_VERSION or meta.get("key") != self.key:
            return None
        where = atomic.settled_dir(self.path)
        try:
            t = {k: torch.from_numpy(v.copy()) for k, v in load_file(str(where / TENSORS_FILE)).items()}
        except (OSError, ValueError, SafetensorError) as exc:
            log.warning("training state %s is unreadable (%s); starting over", where, exc)
            return None
        try:
            load_trainable(model, _with_prefix(t, "model."))
            opt.load_state_dict(self._optimizer_state(meta, t))
            sched.load_state_dict(meta["scheduler"])
        except (RuntimeError, KeyError, ValueError) as exc:
            log.warning("training state %s does not fit this model (%s); starting over", where, exc)
            return None
        log.info("resuming %s after epoch %d", self.path.name, meta["epoch"])
        return Progress(epoch=meta["epoch"], history=meta["history"], best_score=meta["best_score"],
                        best_epoch=meta["best_epoch"], stopped=meta["stopped"],
                        best_state=_with_prefix(t, "best.") if meta["has_best"] else None)

    @staticmethod
    def _optimizer_state(meta: dict, t: dict[str, torch.Tensor]) -> dict:
        state: dict[int, dict] = {}
        for idx in meta["opt_indices"]:
            slots = dict(meta["opt_scalars"].get(str(idx), {}))
            slots.update({k.split(".", 2)[2]: v for k, v in t.items() if k.startswith(f"opt.{idx}.")})
            state[int(idx)] = slots
        return {"state": state, "param_groups": meta["opt_param_groups"]}


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
