"""One epoch of training: the optimisation step, its learning-rate schedule and its statistics.

``train_one_epoch`` runs the steps of one pass over a loader with the options of a
``StepOptions`` (device, loss, scheduler, gradient scaler, precision, memory format,
augmentation, world size); ``EpochStats`` accumulates the loss, labels and probabilities it
saw, and gathers them from every process under torchrun.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.progress import progress
from ..data.inputs import IMAGENET_MEAN, IMAGENET_STD
from . import distributed as D
from .loading import finish_batch
from .scoring import forward_logits

CHECK_EVERY = 20  # batches between checks that the training loss is finite (each check syncs a GPU)
#: ``linear`` schedule: constant until this share of the steps, then down to 0 at the last one
#: (Shiohara & Yamasaki 2022, SBI: ``LinearDecayLR`` from epoch 75 of 100).
LINEAR_DECAY_START = 0.75


class EpochStats:
    """Loss sum, labels and fake-probabilities seen in an epoch, kept on the device until the end."""

    def __init__(self, loss_sum: float = 0.0, y: np.ndarray | None = None, p: np.ndarray | None = None) -> None:
        self.loss_sum = torch.tensor(float(loss_sum), dtype=torch.float64)
        self.ys: list[torch.Tensor] = [torch.as_tensor(y, dtype=torch.float32)] if y is not None and len(y) else []
        self.ps: list[torch.Tensor] = [torch.as_tensor(p, dtype=torch.float32)] if p is not None and len(p) else []

    def add(self, loss_sum: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> None:
        self.loss_sum = self.loss_sum.to(loss_sum.device) + loss_sum.detach().double()
        self.ys.append(y.detach())
        self.ps.append(p.detach())

    def local(self) -> tuple[float, np.ndarray, np.ndarray]:
        """``(loss sum, labels, probabilities)`` of this process."""
        y = torch.cat([t.cpu() for t in self.ys]).numpy() if self.ys else np.zeros(0, np.float32)
        p = torch.cat([t.float().cpu() for t in self.ps]).numpy() if self.ps else np.zeros(0, np.float32)
        return float(self.loss_sum), y, p

    def gathered(self, info: D.DistInfo) -> tuple[float, np.ndarray, np.ndarray]:
        """``(loss sum, labels, probabilities)`` over every process."""
        loss, y, p = self.local()
        parts = D.all_gather_objects((loss, y, p), info)
        return (
            sum(a for a, _, _ in parts),
            np.concatenate([b for _, b, _ in parts]),
            np.concatenate([c for _, _, c in parts]),
        )


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Learning-rate multiplier at optimisation ``step`` (0-based): linear warm-up, then ``constant``,
    ``cosine`` (to 0 at the end) or ``linear`` (constant, then down to 0 over the last quarter of the steps)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "linear":
        start = max(warmup_steps, round(LINEAR_DECAY_START * total_steps))
        return 1.0 if step < start else max(0.0, (total_steps - step) / max(total_steps - start, 1))
    return 1.0


def make_scheduler(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: float, schedule: str
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: ``warmup_epochs`` of linear warm-up, then ``schedule`` (``lr_factor``) to the end."""
    warmup, total = round(warmup_epochs * steps_per_epoch), epochs * steps_per_epoch

    def factor(step: int) -> float:
        return lr_factor(step, warmup, total, schedule)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class StepOptions:
    """How ``train_one_epoch`` takes its optimisation steps.

    Attributes:
        device: where the model lives.
        loss_fn: a ``reduction="sum"`` loss on logits; a step's loss is that sum over this
            process's images divided by the global batch size times ``world_size``, so that
            DDP's gradient averaging yields the global-batch mean.
        scheduler: stepped after every optimisation step (None: constant learning rate).
        scaler: fp16 gradient scaler (None: no scaling).
        amp: autocast the forward pass.
        channels_last: NHWC memory format.
        augment: run the device-side augmentation of the batch.
        world_size: processes under torchrun.
        show: show a progress bar (the main process).
        desc: the progress bar's label.
        on_step: called with the 1-based step number and the accumulator after each step.
        mean, std: the model's input normalisation (its preprocessing contract's).
    """

    device: torch.device
    loss_fn: nn.Module
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None
    amp: bool = False
    channels_last: bool = False
    augment: bool = True
    world_size: int = 1
    show: bool = True
    desc: str = "train"
    on_step: Callable[[int, EpochStats], None] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    opts: StepOptions,
    global_sizes: list[int],
    stats: EpochStats | None = None,
) -> EpochStats:
    """One pass over ``loader`` (the model must already be in train mode).

    Args:
        global_sizes: images in each global batch (``EpochBatchSampler.global_sizes``).
        stats: accumulator to continue (a resumed epoch); a new one otherwise.

    Returns:
        The accumulator: loss sum, labels and fake-probabilities of this process's images.
    """
    stats = stats or EpochStats()
    bar = progress(total=int(sum(global_sizes)), desc=opts.desc, unit="images", disable=not opts.show, leave=False)
    for i, batch in enumerate(loader):
        b = finish_batch(batch, opts.device, opts.augment, opts.mean, opts.std, opts.channels_last)  # (B, 3, H, W)
        logits = forward_logits(model, b.images, opts.device, opts.amp)  # (B,)
        loss_sum = opts.loss_fn(logits, b.targets)
        loss = loss_sum * (opts.world_size / global_sizes[i])
        optimizer.zero_grad(set_to_none=True)
        if opts.scaler is not None:
            opts.scaler.scale(loss).backward()
            opts.scaler.step(optimizer)
            opts.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if opts.scheduler is not None:
            opts.scheduler.step()
        stats.add(loss_sum, b.targets, torch.sigmoid(logits.detach()))
        if (i + 1) % CHECK_EVERY == 0 and not math.isfinite(float(stats.loss_sum)):
            raise FloatingPointError(
                f"training loss became {float(stats.loss_sum)} by batch {i + 1}; lower train.lr or disable amp"
            )
        bar.update(int(global_sizes[i]))
        if opts.on_step is not None:
            opts.on_step(i + 1, stats)
    bar.close()
    return stats
