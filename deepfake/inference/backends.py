"""Model runtimes of the predictor: the eager model, TorchScript, or static int8 quantisation.

``build_runner`` returns a callable from a normalised ``(B, 3, H, W)`` batch to logits:
``eager`` (the exact model), ``jit`` (traced, frozen and optimised for inference: batch norm
folded into convolutions, oneDNN kernels) or ``int8`` (post-training static quantisation,
calibrated on images the caller gives). The last two run on a CPU only; their scores differ
from the exact model's by the amounts ``benchmarks/bench_inference.py`` measures.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

BACKENDS = ("eager", "jit", "int8")


def build_runner(
    model: nn.Module,
    backend: str,
    example: torch.Tensor,
    calibration_batches: Callable[[], Iterable[torch.Tensor]] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable that scores batches with ``backend`` (``BACKENDS``)."""
    if backend == "eager":
        return model
    if backend == "jit":
        return torchscript(model, example)
    if backend == "int8":
        if calibration_batches is None:
            raise ValueError("backend='int8' needs calibration images")
        return quantize_int8(model, example, calibration_batches())
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Traced, frozen and inference-optimised copy of ``model`` (batch norm folded, oneDNN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is in maintenance mode; tracing still works
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(model.eval(), example, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def quantize_int8(model: nn.Module, example: torch.Tensor, batches: Iterable[torch.Tensor]) -> torch.jit.ScriptModule:
    """Static post-training int8 quantisation (FX graph mode, x86 backend), calibrated on ``batches``.

    Convolutions run in int8 with per-channel weights; linear layers (the head) stay float.
    """
    with warnings.catch_warnings():
        # torch.ao.quantization warns that it will move to torchao; its FX path still works
        warnings.simplefilter("ignore")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        mapping = get_default_qconfig_mapping("x86")
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                # the classifier head stays float: almost free, and it is where int8 rounding hurt
                # most (ResNet18 fc: logit error 0.6 -> 0.05 on the benchmark photos)
                mapping.set_module_name(name, None)
        with torch.inference_mode(False), torch.no_grad():
            prepared = prepare_fx(copy.deepcopy(model).cpu().eval(), mapping, (example,))
            for x in batches:
                prepared(x)
            quantized = convert_fx(prepared)
            return torch.jit.freeze(torch.jit.trace(quantized, example, check_trace=False))
