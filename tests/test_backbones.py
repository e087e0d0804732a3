"""timm backbones by name: one logit, names checked with the closest ones offered, pretrained weights
from the hub caches or a clear offline fallback, weights files checked against the architecture.

Tiny timm models keep it fast: ``test_resnet`` (373k parameters, inputs normalised to [-1, 1]),
``test_efficientnet`` (99k, ImageNet statistics), ``test_convnext`` and ``test_vit``.
"""

import argparse
import time
import warnings

import pytest
import timm
import torch
from safetensors.torch import save_file

from deepfake.models import backbones
from deepfake.models.architectures import (
    UnknownArchError,
    WeightsUnavailableError,
    build_model,
    check_arch,
    convert_sync_batchnorm,
    count_parameters,
    input_config,
)


@pytest.fixture()
def no_network(monkeypatch, tmp_path, offline_hub):
    """Empty hub caches and an unreachable hub: pretrained weights are only what a test writes."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(backbones, "reachable", lambda url, timeout=0: False)
    return tmp_path / "hf"


def _hub_cache(cache, repo: str, state: dict) -> None:
    """``state`` where the Hugging Face hub client keeps ``repo``'s ``model.safetensors``."""
    commit = "0" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "snapshots" / commit / "model.safetensors"))


@pytest.mark.parametrize("arch", ["test_resnet", "test_efficientnet", "test_convnext"])
def test_a_timm_model_has_one_logit_no_nan_and_every_parameter_gets_a_gradient(arch):
    torch.manual_seed(0)
    model, used = build_model(arch, "none")
    assert used == "none" and count_parameters(model) < 500_000
    out = model(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 1) and torch.isfinite(out).all()
    out.sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()] == []


def test_a_model_of_fixed_input_size_is_built_for_the_training_size():
    model, _ = build_model("test_vit", "none", image_size=48)
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 1)


def test_unknown_names_fail_in_seconds_with_the_closest_names():
    t0 = time.perf_counter()
    with pytest.raises(UnknownArchError, match=r"'efficentnet_b4' is neither resnet18 \| dilated_cnn nor") as e:
        check_arch("efficentnet_b4")
    assert "did you mean efficientnet_b4" in str(e.value) and f"timm {timm.__version__}" in str(e.value)
    with pytest.raises(UnknownArchError, match="did you mean resnet18"):
        check_arch("resnet-18")
    with pytest.raises(UnknownArchError, match="no pretrained tag 'bogus' for resnet18 .*a1_in1k"):
        check_arch("resnet18.bogus")
    with pytest.raises(ValueError, match="unknown arch 'vgg' .*did you mean vgg11"):
        build_model("vgg", "none")
    assert time.perf_counter() - t0 < 10
    check_arch("efficientnet_b4.ra2_in1k")  # a name with its pretrained tag
    check_arch("legacy_xception")


def test_input_config_is_timm_pretrained_cfg():
    xc = input_config("legacy_xception")
    assert xc["mean"] == [0.5, 0.5, 0.5] and xc["std"] == [0.5, 0.5, 0.5]
    assert xc["native_input_size"] == 299 and xc["library"] == "timm" and xc["version"] == timm.__version__
    assert input_config("efficientnet_b4")["native_input_size"] == 320
    assert input_config("resnet18")["mean"] == [0.485, 0.456, 0.406]  # torchvision's, as before
    assert input_config("resnet18")["native_input_size"] == 224
    assert input_config("dilated_cnn")["native_input_size"] is None  # never pretrained


def test_pretrained_weights_load_through_timm_from_the_hub_cache(no_network):
    torch.manual_seed(1)
    reference = timm.create_model("test_resnet")  # 1000 classes, as published
    _hub_cache(no_network, "timm/test_resnet.r160_in1k", reference.state_dict())
    for weights in ("auto", "imagenet"):
        model, used = build_model("test_resnet", weights)
        assert used == "timm:test_resnet.r160_in1k"
        assert torch.equal(model.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)
        assert model.get_classifier().out_features == 1  # the head is new


