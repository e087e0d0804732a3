import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake.evaluation import plots
from deepfake.metrics.classification import pr_points, reliability_table, roc_points


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


def _history(val_auc=(0.5, 0.8, 0.7, 0.8)):
    n = len(val_auc)
    return pd.DataFrame(
        {
            "epoch": np.arange(1, n + 1),
            "train_loss": np.linspace(0.7, 0.3, n),
            "train_accuracy": np.linspace(0.5, 0.9, n),
            "train_auc": np.linspace(0.5, 0.95, n),
            "val_loss": [0.7, 0.5, 0.6, 0.55][:n],
            "val_accuracy": np.linspace(0.5, 0.7, n),
            "val_auc": list(val_auc),
            "lr": [1e-4] * n,
        }
    )


#: An evaluation's metrics dictionary as ``reports/eval/details.json`` holds it (the keys the titles read).
METRICS = {
    "split": "test",
    "n": 40,
    "accuracy": 0.725,
    "roc_auc": 0.8123,
    "ci": {
        "roc_auc_low": 0.7012,
        "roc_auc_high": 0.9034,
        "accuracy_low": 0.6,
        "accuracy_high": 0.85,
        "level": 0.95,
        "n_groups": 7,
        "unit": "group",
    },
}


def _figure():
    fig, ax = plt.subplots(layout="constrained")
    ax.plot([0, 1, 2], [0, 1, 4], label="a line")
    ax.imshow(np.arange(16).reshape(4, 4), extent=(0, 1, 0, 1))
    ax.legend()
    ax.set_title("a figure")
    return fig


@pytest.mark.parametrize("vector", ["svg", "pdf"])
def test_save_writes_a_png_at_print_resolution_and_a_reproducible_vector_copy(tmp_path, vector):
    figs = [_figure(), _figure()]
    first = plots.save(figs[0], tmp_path / "a" / "fig.png", vector=vector)
    second = plots.save(figs[1], tmp_path / "b" / "fig.png", vector=vector)
    assert first == tmp_path / "a" / "fig.png"
    with Image.open(first) as im:
        assert im.format == "PNG" and min(im.info["dpi"]) >= 199.5
    assert first.with_suffix(f".{vector}").read_bytes() == second.with_suffix(f".{vector}").read_bytes()
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(["fig.png", f"fig.{vector}"])  # no temp files
    assert not set(plt.get_fignums()) & {f.number for f in figs}  # both figures closed


def test_save_refuses_an_unknown_vector_format(tmp_path):
    fig = _figure()
    with pytest.raises(ValueError, match="vector must be one of"):
        plots.save(fig, tmp_path / "fig.png", vector="eps")
    assert not (tmp_path / "fig.png").exists()


def test_the_chosen_epoch_is_the_first_best_validation_auc_or_the_lowest_loss():
    assert plots.chosen_epoch(_history((0.5, 0.8, 0.7, 0.8))) == 2  # ties keep the first, as training does
    assert plots.chosen_epoch(_history((np.nan,) * 4)) == 2  # no AUC (one class): the lowest loss (0.5)


@pytest.mark.parametrize(("best_epoch", "marked"), [(None, 2), (4, 4)])
def test_training_curves_mark_the_chosen_epoch(best_epoch, marked):
    history = _history()
    fig = plots.training_curves(history, best_epoch)
    for ax, metric in zip(fig.axes, ("loss", "accuracy", "auc")):
        vlines = [ln for ln in ax.lines if len(set(ln.get_xdata())) == 1 and ln.get_linestyle() == "--"]
        assert [float(ln.get_xdata()[0]) for ln in vlines] == [marked]
        value = history.loc[history["epoch"] == marked, f"val_{metric}"].iloc[0]
        assert f"chosen epoch {marked} (val {value:.3f})" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)


def test_evaluation_titles_give_the_split_n_groups_and_interval(tmp_path, image_root):
    preds = _preds()
    y, s = preds["target"], preds["score"]
    roc = plots.roc_curve(pd.DataFrame(roc_points(y, s)), preds, 0.5, METRICS)
    title = roc.axes[0].get_title()
    assert title == "Test split: ROC-AUC 0.812 (95% CI 0.701–0.903)\nn = 40 images, 7 groups"
    cm = plots.confusion(preds, METRICS)
    assert cm._suptitle.get_text() == "Test split: accuracy 0.725 (95% CI 0.600–0.850)\nn = 40 images, 7 groups"
    others = {
        "pr": plots.pr_curve(pd.DataFrame(pr_points(y, s)), preds, 0.5, METRICS).axes[0].get_title(),
        "scores": plots.score_distributions(preds, 0.5, METRICS).axes[0].get_title(),
        "robustness": plots.robustness_curves(_robustness(), METRICS)._suptitle.get_text(),
        "gallery": plots.mistakes_gallery(preds, image_root, 2, METRICS)._suptitle.get_text(),
        "reliability": plots.reliability_diagram({"calibrated": reliability_table(y, s)}, metrics=METRICS)
        .axes[0]
        .get_title(),
    }
    for name, text in others.items():
        assert text.startswith("Test split: ") and "n = 40 images, 7 groups" in text, name
    plt.close("all")


