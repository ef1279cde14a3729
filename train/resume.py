"""Resumable training: per-epoch state under ``<out>/.state/<model>/``, and skipping finished models.

One state folder per model, replaced whole after every epoch::

    state.safetensors   tensors: the head's weights (``head.*``), the best-so-far weights
                        (``best.*``), AdamW's moments (``opt.<param>.<key>``) and the torch,
                        generator and numpy RNG states (``rng.*``)
    state.json          the run key (training config + data fingerprint), epochs done, history,
                        best score and epoch, early-stop flag, optimizer groups, scheduler and
                        Python RNG state

Both files are written into a staging folder that :func:`mmgenre.atomic.replace_dir` swaps in, so
a SIGKILL at any instant leaves the last complete state (or the one before), never a mix; nothing
is pickled. A state is resumed only when its run key equals the current one. After a resume the
RNG streams continue exactly where they stopped, so the result is bit-identical to an
uninterrupted run (same machine and library versions).
"""
from __future__ import annotations

import json
import logging
import os
import random
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
STATE_VERSION = 1
TENSORS_FILE = "state.safetensors"
JSON_FILE = "state.json"
# Config fields that do not change what is trained: paths (the data is identified by its
# fingerprint instead), progress bars, and skip_bad (its effect shows in the fingerprint).
IGNORED_FIELDS = ("data", "out", "cache", "progress", "skip_bad")


def run_key(cfg: TrainConfig, fingerprint: str) -> dict:
    """What identifies a training run: its config without ``IGNORED_FIELDS``, plus the data."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in IGNORED_FIELDS}
    return json.loads(json.dumps({"train": d, "fingerprint": fingerprint}, sort_keys=True))


def checkpoint_is_current(out: str | Path, cfg: TrainConfig, fingerprint: str) -> bool:
    """True when ``<out>/<model>/`` is a complete, loadable checkpoint of this very run."""
    try:
        ckpt = load_checkpoint(Path(out) / cfg.model)
    except InputError:
        return False
    train = ckpt.config.get("train")
    if not isinstance(train, dict) or not (ckpt.path / "metrics.json").is_file():
        return False
    stored = TrainConfig(**{k: v for k, v in train.items() if k in cfg.to_dict()})
    return run_key(stored, str(ckpt.config.get("data", {}).get("fingerprint"))) == run_key(cfg, fingerprint)


# -------------------------------------------------------------------------------- state
@dataclass
class Progress:
    """Where training stands after ``epoch`` completed epochs."""

    epoch: int = 0
    history: list = field(default_factory=list)
    best_score: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None      # head state_dict of the best epoch so far
    stopped: bool = False               # early stopping fired


class EpochState:
    """Saves and restores the training state of one model (see the module docstring)."""

    def __init__(self, out: str | Path, cfg: TrainConfig, fingerprint: str):
        self.path = Path(out) / STATE_DIR / cfg.model
        self.key = run_key(cfg, fingerprint)

    # -- writing ----------------------------------------------------------------------------
    def save(self, progress: Progress, head: torch.nn.Module, opt: torch.optim.Optimizer,
             sched, gen: torch.Generator) -> None:
        tensors = {f"head.{k}": v for k, v in head.state_dict().items()}
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
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.generator"] = gen.get_state()
        np_state = np.random.get_state()
        arrays = {k: v.detach().cpu().numpy() for k, v in tensors.items()}
        arrays["rng.numpy"] = np_state[1]
        meta = {"version": STATE_VERSION, "key": self.key, "epoch": progress.epoch,
                "history": progress.history, "best_score": progress.best_score,
                "best_epoch": progress.best_epoch, "has_best": progress.best_state is not None,
                "stopped": progress.stopped, "opt_param_groups": opt_sd["param_groups"],
                "opt_scalars": opt_scalars, "opt_indices": sorted(opt_sd["state"]),
                "scheduler": sched.state_dict(),
                "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
                "rng_python": _python_rng_to_json(random.getstate())}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        try:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(staging / TENSORS_FILE))
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

    # -- reading ----------------------------------------------------------------------------
    def restore(self, head: torch.nn.Module, opt: torch.optim.Optimizer, sched,
                gen: torch.Generator) -> Progress | None:
        """Load the saved state into ``head``, ``opt``, ``sched``, ``gen`` and the global RNGs.

        None (and nothing changed) when there is no usable state for this run key.
        """
        where = atomic.settled_dir(self.path)  # killed mid-swap: the previous complete state
        if not (where / JSON_FILE).is_file():
            return None
        try:
            meta = json.loads((where / JSON_FILE).read_text(encoding="utf-8"))
            arrays = load_file(str(where / TENSORS_FILE))
        except (OSError, ValueError, SafetensorError) as exc:
            log.warning("training state %s is unreadable (%s); starting over", where, exc)
            return None
        if meta.get("version") != STATE_VERSION or meta.get("key") != self.key:
            log.info("training state %s is from another config or data; starting over", where)
            return None
        t = {k: torch.from_numpy(v.copy()) for k, v in arrays.items() if k != "rng.numpy"}
        try:
            head.load_state_dict(_with_prefix(t, "head."), strict=True)
            opt.load_state_dict(self._optimizer_state(meta, t))
            sched.load_state_dict(meta["scheduler"])
        except (RuntimeError, KeyError, ValueError) as exc:
            log.warning("training state %s does not fit this model (%s); starting over", where, exc)
            return None
        torch.set_rng_state(t["rng.torch"])
        gen.set_state(t["rng.generator"])
        name, pos, has_gauss, cached = meta["rng_numpy"]
        np.random.set_state((name, arrays["rng.numpy"], pos, has_gauss, cached))
        random.setstate(_python_rng_from_json(meta["rng_python"]))
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


def _python_rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
