"""What self-blending costs a training epoch: ``train.self_blend`` off, add and only, side by side.

One command prints the machine and the table (markdown):

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_blend.py --faces cache/faces --splits reports/split

For each mode, one training epoch of ``deepfake.training.train`` (ResNet18 from random initialisation,
the settings of ``params.yaml`` otherwise, ``--batches`` training batches, then its validation
pass) on the preprocess cache and its training split, on the CPU; rounds interleave the modes,
best of ``--repeats``. Also the data path alone (loading, blending where the mode makes a
pseudo-fake, augmenting; no model), per training item. A full epoch has ``items`` of them:
``add`` more than ``off`` (the pseudo-fakes), ``only`` two per real image.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake.data.inputs import read_contract  # noqa: E402
from deepfake.data.split import read_split  # noqa: E402
from deepfake.training.loading import ImageDataset  # noqa: E402
from deepfake.training.train import TrainConfig, crop_landmarks, train  # noqa: E402

MODES = ("off", "add", "only")


def data_path_ms(cfg: TrainConfig, faces: Path, splits: Path, n: int) -> float:
    """Milliseconds per image to load, blend (where the mode makes a pseudo-fake) and augment."""
    frame = read_split(splits, "train")
    contract = read_contract(faces, cfg.image_size)
    blend = cfg.blend(contract.margin)
    marks = crop_landmarks(frame, contract, cfg.image_size)
    ds = ImageDataset(frame, faces, cfg.image_size, cfg.augment, augment_in_worker=True, blend=blend, landmarks=marks)
    items = np.linspace(0, len(ds) - 1, n).round().astype(int)
    t0 = time.perf_counter()
    for k, i in enumerate(items):
        ds[(int(i), k)]
    return (time.perf_counter() - t0) / n * 1e3


def epoch_seconds(cfg: TrainConfig, faces: Path, splits: Path) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="bench_blend_") as out:
        result = train(cfg, splits, faces, out)
    return float(result.history["seconds"].iloc[0]), int(result.summary["n_train_items"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, default=Path("cache/faces"))
    ap.add_argument("--splits", type=Path, default=Path("reports/split"))
    ap.add_argument("--batches", type=int, default=20, help="training batches per epoch timed")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    info = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_avg_start": os.getloadavg(),
    }
    base = {"device": "cpu", "weights": "none", "epochs": 1, "max_batches": args.batches, "patience": 0}
    cfgs = {m: TrainConfig(**base, self_blend=m) for m in MODES}
    times: dict[str, list[float]] = {m: [] for m in MODES}
    items: dict[str, int] = {}
    for _ in range(args.repeats):
        for m in MODES:
            seconds, items[m] = epoch_seconds(cfgs[m], args.faces, args.splits)
            times[m].append(seconds)
            print(f"  {m}: {seconds:.2f} s for {args.batches} batches", file=sys.stderr, flush=True)
    data_ms = {m: data_path_ms(cfgs[m], args.faces, args.splits, 400) for m in MODES}
    info["load_avg_end"] = os.getloadavg()
    batch = cfgs["off"].batch_size
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(f"ResNet18, {cfgs['off'].image_size} px, batch {batch}, {args.batches} training batches per timed epoch")
    print("| self_blend | items per epoch | data path ms / item | vs off | timed epoch s | vs off |")
    print("|:--|--:|--:|--:|--:|--:|")
    for m in MODES:
        print(
            f"| {m} | {items[m]} | {data_ms[m]:.2f} | {data_ms[m] / data_ms['off']:.2f}x | {min(times[m]):.2f} | "
            f"{min(times[m]) / min(times['off']):.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
