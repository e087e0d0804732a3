"""Training: one entry point for a CPU, a GPU or ``torchrun`` on N GPUs; resumable and checkpointed.

``train(cfg, splits_dir, data_root, out_dir)`` trains on ``train.csv``, selects on
``val.csv`` (ROC-AUC) and writes ``last.pt`` (every epoch, and every ``checkpoint_every``
batches) and ``best.pt`` (best validation epoch). Both are written atomically and hold
everything needed to continue: model, optimizer, scheduler, grad-scaler, progress, RNG
states and the resolved config; ``resume=True`` continues from ``last.pt`` to the result an
uninterrupted run would have given (same seed, ``deterministic=True``).

Run under ``torchrun --nproc_per_node=N -m deepfake train`` the same function trains with
DistributedDataParallel: ``batch_size`` stays the global batch (images per optimisation
step), each rank takes its slice of every batch, the loss of a step is the mean over the
global batch, metrics are computed on predictions gathered from all ranks, and rank 0 logs
and writes files.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from . import __version__, paths
from . import distributed as D
from .augment import AugmentConfig
from .checkpoint import save_checkpoint
from .config import section, setting
from .data import read_split
from .inference import forward_logits, predict
from .inputs import read_contract
from .loading import DecodedCache, EpochBatchSampler, ImageDataset, class_weights, finish_batch, make_batch_loader
from .metrics import binary_metrics
from .models import ARCHS, apply_train_mode, build_model, count_parameters, set_backbone_frozen
from .utils import amp_dtype, atomic_path, cpu_bf16_supported, resolve_device, seed_everything

log = logging.getLogger(__name__)

HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "train_auc",
    "val_loss",
    "val_accuracy",
    "val_auc",
    "lr",
    "seconds",
)
SCHEDULES = ("constant", "cosine")
CLASS_BALANCE = ("auto", "loss", "sampler", "none")
#: Config keys that may differ between an interrupted run and its resumption (they do not change the result).
RESUME_FREE_KEYS = ("resume", "num_workers", "checkpoint_every", "compile_model", "device", "decode_cache")
CHECK_EVERY = 20  # batches between checks that the training loss is finite (each check syncs a GPU)


@dataclass(frozen=True)
@section("train", base_keys=("device", "seed"))
class TrainConfig:
    """Everything that defines a training run (recorded inside every checkpoint).

    Defaults are ``params.yaml``'s ``train`` section (``device`` and ``seed``: ``base``).

    Attributes:
        arch: ``resnet18`` | ``dilated_cnn`` (see ``deepfake.models``).
        weights: ``auto`` | ``imagenet`` | ``none`` | path to weights.
        epochs: passes over the training split (at most; see ``patience``).
        batch_size: images per optimisation step (all processes together under torchrun).
        lr: Adam learning rate (peak, after warm-up).
        weight_decay: Adam weight decay (L2).
        schedule: ``constant`` or ``cosine`` (decay to 0 at the end of the last epoch), per step.
        warmup_epochs: linear learning-rate warm-up from ~0, in epochs (fractions allowed).
        freeze_backbone_epochs: train only the new head for this many first epochs, backbone
            BatchNorm statistics frozen too; needs pretrained weights (ignored, with a
            warning, when the backbone is randomly initialised).
        patience: stop after this many epochs without a better validation AUC (0: never).
        class_balance: ``auto`` (``loss`` when the train classes differ in size, else ``none``),
            ``loss`` (BCE ``pos_weight`` = real / fake count), ``sampler`` (draw classes equally
            often, with replacement) or ``none``.
        image_size: side of the square network input.
        hflip: horizontal-flip probability.
        rotation: maximum random rotation in degrees.
        color_jitter: ColorJitter strength (brightness, contrast, saturation; hue a quarter).
        jpeg_prob: probability of JPEG re-compression.
        jpeg_quality_min, jpeg_quality_max: re-compression quality range (inclusive).
        blur_prob: probability of Gaussian blur.
        blur_sigma_min, blur_sigma_max: blur standard-deviation range in pixels.
        num_workers: DataLoader worker processes (per process under torchrun).
        decode_cache: decode and resize every image once into ``build/cache/`` (uint8, memory
            mapped) and read it in every epoch: worth it for photos much larger than
            ``image_size`` (see ``deepfake.loading.DecodedCache``); pixels are identical.
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler).
        cpu_bf16: on a CPU, bf16 autocast and channels-last when the CPU has native bf16
            instructions (AVX512-BF16 or AMX; a warning and float32 otherwise). About 2x
            faster ResNet18 training steps on such CPUs (BENCHMARKS.md); the numerics differ
            from float32, so runs on CPUs with and without it are not comparable bit for bit.
        channels_last: NHWC memory format on CUDA.
        compile_model: ``torch.compile`` the training model.
        sync_bn: under torchrun on CUDA, synchronise BatchNorm statistics across GPUs.
        seed: seed of initialisation, shuffling and augmentation.
        deterministic: ask torch for deterministic kernels.
        max_batches: stop each epoch after this many batches (0: all); for quick checks.
        resume: continue from ``out_dir/last.pt`` when it exists.
        checkpoint_every: also write ``last.pt`` every this many batches (0: at epoch ends only).
    """

    arch: str = setting(choices=ARCHS)
    weights: str = setting()
    epochs: int = setting(min=1)
    batch_size: int = setting(min=1)
    lr: float = setting(gt=0)
    weight_decay: float = setting(min=0)
    schedule: str = setting(choices=SCHEDULES)
    warmup_epochs: float = setting(min=0)
    freeze_backbone_epochs: int = setting(min=0)
    patience: int = setting(min=0)
    class_balance: str = setting(choices=CLASS_BALANCE)
    image_size: int = setting(min=16, max=2048)
    hflip: float = setting(min=0, max=1)
    rotation: float = setting(min=0, max=180)
    color_jitter: float = setting(min=0, max=1)
    jpeg_prob: float = setting(min=0, max=1)
    jpeg_quality_min: int = setting(min=1, max=100)
    jpeg_quality_max: int = setting(min=1, max=100)
    blur_prob: float = setting(min=0, max=1)
    blur_sigma_min: float = setting(gt=0)
    blur_sigma_max: float = setting(gt=0)
    num_workers: int = setting(min=0)
    decode_cache: bool = setting()
    device: str = setting()
    amp: bool = setting()
    cpu_bf16: bool = setting()
    channels_last: bool = setting()
    compile_model: bool = setting()
    sync_bn: bool = setting()
    seed: int = setting(min=0)
    deterministic: bool = setting()
    resume: bool = setting()
    checkpoint_every: int = setting(min=0)
    max_batches: int = 0  # not a pipeline setting: quick checks stop each epoch early

    def __post_init__(self) -> None:
        if self.jpeg_quality_min > self.jpeg_quality_max:
            raise ValueError(
                f"train.jpeg_quality_min ({self.jpeg_quality_min}) must not exceed train.jpeg_quality_max "
                f"({self.jpeg_quality_max})"
            )
        if self.blur_sigma_min > self.blur_sigma_max:
            raise ValueError(
                f"train.blur_sigma_min ({self.blur_sigma_min}) must not exceed train.blur_sigma_max "
                f"({self.blur_sigma_max})"
            )
        if self.max_batches < 0:
            raise ValueError(f"max_batches must be >= 0, got {self.max_batches}")
        _ = self.augment  # validates the augmentation ranges

    @property
    def augment(self) -> AugmentConfig | None:
        """The training augmentation, or None when every augmentation is switched off."""
        aug = AugmentConfig(
            hflip=self.hflip,
            rotation=self.rotation,
            color_jitter=self.color_jitter,
            jpeg_prob=self.jpeg_prob,
            jpeg_quality=(self.jpeg_quality_min, self.jpeg_quality_max),
            blur_prob=self.blur_prob,
            blur_sigma=(self.blur_sigma_min, self.blur_sigma_max),
        )
        active = aug.hflip or aug.rotation or aug.color_jitter or aug.jpeg_prob or aug.blur_prob
        return aug if active else None


@dataclass
class TrainResult:
    """What a run produced (on every rank; only rank 0 wrote files)."""

    history: pd.DataFrame
    best_checkpoint: Path
    last_checkpoint: Path
    summary: dict = field(default_factory=dict)
    is_main: bool = True


def _quiet(show: bool) -> dict:
    """tqdm arguments: silent on non-main ranks, else tqdm's defaults (``TQDM_DISABLE`` applies)."""
    return {} if show else {"disable": True}


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


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
    """Learning-rate multiplier at optimisation ``step`` (0-based): linear warm-up, then constant or cosine."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return 1.0


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule of ``cfg`` (warm-up and constant / cosine)."""
    warmup, total = round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch

    def factor(step: int) -> float:
        return lr_factor(step, warmup, total, cfg.schedule)

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
    for i, batch in enumerate(tqdm(loader, desc=opts.desc, leave=False, unit="batch", **_quiet(opts.show))):
        b = finish_batch(batch, opts.device, opts.augment, channels_last=opts.channels_last)  # images (B, 3, H, W)
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
        if opts.on_step is not None:
            opts.on_step(i + 1, stats)
    return stats


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


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


