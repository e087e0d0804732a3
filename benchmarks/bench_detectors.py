"""The detectors side by side on this machine: parameters, training images/s, inference ms/image.

One run measures every detector of ``--archs`` (default: the package's ResNet18 and dilated CNN,
timm's EfficientNet-B0 and the FaceForensics++ Xception) at one input size, interleaved (each
detector takes its turn in every round, best of ``--repeats`` rounds), so that load from other
processes hits them alike::

    python benchmarks/bench_detectors.py                                   # 96 px, this machine
    python benchmarks/bench_detectors.py --archs resnet18 efficientnet_b4 --image-size 128

Measured for each, from random initialisation (weights do not change the cost):

* parameters;
* training images/s: the training step of ``deepfake.training.train`` (the batch's device-side
  augmentation and normalisation by ``finish_batch``, forward, BCE loss, backward, Adam step) on
  uint8 crops already in memory: the network's cost; decoding is the same for every detector
  (``benchmarks/bench_train.py`` measures the data path);
* inference ms/image: one normalised image at a time through the exact (eager, float32) model,
  median over ``--latency-images`` images; and through the predictor's int8 runtime
  (``deepfake.inference.backends``, static quantisation calibrated on other crops), with the
  largest probability change it brings, or why it could not compile the network.

The crops are the embedded synthetic faces (``deepfake.data.synth``), rendered once at the input
size under ``build/bench/detectors/``. The table is printed as Markdown with the machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_name
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepfake.core.utils import resolve_device  # noqa: E402
from deepfake.data.inputs import load_input, to_model_tensor  # noqa: E402
from deepfake.data.synth import SynthConfig, generate  # noqa: E402
from deepfake.inference.backends import make_runtime  # noqa: E402
from deepfake.models.architectures import build_model, count_parameters, input_config  # noqa: E402
from deepfake.training.augment import AugmentConfig, sample_augment  # noqa: E402
from deepfake.training.loading import Batch, finish_batch  # noqa: E402
from deepfake.training.scoring import forward_logits  # noqa: E402

DEFAULT_ARCHS = ["resnet18", "dilated_cnn", "efficientnet_b0", "legacy_xception"]


def crops(size: int, n: int) -> np.ndarray:
    """``n`` synthetic face crops at ``size`` px, ``(n, size, size, 3)`` uint8 (rendered once, then read)."""
    folder = ROOT / "build" / "bench" / "detectors" / f"synth{size}"
    files = sorted(folder.rglob("*.jpg")) if folder.is_dir() else []
    if len(files) < n:
        cfg = SynthConfig(n_identities=max(n // 2, 2), images_per_identity=1, image_size=size, workers=0)
        generate(folder, cfg, progress=False, overwrite=True)
        files = sorted(folder.rglob("*.jpg"))
    return np.stack([load_input(f, size) for f in files[:n]])


class Detector:
    """One detector: the network, its normalisation, its optimiser and its int8 runtime."""

    def __init__(self, arch: str, size: int, device: torch.device) -> None:
        torch.manual_seed(0)
        self.arch, self.device = arch, device
        self.net, _ = build_model(arch, "none", image_size=size)
        self.net.to(device)
        cfg = input_config(arch)
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        self.loss = nn.BCEWithLogitsLoss(reduction="sum")
        self.train_rates: list[float] = []
        self.latency_ms: list[float] = []
        self.int8_ms: list[float] = []
        self.int8 = None
        self.int8_note = ""
        self.int8_change: float | None = None

    def inputs(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images).to(self.device)
        return to_model_tensor(x, self.mean, self.std).contiguous(memory_format=torch.channels_last)

    def train_steps(self, images: torch.Tensor, targets: torch.Tensor, params: torch.Tensor, steps: int) -> float:
        """Images per second over ``steps`` training steps of one batch (augmented anew each step)."""
        self.net.train()
        t0 = time.perf_counter()
        for _ in range(steps):
            batch = Batch(images, targets, torch.arange(len(targets)), params)
            b = finish_batch(batch, self.device, True, self.mean, self.std)  # (B, 3, S, S), augmented
            logits = forward_logits(self.net, b.images, self.device)
            loss = self.loss(logits, b.targets) / len(targets)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return steps * len(targets) / (time.perf_counter() - t0)

    @torch.inference_mode()
    def time_one(self, run, x: torch.Tensor) -> float:
        t0 = time.perf_counter()
        forward_logits(run, x, self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1000

    def build_int8(self, calibration: np.ndarray, probe: np.ndarray) -> None:
        """The int8 runtime (CPU), or the reason it cannot be built."""
        cpu = torch.device("cpu")
        net = copy.deepcopy(self.net).cpu().eval()
        batches = [calibration[i : i + 16] for i in range(0, len(calibration), 16)]

        def calibrate():
            return (self.inputs(b).cpu() for b in batches)

        runtime = make_runtime(net, "int8", self.inputs(calibration[:1]).cpu(), calibrate)
        if runtime.backend != "int8":
            self.int8_note = runtime.note
            return
        self.int8 = runtime.run
        with torch.inference_mode():
            x = self.inputs(probe).cpu()
            exact = torch.sigmoid(forward_logits(net, x, cpu))
            fast = torch.sigmoid(forward_logits(runtime.run, x, cpu))
        self.int8_change = float((fast - exact).abs().max())


def run(args: argparse.Namespace) -> list[dict]:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.batch_size + args.latency_images + args.calibration_images
    pool = crops(args.image_size, n)
    train_images = torch.from_numpy(pool[: args.batch_size])
    timed = pool[args.batch_size : args.batch_size + args.latency_images]
    calibration = pool[args.batch_size + args.latency_images :]
    targets = (torch.arange(args.batch_size) % 2).float()
    rng = np.random.default_rng(0)
    aug = AugmentConfig(hflip=0.5, color_jitter=0.2)
    params = torch.from_numpy(np.stack([sample_augment(aug, rng).params for _ in range(args.batch_size)]))
    detectors = [Detector(a, args.image_size, device) for a in args.archs]
    print(
        f"{len(detectors)} detectors at {args.image_size} px on {device}; batch {args.batch_size}; "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    if args.int8:
        for d in detectors:
            d.build_int8(calibration, timed)
    for d in detectors:  # warm-up: first calls allocate and pick kernels
        d.train_steps(train_images, targets, params, args.warmup)
        d.net.eval()
        x = d.inputs(timed[:1])
        d.time_one(d.net, x)
        if d.int8 is not None:
            d.time_one(d.int8, x.cpu())
    for _ in range(args.repeats):  # rounds: every detector takes its turn in each
        for d in detectors:
            d.train_rates.append(d.train_steps(train_images, targets, params, args.steps))
        for i in range(len(timed)):
            for d in detectors:
                d.net.eval()
                x = d.inputs(timed[i : i + 1])
                d.latency_ms.append(d.time_one(d.net, x))
                if d.int8 is not None:
                    d.int8_ms.append(d.time_one(d.int8, x.cpu()))
    return [
        {
            "detector": d.arch,
            "parameters": count_parameters(d.net),
            "train_images_per_s": max(d.train_rates),
            "latency_ms_exact": statistics.median(d.latency_ms),
            "latency_ms_int8": statistics.median(d.int8_ms) if d.int8_ms else None,
            "int8_max_probability_change": d.int8_change,
            "int8_note": d.int8_note if args.int8 else "not measured (--no-int8)",
        }
        for d in detectors
    ]


def markdown(rows: list[dict], size: int) -> str:
    head = (
        f"| detector ({size} px) | parameters | training images/s | inference ms/image (exact) "
        "| inference ms/image (int8) | int8: largest probability change |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        int8 = f"{r['latency_ms_int8']:.2f}" if r["latency_ms_int8"] is not None else "n/a"
        change = f"{r['int8_max_probability_change']:.4f}" if r["int8_max_probability_change"] is not None else "–"
        lines.append(
            f"| {r['detector']} | {r['parameters'] / 1e6:.2f}M | {r['train_images_per_s']:.1f} "
            f"| {r['latency_ms_exact']:.2f} | {int8} | {change} |"
        )
    notes = [f"- {r['detector']}: {r['int8_note']}" for r in rows if r["int8_note"]]
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "")


def machine() -> str:
    import timm

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu_name()}, {os.cpu_count()} cores{gpu}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), timm {timm.__version__}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=DEFAULT_ARCHS, help="resnet18, dilated_cnn or timm model names")
    p.add_argument("--image-size", type=int, default=96, dest="image_size")
    p.add_argument("--batch-size", type=int, default=32, dest="batch_size", help="training batch")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per detector and round")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps per detector first")
    p.add_argument("--latency-images", type=int, default=20, dest="latency_images", help="images timed one by one")
    p.add_argument("--calibration-images", type=int, default=32, dest="calibration_images", help="int8 calibration")
    p.add_argument("--repeats", type=int, default=2, help="rounds (training: best of them; latency: all of them)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (int8 always runs on the CPU)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-int8", action="store_false", dest="int8", help="skip the int8 runtime")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = run(args)
    print(f"\nmachine: {machine()}")
    print(f"command: python benchmarks/bench_detectors.py {' '.join(sys.argv[1:])}".rstrip())
    print(markdown(rows, args.image_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
