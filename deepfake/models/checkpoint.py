"""Checkpoints: written atomically, read weights-only, checked before use.

A checkpoint (``models/best.pt``, ``last.pt``) is a dict of tensors and plain values:
``model`` (the state dict), ``arch``, ``image_size``, ``preprocessing`` (the contract of
``deepfake.data.inputs``: how its training crops were made and how inputs are normalised: for a
timm model with its own ``pretrained_cfg`` mean and std), ``backbone`` (where the architecture
comes from: library, version, pretrained tag, native input size), the resolved ``config``,
``epoch``, ``val_auc``, ``weights_used`` and, for resuming, the optimizer,
scheduler, RNG and progress states. ``torch.load`` runs with ``weights_only=True``: a file
holding arbitrary Python objects is refused, not executed.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.utils import atomic_path
from ..data.inputs import Preprocessing, whole_image
from .architectures import build_model
from .backbones import UnknownArchError

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("model", "arch", "image_size")


class CheckpointError(ValueError):
    """A file is not a usable checkpoint of this package (the message names it and why)."""


def save_checkpoint(path: str | os.PathLike, **payload: Any) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves a half checkpoint.

    Saved through a file object, so the archive's inner folder is ``archive`` rather than the
    temporary file's random name: the same payload gives the same bytes (and DVC hash) every time.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict at ``path``, read weights-only and checked for the entries a model needs.

    Raises:
        FileNotFoundError: no file there (says how to make one).
        CheckpointError: the file is not a checkpoint, is damaged, or holds objects other than
            tensors and plain values (it is refused without running any of its code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train a model first (dvc repro train)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} was refused: it holds objects other than tensors and plain values, which a "
            f"checkpoint written by this package never does ({str(e).splitlines()[0][:200]}); "
            "use a checkpoint written by deepfake's training"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "it may be truncated or not a PyTorch file: train again or copy it again"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path} holds a {type(ckpt).__name__}, not a deepfake checkpoint (a dict with {REQUIRED_KEYS})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} is not a deepfake checkpoint: it has no {missing} entr{'y' if len(missing) == 1 else 'ies'}"
        )
    return ckpt


def preprocessing_of(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> Preprocessing:
    """The preprocessing contract a checkpoint was trained with.

    A checkpoint written before contracts were recorded is taken to expect whole images resized
    to its ``image_size`` (with a warning).
    """
    d = ckpt.get("preprocessing")
    if d is None:
        log.warning(
            "%s records no preprocessing contract (written by an older version): images are used whole, "
            "resized to %s px; retrain to record how its crops were made",
            path,
            ckpt["image_size"],
        )
        return whole_image(int(ckpt["image_size"]))
    try:
        return Preprocessing.from_dict(d)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its preprocessing record {d!r} is invalid ({e})") from None


def model_of(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> nn.Module:
    """The untrained network a checkpoint's weights belong to (its ``arch``, built as training built it).

    Raises:
        CheckpointError: the architecture cannot be built here (a timm model the installed timm
            lacks, or timm missing); the message names the file, the architecture and the timm
            version it was trained with.
    """
    arch = ckpt["arch"]
    if not isinstance(arch, str):
        raise CheckpointError(f"{path}: its arch entry is {arch!r}, not an architecture name")
    try:
        return build_model(arch, weights="none", image_size=int(ckpt["image_size"]))[0]
    except UnknownArchError as e:
        backbone = ckpt.get("backbone") or {}
        trained = (
            f"it was trained with {backbone.get('library')} {backbone.get('version')}; install that version "
            f"(pip install '{backbone.get('library')}=={backbone.get('version')}') or retrain"
            if backbone.get("version")
            else "install the timm version it was trained with, or retrain"
        )
        raise CheckpointError(f"{path}: its architecture cannot be built here: {e}; {trained}") from None


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint; returns it in eval mode on ``device`` and the checkpoint dict."""
    ckpt = read_checkpoint(path)
    model = model_of(ckpt, path)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: its weights do not fit a {ckpt['arch']} ({str(e).splitlines()[0][:200]})"
        ) from None
    return model.to(device).eval(), ckpt
