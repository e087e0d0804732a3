"""Grad-CAM (Selvaraju et al., 2017): where in the input the evidence for a verdict lies.

The map is taken from the deepest convolutional block whose output still has at least
``MIN_MAP_SIDE`` cells a side, then upsampled smoothly (bicubic) to the input size: on a 96 px
input, ResNet18's ``layer4`` is 3x3 (a colour wash over the face), ``layer3`` 6x6. For a timm
model the blocks considered are its stages' outputs, as its ``feature_info`` lists them (for
EfficientNet-B0 ``blocks.0`` ... ``blocks.6``: on 96 px, ``blocks.4`` is the deepest with 6x6
cells). For other models they are each top-level child that contains a ``Conv2d`` or, when it
is a container (``nn.Sequential``...), its children that do (for torchvision's ResNet18:
``conv1``, ``layer1.0`` ... ``layer4.1``). A model can name its block instead
(``model.gradcam_layer``: a module or a dotted name), and ``grad_cam(layer=...)`` overrides
both. A model whose blocks output tokens rather than feature maps (a vision transformer) has
no map to explain: the error says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colorbar import Colorbar
    from matplotlib.figure import Figure

TARGETS = ("fake", "real")
#: Blocks with a coarser output than this many cells a side are passed over for a shallower one.
MIN_MAP_SIDE = 6
#: The colour map of every overlay and its colour bar (OpenCV's JET and matplotlib's ``jet`` agree).
CMAP = "jet"


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
        map_size: (h, w) cells of that block's map, before upsampling.
    """

    heatmap: np.ndarray
    overlay: np.ndarray
    target: str
    layer: str
    logit: float
    map_size: tuple[int, int] = (0, 0)


def _contains_conv(m: nn.Module) -> bool:
    return any(isinstance(x, nn.Conv2d) for x in m.modules())


def feature_info_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of a timm model's ``feature_info`` (its stages' outputs, shallowest first); [] for other models."""
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list):
        return []
    named = dict(model.named_modules())
    names = [d.get("module") for d in info if isinstance(d, dict)]
    return [(n, named[n]) for n in names if isinstance(n, str) and n in named]


def candidate_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks Grad-CAM may hook, shallowest first (see the module docstring)."""
    stages = feature_info_layers(model)
    if stages:
        return stages
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if not _contains_conv(child):
            continue
        inner = [] if isinstance(child, nn.Conv2d) else [(n, c) for n, c in child.named_children() if _contains_conv(c)]
        out += [(f"{name}.{n}", c) for n, c in inner] or [(name, child)]
    return out


def _named_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The block ``model.gradcam_layer`` names, if any."""
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
    return None


def find_target_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """Name and module of the last block (``model.gradcam_layer`` when set), whatever its resolution."""
    named = _named_layer(model)
    if named is not None:
        return named
    blocks = candidate_layers(model)
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no Conv2d; Grad-CAM needs a convolutional model (or set model.gradcam_layer)"
        )
    return blocks[-1]


def pick_layer(sizes: Sequence[tuple[int, int]], min_side: int = MIN_MAP_SIDE) -> int:
    """Index of the deepest map with at least ``min_side`` cells a side, else of the largest one.

    Args:
        sizes: (h, w) of each candidate block's output, shallowest first.
        min_side: fewest cells a side a map may have.
    """
    if not sizes:
        raise ValueError("no feature maps to choose from")
    fine = [i for i, (h, w) in enumerate(sizes) if min(h, w) >= min_side]
    if fine:
        return fine[-1]
    largest = max(min(h, w) for h, w in sizes)
    return max(i for i, (h, w) in enumerate(sizes) if min(h, w) == largest)


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


def upsample_map(cam: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map resized smoothly (bicubic) to ``size`` and scaled to [0, 1] (all zeros stays zeros)."""
    up = F.interpolate(cam[None, None].float(), size=size, mode="bicubic", align_corners=False)[0, 0]  # (H, W)
    up = up.clamp(min=0)  # bicubic overshoots below zero next to sharp edges
    up = up - up.min()
    peak = float(up.max())
    return (up / peak if peak > 0 else up).cpu().numpy().astype(np.float32)