def check_resumable(saved: dict, cfg: TrainConfig, path: Path) -> None:
    """Raise when ``path`` was written by a run with a different config (beyond ``RESUME_FREE_KEYS``)."""
    now = asdict(cfg)
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUME_FREE_KEYS and saved.get(k) != now.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise ValueError(
            f"cannot resume from {path}: it was trained with a different config ({detail}); "
            "use the same train params, or set resume=false (or another model_dir) to start afresh"
        )


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _epoch_stats(prefix: str, loss: float, y: np.ndarray, p: np.ndarray) -> dict:
    m: dict[str, Any] = binary_metrics(y, p) if len(y) else {"accuracy": math.nan, "roc_auc": None}
    auc = m["roc_auc"]
    return {
        f"{prefix}_loss": float(loss),
        f"{prefix}_accuracy": float(m["accuracy"]),
        f"{prefix}_auc": math.nan if auc is None else float(auc),
    }


def _selection_score(row: dict) -> float:
    """What ``best.pt`` maximises: validation ROC-AUC, or minus the loss when AUC is undefined."""
    return row["val_auc"] if not math.isnan(row["val_auc"]) else -row["val_loss"]


def _resolve_balance(cfg: TrainConfig, targets: np.ndarray) -> tuple[str, float | None]:
    """The class-balance method actually used and the BCE ``pos_weight`` (None: unweighted)."""
    n_fake = int(targets.sum())
    n_real = len(targets) - n_fake
    method = cfg.class_balance
    if method == "auto":
        method = "loss" if n_real != n_fake else "none"
    if method in ("loss", "sampler") and min(n_real, n_fake) == 0:
        raise ValueError(
            f"class_balance={method} needs both classes in train.csv, which has {n_real} real and {n_fake} fake images"
        )
    return method, (n_real / n_fake if method == "loss" else None)


