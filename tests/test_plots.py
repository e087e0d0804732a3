import numpy as np
import pandas as pd
from PIL import Image

from deepfake import plots
from deepfake.metrics import roc_points


def _preds(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    s = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, n), 0, 1)
    return pd.DataFrame({"label": np.where(y, "fake", "real"), "target": y, "score": s,
                         "predicted": np.where(s >= 0.5, "fake", "real")})


def test_every_figure_renders_to_png(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.6, 0.5], "train_accuracy": [0.5, 0.6, 0.7],
                            "train_auc": [0.5, 0.65, 0.8], "val_loss": [0.7, 0.65, 0.6], "val_accuracy": [0.5, 0.55, 0.6],
                            "val_auc": [0.5, 0.6, 0.7], "lr": [1e-4] * 3, "seconds": [1.0] * 3})
    preds = _preds()
    figs = {
        "curves": plots.training_curves(history),
        "cm": plots.confusion(preds),
        "roc": plots.roc_curve(pd.DataFrame(roc_points(preds["target"], preds["score"])), preds),
        "scores": plots.score_distributions(preds),
    }
    for name, fig in figs.items():
        path = plots.save(fig, tmp_path / f"{name}.png")
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 200


def test_confusion_annotations_count_the_predictions():
    preds = _preds()
    fig = plots.confusion(preds)
    texts = sorted(t.get_text().split("\n")[0] for t in fig.axes[0].texts)
    expected = pd.crosstab(preds["label"], preds["predicted"]).reindex(index=["real", "fake"], columns=["real", "fake"], fill_value=0)
    assert texts == sorted(str(v) for v in expected.to_numpy().ravel())


def test_roc_title_has_the_auc():
    preds = _preds()
    fig = plots.roc_curve(pd.DataFrame(roc_points(preds["target"], preds["score"])), preds)
    from sklearn.metrics import roc_auc_score

    assert f"{roc_auc_score(preds['target'], preds['score']):.3f}" in fig.axes[0].get_title()