def test_titles_without_an_interval_or_groups_say_what_is_known():
    metrics = {"split": "all images (cross-dataset, nothing fitted on it)", "n": 12, "roc_auc": 0.61}
    assert plots.with_interval(metrics, "roc_auc", "ROC-AUC") == "ROC-AUC 0.610"
    assert plots.eval_title(metrics, "x") == "All images (cross-dataset, nothing fitted on it): x\nn = 12 images"
    assert plots.eval_title(None, "x") == "x"


def test_reliability_markers_grow_and_darken_with_the_bin_count():
    table = pd.DataFrame(
        {
            "bin": [1, 2, 3],
            "bin_lower": [0.0, 1 / 3, 2 / 3],
            "bin_upper": [1 / 3, 2 / 3, 1.0],
            "count": [100, 2, 40],
            "mean_score": [0.2, 0.5, 0.8],
            "frac_fake": [0.25, 0.0, 0.75],
        }
    )
    fig = plots.reliability_diagram({"calibrated": table})
    (points,) = [c for c in fig.axes[0].collections if len(c.get_offsets()) == 3]
    sizes, alphas = points.get_sizes(), points.get_facecolors()[:, 3]
    order = np.argsort(table["count"].to_numpy())  # 2, 40, 100 images
    assert np.all(np.diff(sizes[order]) > 0) and np.all(np.diff(alphas[order]) > 0)
    assert alphas[1] < 0.25 and alphas[0] == pytest.approx(1.0)  # the near-empty bin is faint, the fullest opaque
    plt.close(fig)


def test_robustness_curves_keep_every_point_and_label_inside_the_figure():
    table = _robustness()
    table["input_size"] = 96
    table.loc[table["perturbation"] == "resize_64", ["roc_auc", "error"]] = [0.31, ""]  # far below chance
    fig = plots.robustness_curves(table, METRICS)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for ax in fig.axes:
        tight = ax.get_tightbbox(renderer)
        assert box.x0 <= tight.x0 and tight.x1 <= box.x1 and box.y0 <= tight.y0 and tight.y1 <= box.y1
        assert ax.get_ylim()[0] < table["roc_auc"].min()  # no point below the axis
    plt.close(fig)


def test_run_plots_titles_come_from_details_json_and_the_curves_mark_the_summary_epoch(tmp_path, monkeypatch):
    import json

    from deepfake.pipeline.stages import run_plots

    train_dir, eval_dir, figures = tmp_path / "train", tmp_path / "eval", tmp_path / "figures"
    train_dir.mkdir()
    eval_dir.mkdir()
    from deepfake.pipeline.tracking import TrainTracker

    tracker = TrainTracker(train_dir)  # the per-epoch history as training writes it
    for row in _history().to_dict("records"):
        tracker.epoch(row)
    tracker.finish({"best_epoch": 3}, epochs_run=len(_history()))
    (train_dir / "details.json").write_text(json.dumps({"best_epoch": 3}))  # not the best val AUC: the summary wins
    preds = _preds()
    preds.to_csv(eval_dir / "predictions.csv", index=False)
    y, s = preds["target"], preds["score"]
    pd.DataFrame(roc_points(y, s)).to_csv(eval_dir / "roc.csv", index=False)
    pd.DataFrame(pr_points(y, s)).to_csv(eval_dir / "pr.csv", index=False)
    (eval_dir / "calibration.json").write_text(json.dumps({"temperature": 1, "threshold": 0.5, "threshold_rule": "x"}))
    (eval_dir / "metrics.json").write_text(json.dumps({"roc_auc": 0.5, "n": 1}))  # a headline file: not read
    (eval_dir / "details.json").write_text(json.dumps(METRICS))
    titles = {}
    save = plots.save

    def recording_save(fig, path, *args, **kwargs):
        texts = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""]
        titles[path.stem] = " | ".join(texts)
        if path.stem == "training_curves":
            titles["marked"] = [ln.get_xdata()[0] for ln in fig.axes[0].lines if ln.get_linestyle() == "--"]
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(plots, "save", recording_save)
    written = run_plots(train_dir, eval_dir, figures, tmp_path, gallery_size=0)
    assert "Test split: ROC-AUC 0.812 (95% CI 0.701–0.903)\nn = 40 images, 7 groups" in titles["roc_curve"]
    assert "accuracy 0.725 (95% CI 0.600–0.850)" in titles["confusion_matrix"]
    assert titles["marked"] == [3]
    assert all(p.suffix == ".png" and p.with_suffix(".svg").stat().st_size > 1000 for p in written.values())
