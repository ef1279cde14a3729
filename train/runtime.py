"""The process side of a run: HF Accelerate (devices, processes, mixed precision, accumulation)
and the per-epoch random streams.

``python -m train`` is one process; ``accelerate launch --num_processes N -m train`` runs N
data-parallel copies (gloo on CPU, NCCL on GPUs). ``TrainConfig.batch_size`` is the *global*
batch (Accelerate's ``split_batches``): each process gets ``batch_size / N`` rows of every batch,
so a launch optimises the same objective as one process with the same config.
"""
from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import parse_flag_from_env

from mmgenre.errors import InputError

from .config import TrainConfig


def use_cpu(cfg: TrainConfig) -> bool:
    """Run on the CPU: asked for (``--device cpu``, ``accelerate launch --cpu``) or no GPU to use."""
    return (cfg.device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU")
            or (cfg.device == "auto" and not torch.cuda.is_available()))


def process_state(cfg: TrainConfig) -> PartialState:
    """This process's place in the launch (gloo on CPU: Accelerate's MULTI_CPU needs ``cpu=True``)."""
    if (parse_flag_from_env("ACCELERATE_USE_CPU") and "MASTER_ADDR" in os.environ
            and not any(k in os.environ for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))):
        # `accelerate launch --cpu --num_processes N` starts one process and leaves N to mpirun
        raise InputError("accelerate launch --cpu --num_processes N starts N processes only through mpirun "
                         "(--mpirun_hostfile); on one machine run `accelerate launch --multi_gpu --num_processes N "
                         "-m train --device cpu ...` (gloo) instead")
    return PartialState(cpu=use_cpu(cfg))


def check_world(cfg: TrainConfig) -> None:
    """InputError unless the processes of this launch can share ``cfg.batch_size`` evenly."""
    n = process_state(cfg).num_processes
    if cfg.batch_size % n:
        raise InputError(f"--batch-size {cfg.batch_size} is the global batch and must be divisible by the "
                         f"{n} processes of this launch (try {cfg.batch_size - cfg.batch_size % n or n})")


def make_accelerator(cfg: TrainConfig, *, log_with: str | None = None,
                     project_dir: str | None = None) -> Accelerator:
    """An Accelerator for ``cfg`` (InputError for a device or precision this machine lacks)."""
    check_world(cfg)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible (use --device auto or cpu)")
    state = AcceleratorState._shared_state
    if state and process_state(cfg).num_processes == 1 and (state.get("_mixed_precision") != cfg.mixed_precision
                                        or use_cpu(cfg) != (state["device"].type == "cpu")):
        # One process that trains several configs (tests, notebooks): Accelerate keeps one
        # global state and refuses a second precision/device, so start it afresh.
        AcceleratorState._reset_state()
    try:
        acc = Accelerator(cpu=use_cpu(cfg), mixed_precision=cfg.mixed_precision,
                          gradient_accumulation_steps=cfg.grad_accum,
                          dataloader_config=DataLoaderConfiguration(split_batches=True),
                          # heads may leave a branch unused on a batch (a missing modality)
                          kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
                          log_with=log_with, project_dir=project_dir)
    except (ValueError, RuntimeError) as exc:  # e.g. fp16 without a GPU
        raise InputError(f"--mixed-precision {cfg.mixed_precision} on {cfg.device}: {exc}") from None
    if not acc.is_main_process:  # one voice: the main process logs, writes and shows progress
        logging.getLogger().setLevel(logging.WARNING)
    return acc


def epoch_seed(seed: int, epoch: int, *streams: int) -> int:
    """A seed for one epoch of one stream, from the run seed (independent streams, no overlap)."""
    return int(np.random.SeedSequence([seed, epoch, *streams]).generate_state(1)[0])


def seed_epoch(seed: int, epoch: int, rank: int) -> tuple[torch.Generator, torch.Generator]:
    """Seed every random stream for ``epoch``; returns the generators of its data order and of
    this process's noise (modality dropout).

    The order is the same on every process (each takes its share of every batch); dropout,
    modality dropout and augmentations draw from per-process streams. Because every epoch starts
    from streams derived from (seed, epoch, rank), a run resumed after epoch k draws exactly what
    the uninterrupted run drew: no RNG state needs saving.
    """
    noise = epoch_seed(seed, epoch, 1, rank)
    torch.manual_seed(noise)
    np.random.seed(noise % 2**32)
    random.seed(noise)
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, 0)), torch.Generator().manual_seed(noise)
