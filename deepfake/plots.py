"""Seaborn figures of a run: training curves, confusion matrix, ROC curve, score distributions."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import confusion_matrix, roc_auc_score

from .utils import atomic_path

_LABEL_ORDER = ["real", "fake"]
_PALETTE = {"real": "#4C72B0", "fake": "#DD8452", "train": "#4C72B0", "val": "#DD8452"}


def training_curves(history: pd.DataFrame) -> plt.Figure:
    """Loss, accuracy and ROC-AUC per epoch, train versus validation."""
    long = history.melt(id_vars="epoch", value_vars=[c for c in history.columns if c.startswith(("train_", "val_"))])
    long[["split", "metric"]] = long["variable"].str.split("_", n=1, expand=True)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, metric, title in zip(axes, ("loss", "accuracy", "auc"), ("BCE loss", "accuracy", "ROC-AUC")):
        sns.lineplot(long[long["metric"] == metric], x="epoch", y="value", hue="split", marker="o", palette=_PALETTE, ax=ax)
        ax.set(title=title, ylabel=None, xticks=history["epoch"])
        if metric != "loss":
            ax.set_ylim(0, 1.02)
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    fig.tight_layout()
    return fig


def confusion(preds: pd.DataFrame) -> plt.Figure:
    """Confusion matrix of true versus predicted labels, counts and row-normalised shares."""
    cm = confusion_matrix(preds["label"], preds["predicted"], labels=_LABEL_ORDER)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    annot = np.array([[f"{c}\n{s:.1%}" for c, s in zip(rc, rs)] for rc, rs in zip(cm, share)])
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    sns.heatmap(share, annot=annot, fmt="", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                xticklabels=_LABEL_ORDER, yticklabels=_LABEL_ORDER)
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix (n={int(cm.sum())})")
    fig.tight_layout()
    return fig


def roc_curve(roc: pd.DataFrame, preds: pd.DataFrame | None = None) -> plt.Figure:
    """ROC curve from ``fpr``/``tpr`` points, with the AUC in the title when ``preds`` is given."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    sns.lineplot(roc, x="fpr", y="tpr", drawstyle="steps-post", errorbar=None, ax=ax)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    title = "ROC curve"
    if preds is not None and preds["target"].nunique() == 2:
        title += f" (AUC {roc_auc_score(preds['target'], preds['score']):.3f})"
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    fig.tight_layout()
    return fig


def score_distributions(preds: pd.DataFrame, threshold: float = 0.5) -> plt.Figure:
    """Histogram of fake-probabilities per true class, with the decision threshold."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.histplot(preds, x="score", hue="label", hue_order=_LABEL_ORDER, bins=np.linspace(0, 1, 26), palette=_PALETTE,
                 element="step", stat="count", common_norm=False, ax=ax)
    ax.axvline(threshold, color="black", lw=1, ls="--")
    ax.set(xlabel="predicted probability of fake", title="score distribution per true class", xlim=(0, 1))
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)
