import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from test_predict import write_checkpoint
from torch import nn
from torchvision.models import resnet18

from deepfake.inference.gradcam import (
    MIN_MAP_SIDE,
    cam_from,
    candidate_layers,
    find_target_layer,
    grad_cam,
    gradcam_figure,
    overlay_heatmap,
    pick_layer,
)
from deepfake.inference.predict import PredictConfig, Predictor


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


class PooledBrightnessNet(nn.Module):
    """Local brightness through five blur-and-halve blocks (96 px -> 48, 24, 12, 6, 3): the evidence
    for 'fake' is where the image is bright, and every block keeps that where it was."""

    def __init__(self) -> None:
        super().__init__()

        def block() -> nn.Sequential:
            conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
            nn.init.constant_(conv.weight, 1 / 9)
            return nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(2))

        grey = nn.Conv2d(3, 1, 1, bias=False)
        nn.init.constant_(grey.weight, 1 / 3)
        self.features = nn.Sequential(nn.Sequential(grey, nn.ReLU()), *[block() for _ in range(5)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 1))
        with torch.no_grad():
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


def test_the_deepest_block_with_a_fine_enough_map_is_explained():
    assert [n for n, _ in candidate_layers(resnet18())][:3] == ["conv1", "layer1.0", "layer1.1"]
    assert pick_layer([(48, 48), (24, 24), (12, 12), (6, 6), (3, 3)]) == 3  # the 6x6 map, not the 3x3 one
    assert pick_layer([(4, 4), (2, 2), (1, 1)]) == 0  # none fine enough: the largest
    assert pick_layer([(7, 9), (7, 7)], min_side=7) == 1
    torch.manual_seed(0)
    net = resnet18(num_classes=1).eval()
    for size, layer, cells in ((96, "layer3.1", 6), (224, "layer4.1", 7), (64, "layer2.1", 8)):
        cam = grad_cam(net, torch.randn(1, 3, size, size), np.zeros((size, size, 3), np.uint8))
        assert (cam.layer, cam.map_size, cam.heatmap.shape) == (layer, (cells, cells), (size, size))
    assert MIN_MAP_SIDE == 6
    named = resnet18(num_classes=1).eval()
    named.gradcam_layer = "layer4"  # a model that names its block is explained there, however coarse
    cam = grad_cam(named, torch.randn(1, 3, 96, 96), np.zeros((96, 96, 3), np.uint8))
    assert cam.layer == "layer4" and cam.map_size == (3, 3)


def test_a_timm_model_is_explained_at_the_deepest_stage_of_its_feature_info_with_six_cells():
    from deepfake.models.architectures import build_model

    torch.manual_seed(0)
    model, _ = build_model("test_efficientnet", "none")
    model.eval()
    stages = [(d["module"], d["reduction"]) for d in model.feature_info]
    assert [n for n, _ in candidate_layers(model)] == [n for n, _ in stages]
    chosen = []
    for size in (96, 192):
        want = [n for n, r in stages if size // r >= MIN_MAP_SIDE][-1]  # not a hard-coded block
        cam = grad_cam(model, torch.randn(1, 3, size, size), np.zeros((size, size, 3), np.uint8))
        assert cam.layer == want and min(cam.map_size) >= MIN_MAP_SIDE and cam.heatmap.shape == (size, size)
        chosen.append(cam.layer)
    assert chosen == ["blocks.3", "blocks.4"]  # a larger input: a deeper stage keeps six cells
    vit, _ = build_model("test_vit", "none", image_size=48)
    with pytest.raises(ValueError, match=r"none of its 6 blocks output a \(B, C, H, W\) feature map"):
        grad_cam(vit.eval(), torch.randn(1, 3, 48, 48), np.zeros((48, 48, 3), np.uint8))


def test_map_at_input_size_peaks_on_the_planted_evidence():
    x = torch.zeros(1, 3, 96, 96)
    x[:, :, 12:28, 60:76] = 1.0  # the only evidence: a bright patch, top right
    cam = grad_cam(PooledBrightnessNet().eval(), x, np.zeros((96, 96, 3), np.uint8), target="fake")
    assert cam.layer == "features.4" and cam.map_size == (6, 6)  # 6x6 block chosen over the 3x3 one
    assert cam.heatmap.shape == (96, 96) and cam.heatmap.max() == pytest.approx(1.0)
    y, x_ = np.unravel_index(np.argmax(cam.heatmap), cam.heatmap.shape)
    assert 12 <= y < 28 and 60 <= x_ < 76
    assert cam.heatmap[12:28, 60:76].mean() > 0.6 and cam.heatmap[48:, :48].max() < 0.05
    rows = cam.heatmap[:, 68]  # upsampled smoothly: no step larger than a few percent between neighbours
    assert np.abs(np.diff(rows)).max() < 0.1


def test_gradcam_figure_has_a_colour_bar_from_no_evidence_to_most():
    x = torch.zeros(1, 3, 96, 96)
    x[:, :, 12:28, 60:76] = 1.0
    cam = grad_cam(PooledBrightnessNet().eval(), x, np.zeros((96, 96, 3), np.uint8))
    fig = gradcam_figure(cam, crop=np.zeros((96, 96, 3), np.uint8))
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(fig.axes) == 3 and len(bars) == 1
    assert bars[0].get_ylim() == (0.0, 1.0) and "evidence for FAKE" in bars[0].get_ylabel()
    assert [t.get_text() for t in bars[0].get_yticklabels()] == ["0 none", "0.5", "1 most"]
    canvas = FigureCanvasAgg(fig)  # the bar's colours, read off the rendered figure: red (most) on top, blue below
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[:, :, :3].astype(int)
    box = bars[0].get_window_extent()
    col = int((box.x0 + box.x1) / 2)
    top, bottom = pixels.shape[0] - int(box.y1) + 3, pixels.shape[0] - int(box.y0) - 3  # window y runs upwards
    r, _, b = pixels[top, col]
    assert r > 100 and r > b + 80
    r, _, b = pixels[bottom, col]
    assert b > 100 and b > r + 80
    assert "features.4 (6x6 map" in fig.axes[1].get_title()
    assert len(gradcam_figure(cam).axes) == 2  # the overlay alone, with its bar


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