def overlay_heatmap(rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heatmap, colour-mapped (JET: red = high), onto an RGB uint8 image."""
    h, w = rgb.shape[:2]
    hm = cv2.resize(heatmap.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    colour = cv2.applyColorMap(np.clip(hm * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    return cv2.addWeighted(rgb, 1 - alpha, np.ascontiguousarray(colour), alpha, 0)


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    rgb: np.ndarray,
    target: str = "fake",
    device: torch.device | None = None,
    layer: str | nn.Module | None = None,
    min_side: int = MIN_MAP_SIDE,
) -> GradCam:
    """Grad-CAM of ``model`` for one normalised input, at the input's resolution.

    Args:
        model: a one-logit detector (fake = positive), in eval mode.
        x: (1, 3, S, S) normalised input.
        rgb: (S, S, 3) uint8 image ``x`` was made from (for the overlay).
        target: ``fake`` or ``real``.
        device: where to run (default: the model's).
        layer: block to hook or its dotted name; None: ``model.gradcam_layer``, else the deepest
            block whose map has at least ``min_side`` cells a side (``pick_layer``).
        min_side: see ``layer``.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"grad_cam explains one image: expected x of shape (1, 3, H, W), got {tuple(x.shape)}")
    if isinstance(layer, str):
        blocks = [(layer, dict(model.named_modules())[layer])]
    elif isinstance(layer, nn.Module):
        blocks = [(type(layer).__name__, layer)]
    else:
        named = _named_layer(model)
        blocks = [named] if named is not None else candidate_layers(model)
        if not blocks:
            find_target_layer(model)  # raises: no convolutional block
    device = device or next(model.parameters()).device
    captured: dict[int, torch.Tensor] = {}

    def keeper(i: int):
        def hook(_m, _i, out) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                captured[i] = out  # a block run twice keeps its last output

        return hook

    handles = [m.register_forward_hook(keeper(i)) for i, (_, m) in enumerate(blocks)]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            inp = x.detach().clone().to(device).requires_grad_(True)  # a graph without touching parameter grads
            logit = model(inp).reshape(-1)[0]
            seen = sorted(captured)
            if not seen:
                which = f"layer {blocks[0][0]!r} does not" if len(blocks) == 1 else f"none of its {len(blocks)} blocks"
                raise ValueError(
                    f"{which} output a (B, C, H, W) feature map (a transformer's blocks output tokens), so "
                    f"{type(model).__name__} has no Grad-CAM map here; set model.gradcam_layer to a convolutional block"
                )
            chosen = seen[pick_layer([(captured[i].shape[-2], captured[i].shape[-1]) for i in seen], min_side)]
            act = captured[chosen]
            score = logit if target == "fake" else -logit
            (grad,) = torch.autograd.grad(score, act)
            cam = cam_from(act.detach().float(), grad.float())  # (h, w)
    finally:
        for handle in handles:
            handle.remove()
    heatmap = upsample_map(cam, (x.shape[-2], x.shape[-1]))  # (S, S)
    h, w = cam.shape
    return GradCam(heatmap, overlay_heatmap(rgb, heatmap), target, blocks[chosen][0], float(logit.detach()), (h, w))


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def add_colorbar(fig: Figure, ax: Axes | Sequence[Axes], target: str = "fake") -> Colorbar:
    """A colour bar beside ``ax`` reading the overlay's colours as Grad-CAM values (0 to 1)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=CMAP), ax=ax, fraction=0.046, pad=0.03, ticks=[0, 0.5, 1])
    bar.set_label(f"evidence for {target.upper()}", fontsize=8)
    bar.ax.set_yticklabels(["0 none", "0.5", "1 most"], fontsize=7)
    return bar


def gradcam_figure(cam: GradCam, crop: np.ndarray | None = None, title: str | None = None, size: float = 3.0) -> Figure:
    """The overlay with its colour bar, after the network input when ``crop`` is given.

    Args:
        cam: the map to draw.
        crop: (S, S, 3) uint8 network input shown on the left (None: the overlay alone).
        title: over the overlay (default: the block and its map size).
        size: inches a panel.
    """
    from matplotlib.figure import Figure

    panels = 2 if crop is not None else 1
    fig = Figure(figsize=(size * panels + 0.9, size + 0.35), dpi=100, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if crop is not None:
        axes[0].imshow(crop)
        axes[0].set_title("network input", fontsize=9)
    h, w = cam.map_size
    axes[-1].imshow(cam.overlay)
    axes[-1].set_title(title or f"Grad-CAM of {cam.layer} ({h}x{w} map, upsampled)", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    add_colorbar(fig, axes[-1], cam.target)
    return fig
