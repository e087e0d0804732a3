"""Stage functions behind the notebooks.

Each pipeline notebook opens its stage with ``open_stage`` (params.yaml read and validated,
the folders it reads and writes) and calls one ``run_*`` function here. The notebooks' default
is a quick check (``quick=True``) that reads and writes under ``build/quick/`` with
``deepfake.pipeline.quick.QUICK_OVERRIDES``, building any missing upstream input on a tiny dataset.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..core import paths, progress
from ..core.config import DataConfig
from ..core.utils import prepare_output_dir, write_json
from ..data.layouts import LayoutConfig
from ..data.preprocess import PreprocessConfig, PreprocessResult
from ..data.shortcuts import ShortcutAudit, audit_shortcuts, sources_of
from ..data.split import (
    SplitConfig,
    balance_table,
    check_labels,
    check_leakage,
    has_given_split,
    index_dataset,
    keep_given_split,
    read_split,
    split_dataset,
    write_splits,
)
from ..evaluation.evaluate import EvalConfig, EvalResult
from ..training.config import TrainConfig
from ..training.distributed import env_rank
from ..training.train import TrainResult
from .params import Params, load_params
from .quick import (
    QUICK_CROSS_NAME,
    QUICK_OVERRIDES,
    ensure_quick_cross_dataset,
    ensure_quick_mixed_dataset,
    merge_overrides,
)

log = logging.getLogger(__name__)

STAGES = ("preprocess", "split", "train", "evaluate", "cross", "benchmark", "plots", "demo")


@dataclass(frozen=True)
class Stage:
    """A stage about to run: its name, every validated setting, and where it reads and writes."""

    name: str
    params: Params
    where: paths.Layout
    quick: bool


def open_stage(
    name: str,
    params_file: str | os.PathLike = paths.PARAMS_FILE,
    quick: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Stage:
    """Validate ``params_file`` (every section, within seconds) and return the stage's settings and folders.

    ``quick`` applies ``deepfake.pipeline.quick.QUICK_OVERRIDES`` (before ``overrides``), uses
    ``build/quick/`` and builds any missing upstream output on the tiny quick dataset.
    """
    # in a pipeline stage: messages and progress to the stage log; else to the cell output
    progress.configure_logging()
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)}")
    layers = merge_overrides(QUICK_OVERRIDES if quick else None, overrides)
    params = load_params(params_file, layers)
    where = paths.layout(params.data.raw_dir, params.data.faces_dir, quick)
    if quick:
        ensure_upstream(name, params, where)
    return Stage(name, params, where, quick)


def ensure_upstream(stage: str, params: Any, where: paths.Layout) -> None:
    """Run, on the quick dataset, every stage before ``stage`` whose output is missing."""
    order = ("preprocess", "split", "train", "evaluate", "plots")
    upto = order.index(stage) if stage in order else len(order) - 1
    ensure_quick_mixed_dataset(where.raw, replace(params.synth, workers=1))
    if upto > 0 and not (where.faces / "manifest.csv").is_file():
        run_preprocess(where.raw, where.faces, where.preprocess_reports, params.preprocess, params.data, progress=False)
    if upto > 1 and not all((where.splits / f"{s}.csv").is_file() for s in ("train", "val", "test")):
        run_split(where.faces, where.splits, where.split_reports, params.split)
    if upto > 2 and not where.checkpoint.is_file():
        run_train(params.train, where.faces, where.splits, where.models, where.train_reports)
    needed = ("predictions.csv", "calibration.json", "robustness.csv", "reliability_calibrated.csv")
    if upto > 3 and not all((where.eval_reports / f).is_file() for f in needed):
        run_evaluate(params.evaluate, where.checkpoint, where.faces, where.splits, where.eval_reports)
    if stage == "benchmark" and not (where.cross_reports(QUICK_CROSS_NAME) / "details.json").is_file():
        data = ensure_quick_cross_dataset(where.raw.parent / "raw_cross")
        run_cross_evaluate(
            params.evaluate,
            where.checkpoint,
            where.calibration,
            data,
            where.cross_faces(QUICK_CROSS_NAME),
            where.cross_reports(QUICK_CROSS_NAME),
            params.preprocess,
            figures=False,
            progress=False,
        )


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


@dataclass
class SplitResult:
    frame: pd.DataFrame
    leakage: dict
    balance: pd.DataFrame
    manifests: dict[str, Path]
    duplicates: pd.DataFrame | None = None  # duplicate pairs found by the audit
    audit: dict | None = None  # duplicate counts (also in leakage.json)
    shortcuts: ShortcutAudit | None = None  # file properties per class and the AUC each reaches alone
    warnings: list[str] = field(default_factory=list)  # what the report's reader must know


def run_split(
    raw_dir: str | os.PathLike,
    splits_dir: str | os.PathLike,
    reports_dir: str | os.PathLike,
    cfg: SplitConfig,
    sources_dir: str | os.PathLike | None = None,
) -> SplitResult:
    """Index ``raw_dir``, split it, audit duplicates, check for leakage and write manifests and reports.

    A ``split`` column in the dataset's manifest (the preprocess stage's ``keep_splits``) is
    kept; otherwise groups are assigned by ``split_dataset``. Writes ``train.csv``/``val.csv``/
    ``test.csv`` under ``splits_dir`` and ``metrics.json`` (the headline: sizes, leaks, the
    strongest shortcut), ``leakage.json`` (details), ``balance.csv`` and ``duplicates.csv``
    under ``reports_dir``. Raises ``DuplicateLeakageError`` (exact or near
    duplicates across splits, unless ``cfg.dedupe``) after writing ``duplicates.csv`` only, and
    ``LeakageError`` before writing anything when a group would cross splits.

    With ``sources_dir`` (the original dataset of a preprocess cache) the originals' file
    properties are audited for shortcuts (``deepfake.data.shortcuts``): ``shortcuts.csv``, and in
    ``leakage.json`` the AUC each property reaches alone and the warnings. Small validation
    splits are warned about too (``SplitConfig.min_val_images`` / ``min_val_groups``).
    """
    from ..data.audit import audit_duplicates

    root = paths.resolve(raw_dir)
    index = index_dataset(root)
    check_labels(index, paths.shown(root))
    frame = keep_given_split(index, cfg) if has_given_split(index) else split_dataset(index, cfg)
    out = paths.resolve(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    audit = audit_duplicates(frame, root, cfg.near_dup_bits, cfg.dedupe, report=out / "duplicates.csv")
    frame = audit.frame
    report = check_leakage(frame)
    table = balance_table(frame)
    manifests = write_splits(frame, paths.resolve(splits_dir))
    shortcuts = None
    if sources_dir is not None and "source" in frame.columns:
        shortcuts = audit_shortcuts(*sources_of(frame, paths.resolve_data(sources_dir)))
        shortcuts.table.to_csv(out / "shortcuts.csv", index=False)
    warnings = small_validation_warnings(frame, cfg) + (shortcuts.warnings if shortcuts else [])
    write_json(
        out / "leakage.json",
        {
            "groups_across_splits": len(report["groups_across_splits"]),
            "identical_files_across_splits": len(report["identical_files_across_splits"]),
            "n_groups": report["n_groups"],
            "n_images": report["n_images"],
            **audit.summary,
            "shortcuts": shortcuts.summary() if shortcuts else None,
            "warnings": warnings,
        },
    )
    table.to_csv(out / "balance.csv")
    headline: dict[str, Any] = {
        "n_images": report["n_images"],
        "n_groups": report["n_groups"],
        **{f"{s}_images": int(table.loc[s, "total"]) for s in table.index if s in ("train", "val", "test")},
        "groups_across_splits": len(report["groups_across_splits"]),
        "identical_files_across_splits": len(report["identical_files_across_splits"]),
        "near_duplicates_across_splits": audit.summary.get("near_duplicate_pairs_across_splits", 0),
    }
    strongest = shortcuts.max_auc() if shortcuts is not None else None
    if strongest is not None:  # properties without an AUC are left out; none with one: no headline
        headline["shortcut_max_auc"] = strongest
    headline["warnings"] = len(warnings)
    write_json(out / "metrics.json", headline)
    return SplitResult(frame, report, table, manifests, audit.pairs, audit.summary, shortcuts, warnings)


def small_validation_warnings(frame: pd.DataFrame, cfg: SplitConfig) -> list[str]:
    """Warnings (also logged) when the validation split is too small to choose an epoch or a threshold on."""
    val = frame[frame["split"] == "val"]
    n, groups = len(val), val["group"].nunique()
    out = []
    if n < cfg.min_val_images or groups < cfg.min_val_groups:
        out.append(
            f"the validation split holds {n} images in {groups} groups (fewer than {cfg.min_val_images} images or "
            f"{cfg.min_val_groups} groups): the best epoch, the threshold and the calibration chosen on it are "
            "noisy; raise split.val_frac or add data"
        )
    for w in out:
        log.warning(w)
    return out


#: The training report's figure of self-blended pseudo-fakes and their masks.
PSEUDO_FAKES_FIGURE = "pseudo_fakes.png"
#: The preprocess report's figure of crops, landmarks and photos without a face.
FACE_CHECK_FIGURE = "faces.png"


#: What a preprocess run did this time (decoded or reused, how fast): ``timings.json``, not the metrics.
PREPROCESS_RUN_KEYS = ("processed_now", "reused", "workers", "seconds", "images_per_second", "merged_shards")


def run_preprocess(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    reports_dir: str | os.PathLike,
    cfg: PreprocessConfig,
    data: DataConfig | None = None,
    progress: bool = True,
) -> PreprocessResult:
    """Build the face-crop cache of ``raw_dir`` in ``out_dir``; write the summary, the skip list
    and the face check figure (``faces.png``: crops with landmarks, photos without a face) to ``reports_dir``.

    ``data`` (``params.yaml``'s ``data`` section) says how the dataset is laid out
    (``deepfake.data.layouts``); by default, ``params.yaml``'s.

    With ``cfg.shard`` ``K/N`` the stage runs that shard, then merges the N shards when this one was
    the last to finish; otherwise it stops with ``ShardsIncomplete`` naming the shards still to run
    (a stage that ended without its manifest must not look done to DVC).
    """
    from ..data.preprocess import Shard, preprocess
    from ..evaluation import plots
    from . import tracking

    out = prepare_output_dir(paths.resolve(reports_dir))  # before the long work, not after it
    layout = LayoutConfig.of(data) if data is not None else LayoutConfig()
    shard = Shard.parse(cfg.shard)
    raw = paths.resolve_data(raw_dir)
    if shard is not None:
        preprocess(raw, paths.resolve(out_dir), cfg, progress=progress, layout=layout)
        log.info(f"shard {shard} finished; merging the {shard.count} shards if every one has")
        cfg = replace(cfg, shard="")
    merge = shard.count if shard is not None else 0
    result = preprocess(raw, paths.resolve(out_dir), cfg, progress=progress, layout=layout, merge_shards=merge)
    details, timings = tracking.split_timings(result.summary, PREPROCESS_RUN_KEYS)
    tracking.write_stage_reports(out, details, timings, tracking.headline_preprocess(result.summary))
    if result.up_to_date:
        log.info("the face cache is up to date: nothing decoded")
    else:
        log.info(
            f"decoded {timings['processed_now']} source(s) in {timings['seconds']:.1f} s "
            f"({timings['images_per_second']} images/s), reused {timings['reused']}"
        )
    if len(result.skipped):
        reasons = ", ".join(f"{k} {v}" for k, v in result.summary["skipped_by_reason"].items())
        log.info(f"{len(result.skipped)} input(s) skipped, listed in {paths.shown(out / 'skipped.csv')}: {reasons}")
    if result.summary["unsupported_by_extension"]:
        exts = ", ".join(f"{k} {v}" for k, v in result.summary["unsupported_by_extension"].items())
        log.info(f"files that are neither images nor videos, by extension: {exts}")
    result.skipped.to_csv(out / "skipped.csv", index=False)
    if len(result.manifest) or len(result.skipped):
        fig = plots.face_check(result.manifest, result.out_dir, result.skipped, raw if raw.is_dir() else raw.parent)
        plots.save(fig, out / FACE_CHECK_FIGURE)
    return result


def run_train(
    cfg: TrainConfig,
    faces_dir: str | os.PathLike,
    splits_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    reports_dir: str | os.PathLike,
) -> TrainResult:
    """Train on ``faces_dir`` (the split manifests' root), tracked with DVCLive in ``reports_dir``
    (per-epoch metrics as each epoch ends, headline ``metrics.json``), then write ``details.json``,
    ``timings.json`` and ``pseudo_fakes.png`` (self-blended examples of training crops, with their masks)."""
    from ..evaluation import plots
    from ..training.train import blend_examples, train
    from . import tracking

    out = paths.resolve(reports_dir)
    if env_rank() == 0:
        prepare_output_dir(out)  # before the first epoch, not after the last
    tracker = tracking.TrainTracker(out, resume=cfg.resume) if env_rank() == 0 else None
    result = train(
        cfg,
        paths.resolve(splits_dir),
        paths.resolve(faces_dir),
        paths.resolve(model_dir),
        on_epoch=tracker.epoch if tracker is not None else None,
    )
    if result.is_main:  # under torchrun, rank 0 writes the reports
        if tracker is not None:
            tracker.finish(tracking.headline_train(result.summary), len(result.history))
        tracking.write_stage_reports(out, result.summary, result.timings)
        examples = blend_examples(cfg, paths.resolve(splits_dir), paths.resolve(faces_dir))
        off = "" if cfg.blend().on else "self_blend is off: pseudo-fakes it would make from these training crops"
        plots.save(plots.pseudo_fakes(examples, title=off or None), out / PSEUDO_FAKES_FIGURE)
    return result


def write_eval_outputs(result: EvalResult, out: Path, write_calibration: bool, ece_bins: int) -> dict[str, Path]:
    """The evaluation's tables (``deepfake.evaluation.evaluate.write_outputs``) and its metrics files:
    ``metrics.json`` (the headline numbers, through DVCLive: ``tracking.headline_eval``), ``details.json``
    (every metric) and ``timings.json`` (latency: it differs between runs)."""
    from ..evaluation.evaluate import TIMING_KEYS, write_outputs
    from . import tracking

    written = write_outputs(result, out, write_calibration=write_calibration, ece_bins=ece_bins)
    details, timings = tracking.split_timings(result.metrics, TIMING_KEYS)
    tracking.write_stage_reports(out, details, timings)
    tracking.log_headline(out, tracking.headline_eval(details))
    written.update({name: out / f"{name}.json" for name in ("metrics", "details", "timings")})
    return written


def run_evaluate(
    cfg: EvalConfig,
    checkpoint: str | os.PathLike,
    faces_dir: str | os.PathLike,
    splits_dir: str | os.PathLike,
    reports_dir: str | os.PathLike,
    split: str = "test",
    calibration_split: str = "val",
) -> EvalResult:
    """Evaluate one split with a checkpoint, calibrated and thresholded on another.

    Fits the temperature and picks the threshold on ``calibration_split`` (never the split
    being evaluated), then writes predictions, metrics (with bootstrap intervals, video level
    and robustness), curves and ``calibration.json`` under ``reports_dir``.

    Returns:
        The ``deepfake.evaluation.evaluate.EvalResult``.
    """
    from ..evaluation.evaluate import evaluate

    if split == calibration_split:
        raise ValueError(
            f"the threshold and temperature must come from another split than the evaluated one ({split!r})"
        )
    splits = paths.resolve(splits_dir)
    frame, val = read_split(splits, split), read_split(splits, calibration_split)
    out = prepare_output_dir(paths.resolve(reports_dir))
    result = evaluate(paths.resolve(checkpoint), frame, paths.resolve(faces_dir), cfg, val=val)
    result.metrics = {"split": split, "calibration_split": calibration_split, **result.metrics}
    write_eval_outputs(result, out, write_calibration=True, ece_bins=cfg.ece_bins)
    if "latency_ms_median" in result.metrics:
        m = result.metrics
        log.info(
            f"latency, file to probability, one image at a time on {m.get('device')}: median "
            f"{m['latency_ms_median']:.1f} ms, p90 {m['latency_ms_p90']:.1f} ms ({m['latency_images']} images)"
        )
    return result


def run_cross_evaluate(
    cfg: EvalConfig,
    checkpoint: str | os.PathLike,
    calibration_file: str | os.PathLike,
    data_dir: str | os.PathLike,
    faces_dir: str | os.PathLike,
    reports_dir: str | os.PathLike,
    preprocess_cfg: PreprocessConfig,
    figures: bool = True,
    progress: bool = True,
) -> EvalResult:
    """Score every image and video of a second dataset with a trained model, fitting nothing on it.

    ``data_dir`` is any dataset the preprocess stage reads (folders, a manifest, videos). Its
    faces are cropped by the preprocess stage's own code into ``faces_dir`` with the
    checkpoint's preprocessing contract (detection, detector, margin, crop size, frames per
    video; ``preprocess_cfg`` gives the rest: folder names, workers, size limits), then scored
    like the evaluate stage scores its test split, with the in-distribution temperature and
    threshold of ``calibration_file``. Writes predictions, metrics (with video-level results
    when there are videos), curves, ``skipped.csv`` and figures under ``reports_dir``.
    """
    from ..evaluation.evaluate import evaluate
    from ..metrics.calibration import load_calibration
    from ..models.checkpoint import preprocessing_of, read_checkpoint

    cfg = replace(
        cfg.without_robustness(), latency_images=0
    )  # this dataset's clean scores; latency is the evaluate stage's
    ckpt_path, calib_path, data = (
        paths.resolve(checkpoint),
        paths.resolve(calibration_file),
        paths.resolve_data(data_dir),
    )
    prep = preprocessing_of(read_checkpoint(ckpt_path), ckpt_path)
    if prep.crop == "none":
        log.warning(
            "%s was trained on whole images (no face cache): the second dataset is scored on centre squares", ckpt_path
        )
    pcfg = replace(
        preprocess_cfg,
        detect=prep.detect,
        no_face=prep.no_face,
        margin=prep.margin,
        size=prep.crop_size or prep.input_size,
        frames_per_video=prep.frames_per_video,
        min_side=prep.min_side,
        keep_splits=False,
        shard="",  # the whole second dataset: shards are the preprocess stage's
    )
    out = prepare_output_dir(paths.resolve(reports_dir))
    from ..data.preprocess import preprocess

    # any layout the folder has (a benchmark's too), whatever the training data's was; with
    # cross_split "test", only the dataset's official test split when its adapter gives one
    only = "test" if cfg.cross_split == "test" else ""
    layout = LayoutConfig(layout="auto")
    cache = preprocess(data, paths.resolve(faces_dir), pcfg, progress=progress, layout=layout, only_split=only)
    cache.skipped.to_csv(out / "skipped.csv", index=False)  # its counts go into metrics.json
    if cache.manifest.empty:
        raise ValueError(f"no usable image in {data}: every input was skipped (see {out / 'skipped.csv'})")
    frame = index_dataset(paths.resolve(faces_dir), hashes=False)
    official = only and "split" in frame.columns and frame["split"].eq("test").all()
    result = evaluate(
        ckpt_path, frame, paths.resolve(faces_dir), cfg, calibration=load_calibration(calib_path, checkpoint=ckpt_path)
    )
    counts = {k: cache.summary.get(k) for k in ("images", "videos", "faces_found", "no_face", "written", "skipped")}
    what = "its official test split" if official else "all images"
    result.metrics = {
        "dataset": os.path.normpath(data),
        "split": f"{what} (cross-dataset, nothing fitted on it)",
        "calibration_from": os.path.normpath(calib_path),
        "preprocess": counts,
        **result.metrics,
    }
    write_eval_outputs(result, out, write_calibration=False, ece_bins=cfg.ece_bins)
    if figures:
        threshold = result.calibration["threshold"]
        _draw(
            _eval_figures(result.predictions, out, threshold, paths.resolve(faces_dir), result.metrics), out / "figures"
        )
    return result


def _eval_figures(
    preds: pd.DataFrame, eval_dir: Path, threshold: float, raw_dir: Path, metrics: dict, gallery_size: int = 6
) -> dict:
    """The figures drawn from one evaluation's files; ``metrics`` gives their titles the split, n and intervals."""
    from ..evaluation import plots

    figs = {
        "confusion_matrix": lambda: plots.confusion(preds, metrics),
        "roc_curve": lambda: plots.roc_curve(pd.read_csv(eval_dir / "roc.csv"), preds, threshold, metrics),
        "pr_curve": lambda: plots.pr_curve(pd.read_csv(eval_dir / "pr.csv"), preds, threshold, metrics),
        "score_distributions": lambda: plots.score_distributions(preds, threshold, metrics),
        "per_kind": lambda: plots.per_kind(metrics),
    }
    tables = {name: eval_dir / f"reliability_{name}.csv" for name in ("uncalibrated", "calibrated")}
    if all(p.exists() for p in tables.values()):
        cal = metrics.get("calibration", {})
        eces = {"uncalibrated": cal.get("ece_before"), "calibrated": cal.get("ece_after")}
        figs["reliability_diagram"] = lambda: plots.reliability_diagram(
            {k: pd.read_csv(p) for k, p in tables.items()}, {k: v for k, v in eces.items() if v is not None}, metrics
        )
    robust = eval_dir / "robustness.csv"
    if robust.exists():  # always drawn (says so when no perturbation is configured): a fixed set of outputs
        figs["robustness_curves"] = lambda: plots.robustness_curves(pd.read_csv(robust, keep_default_na=True), metrics)
    if gallery_size > 0:
        figs["confident_mistakes"] = lambda: plots.mistakes_gallery(preds, raw_dir, gallery_size, metrics)
    return figs


def _draw(figs: dict, out: Path) -> dict[str, Path]:
    """Draw and save each figure (PNG and SVG) under ``out``; the PNG paths by name."""
    from ..evaluation import plots

    return {name: plots.save(make(), out / f"{name}.png") for name, make in figs.items()}


def training_set_name(faces_dir: str | os.PathLike, raw_dir: str | os.PathLike) -> str:
    """The training dataset's name in tables: the benchmark a dataset adapter recognised (the face
    cache's ``dataset`` column, named as papers name it), else the dataset folder's name."""
    from ..evaluation.benchmark import DISPLAY_NAMES

    manifest = paths.resolve(faces_dir) / "manifest.csv"
    if manifest.is_file():
        head = pd.read_csv(manifest, nrows=0).columns
        if "dataset" in head:
            names = pd.read_csv(manifest, usecols=["dataset"], dtype=str, keep_default_na=False)["dataset"]
            found = sorted(set(names) - {""})
            if found:
                return " + ".join(DISPLAY_NAMES.get(n, n) for n in found)
    return paths.resolve(raw_dir).name


def run_benchmark(
    eval_reports: str | os.PathLike,
    cross_reports: dict[str, Path],
    out_dir: str | os.PathLike,
    train_set: str,
) -> pd.DataFrame:
    """The benchmark table of the trained detector: its test split (``eval_reports``) and every
    cross-dataset test set (``cross_reports``: name -> the cross stage's reports folder), written
    to ``out_dir`` as ``table.csv`` (long: a row per test set, kind of fake and level),
    ``table.md`` (papers' layout) and ``benchmark.png``/``.svg``. Returns the long table."""
    from ..evaluation.benchmark import collect, write_benchmark

    out = prepare_output_dir(paths.resolve(out_dir))
    long = collect(paths.resolve(eval_reports), {k: paths.resolve(v) for k, v in cross_reports.items()}, train_set)
    write_benchmark(long, out)
    sets = ", ".join(dict.fromkeys(long["test_set"]))
    log.info("benchmark table: %d row(s) over %s -> %s", len(long), sets, paths.shown(out / "table.md"))
    return long


def run_plots(
    train_reports: str | os.PathLike,
    eval_reports: str | os.PathLike,
    figures_dir: str | os.PathLike,
    raw_dir: str | os.PathLike,
    gallery_size: int = 6,
) -> dict[str, Path]:
    """Draw the standard figures from the train and evaluate reports into ``figures_dir``.

    The threshold drawn is the one of ``calibration.json`` (chosen on validation); titles take
    the split, n and intervals from the evaluation's ``details.json``; the training curves
    (the DVCLive history) mark the training's ``best_epoch``; the gallery shows images from
    ``raw_dir``. Returns the PNG paths by name (an SVG lies beside each).
    """
    import json

    from ..evaluation import plots
    from ..metrics.calibration import load_calibration
    from . import tracking

    train_dir, eval_dir, out = paths.resolve(train_reports), paths.resolve(eval_reports), paths.resolve(figures_dir)
    history = tracking.read_history(train_dir)
    best_epoch = json.loads((train_dir / tracking.DETAILS_FILE).read_text()).get("best_epoch")
    preds = pd.read_csv(eval_dir / "predictions.csv", dtype={"group": str, "path": str}, keep_default_na=False)
    threshold = load_calibration(eval_dir / "calibration.json")["threshold"]
    metrics = json.loads((eval_dir / tracking.DETAILS_FILE).read_text())
    figs = {
        "training_curves": lambda: plots.training_curves(history, best_epoch),
        **_eval_figures(preds, eval_dir, threshold, paths.resolve(raw_dir), metrics, gallery_size),
    }
    return _draw(figs, out)