def _device_for(cfg: TrainConfig, info: D.DistInfo) -> torch.device:
    device = resolve_device(cfg.device)
    if info.enabled and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", info.local_rank)
    return device


@dataclass
class _Progress:
    """Where a run is: stored in every checkpoint, restored by ``resume``."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimisation steps done in epoch + 1
    rows: list = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    partial: dict | None = None  # gathered stats of the unfinished epoch


def train(
    cfg: TrainConfig,
    splits_dir: str | os.PathLike,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    callback: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train on ``train.csv``, select on ``val.csv`` (validation ROC-AUC), write checkpoints.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the processes join one DistributedDataParallel job.

    Args:
        cfg: the run's config.
        splits_dir: folder with ``train.csv`` and ``val.csv``.
        data_root: folder the manifests' paths are relative to.
        out_dir: where ``best.pt`` and ``last.pt`` go.
        callback: called as ``callback(epoch, step)`` after every optimisation step (progress
            reporting; an exception raised there interrupts the run like a crash would).

    Returns:
        Per-epoch history and a summary (best epoch, validation metrics, weights used).
    """
    info = D.setup(cfg.device)
    try:
        return _train(cfg, Path(splits_dir), Path(data_root), Path(out_dir), callback, info)
    finally:
        D.teardown(info)


