"""Training: one entry point for CPU and CUDA, best-on-validation checkpointing, history."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from . import __version__
from .data import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig, build_transforms, make_loader, read_split
from .metrics import binary_metrics
from .models import build_model, count_parameters
from .utils import amp_dtype, atomic_path, autocast, resolve_device, seed_everything, write_json

HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "train_auc", "val_loss", "val_accuracy", "val_auc", "lr", "seconds")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (recorded inside every checkpoint).

    Attributes:
        arch: model architecture (see ``deepfake.models.ARCHS``).
        weights: ``auto`` | ``imagenet`` | ``none`` | path to weights.
        epochs: passes over the training split.
        batch_size: images per optimisation step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        image_size: side of the square network input.
        hflip: horizontal-flip probability.
        rotation: maximum random rotation in degrees.
        color_jitter: ColorJitter strength.
        num_workers: DataLoader worker processes.
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler).
        channels_last: NHWC memory format on CUDA.
        seed: seed of initialisation, shuffling and augmentation.
        deterministic: ask torch for deterministic kernels.
        max_batches: stop each epoch after this many batches (0: all); for quick checks.
    """

    arch: str = "resnet18"
    weights: str = "auto"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    image_size: int = 112
    hflip: float = 0.5
    rotation: float = 10.0
    color_jitter: float = 0.2
    num_workers: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    deterministic: bool = False
    max_batches: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")

    @property
    def augment(self) -> AugmentConfig:
        return AugmentConfig(hflip=self.hflip, rotation=self.rotation, color_jitter=self.color_jitter)


@dataclass
class TrainResult:
    """What a run produced."""

    history: pd.DataFrame
    best_checkpoint: Path
    last_checkpoint: Path
    summary: dict = field(default_factory=dict)


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = True,
    channels_last: bool = False,
    max_batches: int = 0,
    desc: str = "train",
) -> tuple[float, np.ndarray, np.ndarray]:
    """One pass over ``loader``; returns mean loss, labels and fake-probabilities seen."""
    model.train()
    loss_fn = nn.BCEWithLogitsLoss()
    total, n, ys, ps = 0.0, 0, [], []
    for i, (x, y) in enumerate(tqdm(loader, desc=desc, leave=False, unit="batch")):
        if max_batches and i >= max_batches:
            break
        x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)  # (B, 3, H, W), (B,)
        with autocast(device, amp):
            logits = model(x).squeeze(1)  # (B,)
            loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at batch {i}; lower train.lr or disable amp")
        total += loss.item() * len(y)
        n += len(y)
        ys.append(y.detach().cpu())
        ps.append(torch.sigmoid(logits.detach().float()).cpu())
    return total / max(n, 1), torch.cat(ys).numpy(), torch.cat(ps).numpy()


@torch.inference_mode()
def predict(
    model: nn.Module, loader, device: torch.device, amp: bool = True, channels_last: bool = False, max_batches: int = 0, desc: str = "predict",
) -> tuple[float, np.ndarray, np.ndarray]:
    """Score ``loader``; returns mean loss, labels and fake-probabilities."""
    model.eval()
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    total, n, ys, ps = 0.0, 0, [], []
    for i, (x, y) in enumerate(tqdm(loader, desc=desc, leave=False, unit="batch")):
        if max_batches and i >= max_batches:
            break
        x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x).squeeze(1).float()
        total += loss_fn(logits, y).item()
        n += len(y)
        ys.append(y.cpu())
        ps.append(torch.sigmoid(logits).cpu())
    return total / max(n, 1), torch.cat(ys).numpy(), torch.cat(ps).numpy()


