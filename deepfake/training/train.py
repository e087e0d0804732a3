"""Training: one entry point for a CPU, a GPU or ``torchrun`` on N GPUs; resumable and checkpointed.

``train(cfg, splits_dir, data_root, out_dir)`` trains on ``train.csv``, selects on
``val.csv`` (ROC-AUC) and writes ``best.pt`` (best validation epoch: the weights, the
preprocessing contract, the resolved config and metadata) and ``last.pt`` (every epoch, and
every ``checkpoint_every`` batches: the same record plus everything needed to continue:
optimizer, scheduler, grad-scaler, progress and RNG states). Both are written atomically;
``resume=True`` continues from ``last.pt`` to the result an uninterrupted run would have given
(same seed, ``deterministic=True``).

Run under ``torchrun --nproc_per_node=N -m deepfake train`` the same function trains with
DistributedDataParallel: ``batch_size`` stays the global batch (images per optimisation
step), each rank takes its slice of every batch, the loss of a step is the mean over the
global batch, metrics are computed on predictions gathered from all ranks, and rank 0 logs
and writes files.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import __version__
from ..core import paths
from ..core.utils import amp_dtype, cpu_bf16_supported, prepare_output_dir, resolve_device, seed_everything
from ..data.detect import parse_points
from ..data.inputs import Preprocessing, load_input, read_contract
from ..data.split import read_split
from ..metrics.classification import binary_metrics
from ..models.architectures import (
    apply_train_mode,
    build_model,
    convert_sync_batchnorm,
    count_parameters,
    input_config,
    set_backbone_frozen,
)
from ..models.checkpoint import save_checkpoint
from . import distributed as D
from .blend import BlendConfig, self_blend
from .config import TrainConfig
from .loading import DecodedCache, EpochBatchSampler, ImageDataset, class_weights, make_batch_loader
from .resume import Progress, check_world_size, load_resume, restore, rng_state
from .scoring import predict
from .steps import EpochStats, StepOptions, make_scheduler, train_one_epoch

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
)


@dataclass
class TrainResult:
    """What a run produced (on every rank; only rank 0 wrote files)."""

    history: pd.DataFrame
    best_checkpoint: Path
    last_checkpoint: Path
    summary: dict = field(default_factory=dict)
    is_main: bool = True
    timings: dict = field(default_factory=dict)  # wall-clock seconds per epoch (they differ between runs)


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


def selection_score(row: dict) -> float:
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


def train(
    cfg: TrainConfig,
    splits_dir: str | os.PathLike,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    callback: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
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
        on_epoch: called on the main process with each epoch's history row as the epoch ends
            (experiment tracking, ``deepfake.pipeline.tracking.TrainTracker``).

    Returns:
        Per-epoch history and a summary (best epoch, validation metrics, weights used).
    """
    info = D.setup(cfg.device)
    try:
        return _train(cfg, Path(splits_dir), Path(data_root), Path(out_dir), callback, on_epoch, info)
    finally:
        D.teardown(info)


@dataclass
class _Data:
    """What a run reads: the splits, the crops' preprocessing contract, datasets, samplers and loaders."""

    train_df: pd.DataFrame
    val_df: pd.DataFrame
    model_inputs: dict  # normalisation and native size: timm's pretrained_cfg for timm models
    contract: Preprocessing
    train_set: ImageDataset
    balance: str  # the class-balance method used
    pos_weight: float | None
    blend_counts: dict
    train_sampler: EpochBatchSampler
    train_loader: DataLoader
    val_loader: DataLoader


def _precision(cfg: TrainConfig, device: torch.device, info: D.DistInfo) -> tuple[bool, bool]:
    """``(autocast, channels-last)`` on ``device``: AMP on CUDA, bf16 on a CPU with native bf16."""
    cuda = device.type == "cuda"
    cpu_bf16 = cfg.cpu_bf16 and not cuda
    if cpu_bf16 and not cpu_bf16_supported():
        if info.is_main:
            warnings.warn(
                "cpu_bf16=true ignored: this CPU has no native bf16 instructions (AVX512-BF16 or AMX); "
                "training in float32",
                stacklevel=4,  # the caller of train()
            )
        cpu_bf16 = False
    return cfg.amp and cuda or cpu_bf16, cfg.channels_last and cuda or cpu_bf16


