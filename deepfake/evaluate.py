"""Evaluation of a trained checkpoint on a split: predictions, metrics, curves, latency."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .data import build_transforms, load_image, make_loader
from .metrics import binary_metrics, roc_points
from .models import build_model
from .train import predict
from .utils import atomic_path, resolve_device, write_json


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings.

    Attributes:
        threshold: fake-probability at or above which an image is called fake.
        batch_size: images per forward pass when scoring a split.
        latency_images: images timed one at a time (file to probability) for the latency figure.
        device: ``auto`` | ``cpu`` | ``cuda``.
        num_workers: DataLoader worker processes.
    """

    threshold: float = 0.5
    batch_size: int = 64
    latency_images: int = 20
    device: str = "auto"
    num_workers: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"evaluate.threshold must be in (0, 1), got {self.threshold}")


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model stored in a checkpoint; returns it in eval mode and the checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train a model first (dvc repro train)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "arch", "image_size"):
        if key not in ckpt:
            raise ValueError(f"{path} is not a deepfake checkpoint (no {key!r} entry)")
    model, _ = build_model(ckpt["arch"], weights="none")
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def score_frame(model: nn.Module, frame: pd.DataFrame, root: str | os.PathLike, image_size: int, device: torch.device,
                batch_size: int = 64, num_workers: int = 0) -> np.ndarray:
    """Fake-probability for every row of ``frame`` (same order)."""
    loader = make_loader(frame, root, build_transforms(image_size, False), batch_size, False, num_workers)
    _, _, p = predict(model, loader, device, amp=device.type == "cuda", desc="score")
    return p


@torch.inference_mode()
def measure_latency(model: nn.Module, paths: list[Path], image_size: int, device: torch.device, warmup: int = 3) -> dict:
    """Time single images end to end (decode, transform, forward), in milliseconds."""
    tf = build_transforms(image_size, False)
    model.eval()
    paths = list(paths)
    if not paths:
        raise ValueError("no images to time")
    for p in paths[:warmup]:
        model(tf(load_image(p)).unsqueeze(0).to(device))
    times = []
    for p in paths:
        t0 = time.perf_counter()
        x = tf(load_image(p)).unsqueeze(0).to(device)  # (1, 3, H, W)
        torch.sigmoid(model(x)).item()
        times.append((time.perf_counter() - t0) * 1000)
    t = np.asarray(times)
    return {"latency_ms_median": float(np.median(t)), "latency_ms_p90": float(np.percentile(t, 90)), "latency_images": len(t),
            "torch_threads": torch.get_num_threads(), "device": str(device)}


def predictions_frame(frame: pd.DataFrame, scores: np.ndarray, threshold: float) -> pd.DataFrame:
    """Per-image predictions: path, group, label, score, predicted label."""
    out = frame[["path", "group", "label", "target"]].copy()
    out["score"] = np.round(scores.astype(float), 6)
    out["predicted"] = np.where(scores >= threshold, "fake", "real")
    return out


def evaluate(checkpoint: str | os.PathLike, frame: pd.DataFrame, root: str | os.PathLike, cfg: EvalConfig = EvalConfig()) -> tuple[pd.DataFrame, dict]:
    """Score ``frame`` with a checkpoint; returns the predictions and the metrics (with latency)."""
    device = resolve_device(cfg.device)
    model, ckpt = load_checkpoint(checkpoint, device)
    scores = score_frame(model, frame, root, ckpt["image_size"], device, cfg.batch_size, cfg.num_workers)
    preds = predictions_frame(frame, scores, cfg.threshold)
    metrics = binary_metrics(preds["target"], scores, cfg.threshold)
    if cfg.latency_images > 0:
        paths = [Path(root) / p for p in frame["path"].iloc[: cfg.latency_images]]
        metrics.update(measure_latency(model, paths, ckpt["image_size"], device))
    metrics.update({"arch": ckpt["arch"], "weights_used": ckpt.get("weights_used", "unknown"), "checkpoint_epoch": int(ckpt.get("epoch", 0))})
    return preds, metrics


def write_outputs(preds: pd.DataFrame, metrics: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``predictions.csv``, ``metrics.json`` and ``roc.csv`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"predictions": out / "predictions.csv", "metrics": out / "metrics.json", "roc": out / "roc.csv"}
    with atomic_path(paths["predictions"]) as tmp:
        preds.to_csv(tmp, index=False)
    with atomic_path(paths["roc"]) as tmp:
        pd.DataFrame(roc_points(preds["target"], preds["score"])).to_csv(tmp, index=False, float_format="%.6g")
    write_json(paths["metrics"], metrics)
    return paths
