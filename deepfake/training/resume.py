"""Resuming a training run: progress, random states and the check that the config did not change.

Every checkpoint holds a ``Progress`` (epochs and steps done, the history, the best score,
early-stopping state, the statistics of an unfinished epoch) and the random states of every
process (``rng_state``); ``load_resume`` and ``restore`` bring a run back to exactly where it
stopped, so that a resumed run ends where an uninterrupted one would have.

A run may continue with another number of processes (more nodes under torchrun, or one process):
the state is counted in global batches, which do not depend on it. Only the per-process random
states are then left behind (a warning says so), and ``check_world_size`` refuses the one case
where an epoch's number of steps changes with the world size.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.config import ConfigError
from ..models.checkpoint import TRAINING_STATE_KEYS, read_checkpoint
from . import distributed as D

#: Config keys that may differ between an interrupted run and its resumption (they do not change the result).
RESUME_FREE_KEYS = ("resume", "num_workers", "checkpoint_every", "compile_model", "device", "decode_cache")


def rng_state(loader_generator: torch.Generator | None = None) -> dict:
    """Python, numpy, torch (CPU and CUDA) and loader-generator states, as tensors and plain types."""
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    return {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "loader": loader_generator.get_state() if loader_generator is not None else None,
    }


def set_rng_state(state: dict, loader_generator: torch.Generator | None = None) -> None:
    """Restore what ``rng_state`` captured."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and state.get("loader") is not None:
        loader_generator.set_state(state["loader"])


class ResumeError(ConfigError):
    """``resume=True`` cannot continue from what the model folder holds (the message says why and what to do)."""


def check_resumable(saved: dict, cfg: Any, path: Path) -> None:
    """Raise when ``path`` was written by a run with a different config (beyond ``RESUME_FREE_KEYS``)."""
    now = asdict(cfg)
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUME_FREE_KEYS and saved.get(k) != now.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise ResumeError(
            f"cannot resume from {path}: it was trained with a different config ({detail}); "
            "use the same train params, or set resume=false (or another model_dir) to start afresh"
        )


def check_world_size(ckpt: dict, path: Path, world_size: int, steps_per_epoch: Callable[[int], int]) -> None:
    """Raise when ``path``, written by another number of processes, cannot be continued with ``world_size``.

    What a checkpoint holds does not depend on the number of processes (the weights, optimizer and
    scheduler state, the progress in global batches: each epoch's global batches are a function of
    the seed and the epoch alone), so a run continues with another world size, except when an epoch
    has another number of optimisation steps with it: the last, small global batch of an epoch is
    dropped when it has fewer than 2 images per process (``EpochBatchSampler``), so the schedule and
    the position in the epoch would not carry over.

    Args:
        ckpt: the checkpoint ``load_resume`` returned.
        path: where it was read (named in the message).
        world_size: processes of this run.
        steps_per_epoch: optimisation steps of an epoch for a number of processes.
    """
    saved = int(ckpt.get("world_size", 1))
    if saved == world_size:
        return
    then, now = steps_per_epoch(saved), steps_per_epoch(world_size)
    if then != now:
        raise ResumeError(
            f"cannot resume from {path} with {world_size} process(es): it was written by a run of {saved}, and an "
            f"epoch has {then} optimisation steps with {saved} process(es) but {now} with {world_size} (the last "
            "global batch of an epoch is dropped when it has fewer than 2 images per process), so the learning-rate "
            f"schedule and the position in the epoch do not carry over; resume with {saved} process(es) (torchrun's "
            "--nnodes times --nproc-per-node), or set resume=false to train afresh"
        )


@dataclass
class Progress:
    """Where a run is: stored in every checkpoint, restored by ``resume``."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimisation steps done in epoch + 1
    rows: list = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    partial: dict | None = None  # gathered stats of the unfinished epoch


def load_resume(cfg: Any, last_path: Path) -> dict | None:
    """The checkpoint to resume from, when ``cfg.resume`` and it exists (checked against ``cfg``).

    None when there is nothing to resume (no ``last.pt`` and no ``best.pt`` beside it: a first run).

    Raises:
        ResumeError: only ``best.pt`` is there (it holds the weights, not the training state), or
            ``last.pt`` holds no training state, or was written with another config.
    """
    if not cfg.resume:
        return None
    best = last_path.with_name("best.pt")
    if not last_path.is_file() and best.is_file():
        raise ResumeError(
            f"cannot resume: {last_path} does not exist, and resuming needs it (it keeps the optimizer, scheduler, "
            f"progress and random states of the run's last step), while {best} holds the best epoch's model, not "
            "a point to continue from; copy the run's last.pt there, or set resume=false to train afresh (which "
            "replaces best.pt)"
        )
    if not last_path.is_file():
        return None
    ckpt = read_checkpoint(last_path)
    missing = [k for k in TRAINING_STATE_KEYS if k not in ckpt and k != "scaler"]
    if missing:
        raise ResumeError(
            f"cannot resume from {last_path}: it holds no training state ({', '.join(missing)} missing: a best.pt, "
            "or written by an older version), and resuming needs the last.pt its run wrote; set resume=false to "
            "train afresh"
        )
    check_resumable(ckpt["config"], cfg, last_path)
    return ckpt


def restore(
    ckpt: dict, net: nn.Module, optimizer, scheduler, scaler, loader_gen: torch.Generator, info: D.DistInfo
) -> Progress:
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler") is not None:
        scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt["rng"]
    if len(rngs) == info.world_size:
        set_rng_state(rngs[info.rank], loader_gen)
    elif info.is_main:
        warnings.warn(
            f"the checkpoint was written by {len(rngs)} process(es), this run has {info.world_size}: the weights, "
            "optimizer, schedule and data order carry over, the per-process random states (dropout) do not: the "
            "result will differ slightly from an uninterrupted run",
            stacklevel=3,
        )
    p = dict(ckpt["progress"])
    if p.get("partial"):
        p["partial"] = {
            "loss_sum": float(p["partial"]["loss_sum"]),
            "y": p["partial"]["y"].numpy(),
            "p": p["partial"]["p"].numpy(),
        }
    return Progress(**p)
