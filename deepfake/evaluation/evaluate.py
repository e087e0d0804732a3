"""Evaluation of a trained checkpoint: calibration and operating point on validation, then the
test split's metrics with group-bootstrap intervals, video-level scores, robustness to image
degradations, and latency.

The order matters and is fixed here so no number can leak from the test split:

1. score the validation split; fit the temperature on its logits; choose the threshold on its
   calibrated probabilities by the configured rule;
2. score the test split once and apply that temperature and threshold;
3. re-score the test split under each perturbation with the same temperature and threshold.

A second dataset (cross-dataset test) is scored with the calibration of the first
(``calibration=`` argument): nothing is fitted on it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.config import section, setting
from ..core.utils import atomic_path, resolve_device
from ..data.inputs import Preprocessing, load_input, to_model_tensor
from ..metrics.calibration import T_BOUNDS, calibrated, checkpoint_record, fit_temperature, nll, save_calibration
from ..metrics.classification import (
    THRESHOLD_RULES,
    binary_metrics,
    choose_threshold,
    expected_calibration_error,
    group_bootstrap_ci,
    kind_column,
    per_kind,
    pr_points,
    reliability_table,
    roc_points,
)
from ..metrics.video_level import VIDEO_COLUMNS, video_metrics, video_table, video_unit
from ..models.checkpoint import load_checkpoint, preprocessing_of
from ..training.scoring import forward_logits, score_frame
from .robustness import ROBUSTNESS_COLUMNS, Perturbation, perturbation_grid, robustness_table

log = logging.getLogger(__name__)

#: What a cross-dataset stage scores (``EvalConfig.cross_split``).
CROSS_SPLITS = ("test", "all")


@dataclass(frozen=True)
@section("evaluate", base_keys=("device", "seed"))
class EvalConfig:
    """Evaluation settings (defaults: ``params.yaml``'s ``evaluate`` section; ``device`` and ``seed``: ``base``).

    Attributes:
        threshold: the threshold of the ``fixed`` rule, and the fallback when validation lacks
            a class; applied to calibrated fake-probabilities.
        threshold_rule: how the threshold is chosen on validation: ``balanced_accuracy``
            (maximise it), ``target_fpr`` (highest recall with a false-positive rate at most
            ``target_fpr``) or ``fixed``.
        target_fpr: false-positive-rate budget of the ``target_fpr`` rule.
        calibrate: fit a temperature on validation (else temperature 1).
        ece_bins: equal-width bins of the expected calibration error and reliability diagram.
        bootstrap: bootstrap replicates of the confidence intervals (0 disables them).
        ci_level: coverage of the confidence intervals.
        seed: seed of the bootstrap.
        batch_size: images per forward pass when scoring a split.
        latency_images: images timed one at a time (file to probability) for the latency figure.
        device: ``auto`` | ``cpu`` | ``cuda``.
        num_workers: DataLoader worker processes.
        robust_jpeg: JPEG qualities of the robustness test (``"90,70"``; empty for none).
        robust_blur: Gaussian blur sigmas in pixels of the stored image.
        robust_downscale: down-and-up-scaling factors in (0, 1).
        robust_resize: network input sizes other than the training size.
        cross_split: what a cross-dataset stage scores: ``test`` (the dataset's official test
            split when its adapter gives one, e.g. Celeb-DF v2's test list; else every video) or
            ``all``.
    """

    threshold: float = setting(gt=0, lt=1)
    threshold_rule: str = setting(choices=THRESHOLD_RULES)
    target_fpr: float = setting(min=0, lt=1)
    calibrate: bool = setting()
    ece_bins: int = setting(min=1)
    bootstrap: int = setting(min=0)
    ci_level: float = setting(gt=0, lt=1)
    seed: int = setting(min=0)
    batch_size: int = setting(min=1)
    latency_images: int = setting(min=0)
    device: str = setting()
    robust_jpeg: str = setting()
    robust_blur: str = setting()
    robust_downscale: str = setting()
    robust_resize: str = setting()
    cross_split: str = setting(choices=CROSS_SPLITS)
    num_workers: int = 0  # not a pipeline setting

    def __post_init__(self) -> None:
        self.perturbations()  # fail now, not after scoring, on a malformed robustness level

    def perturbations(self) -> list[Perturbation]:
        """The clean reference plus every robustness level configured (just the clean one when none)."""
        return perturbation_grid(self.robust_jpeg, self.robust_blur, self.robust_downscale, self.robust_resize)

    def without_robustness(self) -> EvalConfig:
        """The same settings with every robustness level removed."""
        from dataclasses import replace

        return replace(self, robust_jpeg="", robust_blur="", robust_downscale="", robust_resize="")


@dataclass
class EvalResult:
    """What an evaluation produced.

    Attributes:
        predictions: one row per scored image: ``score`` is the calibrated fake-probability,
            ``score_raw`` the network's own, ``predicted`` the label at the threshold.
        metrics: the metrics JSON (frame level at top level; ``ci``, ``calibration``,
            ``video_level``, ``robustness`` sub-sections).
        calibration: temperature, threshold, threshold rule and how they were obtained.
        val_predictions: the validation split's predictions (None when none was scored).
        robustness: one row per perturbation level (the first is the clean test split).
        videos: one row per video with mean and max frame score (empty without videos).
    """

    predictions: pd.DataFrame
    metrics: dict
    calibration: dict
    val_predictions: pd.DataFrame | None = None
    robustness: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ROBUSTNESS_COLUMNS))
    videos: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=VIDEO_COLUMNS))


#: Metrics that measure the machine, not the model: written to ``timings.json``, not to the metrics.
TIMING_KEYS = ("latency_ms_median", "latency_ms_p90", "latency_images", "torch_threads")


@torch.inference_mode()
def measure_latency(
    model: Callable[[torch.Tensor], torch.Tensor],
    paths: list[Path],
    prep: Preprocessing,
    device: torch.device,
    warmup: int = 3,
) -> dict:
    """Time single stored crops end to end (decode, resize, normalise, forward), in milliseconds.

    ``model``: the network (put in eval mode) or any runtime of it (``deepfake.inference.backends``).
    """
    if isinstance(model, nn.Module):
        model.eval()
    paths = list(paths)
    if not paths:
        raise ValueError("no images to time")

    def one(p: Path) -> float:
        x = to_model_tensor(torch.from_numpy(load_input(p, prep.input_size))[None], prep.mean, prep.std).to(
            device
        )  # (1, 3, H, W)
        return float(torch.sigmoid(forward_logits(model, x, device))[0])

    for p in paths[:warmup]:
        one(p)
    times = []
    for p in paths:
        t0 = time.perf_counter()
        one(p)
        times.append((time.perf_counter() - t0) * 1000)
    t = np.asarray(times)
    return {
        "latency_ms_median": float(np.median(t)),
        "latency_ms_p90": float(np.percentile(t, 90)),
        "latency_images": len(t),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }


#: Columns of an evaluated frame kept in its predictions (when present): where each image came from.
KEPT_COLUMNS = ("source", "frame", "video")


def predictions_frame(
    frame: pd.DataFrame, scores: np.ndarray, threshold: float, raw_scores: np.ndarray | None = None
) -> pd.DataFrame:
    """Per-image predictions: path, group (source, frame, video), label, score, raw score, predicted label."""
    kind = kind_column(frame)
    cols = ["path", "group", "label", "target"] + [c for c in (*KEPT_COLUMNS, kind) if c and c in frame.columns]
    out = frame[cols].copy().reset_index(drop=True)
    out["score"] = np.round(np.asarray(scores, dtype=float), 6)
    if raw_scores is not None:
        out["score_raw"] = np.round(np.asarray(raw_scores, dtype=float), 6)
    out["predicted"] = np.where(np.asarray(scores) >= threshold, "fake", "real")
    return out


# --------------------------------------------------------------------------------------------
# Calibration and operating point (validation split)
# --------------------------------------------------------------------------------------------


def calibrate(val_logits: np.ndarray, val_targets: np.ndarray, cfg: EvalConfig) -> dict:
    """Fit the temperature on validation logits and choose the threshold on calibrated scores.

    Returns:
        ``temperature``, ``threshold``, ``threshold_rule`` (the keys inference reads), plus
        ``fit_split``, ``n_val``, whether the temperature hit its search bound, and the
        validation NLL and ECE before and after.
    """
    y = np.asarray(val_targets).astype(int)
    z = np.asarray(val_logits, dtype=np.float64)
    val_scores = calibrated(z, 1.0)
    both = len(np.unique(y)) == 2
    if cfg.calibrate and both:
        temperature, at_bound = fit_temperature(z, y)
        how = "fitted on the validation split (NLL of the fake-logit)"
    else:
        temperature, at_bound = 1.0, False
        how = "not fitted (calibrate is off)" if not cfg.calibrate else "not fitted (validation split has one class)"
    p_cal = calibrated(z, temperature)
    choice = choose_threshold(y, p_cal, cfg.threshold_rule, cfg.target_fpr, cfg.threshold)
    return {
        "temperature": float(temperature),
        "threshold": choice.pop("threshold"),
        "threshold_rule": choice.pop("threshold_rule"),
        "threshold_rule_name": cfg.threshold_rule,
        "threshold_applies_to": "calibrated fake-probability sigmoid(logit / temperature)",
        "temperature_fit": how,
        "temperature_at_bound": bool(at_bound),
        "fit_split": "val",
        "n_val": int(y.size),
        "val_nll_before": nll(z, y, 1.0),
        "val_nll_after": nll(z, y, temperature),
        "val_ece_before": expected_calibration_error(y, val_scores, cfg.ece_bins),
        "val_ece_after": expected_calibration_error(y, p_cal, cfg.ece_bins),
        **choice,
    }


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _none_if_nan(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def evaluate(
    checkpoint: str | os.PathLike,
    frame: pd.DataFrame,
    root: str | os.PathLike,
    cfg: EvalConfig | None = None,
    val: pd.DataFrame | None = None,
    calibration: dict | None = None,
) -> EvalResult:
    """Score ``frame`` with a checkpoint and compute every metric.

    Args:
        checkpoint: ``best.pt`` of a training run.
        frame: the images to evaluate (``path`` relative to ``root``, ``target``, ``group``,
            optionally ``video``).
        root: dataset folder.
        cfg: evaluation settings.
        val: validation images (same root) to fit the temperature and choose the threshold on.
        calibration: a calibration to apply as is (``temperature``, ``threshold``,
            ``threshold_rule``), e.g. the in-distribution one for a cross-dataset test; takes
            precedence over ``val``. With neither, temperature 1 and ``cfg.threshold``.

    Returns:
        The predictions, metrics, calibration, validation predictions, robustness and video tables.
    """
    cfg = cfg or EvalConfig()
    if len(frame) == 0:
        raise ValueError("no images to evaluate (empty frame)")
    device = resolve_device(cfg.device)
    model, ckpt = load_checkpoint(checkpoint, device)
    prep = preprocessing_of(ckpt, checkpoint)
    size = prep.input_size

    def score(f: pd.DataFrame, desc: str) -> np.ndarray:
        return score_frame(
            model, f, root, size, device, cfg.batch_size, cfg.num_workers, desc=desc, mean=prep.mean, std=prep.std
        )

    val_preds = None
    if calibration is not None:
        calib = {**calibration, "fit_split": calibration.get("fit_split", "given")}
    elif val is not None and len(val):
        val_z = score(val, "score validation")
        calib = calibrate(val_z, val["target"].to_numpy(), cfg)
        val_preds = predictions_frame(
            val, calibrated(val_z, calib["temperature"]), calib["threshold"], calibrated(val_z, 1.0)
        )
    else:
        calib = {
            "temperature": 1.0,
            "threshold": float(cfg.threshold),
            "fit_split": "none",
            "threshold_rule": f"fixed threshold {cfg.threshold:g} (no validation split given)",
        }
    temperature, threshold = float(calib["temperature"]), float(calib["threshold"])
    warnings: list[str] = []
    if calib.get("temperature_at_bound"):
        warnings.append(
            f"the calibration temperature {temperature:g} sits at a bound of its search range {list(T_BOUNDS)}: the "
            f"validation split ({calib.get('n_val', '?')} images) is perfectly separated or too small to fit it, so "
            "the calibrated probabilities are not to be trusted (the ranking metrics are unaffected)"
        )

    z = score(frame, "score")
    raw, cal = calibrated(z, 1.0), calibrated(z, temperature)
    y = frame["target"].to_numpy()
    preds = predictions_frame(frame, cal, threshold, raw)

    metrics: dict = {
        "level": "frame",
        **binary_metrics(y, cal, threshold),
        "threshold_rule": calib["threshold_rule"],
        "temperature": temperature,
    }
    uncalibrated = binary_metrics(y, raw)
    metrics["calibration"] = {
        "temperature": temperature,
        "fit_split": calib["fit_split"],
        "ece_bins": cfg.ece_bins,
        "ece_before": expected_calibration_error(y, raw, cfg.ece_bins),
        "ece_after": expected_calibration_error(y, cal, cfg.ece_bins),
        "log_loss_before": uncalibrated["log_loss"],
        "log_loss_after": metrics["log_loss"],
        "brier_before": uncalibrated["brier"],
        "brier_after": metrics["brier"],
    }
    if calibration is None:  # the fit's own validation figures; a given calibration's belong to another dataset
        metrics["calibration"].update(
            {k: calib[k] for k in ("val_ece_before", "val_ece_after", "val_nll_before", "val_nll_after") if k in calib}
        )
    metrics["warnings"] = warnings
    for w in warnings:
        log.warning(w)
    kind = kind_column(frame)
    if kind is not None:
        metrics["per_kind"] = {"column": kind, "kinds": per_kind(y, cal, frame[kind], threshold)}
    if cfg.bootstrap > 0:
        metrics["ci"] = group_bootstrap_ci(
            y, cal, frame["group"].tolist(), threshold, cfg.bootstrap, cfg.ci_level, cfg.seed
        )

    unit, reason = video_unit(frame)
    videos = pd.DataFrame(columns=VIDEO_COLUMNS)
    if unit is None:
        metrics["video_level"] = {"applicable": False, "note": reason}
    else:
        videos = video_table(preds, unit, kind)
        metrics["video_level"] = video_metrics(videos, threshold, unit, reason, cfg.bootstrap, cfg.ci_level, cfg.seed)
    metrics["video_level"]["frame_roc_auc"] = metrics["roc_auc"]

    robust = robustness_table(
        model,
        frame,
        root,
        size,
        device,
        cfg.perturbations(),
        temperature,
        threshold,
        z,
        cfg.batch_size,
        cfg.num_workers,
        prep.mean,
        prep.std,
    )
    if len(robust) > 1:
        metrics["robustness"] = {r.perturbation: _none_if_nan(r.roc_auc) for r in robust.itertuples()}

    if cfg.latency_images > 0:
        paths = [Path(root) / p for p in frame["path"].iloc[: cfg.latency_images]]
        metrics.update(measure_latency(model, paths, prep, device))
    metrics.update(
        {
            "arch": ckpt["arch"],
            "weights_used": ckpt.get("weights_used", "unknown"),
            "checkpoint_epoch": int(ckpt.get("epoch", 0)),
            "image_size": size,
        }
    )
    calib.update(  # calibration.json names the checkpoint it was fitted for, with its SHA-256 (checked on loading)
        {
            "arch": ckpt["arch"],
            "image_size": size,
            "checkpoint_epoch": int(ckpt.get("epoch", 0)),
            **checkpoint_record(checkpoint),
        }
    )
    return EvalResult(preds, metrics, calib, val_preds, robust, videos)


def write_outputs(
    result: EvalResult, out_dir: str | os.PathLike, write_calibration: bool = True, ece_bins: int = 15
) -> dict[str, Path]:
    """Write the evaluation's tables under ``out_dir``.

    ``predictions.csv`` (and ``val_predictions.csv``), ``roc.csv``,
    ``pr.csv``, ``reliability_uncalibrated.csv`` / ``reliability_calibrated.csv`` (the test
    split before and after temperature scaling), ``robustness.csv``, ``videos.csv`` (header
    only without videos) and, when ``write_calibration``, ``calibration.json``. The metrics files
    (``metrics.json``, ``details.json``, ``timings.json``) are the stage's: ``deepfake.pipeline.stages``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preds = result.predictions
    y = preds["target"]
    tables = {
        "predictions": preds,
        "roc": pd.DataFrame(roc_points(y, preds["score"])),
        "pr": pd.DataFrame(pr_points(y, preds["score"])),
        "reliability_calibrated": reliability_table(y, preds["score"], ece_bins),
        "robustness": result.robustness,
        "videos": result.videos,
    }
    if "score_raw" in preds.columns:
        tables["reliability_uncalibrated"] = reliability_table(y, preds["score_raw"], ece_bins)
    if result.val_predictions is not None:
        tables["val_predictions"] = result.val_predictions
    written = {}
    for name, table in tables.items():
        written[name] = out / f"{name}.csv"
        with atomic_path(written[name]) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
    if write_calibration:
        c = result.calibration
        extra = {k: v for k, v in c.items() if k not in ("temperature", "threshold", "threshold_rule")}
        written["calibration"] = save_calibration(
            out / "calibration.json", c["temperature"], c["threshold"], c["threshold_rule"], **extra
        )
    return written