def _data(cfg: TrainConfig, splits_dir: Path, data_root: Path, info: D.DistInfo, cuda: bool) -> _Data:
    """Read the splits and build the training and validation loaders (this rank's share of each batch)."""
    show = info.is_main
    train_df, val_df = read_split(splits_dir, "train"), read_split(splits_dir, "val")
    model_inputs = input_config(cfg.arch)
    contract = replace(
        read_contract(data_root, cfg.image_size), mean=tuple(model_inputs["mean"]), std=tuple(model_inputs["std"])
    )
    if show:
        _check_input_size(cfg, contract, model_inputs)
    blend = cfg.blend(contract.margin)
    caches = _decoded_caches(cfg, data_root, (train_df, val_df), info) if cfg.decode_cache else (None, None)
    train_set = ImageDataset(
        train_df,
        data_root,
        cfg.image_size,
        cfg.augment,
        augment_in_worker=not cuda,
        cache=caches[0],
        blend=blend,
        landmarks=crop_landmarks(train_df, contract, cfg.image_size) if blend.on else None,
    )
    targets = train_set.item_targets
    balance, pos_weight = _resolve_balance(cfg, targets)
    blend_counts = {
        "self_blend": blend.mode,
        "pseudo_fakes_per_epoch": int(train_set.blended.sum()),
        "real_fakes_dropped": int((train_df["target"] == 1).sum()) if blend.mode == "only" else 0,
        "with_landmarks": int(sum(x is not None for x in train_set.landmarks)) if blend.on else 0,
    }
    if blend.on and show:
        log.info(
            f"self-blending ({blend.mode}): {blend_counts['pseudo_fakes_per_epoch']} pseudo-fakes per epoch from "
            f"{int((train_df['target'] == 0).sum())} real images ({blend_counts['with_landmarks']} with landmarks)"
            + (
                f"; {blend_counts['real_fakes_dropped']} real fakes dropped from training"
                if blend.mode == "only"
                else ""
            )
        )
    train_sampler = EpochBatchSampler(
        len(train_set),
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
    loader = functools.partial(
        make_batch_loader,
        num_workers=cfg.num_workers,
        pin_memory=cuda,
        finish_in_workers=not cuda,
        seed=cfg.seed + info.rank,
        mean=contract.mean,
        std=contract.std,
    )
    return _Data(
        train_df,
        val_df,
        model_inputs,
        contract,
        train_set,
        balance,
        pos_weight,
        blend_counts,
        train_sampler,
        loader(train_set, train_sampler),
        loader(ImageDataset(val_df, data_root, cfg.image_size, cache=caches[1]), val_sampler),
    )


def _model(
    cfg: TrainConfig, info: D.DistInfo, device: torch.device, channels_last: bool, resume_ckpt: dict | None
) -> tuple[nn.Module, str, int]:
    """The network on ``device`` (fresh weights when resuming: the checkpoint's come later), the weights
    it started from, and the epochs its backbone stays frozen."""
    net, weights_used = build_model(
        cfg.arch, "none" if resume_ckpt is not None else cfg.weights, image_size=cfg.image_size
    )
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
                stacklevel=4,  # the caller of train()
            )
        freeze_epochs = 0
    if info.enabled and device.type == "cuda" and cfg.sync_bn:
        net = convert_sync_batchnorm(net, cfg.arch)
    elif info.enabled and info.is_main and freeze_epochs < cfg.epochs:
        warnings.warn(
            "BatchNorm statistics are computed per process (SyncBatchNorm needs CUDA and sync_bn=true): "
            "results differ slightly from one process with the same global batch",
            stacklevel=4,  # the caller of train()
        )
    net = net.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)  # type: ignore[call-overload]
    return net, weights_used, freeze_epochs


def _record_epoch(prog: Progress, row: dict, cfg: TrainConfig) -> bool:
    """Add the epoch's ``row`` to ``prog``, with the best epoch and early stopping; True when it is the best yet."""
    epoch = row["epoch"]
    prog.rows.append(row)
    prog.epoch, prog.step, prog.partial = epoch, 0, None
    improved = selection_score(row) > prog.best_score
    if improved:
        prog.best_score, prog.best_epoch, prog.bad_epochs = selection_score(row), epoch, 0
    else:
        prog.bad_epochs += 1
    prog.stopped_early = bool(cfg.patience and prog.bad_epochs >= cfg.patience and cfg.min_epochs <= epoch < cfg.epochs)
    return improved


