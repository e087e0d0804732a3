"""The predictor's runtimes: a network that TorchScript or FX cannot trace falls back to the exact
model, saying why; a timm model runs on every backend."""

import pytest
import torch
from torch import nn

from deepfake.inference.backends import BackendUnavailableError, make_runtime
from deepfake.models.architectures import build_model


class Branchy(nn.Module):
    """Python control flow on a tensor's value: FX symbolic tracing (int8) cannot follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        h = self.conv(x)
        if h.mean() > 0:
            h = h * 2
        return self.fc(h.mean(dim=(2, 3)))


class DictOut(nn.Module):
    """Returns a dict: the TorchScript tracer refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        return {"logit": self.fc(x.mean(dim=(2, 3)))}


def test_a_backend_that_cannot_compile_the_model_falls_back_to_eager_saying_why():
    x = torch.randn(2, 3, 16, 16)
    model = Branchy().eval()
    rt = make_runtime(model, "int8", x[:1], lambda: [x])
    assert (rt.backend, rt.asked, rt.run) == ("eager", "int8", model)
    assert "int8 static quantisation (FX symbolic tracing) failed on Branchy" in rt.note
    with pytest.raises(BackendUnavailableError, match="FX symbolic tracing"):
        make_runtime(model, "int8", x[:1], lambda: [x], fallback=False)
    rt = make_runtime(DictOut().eval(), "jit", x[:1])
    assert rt.backend == "eager" and "TorchScript tracing failed on DictOut" in rt.note
    with pytest.raises(ValueError, match="needs calibration images"):  # the caller's error is not a fallback
        make_runtime(model, "int8", x[:1])


def test_a_timm_model_runs_on_every_backend():
    torch.manual_seed(0)
    model, _ = build_model("test_resnet", "none")
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
        for backend, tol in (("eager", 0), ("jit", 1e-4), ("int8", 0.5)):
            rt = make_runtime(model, backend, x[:1], lambda: [x])
            assert rt.backend == backend and rt.note == ""
            assert (rt.run(x) - want).abs().max() <= tol * max(1.0, float(want.abs().max())), backend


def test_int8_that_moves_probabilities_too_far_falls_back_to_the_exact_model():
    """``max_change``: int8 is kept only while no calibration image's probability moves by more; the
    measured change is the real one (between the two bounds it is refused above and kept below)."""
    torch.manual_seed(0)
    model, _ = build_model("test_resnet", "none")
    model.eval()
    x = torch.randn(6, 3, 32, 32)
    kept = make_runtime(model, "int8", x[:1], lambda: [x[:3], x[3:]], max_change=1.0)
    assert kept.backend == "int8" and kept.note == ""
    with torch.no_grad():
        change = float((torch.sigmoid(model(x)) - torch.sigmoid(kept.run(x))).abs().max())
    assert 0 < change < 1
    refused = make_runtime(model, "int8", x[:1], lambda: [x[:3], x[3:]], max_change=change / 2)
    assert (refused.backend, refused.asked, refused.run) == ("eager", "int8", model)
    assert "int8 moves the probability of the 6 calibration images by up to" in refused.note
    assert f"more than the {change / 2:g} allowed (int8_max_change)" in refused.note
    assert make_runtime(model, "int8", x[:1], lambda: [x], max_change=change * 2).backend == "int8"
    with pytest.raises(BackendUnavailableError, match="int8_max_change"):
        make_runtime(model, "int8", x[:1], lambda: [x], max_change=change / 2, fallback=False)
    # the check is int8's: the exact and TorchScript runtimes are not measured against it
    assert make_runtime(model, "jit", x[:1], max_change=1e-9).backend == "jit"
