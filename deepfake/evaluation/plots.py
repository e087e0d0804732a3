"""Seaborn figures of a run: the face crops with their landmarks, training curves, confusion
matrix, ROC and PR curves with the operating point, score distributions, reliability diagram,
robustness curves, and a gallery of the most confident mistakes.

Evaluation figures take the evaluation's metrics dictionary (``reports/eval/details.json``) and
say in their titles which split they show, its size (images, and groups when the bootstrap
counted them) and the confidence interval of the headline number when there is one. ``save``
writes each figure twice, as a PNG and as a byte-for-byte reproducible SVG (or PDF).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from ..core.utils import atomic_path
from ..data.detect import parse_points
from ..data.media import BadInputError, kind_of, read_image

#: Resolution of the saved PNGs (print quality).
PNG_DPI = 200
#: Vector formats ``save`` writes beside the PNG.
VECTOR_FORMATS = ("svg", "pdf")
#: Salt of the ids matplotlib gives SVG elements: fixed, so the same figure gives the same bytes.
SVG_HASH_SALT = "deepfake"
#: Metadata that would change from run to run, left out of the vector files.
_VECTOR_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}}

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


def _number(value) -> float | None:
    """``value`` as a float, or None when it is missing or NaN."""
    if value is None:
        return None
    f = float(value)
    return None if np.isnan(f) else f


def _split_name(metrics: dict) -> str:
    """``Test split`` for ``split: test``; a longer description (cross-dataset) as it is, capitalised."""
    split = str(metrics.get("split") or "").strip()
    if not split:
        return ""
    return f"{split.capitalize()} split" if " " not in split else split[0].upper() + split[1:]


def sample_size(metrics: dict) -> str:
    """``n = 360 images, 15 groups`` (the groups when the bootstrap counted them), or "" without ``n``."""
    n = _number(metrics.get("n"))
    if n is None:
        return ""
    groups = _number((metrics.get("ci") or {}).get("n_groups"))
    return f"n = {int(n)} images" + (f", {int(groups)} groups" if groups else "")


def with_interval(metrics: dict, key: str, label: str) -> str:
    """``ROC-AUC 0.809 (95% CI 0.769–0.850)``: the value of ``key`` with its bootstrap interval when there is one."""
    value = _number(metrics.get(key))
    if value is None:
        return ""
    ci = metrics.get("ci") or {}
    low, high = _number(ci.get(f"{key}_low")), _number(ci.get(f"{key}_high"))
    if low is None or high is None:
        return f"{label} {value:.3f}"
    level = _number(ci.get("level")) or 0.95
    return f"{label} {value:.3f} ({level * 100:g}% CI {low:.3f}–{high:.3f})"


def eval_title(metrics: dict | None, what: str) -> str:
    """``Test split: <what>`` and the sample size on a second line; ``what`` alone without metrics."""
    if not metrics:
        return what
    split = _split_name(metrics)
    head = f"{split}: {what}" if split else what
    n = sample_size(metrics)
    return f"{head}\n{n}" if n else head


def chosen_epoch(history: pd.DataFrame) -> int | None:
    """The epoch whose weights training kept as ``best.pt``: the first with the highest validation
    ROC-AUC, or with the lowest validation loss when the AUC is undefined (``deepfake.training.train``)."""
    from ..training.train import selection_score

    scores = np.array([selection_score(row) for row in history.to_dict("records")], dtype=float)
    if not len(scores) or np.isnan(scores).all():
        return None
    return int(history["epoch"].iloc[int(np.nanargmax(scores))])


def training_curves(history: pd.DataFrame, best_epoch: int | None = None) -> plt.Figure:
    """Loss, accuracy and ROC-AUC per epoch, train versus validation, with the chosen epoch marked.

    Args:
        history: ``reports/train/history.csv``.
        best_epoch: the epoch ``best.pt`` holds (``best_epoch`` of the training summary);
            found with ``chosen_epoch`` when None.
    """
    long = history.melt(id_vars="epoch", value_vars=[c for c in history.columns if c.startswith(("train_", "val_"))])
    long[["split", "metric"]] = long["variable"].str.split("_", n=1, expand=True)
    best = chosen_epoch(history) if best_epoch is None else int(best_epoch)
    row = history[history["epoch"] == best]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    for ax, metric, title in zip(axes, ("loss", "accuracy", "auc"), ("BCE loss", "accuracy", "ROC-AUC")):
        sns.lineplot(
            long[long["metric"] == metric], x="epoch", y="value", hue="split", marker="o", palette=_PALETTE, ax=ax
        )
        ax.set(title=title, ylabel=None)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric != "loss":
            ax.set_ylim(0, 1.02)
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        if len(row):
            value = float(row[f"val_{metric}"].iloc[0])
            ax.axvline(best, color="black", lw=1, ls="--", label=f"chosen epoch {best} (val {value:.3f})")
        ax.legend(fontsize=8)
    fig.suptitle("training curves; dashed: the epoch kept as best.pt (highest validation ROC-AUC)", fontsize=10)
    return fig


def confusion(preds: pd.DataFrame, metrics: dict | None = None) -> plt.Figure:
    """Confusion matrix of true versus predicted labels: counts (left) and row-normalised shares (right).

    With the evaluation's ``metrics`` the title gives the split, n and the accuracy with its interval.
    """
    cm = confusion_matrix(preds["label"], preds["predicted"], labels=_LABEL_ORDER)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(8.2, 3.9), layout="constrained")
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
    if metrics:
        fig.suptitle(eval_title(metrics, with_interval(metrics, "accuracy", "accuracy")), fontsize=10)
    return fig


def _operating_point(preds: pd.DataFrame, threshold: float) -> tuple[float, float, float]:
    """(fpr, tpr, precision) of ``score >= threshold``."""
    y, pred = preds["target"].to_numpy(), (preds["score"].to_numpy() >= threshold)
    fpr = pred[y == 0].mean() if (y == 0).any() else np.nan
    tpr = pred[y == 1].mean() if (y == 1).any() else np.nan
    precision = y[pred].mean() if pred.any() else np.nan
    return float(fpr), float(tpr), float(precision)


def roc_curve(
    roc: pd.DataFrame, preds: pd.DataFrame | None = None, threshold: float | None = None, metrics: dict | None = None
) -> plt.Figure:
    """ROC curve from ``fpr``/``tpr`` points, the operating point marked when ``preds`` is given.

    The title gives the AUC: from ``metrics`` (with the split, n and the interval) when they hold
    it, else computed from ``preds``.
    """
    fig, ax = plt.subplots(figsize=(4.6, 4.5), layout="constrained")
    sns.lineplot(roc, x="fpr", y="tpr", drawstyle="steps-post", errorbar=None, ax=ax)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    title = "ROC curve"
    if metrics and _number(metrics.get("roc_auc")) is not None:
        title = eval_title(metrics, with_interval(metrics, "roc_auc", "ROC-AUC"))
    elif preds is not None and preds["target"].nunique() == 2:
        title += f" (AUC {roc_auc_score(preds['target'], preds['score']):.3f})"
    if preds is not None and preds["target"].nunique() == 2:
        if threshold is not None:
            fpr, tpr, _ = _operating_point(preds, threshold)
            ax.plot([fpr], [tpr], "o", color="black", label=f"threshold {threshold:.3f}\nFPR {fpr:.3f}, TPR {tpr:.3f}")
            ax.legend(loc="lower right", fontsize=8)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(title, fontsize=10)
    return fig


def pr_curve(
    pr: pd.DataFrame, preds: pd.DataFrame, threshold: float | None = None, metrics: dict | None = None
) -> plt.Figure:
    """Precision-recall curve (fake is the positive class) with the operating point and the chance level.

    With the evaluation's ``metrics`` the title gives the split and n.
    """
    fig, ax = plt.subplots(figsize=(4.6, 4.5), layout="constrained")
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
    ax.set(xlabel="recall (fakes found)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(eval_title(metrics, title), fontsize=10)
    return fig


def score_distributions(preds: pd.DataFrame, threshold: float = 0.5, metrics: dict | None = None) -> plt.Figure:
    """Histogram of fake-probabilities per true class, with the decision threshold (split and n from ``metrics``)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.9), layout="constrained")
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
    ax.set(xlabel="predicted probability of fake", xlim=(0, 1))
    counts = preds["label"].value_counts()
    what = (
        "score distribution per true class "
        f"({int(counts.get('real', 0))} real, {int(counts.get('fake', 0))} fake; threshold {threshold:.3f})"
    )
    ax.set_title(eval_title(metrics, what), fontsize=10)
    return fig


