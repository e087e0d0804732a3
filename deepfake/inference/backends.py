"""Model runtimes of the predictor: the eager model, TorchScript, or static int8 quantisation.

``build_runner`` returns a callable from a normalised ``(B, 3, H, W)`` batch to logits:
``eager`` (the exact model), ``jit`` (traced, frozen and optimised for inference: batch norm
folded into convolutions, oneDNN kernels) or ``int8`` (post-training static quantisation,
calibrated on images the caller gives). The last two run on a CPU only; their scores differ
from the exact model's by the amounts ``benchmarks/bench_inference.py`` measures.

Not every network compiles: TorchScript tracing or FX symbolic tracing (which int8 needs) can
fail on a model's Python control flow. ``make_runtime`` then falls back to the exact model and
records why (``Runtime.note``), so the predictor says what it actually runs.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

BACKENDS = ("eager", "jit", "int8")


class BackendUnavailableError(RuntimeError):
    """A backend cannot compile this model (the message names the model, the step and the error)."""


@dataclass(frozen=True)
class Runtime:
    """What scores batches: the callable, the backend it is, and why it is not the one asked for (if not)."""

    run: Callable[[torch.Tensor], torch.Tensor]
    backend: str
    asked: str
    note: str = ""


def make_runtime(
    model: nn.Module,
    backend: str,
    example: torch.Tensor,
    calibration_batches: Callable[[], Iterable[torch.Tensor]] | None = None,
    fallback: bool = True,
    max_change: float | None = None,
) -> Runtime:
    """``build_runner``, falling back to the exact model (with a warning and a recorded note) when
    ``backend`` cannot compile this model; ``fallback=False`` raises ``BackendUnavailableError`` instead.

    ``max_change``: the int8 runtime is also refused (the same way) when it moves the probability
    (the sigmoid of the logit) of any calibration image by more than this against the exact model:
    int8 suits some networks and not others (EfficientNet-B0's probabilities moved by up to 0.44 on
    the default test set, ResNet18's by 0.04; BENCHMARKS.md)."""
    try:
        runner = build_runner(model, backend, example, calibration_batches)
        if backend == "int8" and max_change is not None and calibration_batches is not None:
            change, count = largest_change(model, runner, calibration_batches())
            if change > max_change:
                raise BackendUnavailableError(
                    f"int8 moves the probability of the {count} calibration images by up to {change:.3f} against "
                    f"the exact model, more than the {max_change:g} allowed (int8_max_change)"
                )
        return Runtime(runner, backend, backend)
    except BackendUnavailableError as e:
        if not fallback:
            raise
        note = f"backend {backend} is unavailable for this model, running the exact (eager) model: {e}"
        log.warning(note)
        return Runtime(model, "eager", backend, note)


def largest_change(
    model: nn.Module, runner: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor]
) -> tuple[float, int]:
    """The largest change of a probability (sigmoid of the one logit) from ``model`` to ``runner``
    over ``batches``, and how many images were compared."""
    change, count = 0.0, 0
    with torch.inference_mode():
        for x in batches:
            exact = torch.sigmoid(model(x).float().reshape(-1))
            fast = torch.sigmoid(runner(x).float().reshape(-1))
            change = max(change, float((exact - fast).abs().max()))
            count += len(exact)
    return change, count


def _failure(what: str, model: nn.Module, e: Exception) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"{what} failed on {type(model).__name__} ({type(e).__name__}: {str(e).strip().splitlines()[0][:300]})"
    )


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
    """Traced, frozen and inference-optimised copy of ``model`` (batch norm folded, oneDNN).

    Raises:
        BackendUnavailableError: tracing failed on the model.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is in maintenance mode; tracing still works
        with torch.inference_mode(False), torch.no_grad():
            try:
                traced = torch.jit.trace(model.eval(), example, check_trace=False)
                return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            except Exception as e:  # tracer errors come as RuntimeError, TypeError, AttributeError...
                raise _failure("TorchScript tracing", model, e) from e


def quantize_int8(model: nn.Module, example: torch.Tensor, batches: Iterable[torch.Tensor]) -> torch.jit.ScriptModule:
    """Static post-training int8 quantisation (FX graph mode, x86 backend), calibrated on ``batches``.

    Convolutions run in int8 with per-channel weights; linear layers (the head) stay float.

    Raises:
        BackendUnavailableError: FX symbolic tracing, preparation or conversion failed on the model
            (data-dependent Python control flow, modules FX cannot trace).
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
            try:
                prepared = prepare_fx(copy.deepcopy(model).cpu().eval(), mapping, (example,))
            except Exception as e:
                raise _failure("int8 static quantisation (FX symbolic tracing)", model, e) from e
            for x in batches:  # the caller's errors (no calibration image) are not the backend's
                prepared(x)
            try:
                quantized = convert_fx(prepared)
                return torch.jit.freeze(torch.jit.trace(quantized, example, check_trace=False))
            except Exception as e:
                raise _failure("int8 static quantisation (conversion)", model, e) from e