def test_offline_auto_falls_back_recorded_and_imagenet_fails_clearly(no_network):
    t0 = time.perf_counter()
    with pytest.warns(UserWarning, match="weights=auto: falling back to random initialisation"):
        _, used = build_model("test_resnet", "auto")
    assert used == "none (timm:test_resnet.r160_in1k unavailable)"
    with pytest.raises(WeightsUnavailableError, match="not in the local caches and huggingface.co cannot be reached"):
        build_model("test_resnet", "imagenet")
    assert time.perf_counter() - t0 < 10
    with pytest.raises(WeightsUnavailableError, match="timm publishes no pretrained weights for test_mambaout"):
        build_model("test_mambaout", "imagenet")


def test_a_failed_download_is_a_clear_error(no_network, monkeypatch):
    def refuse(*a, **k):
        raise OSError("connection reset")

    monkeypatch.setattr(backbones, "reachable", lambda url, timeout=0: True)
    monkeypatch.setattr("timm.models._builder.load_state_dict_from_hf", refuse)
    with pytest.raises(WeightsUnavailableError, match=r"could not be loaded \(OSError: connection reset\)"):
        build_model("test_resnet", "imagenet")


def test_the_torch_hub_copy_of_a_url_is_found(offline_hub):
    cfg = backbones.pretrained_cfg("legacy_xception")  # published by URL only
    assert cfg.hf_hub_id is None and backbones.cached_weights(cfg) is None
    local = offline_hub / "hub" / "checkpoints" / "xception-43020ad28.pth"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"weights")
    assert backbones.cached_weights(cfg) == local


def test_weights_files_state_dicts_and_checkpoints(tmp_path):
    torch.manual_seed(2)
    reference = timm.create_model("test_resnet", num_classes=7)
    sd = reference.state_dict()
    files = {
        "plain.pth": sd,
        "timm.pth.tar": {"epoch": 3, "arch": "test_resnet", "state_dict": sd, "args": argparse.Namespace(lr=0.1)},
        "ours.pt": {"model": sd, "arch": "test_resnet", "image_size": 64},
    }
    for name, payload in files.items():
        torch.save(payload, tmp_path / name)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for name in [*files, "w.safetensors"]:
        model, used = build_model("test_resnet", str(tmp_path / name))
        assert used == str(tmp_path / name)
        assert torch.equal(model.conv1[0].weight, reference.conv1[0].weight), name
        assert model.get_classifier().out_features == 1


def test_a_weights_file_of_another_architecture_names_the_file_and_the_mismatch(tmp_path):
    other = timm.create_model("test_efficientnet")
    torch.save({"arch": "test_efficientnet", "state_dict": other.state_dict()}, tmp_path / "effnet.pth.tar")
    with pytest.raises(WeightsUnavailableError) as e:
        build_model("test_resnet", str(tmp_path / "effnet.pth.tar"))
    msg = str(e.value)
    assert str(tmp_path / "effnet.pth.tar") in msg and "does not hold test_resnet weights" in msg
    assert "a checkpoint of test_efficientnet" in msg and "missing" in msg
    wide = timm.create_model("test_convnext2")
    torch.save(wide.state_dict(), tmp_path / "wide.pt")  # the same names, other shapes or more blocks
    with pytest.raises(WeightsUnavailableError, match="wide.pt does not hold test_convnext weights"):
        build_model("test_convnext", str(tmp_path / "wide.pt"))
    with pytest.raises(WeightsUnavailableError, match="missing.pt does not exist"):
        build_model("test_resnet", str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="junk.pt is not readable as weights"):
        build_model("test_resnet", str(tmp_path / "junk.pt"))


def test_sync_batchnorm_keeps_timm_activations():
    torch.manual_seed(3)
    model, _ = build_model("test_efficientnet", "none")
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = model(x)
        synced = convert_sync_batchnorm(model, "test_efficientnet").eval()
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
        assert torch.allclose(synced(x), want, atol=1e-6)