def reliability_diagram(
    tables: dict[str, pd.DataFrame], eces: dict[str, float] | None = None, metrics: dict | None = None
) -> plt.Figure:
    """Observed share of fakes against mean predicted probability per bin, one line per table.

    Each bin's marker has an area and an opacity proportional to the images in it, so a bin of
    two images does not look like one of a hundred; the panel beneath shows the counts.

    Args:
        tables: e.g. ``{"uncalibrated": ..., "calibrated": ...}``, each from
            :func:`deepfake.metrics.classification.reliability_table`.
        eces: expected calibration error per table, shown in the legend.
        metrics: the evaluation's metrics, for the split and n in the title.
    """
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(4.8, 5.8), height_ratios=[3, 1], sharex=True, layout="constrained")
    (diagonal,) = ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
    handles = [diagonal]  # legend entries at one marker size, whatever the bins hold
    width = 1 / max(max((len(t) for t in tables.values()), default=1), 1)
    most = max((int(t["count"].max()) for t in tables.values() if len(t)), default=1)
    for i, (name, t) in enumerate(tables.items()):
        label = name if not eces or name not in eces else f"{name} (ECE {eces[name]:.3f})"
        color = _PALETTE.get(name)
        share = t["count"].to_numpy(float) / max(most, 1)
        ax.plot(t["mean_score"], t["frac_fake"], "-", color=color, lw=1, alpha=0.5)
        ax.scatter(
            t["mean_score"],
            t["frac_fake"],
            s=8 + 112 * share,
            color=color,
            alpha=0.2 + 0.8 * share,
            edgecolors="none",
        )
        handles.append(Line2D([], [], color=color, lw=1, marker="o", ms=6, label=label))
        centers = (t["bin_lower"] + t["bin_upper"]) / 2
        w = (t["bin_upper"] - t["bin_lower"]).min() if len(t) else width
        axh.bar(centers + (i - 0.5) * w / 2, t["count"], width=w / 2, color=color, alpha=0.8)
    ax.set(ylabel="observed share of fakes", xlim=(-0.02, 1.02), ylim=(-0.03, 1.03))
    ax.set_title(eval_title(metrics, "reliability diagram (marker area and opacity: images in the bin)"), fontsize=9)
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    axh.set(xlabel="predicted probability of fake", ylabel="images")
    axh.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    return fig


