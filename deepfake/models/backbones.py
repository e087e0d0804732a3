"""timm backbones by name: the check of a name, pretrained weights, weights files, input config.

Any of timm's models (``timm.list_models()``, or a name with its pretrained tag, e.g.
``efficientnet_b4.ra2_in1k``) is a detector here: ``timm.create_model(name, num_classes=1)``
gives it the one-logit head every model of the package has. Its pretrained configuration
(``pretrained_cfg``) says where its weights are published and how its inputs were normalised;
``input_config`` reads the latter into the checkpoint's preprocessing contract.

Pretrained weights come through timm's own loading (``pretrained=True``), from the Hugging
Face hub or the URL timm records. They are looked for in the local caches first (the Hugging
Face hub cache, the torch hub's ``checkpoints`` folder); when absent, the host is probed for a
few seconds before any download is tried, so that an offline machine fails in seconds instead
of waiting out the hub client's retries. A weights file (``train.weights: PATH``) is read here:
a state dict (``.pt``/``.pth``/``.bin`` or ``.safetensors``), a timm training checkpoint
(``state_dict``, ``state_dict_ema``) or one of this package's checkpoints (``model``); its
classifier is skipped (the detector's head is new) and every other tensor must fit.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import socket
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Seconds to wait for the weights' host before calling it unreachable.
PROBE_SECONDS = 3.0


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be loaded."""


class UnknownArchError(ValueError):
    """An architecture name that neither this package nor the installed timm provides."""


def timm_module() -> Any:
    """The ``timm`` package (imported on first use: it takes seconds)."""
    try:
        import timm
    except ImportError as e:
        raise UnknownArchError("timm is not installed; pip install timm (a dependency of this package)") from e
    return timm


def timm_version() -> str:
    """The installed timm's version."""
    return str(timm_module().__version__)


def closest_names(name: str, names: list[str], n: int = 5) -> list[str]:
    """The names a typo most likely meant: those containing it, then close spellings (difflib)."""
    low = name.lower()
    inside = sorted((m for m in names if low and low in m.lower()), key=len)[:3]
    close = difflib.get_close_matches(low, names, n=n, cutoff=0.6)
    return list(dict.fromkeys(inside + close))[:n]


def check_timm_name(name: str, ours: tuple[str, ...] = ()) -> None:
    """Raise ``UnknownArchError`` unless ``name`` is a timm model (with a valid pretrained tag, if any).

    Args:
        name: ``efficientnet_b0`` or ``efficientnet_b0.ra_in1k``.
        ours: the package's own architectures, offered among the closest names.
    """
    timm = timm_module()
    base, _, tag = name.partition(".")
    if not timm.is_model(base):
        names = [*ours, *timm.list_models()]
        close = closest_names(name, names)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownArchError(
            f"{name!r} is neither {' | '.join(ours) or 'a package architecture'} nor one of the "
            f"{len(names) - len(ours)} models of timm {timm.__version__}{hint} "
            f"(python -c \"import timm; print(timm.list_models('*{base[:6]}*'))\" lists timm's)"
        )
    if tag:
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{base}.*")]
        if tag not in tags:
            raise UnknownArchError(
                f"{name!r}: timm {timm.__version__} has no pretrained tag {tag!r} for {base} "
                f"(it has {', '.join(tags) or 'none'}); name the model alone for its default tag"
            )


def pretrained_cfg(name: str) -> Any:
    """timm's ``PretrainedCfg`` of ``name`` (its default tag when none is named), or None."""
    try:
        return timm_module().models.get_pretrained_cfg(name)
    except RuntimeError:
        return None


def create(name: str, num_outputs: int = 1, image_size: int | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, num_classes=num_outputs)``; models with a fixed input size (vision
    transformers) are built for ``image_size``."""
    cfg = pretrained_cfg(name)
    if image_size and cfg is not None and cfg.fixed_input_size:
        kwargs["img_size"] = image_size
    return timm_module().create_model(name, num_classes=num_outputs, **kwargs)


# --------------------------------------------------------------------------------------------
# Pretrained weights
# --------------------------------------------------------------------------------------------


def weights_label(name: str) -> str:
    """``timm:<model>.<tag>``: which pretrained weights a name loads (``weights_used``)."""
    cfg = pretrained_cfg(name)
    if cfg is None:
        return f"timm:{name}"
    return f"timm:{cfg.architecture}.{cfg.tag}" if cfg.tag else f"timm:{cfg.architecture}"


def cached_weights(cfg: Any) -> Path | None:
    """The local copy of a pretrained config's weights: the Hugging Face hub cache, then the torch hub's."""
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache  # a dependency of timm

        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    if cfg.url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if local.is_file():
            return local
    return None


def weights_source(cfg: Any) -> str:
    """Where timm downloads a pretrained config's weights from (a URL)."""
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        return f"{constants.ENDPOINT}/{cfg.hf_hub_id.partition('@')[0]}"
    return str(cfg.url or "")