def _train(
    cfg: TrainConfig, splits_dir: Path, data_root: Path, out: Path, callback, on_epoch, info: D.DistInfo
) -> TrainResult:
    if info.is_main:  # writable before an epoch of work; leftovers of a killed checkpoint write removed
        prepare_output_dir(out)
    seed_everything(cfg.seed, cfg.deterministic)
    device = _device_for(cfg, info)
    cuda = device.type == "cuda"
    use_amp, channels_last = _precision(cfg, device, info)
    if cuda and not cfg.deterministic:
        torch.backends.cudnn.benchmark = True
    show = info.is_main
    data = _data(cfg, splits_dir, data_root, info, cuda)
    contract, train_sampler, train_loader = data.contract, data.train_sampler, data.train_loader

    # Model and optimisation
    last_path, best_path = out / "last.pt", out / "best.pt"
    resume_ckpt = load_resume(cfg, last_path)
    if resume_ckpt is not None:
        check_world_size(resume_ckpt, last_path, info.world_size, train_sampler.steps_per_epoch)
    net, weights_used, freeze_epochs = _model(cfg, info, device, channels_last, resume_ckpt)
    optimizer = make_optimizer(net, cfg)
    steps_per_epoch = len(train_sampler)
    scheduler = make_scheduler(optimizer, steps_per_epoch, cfg.epochs, cfg.warmup_epochs, cfg.schedule)
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype(device) == torch.float16 else None
    loss_fn = nn.BCEWithLogitsLoss(
        reduction="sum", pos_weight=None if data.pos_weight is None else torch.tensor(data.pos_weight, device=device)
    )

    meta = {
        "config": asdict(cfg),
        "arch": cfg.arch,
        "weights_used": weights_used,
        "image_size": cfg.image_size,
        "preprocessing": contract.to_dict(),
        "backbone": data.model_inputs,
        "package_version": __version__,
        "world_size": info.world_size,
    }
    prog = Progress()
    if resume_ckpt is not None:
        prog = restore(resume_ckpt, net, optimizer, scheduler, scaler, train_loader.generator, info)
        if show:
            saved_world = int(resume_ckpt.get("world_size", 1))
            by = (
                f" by {saved_world} process(es), continued by {info.world_size}"
                if saved_world != info.world_size
                else ""
            )
            log.info(f"resuming from {last_path}: {prog.epoch} epoch(s) and {prog.step} batch(es) done{by}")

    def model_record(p: Progress) -> dict[str, Any]:
        """What ``best.pt`` holds: the weights, the preprocessing contract and the metadata."""
        return {"model": net.state_dict(), "epoch": p.epoch, "val_auc": p.rows[-1]["val_auc"] if p.rows else math.nan}

    def checkpoint(path: Path, p: Progress) -> None:
        """``last.pt``: the model record and the training state (``TRAINING_STATE_KEYS``) a run resumes from."""
        rngs = D.all_gather_objects(rng_state(train_loader.generator), info)
        if info.is_main:
            save_checkpoint(
                path,
                **model_record(p),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict() if scaler is not None else None,
                step=p.step,
                history=p.rows,
                progress=asdict(p),
                rng=rngs,
                **meta,
            )

    frozen_state, model = None, net
    epoch_seconds: dict[int, float] = {}
    train_seconds: dict[int, float] = {}  # the optimisation steps alone, without validation
    train_images: dict[int, int] = {}
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
                mid = Progress(
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
            cfg.augment is not None,
            info.world_size,
            show,
            f"epoch {epoch}/{cfg.epochs}",
            on_step,
            contract.mean,
            contract.std,
        )
        t_train = time.perf_counter()
        sizes = train_sampler.global_sizes()
        stats = train_one_epoch(model, train_loader, optimizer, opts, sizes, stats)
        train_seconds[epoch], train_images[epoch] = time.perf_counter() - t_train, int(sum(sizes))
        loss_sum, y, p = stats.gathered(info)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"training loss of epoch {epoch} is {loss_sum}; lower train.lr or disable amp")
        tr = (loss_sum / max(len(y), 1), y, p)
        va_loss, va_y, va_z = predict(
            net,
            data.val_loader,
            device,
            use_amp,
            channels_last,
            desc="validate",
            dist_info=info,
            show=show,
            mean=contract.mean,
            std=contract.std,
        )
        va = (va_loss, va_y, torch.sigmoid(torch.from_numpy(va_z)).numpy())
        row = {
            "epoch": epoch,
            **_epoch_stats("train", *tr),
            **_epoch_stats("val", *va),
            "lr": float(optimizer.param_groups[0]["lr"]),
        }
        improved = _record_epoch(prog, row, cfg)
        if improved and info.is_main:  # before last.pt: a run stopped between the two redoes this epoch
            save_checkpoint(best_path, **model_record(prog), **meta)
        checkpoint(last_path, prog)
        epoch_seconds[epoch] = time.perf_counter() - t0
        if on_epoch is not None and info.is_main:
            on_epoch(dict(row))
        if show:
            log.info(
                f"epoch {epoch}: train loss {row['train_loss']:.4f} auc {row['train_auc']:.3f} | val loss "
                f"{row['val_loss']:.4f} "
                f"acc {row['val_accuracy']:.3f} auc {row['val_auc']:.3f} | {epoch_seconds[epoch]:.1f}s"
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
        "backbone": data.model_inputs,
        "n_train": len(data.train_df),
        "n_train_items": len(data.train_set),
        **data.blend_counts,
        "n_val": len(data.val_df),
        "epochs": cfg.epochs,
        "epochs_run": len(history),
        "stopped_early": prog.stopped_early,
        "best_epoch": int(prog.best_epoch),
        "best_val_auc": float(best["val_auc"]),
        "best_val_accuracy": float(best["val_accuracy"]),
        "best_val_loss": float(best["val_loss"]),
        "class_balance": data.balance,
        "pos_weight": data.pos_weight,
        "frozen_epochs": freeze_epochs,
    }
    step_seconds = sum(train_seconds.values())
    timings = {
        "epoch_seconds": {str(k): round(v, 2) for k, v in epoch_seconds.items()},
        "train_seconds": round(sum(epoch_seconds.values()), 2),
        # images through the optimisation steps per second (all processes; validation not counted)
        "train_images_per_second": round(sum(train_images.values()) / step_seconds, 2) if step_seconds else None,
    }
    return TrainResult(
        history=history,
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        summary=summary,
        is_main=info.is_main,
        timings=timings,
    )