def robustness_curves(table: pd.DataFrame, metrics: dict | None = None) -> plt.Figure:
    """ROC-AUC per perturbation level, one panel per kind, with the clean AUC as a dashed line.

    The layout is constrained, so the legends and the training-size note stay inside the figure;
    the title gives the split and n from ``metrics``.
    """
    clean = table.loc[table["kind"] == "none", "roc_auc"]
    clean_auc = float(clean.iloc[0]) if len(clean) and pd.notna(clean.iloc[0]) else None
    kinds = [k for k in _KIND_TITLES if (table["kind"] == k).any()]
    scored = table["roc_auc"].dropna()
    bottom = min(0.4, float(scored.min()) - 0.05) if len(scored) else 0.4
    fig, axes = plt.subplots(
        1, max(len(kinds), 1), figsize=(3.3 * max(len(kinds), 1), 3.6), squeeze=False, layout="constrained"
    )
    for ax, kind in zip(axes[0], kinds):
        t = table[(table["kind"] == kind) & table["roc_auc"].notna()]
        if kind == "resize" and clean_auc is not None and "input_size" in table.columns:
            train_size = int(table.loc[table["kind"] == "none", "input_size"].iloc[0])
            t = pd.concat([t, pd.DataFrame({"level": [train_size], "roc_auc": [clean_auc]})], ignore_index=True)
            ax.axvline(train_size, color="grey", lw=0.8, ls="--", label=f"training size {train_size} px")
        t = t.sort_values("level")
        sns.lineplot(t, x="level", y="roc_auc", marker="o", errorbar=None, ax=ax)
        if clean_auc is not None:
            ax.axhline(clean_auc, color="black", lw=1, ls="--", label=f"clean {clean_auc:.3f}")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set(xlabel=None, ylabel="ROC-AUC", ylim=(bottom, 1.01))
        ax.set_title(_KIND_TITLES[kind], fontsize=10)
        if kind in ("jpeg", "downscale"):
            ax.invert_xaxis()  # stronger degradation to the right
        failed = table[(table["kind"] == kind) & table["roc_auc"].isna()]
        if len(failed):
            ax.text(0.02, 0.02, "not scored: " + ", ".join(failed["perturbation"]), transform=ax.transAxes, fontsize=7)
        ax.legend(loc="best", fontsize=7)
    if not kinds:
        axes[0, 0].text(0.5, 0.5, "no perturbations configured", ha="center", va="center")
        axes[0, 0].set_axis_off()
    what = "ROC-AUC under perturbations (JPEG, blur, down-scaling: stronger to the right)"
    fig.suptitle(eval_title(metrics, what).replace("\n", ", "), fontsize=10)
    return fig


