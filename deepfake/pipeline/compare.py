"""``python -m deepfake compare``: several detectors trained on the same split, one table.

Each detector (``resnet18``, ``dilated_cnn``, any timm model name) is trained by the train stage's
own function (``stages.run_train``) on the split stage's manifests and the face cache, with
params.yaml's settings (and the overrides given) but for its architecture, then scored on the
test split by the evaluate stage's own function (``stages.run_evaluate``: temperature and
threshold fitted on validation, group-bootstrap intervals, per kind of fake, single-image
latency). Beside the evaluate stage's exact latency, the int8 runtime of the predictor is timed
on the same images where it compiles the network (``deepfake.inference.backends``), with the
largest probability change it brings. ``deepfake.evaluation.comparison`` writes the table and
its figure; every detector's own reports stay under ``<out>/<detector>/{train,eval}``,
its checkpoints under ``<models>/<detector>/``, and ``settings.json`` records what ran where.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..core import paths
from ..core.utils import prepare_output_dir, write_json
from ..data.inputs import load_input, to_model_tensor
from ..data.split import read_split
from ..evaluation.comparison import comparison_table, detector_row, write_comparison
from ..evaluation.evaluate import measure_latency
from ..inference.backends import make_runtime
from ..models.architectures import check_arch
from ..models.checkpoint import load_checkpoint, preprocessing_of
from ..training.scoring import forward_logits
from .params import Params
from .stages import run_evaluate, run_train

log = logging.getLogger(__name__)

#: Validation images the int8 runtime is calibrated on.
INT8_CALIBRATION_IMAGES = 64


@dataclass(frozen=True)
class CompareConfig:
    """What ``compare_detectors`` runs.

    Attributes:
        archs: the detectors' architectures, in the table's order.
        epochs: epochs for every detector (None: ``train.epochs``).
        image_size: network input side for every detector (None: ``train.image_size``).
        int8: also time the int8 runtime (on a CPU) where it compiles the network.
        robustness: keep the evaluate section's robustness levels (each detector re-scores the
            test split under every one: slow); off, only the clean test split is scored.
    """

    archs: tuple[str, ...]
    epochs: int | None = None
    image_size: int | None = None
    int8: bool = True
    robustness: bool = False

    def __post_init__(self) -> None:
        if not self.archs:
            raise ValueError("name at least one detector (--arch resnet18 efficientnet_b0 ...)")
        twice = sorted({a for a in self.archs if self.archs.count(a) > 1})
        if twice:
            raise ValueError(f"detectors named twice: {twice}; each gets its own row and folder")
        for arch in self.archs:  # every name checked before any training starts
            check_arch(arch)
        for name, value in (("epochs", self.epochs), ("image_size", self.image_size)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


def folder_name(arch: str) -> str:
    """A detector's folder: its architecture, with characters folders should not hold replaced."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in arch)


@torch.inference_mode()
def int8_latency(
    checkpoint: str | os.PathLike,
    timed: list[Path],
    calibration: list[Path],
) -> dict[str, Any]:
    """Single-image latency of the int8 runtime (file to probability, on a CPU) on ``timed``, and the
    largest change of probability it brings against the exact model on them; when the runtime
    cannot compile the network, ``note`` says why (and no latency)."""
    model, ckpt = load_checkpoint(checkpoint, "cpu")
    prep = preprocessing_of(ckpt, checkpoint)
    size = prep.input_size

    def batch(files: list[Path]) -> torch.Tensor:
        x = torch.from_numpy(np.stack([load_input(f, size) for f in files]))  # (B, S, S, 3) uint8
        return to_model_tensor(x, prep.mean, prep.std).contiguous(memory_format=torch.channels_last)

    example = batch(calibration[:1])
    chunks = [calibration[i : i + 16] for i in range(0, len(calibration), 16)]
    runtime = make_runtime(model, "int8", example, lambda: (batch(c) for c in chunks))
    if runtime.backend != "int8":
        return {"note": runtime.note}
    cpu = torch.device("cpu")
    timing = measure_latency(runtime.run, timed, prep, cpu)
    x = batch(timed)
    exact = torch.sigmoid(forward_logits(model, x, cpu))
    fast = torch.sigmoid(forward_logits(runtime.run, x, cpu))
    return {**timing, "max_probability_change": float((fast - exact).abs().max())}


