import numpy as np
import pytest
import torch
from test_predict import write_checkpoint
from torch import nn
from torchvision.models import resnet18

from deepfake.gradcam import cam_from, find_target_layer, grad_cam, overlay_heatmap
from deepfake.predict import PredictConfig, Predictor


class BrightnessNet(nn.Module):
    """logit = mean over pixels of ReLU(sum of channels): evidence for 'fake' is where the image is bright."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 1))
        with torch.no_grad():
            self.features[0].weight.fill_(1.0)
            self.head[2].weight.fill_(1.0)
            self.head[2].bias.zero_()

    def forward(self, x):
        return self.head(self.features(x))


class DilatedNet(nn.Module):
    """Shaped like a compact dilated detector: conv blocks in a Sequential, then a head."""

    def __init__(self) -> None:
        super().__init__()

        def block(i: int, o: int, d: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=d, dilation=d), nn.BatchNorm2d(o), nn.ReLU())

        self.features = nn.Sequential(block(3, 8, 1), nn.MaxPool2d(2), block(8, 8, 2), block(8, 4, 2), nn.Dropout(0.5))
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))

    def forward(self, x):
        return self.classifier(self.features(x))


def test_target_layer_is_the_last_convolutional_block():
    assert find_target_layer(resnet18())[0] == "layer4.1"
    name, module = find_target_layer(DilatedNet())
    assert name == "features.3" and isinstance(module[0], nn.Conv2d) and module[0].dilation == (2, 2)
    named = DilatedNet()
    named.gradcam_layer = "features.2"  # a model may name its block...
    assert find_target_layer(named)[0] == "features.2"
    held = DilatedNet()
    held.gradcam_layer = held.features[0]  # ...or hold it
    assert find_target_layer(held)[0] == "features.0"
    with pytest.raises(ValueError, match="no Conv2d"):
        find_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 1)))
    named.gradcam_layer = "features.9"
    with pytest.raises(ValueError, match="features.9"):
        find_target_layer(named)


def test_cam_weights_channels_by_their_mean_gradient():
    act = torch.zeros(1, 2, 2, 2)
    act[0, 0, 0, 0], act[0, 1, 1, 1] = 4.0, 3.0
    grad = torch.stack([torch.full((2, 2), 0.5), torch.full((2, 2), -1.0)])[None]  # (1, 2, 2, 2)
    cam = cam_from(act, grad)
    assert torch.equal(cam, torch.tensor([[2.0, 0.0], [0.0, 0.0]]))  # channel 1 counts against: ReLU removes it


def test_heatmap_points_at_the_evidence():
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, 2:10, 20:30] = 1.0  # the only bright patch: top right
    rgb = np.zeros((32, 32, 3), np.uint8)
    net = BrightnessNet().eval()
    cam = grad_cam(net, x, rgb, target="fake")
    assert cam.layer == "features.0" and cam.heatmap.shape == (32, 32)
    assert cam.heatmap[2:10, 20:30].mean() > 0.9 and cam.heatmap[16:, :16].max() < 0.05
    assert cam.logit == pytest.approx(80 * 3 / 1024)
    real = grad_cam(net, x, rgb, target="real")  # nothing argues for 'real' here
    assert real.heatmap.max() == 0.0
    with pytest.raises(ValueError, match="one image"):
        grad_cam(net, torch.zeros(2, 3, 32, 32), rgb)


def test_grad_cam_on_resnet18_and_dilated_net_leaves_parameters_untouched():
    torch.manual_seed(0)
    for net, size in ((resnet18(num_classes=1).eval(), 64), (DilatedNet().eval(), 48)):
        x = torch.randn(1, 3, size, size)
        rgb = np.full((size, size, 3), 128, np.uint8)
        cams = [grad_cam(net, x, rgb, target=t) for t in ("fake", "real")]
        for cam in cams:
            assert cam.heatmap.shape == (size, size) and cam.heatmap.dtype == np.float32
            assert 0.0 <= cam.heatmap.min() and cam.heatmap.max() <= 1.0
        cam = max(cams, key=lambda c: c.heatmap.max())  # a random net argues for one side only
        assert cam.heatmap.max() == pytest.approx(1.0)
        assert cam.overlay.shape == (size, size, 3) and cam.overlay.dtype == np.uint8
        assert not np.array_equal(cam.overlay, rgb)  # the colour map is blended in
        assert all(p.grad is None for p in net.parameters())
        with torch.no_grad():
            assert cam.logit == pytest.approx(float(net(x)), abs=1e-5)


def test_overlay_blends_red_where_the_heatmap_is_high():
    rgb = np.full((20, 20, 3), 100, np.uint8)
    hm = np.zeros((5, 5), np.float32)
    hm[0, 0] = 1.0
    out = overlay_heatmap(rgb, hm, alpha=0.5)
    assert out.shape == (20, 20, 3)
    assert out[0, 0, 0] > out[0, 0, 2] and out[19, 19, 2] > out[19, 19, 0]  # JET: red high, blue low


def test_predictor_explain_matches_its_prediction(tiny_dataset, tmp_path):
    files = sorted(tiny_dataset.rglob("*.jpg"))
    ckpt = write_checkpoint(tmp_path / "best.pt", files)
    p = Predictor(ckpt, "cpu", PredictConfig(calibration_file=""))
    pred, cam, prep = p.explain(files[0])
    assert pred.probability == pytest.approx(p.predict(files[0]).probability, abs=1e-5)
    assert cam.target == pred.label and cam.logit == pytest.approx(pred.logit, abs=1e-4)
    assert cam.overlay.shape == prep.crop.shape == (64, 64, 3) and prep.rgb.shape == (48, 48, 3)
    other = "real" if pred.label == "fake" else "fake"
    assert p.explain(files[0], target=other)[1].target == other
