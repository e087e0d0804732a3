"""Model construction: torchvision ResNet18 with ImageNet weights when available."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

ARCHS = ("resnet18",)
WEIGHTS_CHOICES = ("auto", "imagenet", "none")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be loaded."""


def imagenet_cache_file() -> Path:
    """Where torch hub keeps torchvision's ResNet18 ImageNet weights."""
    url = ResNet18_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_imagenet_state() -> dict[str, torch.Tensor]:
    """ResNet18 ImageNet weights from the torch hub cache, downloading them when missing.

    Raises:
        WeightsUnavailableError: not cached and the download failed (offline).
    """
    try:
        return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False, weights_only=True)
    except Exception as e:  # URLError, socket errors, HTTP errors, truncated files
        raise WeightsUnavailableError(
            f"ResNet18 ImageNet weights are not in the torch hub cache ({imagenet_cache_file()}) and could not be "
            f"downloaded ({type(e).__name__}: {e}). Copy resnet18-f37072fd.pth there, pass weights=<path>, "
            "or use weights=none to train from scratch."
        ) from e


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # one of our checkpoints
    return state


def build_model(arch: str = "resnet18", weights: str = "auto", num_outputs: int = 1) -> tuple[nn.Module, str]:
    """Build a detector that outputs one logit per image (fake = positive).

    Args:
        arch: ``resnet18``.
        weights: ``auto`` (ImageNet when cached or downloadable, else random init with a
            warning), ``imagenet`` (fail when unavailable), ``none`` (random init), or a path
            to a state dict / checkpoint of the backbone.
        num_outputs: size of the new head.

    Returns:
        The model and a string saying which weights were used (recorded in metrics).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    model = resnet18(weights=None)
    used = "none"
    if weights in ("auto", "imagenet"):
        try:
            model.load_state_dict(load_imagenet_state())
            used = "imagenet"
        except WeightsUnavailableError as e:
            if weights == "imagenet":
                raise
            warnings.warn(f"weights=auto: falling back to random initialisation. {e}", stacklevel=2)
            used = "none (imagenet unavailable)"
    elif weights != "none":
        state = _load_state_file(Path(weights))
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise WeightsUnavailableError(f"{weights} does not hold ResNet18 weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
        used = str(weights)
    model.fc = nn.Linear(model.fc.in_features, num_outputs)
    return model, used


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