def _train(cfg: TrainConfig, splits_dir: Path, data_root: Path, out: Path, callback, info: D.DistInfo) -> TrainResult:
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed, cfg.deterministic)
    device = _device_for(cfg, info)
    cuda = device.type == "cuda"
    cpu_bf16 = cfg.cpu_bf16 and not cuda
    if cpu_bf16 and not cpu_bf16_supported():
        if info.is_main:
            warnings.warn(
                "cpu_bf16=true ignored: this CPU has no native bf16 instructions (AVX512-BF16 or AMX); "
                "training in float32",
                stacklevel=2,
            )
        cpu_bf16 = False
    channels_last = cfg.channels_last and cuda or cpu_bf16
    use_amp = cfg.amp and cuda or cpu_bf16
    if cuda and not cfg.deterministic:
        torch.backends.cudnn.benchmark = True
    show = info.is_main

    # Data
    train_df, val_df = read_split(splits_dir, "train"), read_split(splits_dir, "val")
    targets = train_df["target"].to_numpy()
    balance, pos_weight = _resolve_balance(cfg, targets)
    train_sampler = EpochBatchSampler(
        len(train_df),
        cfg.batch_size,
        cfg.seed,
        shuffle=True,
        weights=class_weights(targets) if balance == "sampler" else None,
        rank=info.rank,
        world_size=info.world_size,
        drop_last=True,
        max_batches=cfg.max_batches,
    )
    val_sampler = EpochBatchSampler(
        len(val_df),
        cfg.batch_size,
        cfg.seed,
        shuffle=False,
        rank=info.rank,
        world_size=info.world_size,
        max_batches=cfg.max_batches,
    )
    augment = cfg.augment
    on_cpu = not cuda
    caches = _decoded_caches(cfg, data_root, (train_df, val_df), info) if cfg.decode_cache else (None, None)
    train_loader = make_batch_loader(
        ImageDataset(train_df, data_root, cfg.image_size, augment, augment_in_worker=on_cpu, cache=caches[0]),
        train_sampler,
        cfg.num_workers,
        pin_memory=cuda,
        finish_in_workers=on_cpu,
        seed=cfg.seed + info.rank,
    )
    val_loader = make_batch_loader(
        ImageDataset(val_df, data_root, cfg.image_size, cache=caches[1]),
        val_sampler,
        cfg.num_workers,
        pin_memory=cuda,
        finish_in_workers=on_cpu,
        seed=cfg.seed + info.rank,
    )

    # Model and optimisation
    last_path, best_path = out / "last.pt", out / "best.pt"
    resume_ckpt = _load_resume(cfg, last_path)
    model_weights = "none" if resume_ckpt is not None else cfg.weights
    net, weights_used = build_model(cfg.arch, model_weights)
    if resume_ckpt is not None:
        weights_used = resume_ckpt["weights_used"]
    if info.enabled:
        torch.manual_seed(cfg.seed + info.rank)  # independent dropout per rank (DDP syncs the initial weights)
    freeze_epochs = cfg.freeze_backbone_epochs
    if freeze_epochs and weights_used.startswith("none"):
        if info.is_main:
            warnings.warn(
                f"freeze_backbone_epochs={freeze_epochs} ignored: the backbone is randomly initialised (weights: "
                f"{weights_used})",
                stacklevel=2,
            )
        freeze_epochs = 0
    if info.enabled and cuda and cfg.sync_bn:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    elif info.enabled and info.is_main and freeze_epochs < cfg.epochs:
        warnings.warn(
            "BatchNorm statistics are computed per process (SyncBatchNorm needs CUDA and sync_bn=true): "
            "results differ slightly from one process with the same global batch",
            stacklevel=2,
        )
    net = net.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_sampler)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype(device) == torch.float16 else None
    loss_fn = nn.BCEWithLogitsLoss(
        reduction="sum", pos_weight=None if pos_weight is None else torch.tensor(pos_weight, device=device)
    )

    meta = {
        "config": asdict(cfg),
        "arch": cfg.arch,
        "weights_used": weights_used,
        "image_size": cfg.image_size,
        "preprocessing": read_contract(data_root, cfg.image_size).to_dict(),
        "package_version": __version__,
        "world_size": info.world_size,
    }
    prog = _Progress()
    if resume_ckpt is not None:
        prog = _restore(resume_ckpt, net, optimizer, scheduler, scaler, train_loader.generator, info)
        if show:
            log.info(f"resuming from {last_path}: {prog.epoch} epoch(s) and {prog.step} batch(es) done")

    def checkpoint(path: Path, p: _Progress) -> None:
        rngs = D.all_gather_objects(rng_state(train_loader.generator), info)
        if info.is_main:
            save_checkpoint(
                path,
                model=net.state_dict(),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict() if scaler is not None else None,
                epoch=p.epoch,
                step=p.step,
                val_auc=p.rows[-1]["val_auc"] if p.rows else math.nan,
                history=p.rows,
                progress=asdict(p),
                rng=rngs,
                **meta,
            )

    frozen_state, model = None, net
    for epoch in range(prog.epoch + 1, cfg.epochs + 1):
        if prog.stopped_early:
            break
        t0 = time.perf_counter()
        frozen = epoch <= freeze_epochs
        if frozen != frozen_state:  # (re)wrap: DDP only registers parameters that require grad
            set_backbone_frozen(net, cfg.arch, frozen)
            model, frozen_state = _wrap(net, cfg, info, device), frozen
        apply_train_mode(net, cfg.arch, frozen)
        start = prog.step
        train_sampler.set_epoch(epoch, start)
        stats = EpochStats(**prog.partial) if (start and prog.partial and info.is_main) else EpochStats()

        def on_step(step: int, st: EpochStats, epoch: int = epoch, start: int = start) -> None:
            done = start + step
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < steps_per_epoch:
                loss, y, p = st.gathered(info)
                mid = _Progress(
                    **{
                        **asdict(prog),
                        "epoch": epoch - 1,
                        "step": done,
                        "partial": {"loss_sum": loss, "y": torch.from_numpy(y), "p": torch.from_numpy(p)},
                    }
                )
                checkpoint(last_path, mid)
            if callback is not None:
                callback(epoch, done)

        opts = StepOptions(
            device,
            loss_fn,
            scheduler,
            scaler,
            use_amp,
            channels_last,
            augment is not None,
            info.world_size,
            show,
            f"epoch {epoch}/{cfg.epochs}",
            on_step,
        )
        stats = train_one_epoch(model, train_loader, optimizer, opts, train_sampler.global_sizes(), stats)
        loss_sum, y, p = stats.gathered(info)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"training loss of epoch {epoch} is {loss_sum}; lower train.lr or disable amp")
        tr = (loss_sum / max(len(y), 1), y, p)
        va_loss, va_y, va_z = predict(
            net, val_loader, device, use_amp, channels_last, desc="validate", dist_info=info, show=show
        )
        va = (va_loss, va_y, torch.sigmoid(torch.from_numpy(va_z)).numpy())
        row = {
            "epoch": epoch,
            **_epoch_stats("train", *tr),
            **_epoch_stats("val", *va),
            "lr": float(optimizer.param_groups[0]["lr"]),
            "seconds": time.perf_counter() - t0,
        }
        prog.rows.append(row)
        prog.epoch, prog.step, prog.partial = epoch, 0, None
        improved = _selection_score(row) > prog.best_score
        if improved:
            prog.best_score, prog.best_epoch, prog.bad_epochs = _selection_score(row), epoch, 0
        else:
            prog.bad_epochs += 1
        prog.stopped_early = bool(cfg.patience and prog.bad_epochs >= cfg.patience and epoch < cfg.epochs)
        checkpoint(last_path, prog)
        if improved and info.is_main:
            with atomic_path(best_path) as tmp:
                shutil.copyfile(last_path, tmp)
        if show:
            log.info(
                f"epoch {epoch}: train loss {row['train_loss']:.4f} auc {row['train_auc']:.3f} | val loss "
                f"{row['val_loss']:.4f} "
                f"acc {row['val_accuracy']:.3f} auc {row['val_auc']:.3f} | {row['seconds']:.1f}s"
                + (" (frozen backbone)" if frozen else "")
                + (f" | early stop after {prog.bad_epochs} epochs without gain" if prog.stopped_early else "")
            )
    D.barrier(info)
    history = pd.DataFrame(prog.rows, columns=HISTORY_COLUMNS)
    best = history[history["epoch"] == prog.best_epoch].iloc[0]
    summary = {
        "arch": cfg.arch,
        "weights_used": weights_used,
        "device": str(device),
        "world_size": info.world_size,
        "precision": str(amp_dtype(device)).removeprefix("torch.") + " autocast" if use_amp else "float32",
        "parameters": count_parameters(net),
        "n_train": len(train_df),
        "n_val": len(val_df),
        "epochs": cfg.epochs,
        "epochs_run": len(history),
        "stopped_early": prog.stopped_early,
        "best_epoch": int(prog.best_epoch),
        "best_val_auc": float(best["val_auc"]),
        "best_val_accuracy": float(best["val_accuracy"]),
        "best_val_loss": float(best["val_loss"]),
        "class_balance": balance,
        "pos_weight": pos_weight,
        "frozen_epochs": freeze_epochs,
        "train_seconds": float(history["seconds"].sum()),
    }
    return TrainResult(
        history=history, best_checkpoint=best_path, last_checkpoint=last_path, summary=summary, is_main=info.is_main
    )


