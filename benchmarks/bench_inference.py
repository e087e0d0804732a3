"""Inference speed: the package's Predictor against a naive per-image pipeline, side by side.

One command produces the whole table (and, with ``--write``, the "Inference" section of
BENCHMARKS.md)::

    python benchmarks/bench_inference.py --images ../shared/real-faces/yonsei-rffd \\
        --checkpoint models/best.pt --write BENCHMARKS.md

Measured for every variant on the same JPEG files:

* latency: one image at a time, from the file path to a probability (median and 90th
  percentile), the variants taking turns image by image so that load from other processes
  hits them alike;
* throughput: a list of files scored as a folder would be (images/s, best of ``--repeats``);
* accuracy change: probabilities against the exact path (the training transform on the full
  decode, eager fp32 model): largest and mean absolute difference, label agreement at 0.5 and
  at the median exact score (the threshold where most images sit close to it), and ROC-AUC
  on the labels of the folder (``real/`` and ``fake/``).

The naive pipeline is PIL open, torchvision transforms, eager model, one image at a time. The
package's ``Predictor`` (full decode, the checkpoint's preprocessing contract, batches) is then
timed as it is, and with one trick each: TorchScript (frozen, optimised for inference), static
int8 quantisation calibrated on images disjoint from the timed ones. Face detection is off in
all of them (the naive pipeline has none); its cost is reported apart. (A reduced-size JPEG
decoding row is gone: the package now always decodes in full, so every scoring path sees the
same pixels.)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_name
from PIL import Image
from torchvision import transforms as T

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepfake.data.detect import DEFAULT_MARGIN  # noqa: E402
from deepfake.data.inputs import IMAGENET_MEAN, IMAGENET_STD, whole_image  # noqa: E402
from deepfake.data.media import IMAGE_EXTENSIONS  # noqa: E402
from deepfake.inference.predict import NoFaceError, PredictConfig, Predictor  # noqa: E402
from deepfake.metrics.classification import binary_metrics  # noqa: E402
from deepfake.models.architectures import build_model  # noqa: E402
from deepfake.models.checkpoint import load_checkpoint, preprocessing_of, read_checkpoint  # noqa: E402

SECTION = "## Inference"


@dataclass
class Variant:
    name: str
    predict_one: callable
    predict_many: callable
    latencies: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    throughputs: list[float] = field(default_factory=list)
    probs: np.ndarray | None = None


def list_images(folder: Path) -> tuple[list[Path], np.ndarray]:
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.parent.name.lower() in ("real", "fake")
    )
    if not files:
        raise SystemExit(f"no images under {folder}/real or {folder}/fake")
    return files, np.array([int(p.parent.name.lower() == "fake") for p in files])


def random_checkpoint(image_size: int, out: Path) -> Path:
    torch.manual_seed(0)
    model, used = build_model("resnet18", weights="none")
    torch.save(
        {
            "model": model.state_dict(),
            "arch": "resnet18",
            "image_size": image_size,
            "epoch": 0,
            "weights_used": used,
            "config": {},
            "preprocessing": whole_image(image_size).to_dict(),  # whole images resized, as the naive pipeline
        },
        out,
    )
    return out


def naive(checkpoint: Path) -> Variant:
    """PIL open, torchvision transforms, eager model, one image at a time."""
    model, ckpt = load_checkpoint(checkpoint, "cpu")
    size = ckpt["image_size"]
    tf = T.Compose([T.Resize((size, size), antialias=True), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def load(path: Path) -> Image.Image:
        with Image.open(path) as im:
            return im.convert("RGB")

    @torch.inference_mode()
    def one(path: Path) -> float:
        return float(torch.sigmoid(model(tf(load(path)).unsqueeze(0))).item())

    return Variant(
        "naive: PIL + torchvision transforms + eager, 1 image at a time", one, lambda paths: [one(p) for p in paths]
    )


def predictor_variant(name: str, checkpoint: Path, cfg: PredictConfig) -> Variant:
    p = Predictor(checkpoint, "cpu", cfg)
    return Variant(
        name,
        lambda path: p.predict_image(path).probability,
        lambda paths: [r.probability for r in p.predict_batch(paths)],
    )


def time_latency(variants: list[Variant], paths: list[Path], warmup: int) -> None:
    for v in variants:
        for p in paths[:warmup]:
            v.predict_one(p)
    for p in paths:  # take turns image by image
        for v in variants:
            c0, t0 = time.process_time(), time.perf_counter()
            v.predict_one(p)
            v.latencies.append((time.perf_counter() - t0) * 1000)
            v.cpu_ms.append((time.process_time() - c0) * 1000)


def time_throughput(variants: list[Variant], paths: list[Path], repeats: int) -> None:
    for _ in range(repeats):
        for v in variants:
            t0 = time.perf_counter()
            v.predict_many(paths)
            v.throughputs.append(len(paths) / (time.perf_counter() - t0))


def accuracy_rows(variants: list[Variant], reference: np.ndarray, labels: np.ndarray) -> list[dict]:
    median = float(np.median(reference))
    rows = []
    for v in variants:
        d = np.abs(v.probs - reference)
        rows.append(
            {
                "max_abs_dp": float(d.max()),
                "mean_abs_dp": float(d.mean()),
                "agree_05": float(np.mean((v.probs >= 0.5) == (reference >= 0.5))),
                "agree_median": float(np.mean((v.probs >= median) == (reference >= median))),
                "auc": binary_metrics(labels, v.probs)["roc_auc"],
            }
        )
    return rows


def detection_cost(ckpt: Path, fastest: Variant, calib: list[Path], common: dict, paths: list[Path]) -> dict:
    """Latency added by face detection to the fastest variant, and how many photos it finds a face in."""
    backend = (
        {"backend": "int8", "int8_calibration": tuple(map(str, calib)), "int8_max_change": None}
        if "int8" in fastest.name
        else {"backend": "jit"}
        if "TorchScript" in fastest.name
        else {}
    )
    trained = preprocessing_of(read_checkpoint(ckpt), ckpt)
    margin = None if trained.detect else DEFAULT_MARGIN  # a whole-image model: crop as the preprocess stage does
    # the checkpoint's own contract (a face model detects); a whole-image model is made to detect
    face = "checkpoint" if trained.detect else "detect"
    detect = Predictor(ckpt, "cpu", PredictConfig(**{**common, "face": face, "margin": margin}, **backend))
    # no reduced- vs full-size decode comparison: the package now always decodes in full (same pixels everywhere)
    with_det, without, found = [], [], 0
    for p in paths:
        t0 = time.perf_counter()
        try:
            detect.predict_image(p)
            found += 1
        except NoFaceError:  # still timed: it is what the user waits for
            pass
        with_det.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        fastest.predict_one(p)
        without.append((time.perf_counter() - t0) * 1000)
    return {
        "latency": statistics.median(with_det),
        "added": statistics.median(with_det) - statistics.median(without),
        "n": len(paths),
        "found": found,
        "margin": detect.preprocessing.margin,
    }


def machine() -> str:
    cpu = cpu_name()
    return (
        f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, Python {platform.python_version()}"
    )


def render(args, variants, acc, det, ckpt_note, loads, n_lat, n_thr, n_cmp) -> str:
    base = variants[0]
    base_lat, base_thr = statistics.median(base.latencies), max(base.throughputs)
    lines = [
        SECTION,
        "",
        f"`{' '.join(['python', 'benchmarks/bench_inference.py'] + sys.argv[1:])}`",
        "",
        f"- Machine: {machine()}.",
        f"- Load average (1 min) before / after the run: {loads[0]:.1f} / {loads[1]:.1f} "
        "(the run itself adds about one per thread)"
        + (
            " — the machine was busy before the run started; absolute numbers are pessimistic."
            if loads[0] > 1.0
            else "."
        ),
        f"- Model: {ckpt_note}",
        f"- Images: {n_lat} for latency (median / p90 of one-at-a-time calls, variants taking turns per image), "
        f"{n_thr} for throughput (best of {args.repeats}), {n_cmp} for the accuracy columns; "
        f"600x600 JPEGs from `{os.path.relpath(args.images, ROOT)}`.",
        "- Accuracy columns compare each variant's fake-probability with the exact path (naive) on the same images; "
        "'agree' is the share of identical labels at threshold 0.5 and at the median exact score.",
        "- 'CPU ms per image' is the process CPU time of one latency call (all threads): less sensitive than wall "
        "time to other jobs on the machine, but it counts the spinning of waiting OpenMP threads.",
        "",
        "| variant | latency ms (median / p90) | CPU ms per image | speed-up | throughput img/s | speed-up "
        "| max abs dp | mean abs dp | agree @0.5 | agree @median | AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v, a in zip(variants, acc):
        lat, p90, thr = statistics.median(v.latencies), float(np.percentile(v.latencies, 90)), max(v.throughputs)
        auc = "n/a" if a["auc"] is None else f"{a['auc']:.3f}"
        lines.append(
            f"| {v.name} | {lat:.1f} / {p90:.1f} | {statistics.median(v.cpu_ms):.1f} | {base_lat / lat:.1f}x "
            f"| {thr:.1f} | {thr / base_thr:.1f}x "
            f"| {a['max_abs_dp']:.2e} | {a['mean_abs_dp']:.2e} "
            f"| {a['agree_05']:.3f} | {a['agree_median']:.3f} | {auc} |"
        )
    best_lat = min(statistics.median(v.latencies) for v in variants)
    best_thr = max(max(v.throughputs) for v in variants)
    lines += [
        "",
        f"Goals: single image at most 15 ms — best {best_lat:.1f} ms (naive {base_lat:.1f} ms); "
        f"folder throughput at least 80 images/s — best {best_thr:.1f} images/s (naive {base_thr:.1f} images/s).",
        "Face detection (the checkpoint's, or `face='detect'`: Haar cascade, largest face, "
        f"{det['margin']:g}x square crop) is off in "
        f"the table because the naive pipeline has none. With it, the fastest variant takes {det['latency']:.1f} ms "
        f"per image (median, +{det['added']:.1f} ms); it found a face in {det['found']}/{det['n']} photos.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    old = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nMeasured numbers, the machine they were taken on and the command that produced them.\n"
    )
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _m: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--images",
        type=Path,
        default=ROOT.parent / "shared" / "real-faces" / "yonsei-rffd",
        help="folder with real/ and fake/ JPEGs (default: the shared photos beside the repository)",
    )
    ap.add_argument(
        "--checkpoint", type=Path, help="trained checkpoint; omitted: ResNet18 with random weights at --image-size"
    )
    ap.add_argument("--image-size", type=int, default=224, help="input size of the random-weight model")
    ap.add_argument("--latency-images", type=int, default=40)
    ap.add_argument("--throughput-images", type=int, default=160)
    ap.add_argument(
        "--calibration-images", type=int, default=32, help="int8 calibration images, disjoint from the timed ones"
    )
    ap.add_argument("--repeats", type=int, default=3, help="throughput repetitions (best is reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default, one per core)")
    ap.add_argument("--write", type=Path, help="replace the '## Inference' section of this Markdown file")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    loads = [os.getloadavg()[0]]
    files, labels = list_images(args.images)
    order = np.random.default_rng(0).permutation(len(files))
    calib = [files[i] for i in order[: args.calibration_images]]
    rest = order[args.calibration_images :]
    timed_idx = rest[: max(args.latency_images, args.throughput_images)]
    timed = [files[i] for i in timed_idx]
    timed_labels = labels[timed_idx]
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            ckpt = args.checkpoint
            meta = torch.load(ckpt, map_location="cpu", weights_only=True)
            note = (
                f"`{ckpt}`: {meta['arch']}, {meta['image_size']}x{meta['image_size']} input, "
                f"weights {meta.get('weights_used')}, epoch {meta.get('epoch')}, "
                f"validation AUC {meta.get('val_auc', float('nan')):.3f}."
            )
        else:
            ckpt = random_checkpoint(args.image_size, Path(tmp) / "random.pt")
            note = (
                f"ResNet18 with random weights at {args.image_size}x{args.image_size} "
                "(timing only: AUC is meaningless)."
            )
        # The table compares scoring paths on the same input, the whole photo resized (the naive
        # pipeline has no face detection): a copy of the checkpoint whose contract says so.
        whole = Path(tmp) / "whole.pt"
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        torch.save({**saved, "preprocessing": whole_image(int(saved["image_size"])).to_dict()}, whole)
        common = dict(calibration_file="", batch_size=args.batch_size)
        print("building variants (int8 calibrates on", len(calib), "images)...", flush=True)
        variants = [
            naive(whole),
            predictor_variant(
                "Predictor, exact (full decode, eager fp32, NHWC batches)", whole, PredictConfig(**common)
            ),
            # no reduced-size JPEG decode row: the package now always decodes in full (same pixels on every path)
            predictor_variant("+ TorchScript (frozen, optimised)", whole, PredictConfig(backend="jit", **common)),
            predictor_variant(
                "+ int8 static quantisation",
                whole,
                # int8 itself is measured (its accuracy change is a column), not bounded
                PredictConfig(backend="int8", int8_calibration=tuple(map(str, calib)), int8_max_change=None, **common),
            ),
        ]
        print("latency...", flush=True)
        time_latency(variants, timed[: args.latency_images], args.warmup)
        print("throughput...", flush=True)
        time_throughput(variants, timed[: args.throughput_images], args.repeats)
        print("accuracy...", flush=True)
        for v in variants:
            v.probs = np.asarray(v.predict_many(timed), dtype=np.float64)
        acc = accuracy_rows(variants, variants[0].probs, timed_labels)
        fastest = min(variants[1:], key=lambda v: statistics.median(v.latencies))
        detection = detection_cost(ckpt, fastest, calib, common, timed[: args.latency_images])
    loads.append(os.getloadavg()[0])
    text = render(args, variants, acc, detection, note, loads, args.latency_images, args.throughput_images, len(timed))
    print(text)
    if args.write:
        write_section(args.write, text)
        print(f"wrote the '{SECTION}' section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
