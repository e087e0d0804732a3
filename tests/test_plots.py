import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake import plots
from deepfake.metrics import pr_points, reliability_table, roc_points


def _preds(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    s = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, n), 0, 1)
    return pd.DataFrame(
        {
            "path": [f"{'fake' if t else 'real'}/{i:03d}.png" for i, t in enumerate(y)],
            "label": np.where(y, "fake", "real"),
            "target": y,
            "score": s,
            "predicted": np.where(s >= 0.5, "fake", "real"),
        }
    )


def _robustness():
    return pd.DataFrame(
        {
            "perturbation": ["clean", "jpeg_90", "jpeg_30", "blur_1", "resize_64"],
            "kind": ["none", "jpeg", "jpeg", "blur", "resize"],
            "level": [0, 90, 30, 1, 64],
            "roc_auc": [0.9, 0.88, 0.7, 0.8, np.nan],
            "error": ["", "", "", "", "RuntimeError: size"],
        }
    )


@pytest.fixture()
def image_root(tmp_path):
    for p in _preds()["path"]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), (200, 120, 90)).save(tmp_path / p)
    return tmp_path


def test_every_figure_renders_to_png(tmp_path, image_root):
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [0.7, 0.6, 0.5],
            "train_accuracy": [0.5, 0.6, 0.7],
            "train_auc": [0.5, 0.65, 0.8],
            "val_loss": [0.7, 0.65, 0.6],
            "val_accuracy": [0.5, 0.55, 0.6],
            "val_auc": [0.5, 0.6, 0.7],
            "lr": [1e-4] * 3,
            "seconds": [1.0] * 3,
        }
    )
    preds = _preds()
    y, s = preds["target"], preds["score"]
    figs = {
        "curves": plots.training_curves(history),
        "cm": plots.confusion(preds),
        "roc": plots.roc_curve(pd.DataFrame(roc_points(y, s)), preds, 0.5),
        "pr": plots.pr_curve(pd.DataFrame(pr_points(y, s)), preds, 0.5),
        "scores": plots.score_distributions(preds),
        "reliability": plots.reliability_diagram(
            {"uncalibrated": reliability_table(y, s**3), "calibrated": reliability_table(y, s)},
            {"uncalibrated": 0.2, "calibrated": 0.05},
        ),
        "robustness": plots.robustness_curves(_robustness()),
        "gallery": plots.mistakes_gallery(preds, image_root, k=3),
    }
    for name, fig in figs.items():
        path = plots.save(fig, tmp_path / f"{name}.png")
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 200


def test_confusion_shows_counts_and_normalised_shares():
    preds = _preds()
    fig = plots.confusion(preds)
    expected = pd.crosstab(preds["label"], preds["predicted"]).reindex(
        index=["real", "fake"], columns=["real", "fake"], fill_value=0
    )
    counts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert counts == sorted(str(v) for v in expected.to_numpy().ravel())
    shares = expected.to_numpy() / expected.to_numpy().sum(1, keepdims=True)
    assert sorted(t.get_text() for t in fig.axes[1].texts) == sorted(f"{v:.1%}" for v in shares.ravel())


def test_roc_title_has_the_auc_and_the_operating_point_is_marked():
    from sklearn.metrics import roc_auc_score

    preds = _preds()
    fig = plots.roc_curve(pd.DataFrame(roc_points(preds["target"], preds["score"])), preds, 0.5)
    assert f"{roc_auc_score(preds['target'], preds['score']):.3f}" in fig.axes[0].get_title()
    point = [ln for ln in fig.axes[0].lines if ln.get_marker() == "o"][0]
    y, pred = preds["target"].to_numpy(), preds["score"].to_numpy() >= 0.5
    assert point.get_xdata()[0] == pytest.approx(pred[y == 0].mean()) and point.get_ydata()[0] == pytest.approx(
        pred[y == 1].mean()
    )


def test_confident_mistakes_are_the_most_confident_ones():
    preds = _preds()
    fp, fn = plots.confident_mistakes(preds, k=2)
    all_fp = preds[(preds["target"] == 0) & (preds["score"] >= 0.5)]
    all_fn = preds[(preds["target"] == 1) & (preds["score"] < 0.5)]
    assert fp["score"].tolist() == sorted(all_fp["score"], reverse=True)[:2]
    assert fn["score"].tolist() == sorted(all_fn["score"])[:2]


def test_gallery_without_mistakes_still_renders(image_root):
    preds = _preds()
    preds["predicted"] = preds["label"]
    fig = plots.mistakes_gallery(preds, image_root, k=3)
    assert "0 FP, 0 FN" in fig._suptitle.get_text()