def per_kind(metrics: dict) -> plt.Figure:
    """ROC-AUC of each kind of fake against all reals, and its recall at the operating point, side by side.

    Args:
        metrics: the evaluation's metrics (its ``per_kind`` section; the split and n for the title).
    """
    info = metrics.get("per_kind")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
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
    what = f"each kind of fake ({info['column']} column) against all reals; dotted: chance AUC, overall recall"
    fig.suptitle(eval_title(metrics, what), fontsize=10)
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


def mistakes_gallery(
    preds: pd.DataFrame, root: str | os.PathLike, k: int = 6, metrics: dict | None = None
) -> plt.Figure:
    """Images of the most confident false positives (top row) and false negatives (bottom row) with their scores.

    The title gives the split and n from ``metrics`` (``test split`` without them).
    """
    fp, fn = confident_mistakes(preds, k)
    cols = max(len(fp), len(fn), 1)
    fig, axes = plt.subplots(2, cols, figsize=(1.9 * cols + 0.6, 5.6), squeeze=False, layout="constrained")
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
    n_fp = int(((preds["target"] == 0) & (preds["predicted"] == "fake")).sum())
    n_fn = int(((preds["target"] == 1) & (preds["predicted"] == "real")).sum())
    what = f"most confident mistakes ({len(fp)} FP, {len(fn)} FN shown of {n_fp} FP, {n_fn} FN)"
    title = eval_title(metrics or {"split": "test", "n": len(preds)}, what)
    fig.suptitle(title, fontsize=10)
    return fig


def save(fig: plt.Figure, path: str | os.PathLike, dpi: int = PNG_DPI, vector: str | None = "svg") -> Path:
    """Save ``fig`` as a PNG and a vector copy beside it (same stem), each atomically, and close it.

    The vector file carries no date and fixed element ids, so the same figure gives the same
    bytes on every run.

    Args:
        fig: the figure.
        path: the PNG's path.
        dpi: resolution of the PNG.
        vector: ``svg``, ``pdf`` or None (PNG only).

    Returns:
        The PNG's path.
    """
    if vector is not None and vector not in VECTOR_FORMATS:
        raise ValueError(f"vector must be one of {VECTOR_FORMATS} or None, got {vector!r}")
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.05)
        if vector is not None:
            with plt.rc_context({"svg.hashsalt": SVG_HASH_SALT}), atomic_path(path.with_suffix(f".{vector}")) as tmp:
                fig.savefig(tmp, format=vector, bbox_inches="tight", pad_inches=0.05, metadata=_VECTOR_METADATA[vector])
    finally:
        plt.close(fig)
    return path
