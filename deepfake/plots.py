"""Seaborn figures of a run: the face crops with their landmarks, training curves, confusion
matrix, ROC and PR curves with the operating point, score distributions, reliability diagram,
robustness curves, and a gallery of the most confident mistakes."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from .landmarks import parse_points
from .media import BadInputError, kind_of, read_image
from .utils import atomic_path

_LABEL_ORDER = ["real", "fake"]
_PALETTE = {
    "real": "#4C72B0",
    "fake": "#DD8452",
    "train": "#4C72B0",
    "val": "#DD8452",
    "uncalibrated": "#C44E52",
    "calibrated": "#55A868",
}
_KIND_TITLES = {
    "jpeg": "JPEG quality",
    "blur": "Gaussian blur sigma (px)",
    "downscale": "down-scaling factor",
    "resize": "network input size (px)",
}


#: Skip reasons of inputs that were read but gave no usable face (shown by ``face_check``).
FACE_REASONS = ("no_face", "several_faces", "face_at_border")


def face_check(
    manifest: pd.DataFrame,
    cache_dir: str | os.PathLike,
    skipped: pd.DataFrame,
    raw_dir: str | os.PathLike,
    n: int = 16,
    n_missed: int = 8,
    per_row: int = 8,
) -> plt.Figure:
    """Whether face detection worked, at a glance: sample crops (real and fake alternating) with
    their landmarks when the cache has them, then photos where no usable face was found, with the reason."""
    by_label = [manifest[manifest["label"] == lab] for lab in _LABEL_ORDER]
    rows = [r for pair in zip(*(d.itertuples() for d in by_label)) for r in pair][:n] or list(
        manifest.head(n).itertuples()
    )
    missed = skipped[skipped["reason"].isin(FACE_REASONS) & skipped["source"].map(kind_of).eq("image")]
    shown_missed = missed.head(n_missed)
    crop_rows = -(-len(rows) // per_row) if rows else 0
    miss_rows = -(-len(shown_missed) // per_row) if len(shown_missed) else 0
    fig, axes = plt.subplots(
        max(1, crop_rows + miss_rows), per_row, figsize=(1.45 * per_row, 1.6 * max(1, crop_rows + miss_rows))
    )
    axes = np.atleast_2d(axes)
    for ax in axes.flat:
        ax.set_axis_off()
    for k, row in enumerate(rows):
        ax = axes[k // per_row, k % per_row]
        ax.imshow(read_image(Path(cache_dir) / row.path))
        points = parse_points(getattr(row, "landmarks", ""))
        if points is not None:
            ax.scatter(points[:, 0], points[:, 1], s=2, c="#55A868", linewidths=0)
        ax.set_title(f"{row.label} {getattr(row, 'crop', '')}", fontsize=7, color=_PALETTE[row.label])
    for k, row in enumerate(shown_missed.itertuples()):
        ax = axes[crop_rows + k // per_row, k % per_row]
        try:
            ax.imshow(read_image(Path(raw_dir) / row.source))
        except BadInputError:
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
        ax.set_title(f"{row.reason.replace('_', ' ')}\n{Path(row.source).name[:18]}", fontsize=6, color="#C44E52")
    with_points = int((manifest.get("landmarks", pd.Series(dtype=str)).fillna("") != "").sum())
    fig.suptitle(
        f"{len(rows)} of {len(manifest)} crops ({with_points} with landmarks); "
        f"{len(shown_missed)} of {len(missed)} photos without a usable face (bottom, red)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def training_curves(history: pd.DataFrame) -> plt.Figure:
    """Loss, accuracy and ROC-AUC per epoch, train versus validation."""
    long = history.melt(id_vars="epoch", value_vars=[c for c in history.columns if c.startswith(("train_", "val_"))])
    long[["split", "metric"]] = long["variable"].str.split("_", n=1, expand=True)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, metric, title in zip(axes, ("loss", "accuracy", "auc"), ("BCE loss", "accuracy", "ROC-AUC")):
        sns.lineplot(
            long[long["metric"] == metric], x="epoch", y="value", hue="split", marker="o", palette=_PALETTE, ax=ax
        )
        ax.set(title=title, ylabel=None, xticks=history["epoch"])
        if metric != "loss":
            ax.set_ylim(0, 1.02)
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    fig.tight_layout()
    return fig


def confusion(preds: pd.DataFrame) -> plt.Figure:
    """Confusion matrix of true versus predicted labels: counts (left) and row-normalised shares (right)."""
    cm = confusion_matrix(preds["label"], preds["predicted"], labels=_LABEL_ORDER)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(8.2, 3.6))
    sns.heatmap(
        cm,
        annot=cm.astype(str),
        fmt="",
        cmap="Blues",
        cbar=False,
        ax=axes[0],
        xticklabels=_LABEL_ORDER,
        yticklabels=_LABEL_ORDER,
    )
    axes[0].set(xlabel="predicted", ylabel="true", title=f"counts (n={int(cm.sum())})")
    sns.heatmap(
        share,
        annot=np.vectorize(lambda v: f"{v:.1%}")(share),
        fmt="",
        cmap="Blues",
        vmin=0,
        vmax=1,
        cbar=False,
        ax=axes[1],
        xticklabels=_LABEL_ORDER,
        yticklabels=_LABEL_ORDER,
    )
    axes[1].set(xlabel="predicted", ylabel="true", title="normalised by true class")
    fig.tight_layout()
    return fig


def _operating_point(preds: pd.DataFrame, threshold: float) -> tuple[float, float, float]:
    """(fpr, tpr, precision) of ``score >= threshold``."""
    y, pred = preds["target"].to_numpy(), (preds["score"].to_numpy() >= threshold)
    fpr = pred[y == 0].mean() if (y == 0).any() else np.nan
    tpr = pred[y == 1].mean() if (y == 1).any() else np.nan
    precision = y[pred].mean() if pred.any() else np.nan
    return float(fpr), float(tpr), float(precision)


def roc_curve(roc: pd.DataFrame, preds: pd.DataFrame | None = None, threshold: float | None = None) -> plt.Figure:
    """ROC curve from ``fpr``/``tpr`` points; AUC in the title, the operating point marked when ``preds`` is given."""
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    sns.lineplot(roc, x="fpr", y="tpr", drawstyle="steps-post", errorbar=None, ax=ax)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    title = "ROC curve"
    if preds is not None and preds["target"].nunique() == 2:
        title += f" (AUC {roc_auc_score(preds['target'], preds['score']):.3f})"
        if threshold is not None:
            fpr, tpr, _ = _operating_point(preds, threshold)
            ax.plot([fpr], [tpr], "o", color="black", label=f"threshold {threshold:.3f}\nFPR {fpr:.3f}, TPR {tpr:.3f}")
            ax.legend(loc="lower right", fontsize=8)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    fig.tight_layout()
    return fig


def pr_curve(pr: pd.DataFrame, preds: pd.DataFrame, threshold: float | None = None) -> plt.Figure:
    """Precision-recall curve (fake is the positive class) with the operating point and the chance level."""
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    sns.lineplot(pr, x="recall", y="precision", drawstyle="steps-post", errorbar=None, ax=ax)
    base = float(preds["target"].mean())
    ax.axhline(base, color="grey", lw=0.8, ls=":", label=f"chance ({base:.2f})")
    title = "precision-recall curve"
    if preds["target"].nunique() == 2:
        title += f" (AP {average_precision_score(preds['target'], preds['score']):.3f})"
        if threshold is not None:
            _, tpr, precision = _operating_point(preds, threshold)
            ax.plot(
                [tpr],
                [precision],
                "o",
                color="black",
                label=f"threshold {threshold:.3f}\nP {precision:.3f}, R {tpr:.3f}",
            )
    ax.legend(loc="lower left", fontsize=8)
    ax.set(xlabel="recall (fakes found)", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.01))
    fig.tight_layout()
    return fig


def score_distributions(preds: pd.DataFrame, threshold: float = 0.5) -> plt.Figure:
    """Histogram of fake-probabilities per true class, with the decision threshold."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.histplot(
        preds,
        x="score",
        hue="label",
        hue_order=_LABEL_ORDER,
        bins=np.linspace(0, 1, 26),
        palette=_PALETTE,
        element="step",
        stat="count",
        common_norm=False,
        ax=ax,
    )
    ax.axvline(threshold, color="black", lw=1, ls="--")
    ax.set(xlabel="predicted probability of fake", title="score distribution per true class", xlim=(0, 1))
    fig.tight_layout()
    return fig


