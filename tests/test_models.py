import pytest
import torch
from torchvision.models import resnet18

from deepfake.models import WeightsUnavailableError, build_model, count_parameters, imagenet_cache_file


def test_output_shape_no_nan_and_every_parameter_gets_a_gradient(offline_hub):
    model, used = build_model("resnet18", "none")
    assert used == "none"
    x = torch.randn(3, 3, 64, 64)
    out = model(x)
    assert out.shape == (3, 1) and torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert count_parameters(model) == 11177025


def test_auto_falls_back_with_a_warning_when_offline(offline_hub, monkeypatch):
    def no_network(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr("torch.hub.download_url_to_file", no_network)
    with pytest.warns(UserWarning, match="random initialisation"):
        _, used = build_model("resnet18", "auto")
    assert used == "none (imagenet unavailable)"
    with pytest.raises(WeightsUnavailableError, match="resnet18-f37072fd.pth"):
        build_model("resnet18", "imagenet")


def test_imagenet_weights_load_from_the_hub_cache(offline_hub):
    torch.manual_seed(0)
    reference = resnet18(weights=None)
    path = imagenet_cache_file()
    assert str(path).startswith(str(offline_hub))
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    for weights in ("auto", "imagenet"):
        model, used = build_model("resnet18", weights)
        assert used == "imagenet"
        assert torch.equal(model.conv1.weight, reference.conv1.weight)
        assert model.fc.out_features == 1


def test_weights_from_a_path_skip_the_old_head(tmp_path):
    reference = resnet18(weights=None, num_classes=7)
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    model, used = build_model("resnet18", str(tmp_path / "w.pt"))
    assert used == str(tmp_path / "w.pt")
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_model("resnet18", str(tmp_path / "missing.pt"))
    torch.save({"something": torch.zeros(1)}, tmp_path / "junk.pt")
    with pytest.raises(WeightsUnavailableError, match="does not hold ResNet18"):
        build_model("resnet18", str(tmp_path / "junk.pt"))


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg", "none")
