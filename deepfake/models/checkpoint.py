"""Checkpoints: written atomically, read weights-only, checked before use.

A checkpoint is a dict of tensors and plain values. ``models/best.pt``, the model that is scored
with, holds ``model`` (the state dict), ``arch``, ``image_size``, ``preprocessing`` (the contract
of ``deepfake.data.inputs``: how its training crops were made and how inputs are normalised; for a
timm model its own ``pretrained_cfg`` mean and std), ``backbone`` (where the architecture comes
from: library, version, pretrained tag, native input size), the resolved ``config``, ``epoch``,
``val_auc``, ``weights_used``, ``package_version`` and ``world_size``. ``last.pt`` holds the same
and, for resuming, the training state (``TRAINING_STATE_KEYS``: optimizer, scheduler, grad-scaler,
progress and RNG states), which Adam's two moments make twice the size of the weights. Readers
ignore keys they do not use, so a ``best.pt`` of an earlier version, written with the training
state, loads everywhere. ``torch.load`` runs with ``weights_only=True``: a file holding arbitrary
Python objects is refused, not executed.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.utils import atomic_path
from ..data.inputs import Preprocessing, whole_image
from ..data.media import looks_like_image, looks_like_video
from .architectures import build_model
from .backbones import UnknownArchError

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("model", "arch", "image_size")
#: What only resuming needs: ``last.pt`` holds it, ``best.pt`` does not.
TRAINING_STATE_KEYS = ("optimizer", "scheduler", "scaler", "step", "history", "progress", "rng")


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
        CheckpointError: the file is not a checkpoint of this package (empty, truncated, another
            format, a bare state dict, an unknown arch, an invalid preprocessing record), or holds
            objects other than tensors and plain values (refused without running any of its code).
            The message names the file, what is wrong with it and what to do.
    """
    path = Path(path)
    head = _head(path)
    try:
        with warnings.catch_warnings():  # a plain pickle (protocol 4) makes torch warn before it refuses it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(_unloadable(path, head, e)) from None
    except MemoryError:
        raise
    except Exception as e:  # torch.load raises what its parser meets: RuntimeError, EOFError, KeyError...
        raise CheckpointError(_unloadable(path, head, e)) from None
    _check_entries(ckpt, path)
    return ckpt


