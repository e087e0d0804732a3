import pytest
import torch
from torchvision.models import resnet18

from deepfake.models.architectures import WeightsUnavailableError, build_model, count_parameters, imagenet_cache_file


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


# ---------------------------------------------------------------- dilated_cnn


def test_dilated_cnn_parameter_count_and_layout():
    from torch import nn

    model, used = build_model("dilated_cnn", "none")
    assert used == "none"
    assert count_parameters(model) == 652_773  # "about 653k parameters"
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 10
    assert [(c.kernel_size, c.out_channels) for c in convs[:2]] == [((5, 5), 64), ((5, 5), 64)]
    assert all(c.out_channels < 64 for c in convs[2:])
    assert [c.dilation for c in convs] == [(1, 1)] * 5 + [(2, 2)] * 3
    layers = list(model.features)
    for c in convs[:2]:  # each wide 5x5 convolution is followed (after BN, ReLU) by max-pooling
        assert isinstance(layers[layers.index(c) + 3], nn.MaxPool2d)
    assert [d.p for d in model.modules() if isinstance(d, nn.Dropout)] == [0.5, 0.5]
    assert linears[-1].out_features == 1


@pytest.mark.parametrize("side", [224, 64])
def test_dilated_cnn_output_shape_no_nan_and_every_parameter_gets_a_gradient(side):
    torch.manual_seed(0)
    model, _ = build_model("dilated_cnn", "none")
    out = model(torch.randn(2, 3, side, side))
    assert out.shape == (2, 1) and torch.isfinite(out).all()
    out.sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()] == []


def test_dilated_cnn_weights(tmp_path):
    _, used = build_model("dilated_cnn", "auto")  # nothing pretrained exists: auto is random init, no warning
    assert used == "none"
    with pytest.raises(WeightsUnavailableError, match="no ImageNet weights for arch=dilated_cnn"):
        build_model("dilated_cnn", "imagenet")
    torch.manual_seed(1)
    reference, _ = build_model("dilated_cnn", "none")
    torch.save({"model": reference.state_dict(), "arch": "dilated_cnn"}, tmp_path / "ckpt.pt")  # one of our checkpoints
    model, used = build_model("dilated_cnn", str(tmp_path / "ckpt.pt"))
    assert used == str(tmp_path / "ckpt.pt")
    assert torch.equal(model.classifier[2].weight, reference.classifier[2].weight)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "resnet.pt")
    with pytest.raises(WeightsUnavailableError, match="does not hold dilated_cnn weights"):
        build_model("dilated_cnn", str(tmp_path / "resnet.pt"))


# ---------------------------------------------------------------- freezing


@pytest.mark.parametrize(
    "arch, head", [("resnet18", "fc"), ("dilated_cnn", "classifier"), ("test_efficientnet", "classifier")]
)
def test_frozen_backbone_trains_only_the_head_and_keeps_bn_statistics(arch, head):
    from torch import nn

    from deepfake.models.architectures import apply_train_mode, set_backbone_frozen

    model, _ = build_model(arch, "none")
    set_backbone_frozen(model, arch, True)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {head}
    apply_train_mode(model, arch, frozen=True)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and getattr(model, head).training
    before = bns[0].running_mean.clone()
    model(torch.randn(4, 3, 64, 64)).sum().backward()
    assert torch.equal(bns[0].running_mean, before)
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith(head))
    set_backbone_frozen(model, arch, False)
    apply_train_mode(model, arch, frozen=False)
    assert all(p.requires_grad for p in model.parameters()) and all(m.training for m in bns)
