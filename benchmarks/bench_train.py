"""Training throughput at 224x224: the package's data path against a plain torchvision loader.

Both paths feed the same images to the same model (same initial weights, Adam, batch size,
worker count, device settings) inside one run, interleaved, best of ``--repeats``:

* ``naive``: ``torchvision.datasets.ImageFolder`` with PIL transforms (Resize,
  RandomHorizontalFlip, RandomRotation, ColorJitter, ToTensor, Normalize), float batches.
* ``package``: ``deepfake.training.loading`` as ``deepfake.training.train`` uses it: full decoding and resizing to
  uint8 by ``deepfake.data.inputs.load_input``, the same flip / rotation / colour-jitter ranges; on
  CUDA augmented and normalised batched on the GPU, channels-last; on a CPU augmented in the
  workers with OpenCV uint8 kernels and normalised in their collate. (It used to decode JPEGs at
  a reduced scale, PIL draft; the package now always decodes in full, so every scoring path sees
  the same pixels.)
* ``package+robust``: the package path with JPEG re-compression and Gaussian blur (p=0.5
  each) on top: the cost of the robustness augmentations.
* ``package+cache``: the package path reading ``DecodedCache`` (``train.decode_cache``): the
  images are decoded and resized once (that pass is timed and printed separately), every
  epoch after reads uint8 pixels from a memory-mapped file. Its rows are steady-state epochs.

Rows: ``loader`` (data to the device only) and one end-to-end training row per architecture
(decode, augment, forward, backward, Adam step). On CUDA, training uses AMP (bf16 where
supported) and channels-last for every path.

Images: ``--data`` (a folder with real/ and fake/), else the 600x600 photos of
``../shared/real-faces/yonsei-rffd`` when present, else synthetic 600x600 faces rendered once
under ``build/bench/``.

    python benchmarks/bench_train.py                      # this machine, defaults per device
    python benchmarks/bench_train.py --device cuda --batch-size 256 --workers 15 --archs resnet18
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _machine import cpu_name
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake import paths  # noqa: E402
from deepfake.core.utils import autocast, cpu_bf16_supported, resolve_device  # noqa: E402
from deepfake.data.inputs import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from deepfake.data.split import index_dataset  # noqa: E402
from deepfake.models.architectures import build_model  # noqa: E402
from deepfake.training.augment import AugmentConfig  # noqa: E402
from deepfake.training.loading import DecodedCache, EpochBatchSampler, ImageDataset, finish_batch, make_batch_loader  # noqa: E402

SHARED_PHOTOS = paths.ROOT.parent / "shared" / "real-faces" / "yonsei-rffd"
AUG = dict(hflip=0.5, rotation=10.0, color_jitter=0.2)


def synthetic_photos(out: Path, n: int, unique: int = 32) -> Path:
    """``n`` 600x600 JPEG faces under ``out`` (``unique`` rendered, the rest copies: decoding cost is what matters)."""
    from deepfake.data.synth import SynthConfig, generate

    if out.exists() and sum(1 for _ in out.rglob("*.jpg")) >= n:
        return out
    shutil.rmtree(out, ignore_errors=True)
    src = out.parent / "synth600-unique"
    if not src.exists():
        generate(
            src,
            SynthConfig(n_identities=max(unique // 2, 2), images_per_identity=1, image_size=600, workers=0),
            progress=False,
        )
    files = sorted(src.rglob("*.jpg"))
    for i in range(n):
        f = files[i % len(files)]
        dst = out / f.parent.name / f"{i:05d}_{f.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
    return out


def naive_batches(root: Path, size: int, batch: int, workers: int, pin: bool):
    tf = T.Compose(
        [
            T.Resize((size, size)),
            T.RandomHorizontalFlip(AUG["hflip"]),
            T.RandomRotation(AUG["rotation"]),
            T.ColorJitter(AUG["color_jitter"], AUG["color_jitter"], AUG["color_jitter"], AUG["color_jitter"] / 4),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    ds = datasets.ImageFolder(str(root), transform=tf)
    loader = DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=pin,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    for _ in itertools.count():
        yield from loader


def package_batches(
    root: Path, size: int, batch: int, workers: int, pin: bool, on_cpu: bool, robust: bool = False, cache: bool = False
):
    """The training loader of ``deepfake.training.train``; with ``cache``, the decoded cache is built first
    (timed, printed)."""
    frame = index_dataset(root, hashes=False)
    aug = AugmentConfig(**AUG, jpeg_prob=0.5 if robust else 0.0, blur_prob=0.5 if robust else 0.0)
    decoded = None
    if cache:
        files = [root / p for p in frame["path"]]
        cache_dir = paths.ROOT / "build" / "bench" / "cache"
        shutil.rmtree(cache_dir, ignore_errors=True)
        t0 = time.perf_counter()
        decoded = DecodedCache.build(files, size, cache_dir, workers, show=False)
        wall = time.perf_counter() - t0
        print(
            f"  decoded cache: {len(files)} images in {wall:.1f} s ({len(files) / wall:.1f} images/s; "
            f"{decoded.file.stat().st_size / 2**20:.0f} MiB), once per dataset and image size",
            flush=True,
        )
    sampler = EpochBatchSampler(len(frame), batch, seed=0, drop_last=True)
    loader = make_batch_loader(
        ImageDataset(frame, root, size, aug, augment_in_worker=on_cpu, cache=decoded),
        sampler,
        workers,
        pin_memory=pin,
        finish_in_workers=on_cpu,
    )

    def batches():
        for epoch in itertools.count(1):
            sampler.set_epoch(epoch)
            yield from loader

    return batches()


def _children_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each live child process (the DataLoader workers); Linux /proc."""
    tick, me, out = os.sysconf("SC_CLK_TCK"), os.getpid(), {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:
            out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def measure(batches, step, warmup: int, steps: int, batch: int, device: torch.device) -> tuple[float, float]:
    """Images per second and images per CPU-second (this process and its workers) over ``steps``
    batches after ``warmup`` batches. The second is what a busy shared machine disturbs least."""
    for _ in range(warmup):
        step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    cpu0, kids0, t0 = time.process_time(), _children_cpu(), time.perf_counter()
    for _ in range(steps):
        step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    kids1 = _children_cpu()
    cpu = time.process_time() - cpu0 + sum(kids1[pid] - kids0[pid] for pid in kids0 if pid in kids1)
    return steps * batch / wall, steps * batch / max(cpu, 1e-9)


class Trainer:
    """The training step of ``deepfake.training.train`` for one architecture (fresh weights per path)."""

    def __init__(self, arch: str, device: torch.device, compile_model: bool, cpu_bf16: bool = False) -> None:
        torch.manual_seed(0)
        self.device = device
        self.amp = (
            device.type == "cuda" or cpu_bf16
        )  # as deepfake.training.train: AMP on CUDA, bf16 on a CPU when asked
        fmt = torch.channels_last if self.amp else torch.contiguous_format
        self.net = build_model(arch, "none")[0].to(device, memory_format=fmt).train()
        self.model = torch.compile(self.net) if compile_model else self.net
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        self.loss = nn.BCEWithLogitsLoss()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(self.device, self.amp):
            logits = self.model(x).squeeze(1)
        loss = self.loss(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def naive_input(batch, device: torch.device, channels_last: bool):
    x, y = batch
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.float().to(device, non_blocking=True)


def package_input(batch, device: torch.device, channels_last: bool):
    b = finish_batch(batch, device, augment=True, channels_last=channels_last)
    return b.images, b.targets


def run(args: argparse.Namespace) -> pd.DataFrame:
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.cpu_bf16 and (cuda or not cpu_bf16_supported()):
        raise SystemExit("--cpu-bf16 needs a CPU device with native bf16 instructions (AVX512-BF16 or AMX)")
    if cuda:
        torch.backends.cudnn.benchmark = True
    root = (
        Path(args.data)
        if args.data
        else (
            SHARED_PHOTOS
            if SHARED_PHOTOS.is_dir()
            else synthetic_photos(paths.ROOT / "build" / "bench" / "synth600", args.images)
        )
    )
    n_images = len(index_dataset(root, hashes=False))
    print(
        f"images: {root} ({n_images}); device {device}; batch {args.batch_size}; workers {args.workers}; "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    sources = {
        "naive": lambda: naive_batches(root, args.image_size, args.batch_size, args.workers, cuda),
        "package": lambda: package_batches(root, args.image_size, args.batch_size, args.workers, cuda, not cuda),
        "package+robust": lambda: package_batches(
            root, args.image_size, args.batch_size, args.workers, cuda, not cuda, robust=True
        ),
        "package+cache": lambda: package_batches(
            root, args.image_size, args.batch_size, args.workers, cuda, not cuda, cache=True
        ),
    }
    inputs = {
        "naive": naive_input,
        "package": package_input,
        "package+robust": package_input,
        "package+cache": package_input,
    }
    rows = []
    workloads = ["loader"] + list(args.archs)
    for workload in workloads:
        steps = args.loader_steps if workload == "loader" else args.steps
        best: dict[str, float] = {}
        best_cpu: dict[str, float] = {}
        for _ in range(args.repeats):
            for name in args.paths:  # interleaved, so a burst of load on a shared machine hits every path
                batches = sources[name]()
                if workload == "loader":

                    def step(b, name=name):
                        x, _ = inputs[name](b, device, cuda)
                        if cuda:
                            x.sum()  # touch the data on the device
                else:
                    trainer = Trainer(workload, device, args.compile, args.cpu_bf16)

                    def step(b, name=name, trainer=trainer):
                        trainer(*inputs[name](b, device, trainer.amp))

                ips, ipc = measure(batches, step, args.warmup, steps, args.batch_size, device)
                batches.close()
                best[name], best_cpu[name] = max(best.get(name, 0.0), ips), max(best_cpu.get(name, 0.0), ipc)
                print(f"  {workload:12s} {name:15s} {ips:9.1f} images/s {ipc:9.1f} images/CPU-s", flush=True)
        for name, ips in best.items():
            rows.append(
                {
                    "workload": workload,
                    "path": name,
                    "images_per_s": ips,
                    "vs_naive": ips / best["naive"] if "naive" in best else np.nan,
                    "images_per_cpu_s": best_cpu[name],
                    "cpu_vs_naive": best_cpu[name] / best_cpu["naive"] if "naive" in best_cpu else np.nan,
                }
            )
    return pd.DataFrame(rows)


def machine() -> str:
    cpu = cpu_name()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="folder with real/ and fake/ images (default: shared photos, else synthetic)")
    p.add_argument(
        "--images", type=int, default=2048 if cuda else 256, help="synthetic images to write when no photos exist"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256 if cuda else 32)
    p.add_argument("--workers", type=int, default=min((os.cpu_count() or 2) - 1, 15) if cuda else 2)
    p.add_argument("--steps", type=int, default=40 if cuda else 3, help="timed training steps per path")
    p.add_argument("--loader-steps", type=int, default=40 if cuda else 15, help="timed batches for the loader-only row")
    p.add_argument("--warmup", type=int, default=10 if cuda else 1)
    p.add_argument("--repeats", type=int, default=2, help="best of this many interleaved measurements")
    p.add_argument("--archs", nargs="*", default=["resnet18", "dilated_cnn"])
    p.add_argument("--paths", nargs="*", default=["naive", "package", "package+robust", "package+cache"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (both paths)")
    p.add_argument(
        "--cpu-bf16",
        action="store_true",
        dest="cpu_bf16",
        help="on a CPU, train with bf16 autocast and channels-last (train.cpu_bf16), both paths",
    )
    p.add_argument("--json", help="also write the table and settings to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    table = run(args)
    print(f"\nmachine: {machine()}")
    print(f"command: python benchmarks/bench_train.py {' '.join(sys.argv[1:])}".rstrip())
    print(table.to_markdown(index=False, floatfmt=".2f") if _has_tabulate() else table.to_string(index=False))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(), "args": vars(args), "rows": table.to_dict("records")}, indent=2)
        )
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