def blend_examples(
    cfg: TrainConfig, splits_dir: str | os.PathLike, data_root: str | os.PathLike, n: int = 8
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(real crop, mask, pseudo-fake)`` for the first ``n`` real training images, as training makes them
    (at the network size, before augmentation; with ``self_blend: off``, as ``add`` would)."""
    train_df = read_split(splits_dir, "train")
    reals = train_df[train_df["target"] == 0].head(n)
    contract = read_contract(data_root, cfg.image_size)
    blend = cfg.blend(contract.margin)
    if not blend.on:
        blend = BlendConfig(**{**asdict(blend), "mode": "add"})
    marks = crop_landmarks(reals, contract, cfg.image_size)
    out = []
    for k, (path, lm) in enumerate(zip(reals["path"], marks)):
        img = load_input(Path(data_root) / path, cfg.image_size)
        fake, mask = self_blend(img, lm, blend, np.random.default_rng([cfg.seed, k, 7]))
        out.append((img, mask, fake))
    return out


def crop_landmarks(frame: pd.DataFrame, contract: Preprocessing, image_size: int) -> list[np.ndarray | None]:
    """Each row's landmarks from the cache manifest (``landmarks`` column, in the pixels of the
    cache's ``contract.crop_size`` crops), scaled to the ``image_size`` network input."""
    if "landmarks" not in frame.columns:
        return [None] * len(frame)
    scale = image_size / (contract.crop_size or image_size)
    out: list[np.ndarray | None] = []
    for cell in frame["landmarks"]:
        pts = parse_points(cell)
        out.append(None if pts is None else pts * scale)
    return out


def make_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over every parameter of ``net`` (frozen ones get no gradient, hence no step)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _check_input_size(cfg: TrainConfig, contract: Preprocessing, model_inputs: dict) -> None:
    """Warn when the network is fed crops upsampled from the cache (``preprocess.size`` below
    ``train.image_size``), and say when it runs at another size than it was pretrained at."""
    if contract.crop_size and cfg.image_size > contract.crop_size:
        log.warning(
            f"train.image_size {cfg.image_size} exceeds the face cache's {contract.crop_size} px crops "
            f"(preprocess.size): the network sees upsampled crops; set preprocess.size: {cfg.image_size} "
            "(the presets set both)"
        )
    native = model_inputs.get("native_input_size")
    if native and native != cfg.image_size and cfg.weights != "none":
        log.info(f"{cfg.arch} was pretrained at {native} px; training at {cfg.image_size} px (train.image_size)")


def _decoded_caches(
    cfg: TrainConfig, data_root: Path, frames: tuple[pd.DataFrame, ...], info: D.DistInfo
) -> list[DecodedCache]:
    """The decoded-image cache of each frame: rank 0 builds (or finds) it; then the first process of each
    other node, whose ``build/cache/`` may be on a disk of its own, finds it there or builds it; then the
    node's other processes open it. No two processes of a node decode the same images."""
    cache_dir = paths.ROOT / "build" / "cache"
    lists = [[data_root / p for p in f["path"]] for f in frames]
    first_on_node = info.local_rank == 0
    turns = (info.is_main, first_on_node and not info.is_main, not first_on_node and not info.is_main)
    caches: list[DecodedCache] = []
    for k, mine in enumerate(turns):
        if k:
            D.barrier(info)
        if mine:
            workers = cfg.num_workers if first_on_node else 0
            caches = [DecodedCache.build(ps, cfg.image_size, cache_dir, workers, show=info.is_main) for ps in lists]
    return caches


def _wrap(net: nn.Module, cfg: TrainConfig, info: D.DistInfo, device: torch.device) -> nn.Module:
    """The module the training step calls: ``net``, in DDP under torchrun, compiled when asked."""
    model = net
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile_model:
        model = cast(nn.Module, torch.compile(model))  # compiling a Module gives an OptimizedModule
    return model
