"""Preprocessing throughput and training-epoch time with the face cache versus the originals.

One command prints the whole table (markdown) and the machine it ran on:

    PYTHONPATH=$PWD python benchmarks/bench_preprocess.py --data ../shared/real-faces/yonsei-rffd

1. ``preprocess`` into fresh temporary caches: face detection on with 1 worker and with
   every core, and detection off (decode and resize only), in images per second.
2. One training epoch as ``deepfake.training.train`` runs it on the CPU (``deepfake.training.loading``'s
   batched sampler and uint8 path, ResNet18 from random init, same images, augmentation and seed)
   reading (a) the cache's PNG crops, (b) the original files decoded and resized every epoch
   (the training loader's own path, ``deepfake.data.inputs.load_input``), (c) the originals decoded,
   face-detected and cropped every epoch (what the cache saves); plus the data loading alone for
   each, without the model. (b) used to decode JPEGs at a reduced scale (PIL draft); the package
   now always decodes in full, so every scoring path sees the same pixels.

``--limit N`` uses the first N images (sorted) for a quick check of the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _machine import cpu_name
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake.core.utils import seed_everything  # noqa: E402
from deepfake.data.detect import get_detector  # noqa: E402
from deepfake.data.faces import crop_face
from deepfake.data.ingest import read_manifest  # noqa: E402
from deepfake.data.media import read_image  # noqa: E402
from deepfake.data.preprocess import PreprocessConfig, preprocess, resolve_workers  # noqa: E402
from deepfake.models.architectures import build_model  # noqa: E402
from deepfake.training.augment import IDENTITY_PARAMS, degrade, sample_augment  # noqa: E402
from deepfake.training.loading import EpochBatchSampler, ImageDataset, make_batch_loader  # noqa: E402
from deepfake.training.steps import StepOptions, train_one_epoch  # noqa: E402
from deepfake.training.train import TrainConfig  # noqa: E402


class OnTheFlyFaces(ImageDataset):
    """The training dataset, but decoding the original, detecting and cropping the face at every access."""

    def __init__(self, frame: pd.DataFrame, root: str | os.PathLike, image_size: int, augment, margin: float) -> None:
        super().__init__(frame, root, image_size, augment)
        self.margin = margin

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, 0)
        rgb = read_image(self.paths[i])
        img = crop_face(rgb, get_detector("haar").largest(rgb), self.image_size, self.margin)  # (H, W, 3) uint8
        params = IDENTITY_PARAMS
        if self.augment is not None:  # as ImageDataset does
            aug = sample_augment(self.augment, np.random.default_rng(seed))
            img, params = degrade(img, aug), aug.params
        img = np.require(img, requirements=["C", "W"])
        return torch.from_numpy(img), torch.tensor(self.targets[i]), i, torch.from_numpy(params.copy())


def machine() -> dict:
    return {
        "cpu": cpu_name(),
        "cores_usable": resolve_workers(0),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_avg_start": os.getloadavg(),
    }


def dataset_subset(data: Path, limit: int, workdir: Path) -> Path:
    """``data`` itself, or a CSV listing its first ``limit`` files (originals are never copied)."""
    if not limit:
        return data
    manifest = data / "manifest.csv"
    if manifest.is_file():
        df = read_manifest(manifest)
    else:
        files = sorted(p for lab in ("real", "fake") for p in (data / lab).rglob("*") if p.is_file())
        df = pd.DataFrame(
            {
                "path": [p.relative_to(data).as_posix() for p in files],
                "label": [p.relative_to(data).parts[0] for p in files],
            }
        )
    df = df.sort_values("path").groupby("label", group_keys=False).head(limit // 2)
    df = df.assign(path=[str((data / p).resolve()) for p in df["path"]])
    (workdir / "lists").mkdir(parents=True, exist_ok=True)
    csv = workdir / "lists" / "subset.csv"
    df[["path", "label"]].to_csv(csv, index=False)
    return csv


def bench_preprocess(source: Path, workdir: Path, size: int, cores: int) -> tuple[list[dict], Path, pd.DataFrame]:
    rows, kept = [], None
    for name, cfg in (
        ("detect on, 1 worker", PreprocessConfig(detect=True, size=size, workers=1)),
        (f"detect on, {cores} workers", PreprocessConfig(detect=True, size=size, workers=cores)),
        (f"detect off (decode + resize), {cores} workers", PreprocessConfig(detect=False, size=size, workers=cores)),
    ):
        out = workdir / f"cache_{len(rows)}"
        t0 = time.perf_counter()
        res = preprocess(source, out, cfg, progress=False)
        wall = time.perf_counter() - t0
        s = res.summary
        rows.append(
            {
                "step": f"preprocess: {name}",
                "images": s["decoded"],
                "seconds": round(wall, 2),
                "images_per_s": round(s["decoded"] / wall, 1),
                "note": f"{s['faces_found']} faces, {s['skipped']} skipped",
            }
        )
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
        if cfg.detect and cfg.workers == cores:
            kept = (out, res.manifest)
    return rows, kept[0], kept[1]


def _time_epoch(dataset: ImageDataset, batch: int, workers: int, train: bool, arch: str, seed: int) -> float:
    """One epoch as ``deepfake.training.train`` runs it on the CPU (batched sampler, augmentation in the
    collate, summed BCE), or only the data loading when ``train`` is false."""
    seed_everything(seed)
    sampler = EpochBatchSampler(len(dataset), batch, seed, shuffle=True, drop_last=True)
    loader = make_batch_loader(dataset, sampler, workers, finish_in_workers=True, seed=seed)
    t0 = time.perf_counter()
    if train:
        model = build_model(arch, "none")[0].train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        opts = StepOptions(
            device=torch.device("cpu"),
            loss_fn=nn.BCEWithLogitsLoss(reduction="sum"),
            amp=False,
            augment=dataset.augment is not None,
            show=False,
        )
        train_one_epoch(model, loader, opt, opts, sampler.global_sizes())
    else:
        for _batch in loader:
            pass
    return time.perf_counter() - t0


def bench_epochs(
    cache: Path,
    manifest: pd.DataFrame,
    source_root: Path,
    size: int,
    margin: float,
    batch: int,
    workers: int,
    seed: int,
    repeats: int,
    arch: str,
) -> list[dict]:
    frame = manifest[["path", "label", "target", "source"]].copy()
    frame["target"] = frame["target"].astype(int)
    originals = frame.assign(path=[s if Path(s).is_absolute() else str(source_root / s) for s in frame["source"]])
    # flip, rotation, colour jitter (params.yaml's JPEG / blur augmentations off, as these rows always measured)
    augment = TrainConfig(image_size=size, jpeg_prob=0.0, blur_prob=0.0).augment
    datasets = {
        "cache (PNG crops)": ImageDataset(frame, cache, size, augment),
        "originals, decode + resize": ImageDataset(originals, "/", size, augment),
        "originals, decode + detect + crop": OnTheFlyFaces(originals, "/", size, augment, margin),
    }
    _time_epoch(
        ImageDataset(frame.head(2 * batch), cache, size, augment), batch, 0, True, arch, seed
    )  # warm-up: first allocations
    times: dict[tuple[bool, str], list[float]] = {}
    for _ in range(repeats):  # rounds interleave the variants, so drifting load hits them alike
        for train in (False, True):
            for name in datasets:
                times.setdefault((train, name), []).append(
                    _time_epoch(datasets[name], batch, workers, train, arch, seed)
                )
                print(
                    f"  {'train' if train else 'load'} {name}: {times[(train, name)][-1]:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
    rows = []
    for (train, name), ts in times.items():
        best = min(ts)
        rows.append(
            {
                "step": f"{'train epoch' if train else 'loading only'}: {name}",
                "images": len(frame),
                "seconds": round(best, 2),
                "images_per_s": round(len(frame) / best, 1),
                "note": f"best of {len(ts)} ({', '.join(f'{t:.1f}' for t in ts)} s); "
                f"batch {batch}, {workers} loader workers",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parents[2] / "shared" / "real-faces" / "yonsei-rffd"),
        help="dataset folder (real/ and fake/, or manifest.csv)",
    )
    ap.add_argument("--size", type=int, default=96, help="crop / training size")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--arch", default="resnet18", help="model of the epoch timings (resnet18 | dilated_cnn)")
    ap.add_argument("--loader-workers", type=int, default=0, help="DataLoader workers for the epoch timings")
    ap.add_argument("--limit", type=int, default=0, help="use the first N images only (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="rounds of epoch timings; the best is reported")
    ap.add_argument("--json", help="also write the rows and the machine to this file")
    args = ap.parse_args(argv)

    data = Path(args.data).resolve()  # the epoch rows read the originals by absolute path
    if not data.is_dir():
        print(f"error: dataset {data} does not exist; pass --data", file=sys.stderr)
        return 1
    cores = resolve_workers(0)
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        source = dataset_subset(data, args.limit, workdir)
        rows, cache, manifest = bench_preprocess(source, workdir, args.size, cores)
        root = source.parent if source.is_file() else source
        rows += bench_epochs(
            cache,
            manifest,
            root,
            args.size,
            PreprocessConfig().margin,
            args.batch_size,
            args.loader_workers,
            args.seed,
            args.repeats,
            args.arch,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info["load_avg_end"] = os.getloadavg()
    table = pd.DataFrame(rows)
    print(f"dataset: {data} ({'all' if not args.limit else args.limit} images), size {args.size} px")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))
    cache_row = table[table["step"] == "train epoch: cache (PNG crops)"]["seconds"].iloc[0]
    for name in ("originals, decode + resize", "originals, decode + detect + crop"):
        other = table[table["step"] == f"train epoch: {name}"]["seconds"].iloc[0]
        print(f"train epoch, {name} / cache: {other / cache_row:.2f}x")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": info, "rows": rows, "args": vars(args)}, indent=2, default=str)
        )
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
