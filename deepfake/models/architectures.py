"""Model construction: ResNet18 transfer learning and the compact dilated CNN.

Every model returns one logit per image, shape ``(B, 1)``, fake = positive. The sigmoid that
turns it into a fake-probability is applied outside the model, by the loss
(``BCEWithLogitsLoss``, numerically stable) and by ``train.predict``; a detector described
with "a single sigmoid output" is this logit followed by that sigmoid.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

ARCHS = ("resnet18", "dilated_cnn")
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


class DilatedCNN(nn.Module):
    """Compact detector: 10 weight layers (8 convolutions, 2 fully connected), 652,773 parameters.

    Built for 224x224x3 input (any side that is a multiple of 16 works: the pooled grid is
    resized to 7x7 before the classifier). Wide 5x5 convolutions with 64 filters and
    max-pooling first, then narrower 3x3 convolutions, the last three dilated by 2 to widen
    the receptive field without pooling away the 14x14 grid, then a dropout-regularised
    classifier::

        layer  op                                  output (224 input)
        1      conv 5x5, 64, BN, ReLU, maxpool 2   64 x 112 x 112
        2      conv 5x5, 64, BN, ReLU, maxpool 2   64 x 56 x 56
        3      conv 3x3, 32, BN, ReLU, maxpool 2   32 x 28 x 28
        4      conv 3x3, 32, BN, ReLU, maxpool 2   32 x 14 x 14
        5      conv 3x3, 32, BN, ReLU              32 x 14 x 14
        6-8    conv 3x3 dilation 2, 32, BN, ReLU   32 x 14 x 14
               adaptive avg-pool 7x7, flatten      1568
        9      dropout 0.5, linear 306, ReLU       306
        10     dropout 0.5, linear 1               1 logit (sigmoid in the loss / predict)

    Convolutions carry no bias (BatchNorm's shift replaces it).
    """

    HIDDEN = 306  # width of the first fully connected layer; sets the total near 653k

    def __init__(self, dropout: float = 0.5, num_outputs: int = 1) -> None:
        super().__init__()

        def conv(cin: int, cout: int, k: int, dilation: int = 1, pool: bool = False) -> list[nn.Module]:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.features = nn.Sequential(
            *conv(3, 64, 5, pool=True),
            *conv(64, 64, 5, pool=True),
            *conv(64, 32, 3, pool=True),
            *conv(32, 32, 3, pool=True),
            *conv(32, 32, 3),
            *conv(32, 32, 3, dilation=2),
            *conv(32, 32, 3, dilation=2),
            *conv(32, 32, 3, dilation=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(32 * 7 * 7, self.HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(self.HIDDEN, num_outputs),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 32, H/16, W/16)
        x = self.pool(x)  # (B, 32, 7, 7)
        return self.classifier(x)  # (B, 1) logits


#: Name of the freshly initialised classification head of each architecture (the rest is the backbone).
HEADS = {"resnet18": "fc", "dilated_cnn": "classifier"}


def _build_resnet18(weights: str, num_outputs: int) -> tuple[nn.Module, str]:
    model = resnet18(weights=None)
    used = "none"
    if weights in ("auto", "imagenet"):
        try:
            model.load_state_dict(load_imagenet_state())
            used = "imagenet"
        except WeightsUnavailableError as e:
            if weights == "imagenet":
                raise
            warnings.warn(f"weights=auto: falling back to random initialisation. {e}", stacklevel=3)
            used = "none (imagenet unavailable)"
    elif weights != "none":
        state = _load_state_file(Path(weights))
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise WeightsUnavailableError(
                f"{weights} does not hold ResNet18 weights (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        used = str(weights)
    model.fc = nn.Linear(model.fc.in_features, num_outputs)
    return model, used


def _build_dilated_cnn(weights: str, num_outputs: int) -> tuple[nn.Module, str]:
    model = DilatedCNN(num_outputs=num_outputs)
    if weights in ("auto", "none"):
        return model, "none"  # no public pretrained weights exist: auto means random init, silently
    if weights == "imagenet":
        raise WeightsUnavailableError(
            "there are no ImageNet weights for arch=dilated_cnn; use weights=none (or auto), or a path to a checkpoint"
        )
    state = _load_state_file(Path(weights))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise WeightsUnavailableError(f"{weights} does not hold dilated_cnn weights ({str(e).splitlines()[0]})") from e
    return model, str(weights)


def build_model(arch: str = "resnet18", weights: str = "auto", num_outputs: int = 1) -> tuple[nn.Module, str]:
    """Build a detector that outputs one logit per image (fake = positive).

    Args:
        arch: ``resnet18`` (torchvision, new head) or ``dilated_cnn`` (``DilatedCNN``).
        weights: ``auto`` (ResNet18: ImageNet when cached or downloadable, else random init with
            a warning; dilated_cnn: random init), ``imagenet`` (fail when unavailable),
            ``none`` (random init), or a path to a state dict / checkpoint (for ResNet18 its
            ``fc`` head is skipped; for dilated_cnn the whole model is loaded).
        num_outputs: size of the new head.

    Returns:
        The model and a string saying which weights were used (recorded in metrics).
    """
    if arch == "resnet18":
        return _build_resnet18(weights, num_outputs)
    if arch == "dilated_cnn":
        return _build_dilated_cnn(weights, num_outputs)
    raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")


def head_module(model: nn.Module, arch: str) -> nn.Module:
    """The classification head of ``model`` (trained from the first epoch even when the backbone is frozen)."""
    if arch not in HEADS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    return getattr(model, HEADS[arch])


def set_backbone_frozen(model: nn.Module, arch: str, frozen: bool) -> None:
    """Freeze (or unfreeze) every parameter outside the head.

    A frozen backbone gets no gradients and its BatchNorm layers stop updating their running
    statistics (see ``apply_train_mode``): classic transfer learning, where the new head first
    learns on fixed pretrained features.
    """
    head = {id(p) for p in head_module(model, arch).parameters()}
    for p in model.parameters():
        p.requires_grad_(not frozen or id(p) in head)


def apply_train_mode(model: nn.Module, arch: str, frozen: bool) -> nn.Module:
    """``model.train()``, with the backbone's BatchNorm layers in eval mode when it is frozen."""
    model.train()
    if frozen:
        head = set(head_module(model, arch).modules())
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in head:
                m.eval()
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