def _decoded_caches(
    cfg: TrainConfig, data_root: Path, frames: tuple[pd.DataFrame, ...], info: D.DistInfo
) -> list[DecodedCache]:
    """Rank 0 builds (or finds) the decoded-image cache of each frame; the other ranks then open them."""
    cache_dir = paths.ROOT / "build" / "cache"
    lists = [[data_root / p for p in f["path"]] for f in frames]
    if info.is_main:
        caches = [DecodedCache.build(ps, cfg.image_size, cache_dir, cfg.num_workers) for ps in lists]
    D.barrier(info)
    if not info.is_main:
        caches = [DecodedCache.build(ps, cfg.image_size, cache_dir, 0, show=False) for ps in lists]
    return caches


def _wrap(net: nn.Module, cfg: TrainConfig, info: D.DistInfo, device: torch.device) -> nn.Module:
    """The module the training step calls: ``net``, in DDP under torchrun, compiled when asked."""
    model = net
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile_model:
        model = cast(nn.Module, torch.compile(model))  # compiling a Module gives an OptimizedModule
    return model


def _load_resume(cfg: TrainConfig, last_path: Path) -> dict | None:
    """The checkpoint to resume from, when ``cfg.resume`` and it exists (checked against ``cfg``)."""
    if not cfg.resume:
        return None
    if not last_path.is_file():
        return None
    ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
    if "progress" not in ckpt or "optimizer" not in ckpt:
        raise ValueError(
            f"cannot resume from {last_path}: it holds no training state (written by an older version); set "
            "resume=false"
        )
    check_resumable(ckpt["config"], cfg, last_path)
    return ckpt


def _restore(
    ckpt: dict, net: nn.Module, optimizer, scheduler, scaler, loader_gen: torch.Generator, info: D.DistInfo
) -> _Progress:
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
            f"the checkpoint was written by {len(rngs)} process(es), this run has {info.world_size}: "
            "random states (dropout) are not restored, the result will differ slightly",
            stacklevel=3,
        )
    p = dict(ckpt["progress"])
    if p.get("partial"):
        p["partial"] = {
            "loss_sum": float(p["partial"]["loss_sum"]),
            "y": p["partial"]["y"].numpy(),
            "p": p["partial"]["p"].numpy(),
        }
    return _Progress(**p)


def write_history(history: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Per-epoch history as CSV (the format ``dvc plots`` reads)."""
    with atomic_path(path) as tmp:
        history.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)