def reliability_diagram(tables: dict[str, pd.DataFrame], eces: dict[str, float] | None = None) -> plt.Figure:
    """Observed share of fakes against mean predicted probability per bin, one line per table.

    Args:
        tables: e.g. ``{"uncalibrated": ..., "calibrated": ...}``, each from
            :func:`deepfake.metrics.reliability_table`.
        eces: expected calibration error per table, shown in the legend.
    """
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(4.6, 5.4), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
    width = 1 / max(max((len(t) for t in tables.values()), default=1), 1)
    for i, (name, t) in enumerate(tables.items()):
        label = name if not eces or name not in eces else f"{name} (ECE {eces[name]:.3f})"
        color = _PALETTE.get(name)
        ax.plot(t["mean_score"], t["frac_fake"], "o-", color=color, label=label, ms=4)
        centers = (t["bin_lower"] + t["bin_upper"]) / 2
        w = (t["bin_upper"] - t["bin_lower"]).min() if len(t) else width
        axh.bar(centers + (i - 0.5) * w / 2, t["count"], width=w / 2, color=color, alpha=0.8)
    ax.set(ylabel="observed share of fakes", title="reliability diagram", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    axh.set(xlabel="predicted probability of fake", ylabel="images")
    axh.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    fig.tight_layout()
    return fig


def robustness_curves(table: pd.DataFrame) -> plt.Figure:
    """ROC-AUC per perturbation level, one panel per kind, with the clean AUC as a dashed line."""
    clean = table.loc[table["kind"] == "none", "roc_auc"]
    clean_auc = float(clean.iloc[0]) if len(clean) and pd.notna(clean.iloc[0]) else None
    kinds = [k for k in _KIND_TITLES if (table["kind"] == k).any()]
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(3.3 * max(len(kinds), 1), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        t = table[(table["kind"] == kind) & table["roc_auc"].notna()]
        if kind == "resize" and clean_auc is not None and "input_size" in table.columns:
            train_size = int(table.loc[table["kind"] == "none", "input_size"].iloc[0])
            t = pd.concat([t, pd.DataFrame({"level": [train_size], "roc_auc": [clean_auc]})], ignore_index=True)
            ax.axvline(train_size, color="grey", lw=0.8, ls="--")
            ax.text(train_size, 0.97, " training size", fontsize=7, color="grey", va="top")
        t = t.sort_values("level")
        sns.lineplot(t, x="level", y="roc_auc", marker="o", errorbar=None, ax=ax)
        if clean_auc is not None:
            ax.axhline(clean_auc, color="black", lw=1, ls="--", label=f"clean {clean_auc:.3f}")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set(title=_KIND_TITLES[kind], xlabel=None, ylabel="ROC-AUC", ylim=(0.4, 1.01))
        if kind in ("jpeg", "downscale"):
            ax.invert_xaxis()  # stronger degradation to the right
        failed = table[(table["kind"] == kind) & table["roc_auc"].isna()]
        if len(failed):
            ax.text(0.02, 0.02, "not scored: " + ", ".join(failed["perturbation"]), transform=ax.transAxes, fontsize=7)
        ax.legend(loc="lower left", fontsize=8)
    if not kinds:
        axes[0, 0].text(0.5, 0.5, "no perturbations configured", ha="center", va="center")
        axes[0, 0].set_axis_off()
    fig.suptitle("robustness of the test ROC-AUC (JPEG, blur, down-scaling: stronger to the right)", fontsize=10)
    fig.tight_layout()
    return fig


def per_kind(metrics: dict, split: str = "test") -> plt.Figure:
    """ROC-AUC of each kind of fake against all reals, and its recall at the operating point, side by side."""
    info = metrics.get("per_kind")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    if not info or not info.get("kinds"):
        for ax in axes:
            ax.set_axis_off()
        axes[0].text(0.02, 0.5, "no manipulation / method / subtype column in the manifest", fontsize=9)
        return fig
    table = pd.DataFrame(info["kinds"])
    labels = [f"{k}\n(n={n})" for k, n in zip(table["kind"], table["n"])]
    colours = sns.color_palette("deep", len(table))
    for ax, col, title in (
        (axes[0], "roc_auc", f"ROC-AUC against all {int(table['n_real'].iloc[0])} reals"),
        (axes[1], "recall", "recall at the operating point"),
    ):
        values = table[col].astype(float).fillna(0).to_numpy()
        ax.bar(labels, values, color=colours)
        for x, v in enumerate(values):
            ax.text(x, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
        ax.set(ylim=(0, 1.08), title=title)
        ax.axhline(0.5 if col == "roc_auc" else metrics.get("recall", 0), color="grey", lw=0.8, ls=":")
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(
        f"{split} split by kind of fake ({info['column']} column); dotted: chance AUC / overall recall", fontsize=10
    )
    fig.tight_layout()
    return fig


def pseudo_fakes(examples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], title: str | None = None) -> plt.Figure:
    """Self-blended training examples: each column a real crop, its blending mask and the pseudo-fake."""
    cols = max(1, len(examples))
    fig, axes = plt.subplots(3, cols, figsize=(1.5 * cols + 0.8, 4.8), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for c, (real, mask, fake) in enumerate(examples):
        axes[0, c].imshow(real)
        axes[1, c].imshow(mask, cmap="gray", vmin=0, vmax=1)
        axes[2, c].imshow(fake)
        axes[1, c].set_title(f"max {mask.max():.2f}", fontsize=7)
    for r, name in enumerate(("real", "mask", "pseudo-fake")):
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(
        title or "self-blended pseudo-fakes: the real crop, the blending mask (its blend ratio), the result", fontsize=9
    )
    fig.tight_layout()
    return fig


def confident_mistakes(preds: pd.DataFrame, k: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``k`` false positives with the highest fake score and the ``k`` false negatives with the lowest."""
    fp = preds[(preds["target"] == 0) & (preds["predicted"] == "fake")].sort_values(
        "score", ascending=False, kind="stable"
    )
    fn = preds[(preds["target"] == 1) & (preds["predicted"] == "real")].sort_values(
        "score", ascending=True, kind="stable"
    )
    return fp.head(k), fn.head(k)


def mistakes_gallery(preds: pd.DataFrame, root: str | os.PathLike, k: int = 6) -> plt.Figure:
    """Images of the most confident false positives (top row) and false negatives (bottom row) with their scores."""
    fp, fn = confident_mistakes(preds, k)
    cols = max(len(fp), len(fn), 1)
    fig, axes = plt.subplots(2, cols, figsize=(1.9 * cols + 0.6, 5.4), squeeze=False)
    for r, (rows, what) in enumerate(
        ((fp, "false positives: real called fake"), (fn, "false negatives: fake called real"))
    ):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(rows):
                row = rows.iloc[c]
                ax.imshow(read_image(Path(root) / row["path"]))
                ax.set_title(f"p(fake) {row['score']:.3f}\n{Path(row['path']).name[:24]}", fontsize=7)
            else:
                ax.set_axis_off()
        axes[r, 0].set_ylabel(what if len(rows) else f"{what}\n(none)", fontsize=8)
        if not len(rows):
            axes[r, 0].set_axis_on()
            axes[r, 0].set_frame_on(False)
    fig.suptitle(f"most confident mistakes on the test split ({len(fp)} FP, {len(fn)} FN shown)", fontsize=10)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)
