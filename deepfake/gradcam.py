"""Grad-CAM (Selvaraju et al., 2017) on the last convolutional block of a detector.

The block is ``model.gradcam_layer`` when the model names one (a module or a dotted name),
else found generically: the last top-level child that contains a ``Conv2d`` and, when that
child is a container (``nn.Sequential``...), its last such child. For torchvision's ResNet18
that is the last ``BasicBlock`` of ``layer4``, whose output is ``layer4``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TARGETS = ("fake", "real")


@dataclass
class GradCam:
    """A class-activation map and its overlay on the network input.

    Attributes:
        heatmap: (S, S) float32 in [0, 1] at the network input resolution; 1 = strongest
            evidence for ``target``.
        overlay: (S, S, 3) uint8 RGB: the input crop blended with the colour-mapped heatmap.
        target: the class explained (``fake`` explains the logit, ``real`` its negation).
        layer: name of the block the map was taken from.
        logit: the model's raw output for the image.
    """

    heatmap: np.ndarray
    overlay: np.ndarray
    target: str
    layer: str
    logit: float


def _contains_conv(m: nn.Module) -> bool:
    return any(isinstance(x, nn.Conv2d) for x in m.modules())


def find_target_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """Name and module of the block Grad-CAM hooks (see the module docstring)."""
    named = dict(model.named_modules())
    explicit = getattr(model, "gradcam_layer", None)
    if isinstance(explicit, str):
        if explicit not in named:
            raise ValueError(
                f"model.gradcam_layer names {explicit!r}, which is not a sub-module of {type(model).__name__}"
            )
        return explicit, named[explicit]
    if isinstance(explicit, nn.Module):
        for name, m in named.items():
            if m is explicit:
                return name, m
        raise ValueError("model.gradcam_layer is not a sub-module of the model")
    prefix, block = "", model
    for _ in range(2):  # the last conv-holding child, then its last conv-holding child
        children = [(n, c) for n, c in block.named_children() if _contains_conv(c)]
        if not children:
            break
        name, child = children[-1]
        prefix, block = f"{prefix}.{name}" if prefix else name, child
        if isinstance(child, nn.Conv2d):
            break
    if block is model:
        raise ValueError(
            f"{type(model).__name__} has no Conv2d; Grad-CAM needs a convolutional model (or set model.gradcam_layer)"
        )
    return prefix, block


def cam_from(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of one image: ReLU of the activation channels weighted by their mean gradient.

    Args:
        activation: (1, C, h, w) block output.
        gradient: (1, C, h, w) gradient of the explained score with respect to it.

    Returns:
        (h, w) non-negative map.
    """
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    return F.relu((weights * activation).sum(dim=1))[0]  # (h, w)


def overlay_heatmap(rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heatmap, colour-mapped (JET: red = high), onto an RGB uint8 image."""
    h, w = rgb.shape[:2]
    hm = cv2.resize(heatmap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(hm * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    return cv2.addWeighted(rgb, 1 - alpha, np.ascontiguousarray(colour), alpha, 0)


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    rgb: np.ndarray,
    target: str = "fake",
    device: torch.device | None = None,
    layer: str | nn.Module | None = None,
) -> GradCam:
    """Grad-CAM of ``model`` for one normalised input.

    Args:
        model: a one-logit detector (fake = positive), in eval mode.
        x: (1, 3, S, S) normalised input.
        rgb: (S, S, 3) uint8 image ``x`` was made from (for the overlay).
        target: ``fake`` or ``real``.
        device: where to run (default: the model's).
        layer: block to hook, its dotted name, or None to find it (``find_target_layer``).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"grad_cam explains one image: expected x of shape (1, 3, H, W), got {tuple(x.shape)}")
    if isinstance(layer, str):
        name, module = layer, dict(model.named_modules())[layer]
    elif isinstance(layer, nn.Module):
        name, module = type(layer).__name__, layer
    else:
        name, module = find_target_layer(model)
    device = device or next(model.parameters()).device
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.inference_mode(False), torch.enable_grad():
            inp = x.detach().clone().to(device).requires_grad_(True)  # a graph without touching parameter grads
            logit = model(inp).reshape(-1)[0]
            if not captured or not isinstance(captured[-1], torch.Tensor) or captured[-1].ndim != 4:
                raise ValueError(f"layer {name!r} does not output a (B, C, H, W) feature map; set model.gradcam_layer")
            act = captured[-1]
            score = logit if target == "fake" else -logit
            (grad,) = torch.autograd.grad(score, act)
            cam = cam_from(act.detach().float(), grad.float())  # (h, w)
    finally:
        handle.remove()
    s = x.shape[-1]
    cam = F.interpolate(cam[None, None], size=(x.shape[-2], s), mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    peak = float(cam.max())
    heatmap = (cam / peak if peak > 0 else cam).cpu().numpy().astype(np.float32)
    return GradCam(heatmap, overlay_heatmap(rgb, heatmap), target, name, float(logit.detach()))
