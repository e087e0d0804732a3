"""Model construction by name: ResNet18 (torchvision), the compact dilated CNN, and any timm model.

``build_model(arch, weights)`` is the registry: ``resnet18`` (torchvision ResNet18, new head),
``dilated_cnn`` (``DilatedCNN``), or any name of timm's registry (``timm.list_models()``, e.g.
``efficientnet_b4``, ``legacy_xception``, or ``efficientnet_b4.ra2_in1k`` for a pretrained tag;
``deepfake.models.backbones``). ``check_arch`` validates a name in seconds (params validation).

Every model returns one logit per image, shape ``(B, 1)``, fake = positive. The sigmoid that
turns it into a fake-probability is applied outside the model, by the loss
(``BCEWithLogitsLoss``, numerically stable) and by ``train.predict``; a detector described
with "a single sigmoid output" is this logit followed by that sigmoid. ``input_config`` says
how a model's inputs are normalised (timm's ``pretrained_cfg`` for timm models, ImageNet's
statistics for the others); training records it in the checkpoint's preprocessing contract.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from ..data.inputs import IMAGENET_MEAN, IMAGENET_STD
from . import backbones
from .backbones import UnknownArchError, WeightsUnavailableError

#: The package's own architectures; every other name is looked up in timm's registry.
ARCHS = ("resnet18", "dilated_cnn")
WEIGHTS_CHOICES = ("auto", "imagenet", "none")


def is_timm(arch: str) -> bool:
    """Whether ``arch`` names a timm model rather than one of the package's own (``ARCHS``)."""
    return arch not in ARCHS


def check_arch(arch: str) -> None:
    """Raise ``UnknownArchError`` (a ``ValueError``) naming the closest names unless ``arch`` can be built."""
    if is_timm(arch):
        backbones.check_timm_name(arch, ARCHS)


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


def _build_timm(arch: str, weights: str, num_outputs: int, image_size: int | None) -> tuple[nn.Module, str]:
    backbones.check_timm_name(arch, ARCHS)
    if weights in ("auto", "imagenet"):
        label = backbones.weights_label(arch)
        try:
            return backbones.create_pretrained(arch, num_outputs, image_size), label
        except WeightsUnavailableError as e:
            if weights == "imagenet":
                raise
            warnings.warn(f"weights=auto: falling back to random initialisation. {e}", stacklevel=3)
            return backbones.create(arch, num_outputs, image_size), f"none ({label} unavailable)"
    model = backbones.create(arch, num_outputs, image_size)
    if weights == "none":
        return model, "none"
    backbones.load_weights_file(model, arch, Path(weights))
    return model, str(weights)


def build_model(
    arch: str = "resnet18", weights: str = "auto", num_outputs: int = 1, image_size: int | None = None
) -> tuple[nn.Module, str]:
    """Build a detector that outputs one logit per image (fake = positive).

    Args:
        arch: ``resnet18`` (torchvision, new head), ``dilated_cnn`` (``DilatedCNN``), or a timm
            model name (``efficientnet_b0``, ``legacy_xception``, ``efficientnet_b4.ra2_in1k``...).
        weights: ``auto`` (pretrained weights when cached or downloadable, else random init with
            a warning; dilated_cnn: random init), ``imagenet`` (the pretrained weights, failing
            when unavailable; for a timm model its pretrained tag, ImageNet for most), ``none``
            (random init), or a path to a state dict / checkpoint (for ResNet18 and timm models
            their head is skipped; for dilated_cnn the whole model is loaded).
        num_outputs: size of the new head.
        image_size: input side; needed by timm models with a fixed input size (vision transformers).

    Returns:
        The model and a string saying which weights were used (recorded in metrics).

    Raises:
        UnknownArchError: ``arch`` is not buildable (the message names the closest names).
        WeightsUnavailableError: the weights asked for cannot be loaded.
    """
    if arch == "resnet18":
        return _build_resnet18(weights, num_outputs)
    if arch == "dilated_cnn":
        return _build_dilated_cnn(weights, num_outputs)
    try:
        return _build_timm(arch, weights, num_outputs, image_size)
    except UnknownArchError as e:
        raise UnknownArchError(f"unknown arch {e}") from None


def input_config(arch: str) -> dict[str, Any]:
    """How architecture ``arch`` expects its inputs: normalisation ``mean``/``std``, ``native_input_size``
    (the size it was pretrained at), and where that comes from (timm's ``pretrained_cfg`` for timm models)."""
    if is_timm(arch):
        return backbones.input_config(arch)
    torchvision = arch == "resnet18"
    return {
        "library": "torchvision" if torchvision else "deepfake",
        "architecture": arch,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        # the dilated CNN has no pretrained weights, hence no size it was pretrained at
        "native_input_size": 224 if torchvision else None,
    }


def head_module(model: nn.Module, arch: str) -> nn.Module:
    """The classification head of ``model`` (trained from the first epoch even when the backbone is
    frozen): timm's classifier split (``get_classifier``) for timm models."""
    if arch in HEADS:
        return getattr(model, HEADS[arch])
    get = getattr(model, "get_classifier", None)
    if not callable(get):
        raise ValueError(f"cannot find the head of a {arch} ({type(model).__name__} has no get_classifier)")
    head = get()
    if not isinstance(head, nn.Module) or not any(True for _ in head.parameters()):
        raise ValueError(f"{arch}'s classifier ({type(head).__name__}) holds no parameters to train")
    return head


def convert_sync_batchnorm(model: nn.Module, arch: str) -> nn.Module:
    """BatchNorm layers synchronised across processes; timm's own conversion for timm models (its
    ``BatchNormAct2d`` layers keep their activation)."""
    if is_timm(arch):
        return backbones.timm_module().layers.convert_sync_batchnorm(model)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


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