def compare_detectors(
    params: Params,
    cfg: CompareConfig,
    out_dir: str | os.PathLike,
    models_dir: str | os.PathLike,
    faces_dir: str | os.PathLike | None = None,
    splits_dir: str | os.PathLike | None = None,
) -> Any:
    """Train and evaluate every detector of ``cfg`` on the same split; write the table and figure.

    Args:
        params: the validated params (``train`` and ``evaluate`` sections are each detector's,
            but for ``arch``, ``epochs`` and ``image_size``).
        out_dir: the table, figure, ``settings.json`` and each detector's reports.
        models_dir: each detector's checkpoints (``<models_dir>/<detector>/best.pt``).
        faces_dir, splits_dir: the face cache and the split stage's manifests (default: params').

    Returns:
        The table (``deepfake.evaluation.comparison.comparison_table``).
    """
    where = paths.layout(params.data.raw_dir, params.data.faces_dir)
    faces = paths.resolve(faces_dir) if faces_dir is not None else where.faces
    splits = paths.resolve(splits_dir) if splits_dir is not None else where.splits
    missing = [str(splits / f"{s}.csv") for s in ("train", "val", "test") if not (splits / f"{s}.csv").is_file()]
    if missing:
        raise FileNotFoundError(
            f"the split stage's manifests are missing ({', '.join(missing)}): run dvc repro split first"
        )
    out = prepare_output_dir(paths.resolve(out_dir))
    models = paths.resolve(models_dir)
    evaluate = params.evaluate if cfg.robustness else params.evaluate.without_robustness()
    val, test = read_split(splits, "val"), read_split(splits, "test")
    timed = [faces / p for p in test["path"].iloc[: evaluate.latency_images]]
    calibration = [faces / p for p in val["path"].iloc[:INT8_CALIBRATION_IMAGES]]
    rows, runs = [], {}
    for i, arch in enumerate(cfg.archs, 1):
        name = folder_name(arch)
        train_cfg = replace(
            params.train,
            arch=arch,
            epochs=cfg.epochs or params.train.epochs,
            image_size=cfg.image_size or params.train.image_size,
            resume=False,
        )
        log.info(f"compare {i}/{len(cfg.archs)}: {arch}, {train_cfg.epochs} epoch(s) at {train_cfg.image_size} px")
        t0 = time.perf_counter()
        trained = run_train(train_cfg, faces, splits, models / name, out / name / "train")
        evaluated = run_evaluate(evaluate, models / name / "best.pt", faces, splits, out / name / "eval")
        int8: dict[str, Any] = {}
        if cfg.int8 and timed and calibration:
            int8 = int8_latency(models / name / "best.pt", timed, calibration)
        elif cfg.int8:
            int8 = {"note": "no images to time (evaluate.latency_images is 0)"}
        rows.append(detector_row(arch, trained.summary, trained.timings, evaluated.metrics, int8))
        runs[arch] = {"seconds": round(time.perf_counter() - t0, 1), "config": asdict(train_cfg)}
        log.info(
            f"{arch}: test ROC-AUC {rows[-1]['test_roc_auc']:.3f}, {rows[-1]['parameters']:,} parameters "
            f"({runs[arch]['seconds']:.0f} s)"
        )
    table = comparison_table(rows)
    written = write_comparison(table, out)
    write_json(
        out / "settings.json",
        {
            "detectors": list(cfg.archs),
            "compare": asdict(cfg),
            "params_file": str(params.file),
            "faces_dir": str(faces),
            "splits_dir": str(splits),
            "split_sizes": {s: int(len(read_split(splits, s))) for s in ("train", "val", "test")},
            "evaluate": asdict(evaluate),
            "runs": runs,
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            },
            "package_version": __version__,
        },
    )
    log.info(f"comparison of {len(rows)} detector(s) -> {paths.shown(written['markdown'])}")
    return table