def reachable(url: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to ``url``'s host (or the HTTPS proxy's) opens within ``timeout`` seconds."""
    target = urllib.request.getproxies().get("https") or url
    parsed = urlparse(target if "://" in target else f"https://{target}")
    if not parsed.hostname:
        return False
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def create_pretrained(name: str, num_outputs: int = 1, image_size: int | None = None) -> nn.Module:
    """A timm model with its pretrained weights (head new), loaded by timm (``pretrained=True``).

    Raises:
        WeightsUnavailableError: timm publishes none for it, or they are not cached and cannot
            be downloaded (the message says where to put them).
    """
    cfg = pretrained_cfg(name)
    label = weights_label(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsUnavailableError(f"timm publishes no pretrained weights for {name}")
    local = cached_weights(cfg)
    source = weights_source(cfg)
    advice = (
        f"download them where a network is ({source}) and pass train.weights=<that file>, put them in the "
        f"Hugging Face or torch hub cache, or use weights=none to train from scratch"
    )
    if local is None and not reachable(source):
        raise WeightsUnavailableError(
            f"the {label} weights are not in the local caches and {urlparse(source).hostname} cannot be "
            f"reached: {advice}"
        )
    overlay = {"file": str(local)} if local is not None else None
    try:
        return create(name, num_outputs, image_size, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as e:  # download, hub and file errors of every kind
        raise WeightsUnavailableError(
            f"the {label} weights could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}): {advice}"
        ) from e


# --------------------------------------------------------------------------------------------
# Weights files
# --------------------------------------------------------------------------------------------

#: Keys under which checkpoints keep their weights, in the order timm prefers them.
STATE_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


def read_weights_file(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict in ``path`` and the architecture the file names (timm and package checkpoints
    record ``arch``), read weights-only: no code in the file runs.

    Raises:
        WeightsUnavailableError: missing or unreadable file, or no state dict in it.
    """
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu"), None
        # timm's training checkpoints hold their argparse Namespace of arguments beside the weights
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailableError(
            f"weights file {path} is not readable as weights ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    if not isinstance(raw, dict):
        raise WeightsUnavailableError(f"weights file {path} holds a {type(raw).__name__}, not a state dict")
    arch = raw.get("arch") if isinstance(raw.get("arch"), str) else None
    for key in STATE_KEYS:
        if isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    state = {k.removeprefix("module."): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsUnavailableError(f"weights file {path} holds no tensors")
    return state, arch


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """Qualified names of a timm model's classifier module(s) (``pretrained_cfg['classifier']``)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    get = getattr(model, "get_classifier", None)
    if not names and callable(get):
        head = get()
        names = tuple(n for n, m in model.named_modules() if m is head)
    return names


def load_weights_file(model: nn.Module, name: str, path: Path) -> None:
    """Load a weights file into timm model ``name``, its classifier skipped; every other tensor must fit.

    Raises:
        WeightsUnavailableError: the file is unreadable or holds another architecture's weights
            (the message names the file, what it is, and the first tensors that do not fit).
    """
    state, file_arch = read_weights_file(path)
    heads = classifier_names(model)

    def in_head(key: str) -> bool:
        return any(key == h or key.startswith(h + ".") for h in heads)

    state = {k: v for k, v in state.items() if not in_head(k)}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not in_head(k)]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        f"{k} {tuple(v.shape)} for {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or reshaped:
        other = file_arch is not None and file_arch.partition(".")[0] != name.partition(".")[0]
        what = f" (a checkpoint of {file_arch})" if other else ""
        faults = [
            f"{len(missing)} of the model's {len(own)} tensors missing from it (e.g. {', '.join(missing[:2])})"
            if missing
            else "",
            f"{len(unexpected)} of its tensors fitting nowhere (e.g. {', '.join(unexpected[:2])})"
            if unexpected
            else "",
            f"{len(reshaped)} of another shape (e.g. {'; '.join(reshaped[:2])})" if reshaped else "",
        ]
        raise WeightsUnavailableError(
            f"{path} does not hold {name} weights{what}: {', '.join(f for f in faults if f)}; "
            f"pass a state dict or timm checkpoint of {name}, or use weights=none"
        )
    model.load_state_dict(state, strict=False)  # only the classifier is left as initialised


# --------------------------------------------------------------------------------------------
# What a timm model expects
# --------------------------------------------------------------------------------------------


def input_config(name: str) -> dict[str, Any]:
    """What timm model ``name`` expects, from its ``pretrained_cfg``: normalisation mean and std,
    native input size and interpolation, with the timm version and pretrained tag (recorded in
    checkpoints). A model without a pretrained config gets timm's defaults (ImageNet statistics)."""
    timm = timm_module()
    cfg = pretrained_cfg(name)
    data = timm.data.resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else {})
    return {
        "library": "timm",
        "version": timm.__version__,
        "architecture": cfg.architecture if cfg is not None else name,
        "tag": cfg.tag if cfg is not None else None,
        "mean": [float(v) for v in data["mean"]],
        "std": [float(v) for v in data["std"]],
        "native_input_size": int(data["input_size"][-1]),
        "interpolation": data.get("interpolation"),
    }