def _head(path: Path) -> bytes:
    """The first bytes of the file at ``path``, after checking that it is a readable, non-empty file."""
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train a model first (dvc repro train)")
    if not path.is_file():
        inside = path / "best.pt"
        raise CheckpointError(
            f"{path} is {'a folder' if path.is_dir() else 'not a regular file'}, not a checkpoint file; pass the "
            f"checkpoint file itself{f' ({inside})' if inside.is_file() else ''}"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError as e:
        raise CheckpointError(
            f"{path} cannot be read ({e.strerror or e}); check its permissions, or copy it again"
        ) from None
    if not head:
        raise CheckpointError(
            f"{path} is empty (0 bytes), not a checkpoint: its copy or download was cut short (training writes "
            "checkpoints whole); copy it again, or train again (dvc repro train)"
        )
    return head


#: Bytes read to recognise a file's format.
_HEAD_BYTES = 512
#: A checkpoint is a zip archive (torch.save) or, written by old PyTorch versions, a pickle (protocol 2+).
_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"
_TRAIN_AGAIN = "copy it again, or train again (dvc repro train)"
_USE_OURS = "pass a checkpoint written by deepfake's training (models/best.pt)"


def _what_it_is(head: bytes) -> str | None:
    """What a file that is no PyTorch file at all looks like, in words (None: unknown)."""
    if looks_like_image(head[:16]):
        return "an image"
    if looks_like_video(head):
        return "a video"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    for cut in range(4):  # a multi-byte character may be cut at the end of the head
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return "a text file" if all(c.isprintable() or c in "\t\r\n" for c in text) else None
    return None


def _unloadable(path: Path, head: bytes, e: Exception) -> str:
    """Why ``torch.load`` could not read ``path`` (starting with ``head``), and what to do, in one sentence."""
    size = path.stat().st_size
    if head.startswith(_ZIP) and not zipfile.is_zipfile(path):
        return (
            f"{path} is damaged or truncated: its archive ({size:,} bytes) cannot be read, as happens when a "
            f"copy or download is cut short; {_TRAIN_AGAIN}"
        )
    if head.startswith(_ZIP):
        return f"{path} is a zip archive that holds no readable PyTorch checkpoint; {_USE_OURS}"
    if isinstance(e, pickle.UnpicklingError) and head.startswith(_PICKLE):
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        return (
            f"{path} was refused unread: it is a pickle of Python objects"
            f"{f' ({refused.group(1)})' if refused else ''} other than tensors and plain values, which a "
            f"checkpoint of this package never holds and which could run code when loaded; {_USE_OURS}"
        )
    if head.startswith(_PICKLE):
        return (
            f"{path} is damaged or truncated: its data ({size:,} bytes) ends or breaks before the end of the "
            f"checkpoint; {_TRAIN_AGAIN}"
        )
    what = _what_it_is(head)
    return (
        f"{path} is {what or 'a file of another format'}, not a PyTorch checkpoint"
        f"{'' if what else f' (it starts with {head[:8]!r})'}; {_USE_OURS}"
    )


def _check_entries(ckpt: Any, path: Path) -> None:
    """Raise ``CheckpointError`` unless ``ckpt`` has the entries a model is rebuilt from, each usable."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path} holds a {type(ckpt).__name__}, not a checkpoint of this package (a mapping with "
            f"{', '.join(REQUIRED_KEYS)} entries); {_USE_OURS}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(
            f"{path} is a bare state dict ({len(ckpt)} tensors), not a checkpoint of this package: it records no "
            f"arch, input size or preprocessing; {_USE_OURS}, or start a training run from it (train.weights: "
            "its path)"
        )
    if missing:
        raise CheckpointError(
            f"{path} is not a checkpoint of this package: it has no {', '.join(missing)} "
            f"entr{'y' if len(missing) == 1 else 'ies'} (it holds {', '.join(map(str, list(ckpt)[:8])) or 'nothing'}); "
            f"{_USE_OURS}"
        )
    arch, size, state = ckpt["arch"], ckpt["image_size"], ckpt["model"]
    if not isinstance(arch, str) or not arch:
        raise CheckpointError(f"{path}: its arch entry is {arch!r}, not an architecture name; {_USE_OURS}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CheckpointError(
            f"{path} records image_size {size!r}, not a positive number of pixels: the file was edited or written by "
            f"another program; {_USE_OURS}"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path}: its model entry is a {type(state).__name__}"
            f"{'' if not isinstance(state, dict) else ' holding values other than tensors'}, not a state dict "
            f"(parameter names to tensors); {_USE_OURS}"
        )
    if ckpt.get("preprocessing") is not None:
        _contract(ckpt, path)


def _contract(ckpt: dict[str, Any], path: str | os.PathLike) -> Preprocessing:
    d = ckpt["preprocessing"]
    try:
        return Preprocessing.from_dict(d)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: its preprocessing record (how its training crops were made) is invalid: {e}; the file was "
            "edited or written by another version of deepfake: train again (dvc repro train)"
        ) from None


def preprocessing_of(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> Preprocessing:
    """The preprocessing contract a checkpoint was trained with.

    A checkpoint written before contracts were recorded is taken to expect whole images resized
    to its ``image_size`` (with a warning).
    """
    if ckpt.get("preprocessing") is None:
        log.warning(
            "%s records no preprocessing contract (written by an older version): images are used whole, "
            "resized to %s px; retrain to record how its crops were made",
            path,
            ckpt["image_size"],
        )
        return whole_image(int(ckpt["image_size"]))
    return _contract(ckpt, path)


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
            f"(pip install '{backbone.get('library')}=={backbone.get('version')}'), or train again (dvc repro train)"
            if backbone.get("version")
            else "install the timm version it was trained with, or train again (dvc repro train)"
        )
        raise CheckpointError(f"{path}: its architecture cannot be built here: {e}; {trained}") from None


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint; returns it in eval mode on ``device`` and the checkpoint dict."""
    ckpt = read_checkpoint(path)
    model = model_of(ckpt, path)
    problem = weights_mismatch(model, ckpt["model"])
    if problem:
        raise CheckpointError(
            f"{path}: its weights do not fit a {ckpt['arch']}, the arch it records ({problem}): it was written for "
            f"another network, or edited; {_USE_OURS}"
        )
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def weights_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """How ``state`` differs from ``model``'s own state dict, in words (empty when it fits)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]

    def shape(t: torch.Tensor) -> str:
        return "x".join(map(str, t.shape)) or "scalar"

    parts = []
    if missing:
        parts.append(f"{len(missing)} of the {len(own)} tensors it needs are missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors are not its own, e.g. {unexpected[0]}")
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{len(reshaped)} have another shape, e.g. {k}: {shape(state[k])} in the file, {shape(own[k])} expected"
        )
    return "; ".join(parts)