def save_checkpoint(path: str | os.PathLike, **payload) -> Path:
    """``torch.save`` to a temporary file, then rename: a crash never leaves a half checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _epoch_stats(prefix: str, loss: float, y: np.ndarray, p: np.ndarray) -> dict:
    m = binary_metrics(y, p) if len(y) else {"accuracy": math.nan, "roc_auc": None}
    auc = m["roc_auc"]
    return {f"{prefix}_loss": loss, f"{prefix}_accuracy": m["accuracy"], f"{prefix}_auc": math.nan if auc is None else auc}


def train(cfg: TrainConfig, splits_dir: str | os.PathLike, data_root: str | os.PathLike, out_dir: str | os.PathLike) -> TrainResult:
    """Train on ``train.csv``, select on ``val.csv`` (validation ROC-AUC), write checkpoints.

    Writes ``best.pt`` and ``last.pt`` under ``out_dir``, each holding the model weights and the
    resolved config.

    Returns:
        Per-epoch history and a summary (best epoch, validation metrics, weights used).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = seed_everything(cfg.seed, cfg.deterministic)
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    channels_last = cfg.channels_last and cuda
    if cuda and not cfg.deterministic:
        torch.backends.cudnn.benchmark = True

    train_df, val_df = read_split(splits_dir, "train"), read_split(splits_dir, "val")
    train_loader = make_loader(train_df, data_root, build_transforms(cfg.image_size, True, cfg.augment), cfg.batch_size, True,
                               cfg.num_workers, gen, pin_memory=cuda)
    val_loader = make_loader(val_df, data_root, build_transforms(cfg.image_size, False), cfg.batch_size, False, cfg.num_workers, pin_memory=cuda)

    model, weights_used = build_model(cfg.arch, cfg.weights)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and cuda
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype(device) == torch.float16 else None

    meta = {
        "config": asdict(cfg), "arch": cfg.arch, "weights_used": weights_used, "image_size": cfg.image_size,
        "normalization": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}, "package_version": __version__,
    }
    rows, best_auc, best_epoch = [], -math.inf, 0
    best_path, last_path = out / "best.pt", out / "last.pt"
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        tr = train_one_epoch(model, train_loader, optimizer, device, scaler, use_amp, channels_last, cfg.max_batches, f"epoch {epoch}/{cfg.epochs}")
        va = predict(model, val_loader, device, use_amp, channels_last, cfg.max_batches, "validate")
        row = {"epoch": epoch, **_epoch_stats("train", *tr), **_epoch_stats("val", *va),
               "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        rows.append(row)
        val_auc = row["val_auc"] if not math.isnan(row["val_auc"]) else -row["val_loss"]
        state = {"model": model.state_dict(), "epoch": epoch, "val_auc": row["val_auc"], "history": rows, **meta}
        save_checkpoint(last_path, **state)
        if val_auc > best_auc:
            best_auc, best_epoch = val_auc, epoch
            save_checkpoint(best_path, **state)
        tqdm.write(f"epoch {epoch}: train loss {row['train_loss']:.4f} auc {row['train_auc']:.3f} | "
                   f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f} auc {row['val_auc']:.3f} | {row['seconds']:.1f}s")
    history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    best = history[history["epoch"] == best_epoch].iloc[0]
    summary = {
        "arch": cfg.arch, "weights_used": weights_used, "device": str(device), "parameters": count_parameters(model),
        "n_train": len(train_df), "n_val": len(val_df), "epochs": cfg.epochs, "best_epoch": int(best_epoch),
        "best_val_auc": float(best["val_auc"]), "best_val_accuracy": float(best["val_accuracy"]),
        "best_val_loss": float(best["val_loss"]), "train_seconds": float(history["seconds"].sum()),
    }
    return TrainResult(history=history, best_checkpoint=best_path, last_checkpoint=last_path, summary=summary)


def write_history(history: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Per-epoch history as CSV (the format ``dvc plots`` reads)."""
    with atomic_path(path) as tmp:
        history.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def write_summary(summary: dict, path: str | os.PathLike) -> Path:
    """Training summary as JSON (a DVC metrics file)."""
    return write_json(path, summary)
