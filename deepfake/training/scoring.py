"""The inference loop: model inputs to logits, shared by training's validation, evaluation and the predictor.

Every scoring path turns uint8 model inputs (``deepfake.data.inputs``) into logits here:
``forward_logits`` for one normalised batch, ``predict`` for a loader of ``Batch`` es (the
validation pass of training, the evaluate and cross-dataset stages, robustness), and
``scoring_loader`` builds that loader for a frame of stored crops. Scores are logits; the
probability is ``sigmoid(logit / temperature)`` (``deepfake.metrics.calibration``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.progress import progress
from ..core.utils import autocast
from ..data.inputs import IMAGENET_MEAN, IMAGENET_STD
from . import distributed as D
from .loading import Batch, EpochBatchSampler, ImageDataset, finish_batch, make_batch_loader

log = logging.getLogger(__name__)


def forward_logits(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device, amp: bool = False
) -> torch.Tensor:
    """Fake-logits ``(B,)`` float32 of a normalised ``(B, 3, H, W)`` batch already on ``device``."""
    with autocast(device, amp):
        out = model(x)  # (B, 1)
    return out.float().reshape(x.shape[0], -1)[:, 0]


def scoring_loader(
    frame: pd.DataFrame,
    root: str | os.PathLike,
    image_size: int,
    batch_size: int,
    num_workers: int = 0,
    perturb: Callable[[np.ndarray], np.ndarray] | None = None,
    on_cpu: bool = True,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.utils.data.DataLoader:
    """Batches of ``frame``'s images (``path`` relative to ``root``) as model inputs, in frame order,
    normalised with ``mean`` and ``std`` (the model's preprocessing contract's)."""
    dataset = ImageDataset(frame, root, image_size, perturb=perturb)
    sampler = EpochBatchSampler(len(frame), batch_size, shuffle=False)
    return make_batch_loader(
        dataset, sampler, num_workers, pin_memory=not on_cpu, finish_in_workers=on_cpu, mean=mean, std=std
    )


@torch.inference_mode()
def predict(
    model: nn.Module,
    loader,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
    max_batches: int = 0,
    desc: str = "predict",
    dist_info: D.DistInfo | None = None,
    show: bool = True,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Score ``loader`` (``Batch`` es of ``deepfake.training.loading``); returns mean BCE loss, labels and logits.

    Under torchrun each rank scores its share and the results come back gathered from every
    rank, in the order of the split frame. ``mean`` and ``std`` normalise batches the loader
    left as uint8 (the model's preprocessing contract's; ``make_batch_loader`` takes the same).
    """
    model.eval()
    info = dist_info or D.DistInfo()
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    total = torch.zeros((), dtype=torch.float64)
    ys: list[torch.Tensor] = []
    zs: list[torch.Tensor] = []
    idx: list[torch.Tensor] = []
    for i, batch in enumerate(progress(loader, desc=desc, unit="batches", disable=not show, leave=False)):
        if max_batches and i >= max_batches:
            break
        b: Batch = finish_batch(batch, device, False, mean, std, channels_last)
        logits = forward_logits(model, b.images, device, amp)  # (B,)
        total = total.to(logits.device) + loss_fn(logits, b.targets).double()
        ys.append(b.targets.cpu())
        zs.append(logits.cpu())
        idx.append(b.indices)
    y = torch.cat(ys).numpy() if ys else np.zeros(0, np.float32)
    z = torch.cat(zs).numpy() if zs else np.zeros(0, np.float32)
    order = torch.cat(idx).numpy() if idx else np.arange(len(y))
    parts = D.all_gather_objects((float(total), order, y, z), info)
    loss = sum(t for t, _, _, _ in parts)
    order, y, z = (np.concatenate([q[k] for q in parts]) for k in (1, 2, 3))
    sort = np.argsort(order, kind="stable")
    return loss / max(len(y), 1), y[sort], z[sort]


def score_frame(
    model: nn.Module,
    frame: pd.DataFrame,
    root: str | os.PathLike,
    image_size: int,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    perturb: Callable[[np.ndarray], np.ndarray] | None = None,
    desc: str = "score",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> np.ndarray:
    """Fake-logit of every row of ``frame`` (same order), its images normalised with ``mean`` and ``std``."""
    on_cpu = device.type == "cpu"
    loader = scoring_loader(frame, root, image_size, batch_size, num_workers, perturb, on_cpu, mean, std)
    _, _, z = predict(model, loader, device, amp=device.type == "cuda", desc=desc, mean=mean, std=std)
    return z
