"""Preprocessing as shards: one process against two shard processes run at once, then their merge.

One command prints the machine and the table (markdown):

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_shards.py

1. **Videos.** ``--copies`` miniature FaceForensics++ downloads (``deepfake.pipeline.quick.make_ffpp_tree``,
   the tests' videos: 8 originals and 4 methods x 8 fakes, 40 mp4v videos each, one seed per copy) of
   ``--frames`` rendered frames of ``--size`` px, gathered in ``real/`` and ``fake/`` folders; or
   ``--data FOLDER``, any dataset the preprocess stage reads (``data.layout: auto``).
2. **Runs.** The user's commands, each a fresh process, on a params file that points
   ``data.raw_dir`` at the videos and ``data.faces_dir`` at a fresh cache, ``preprocess.workers: 1``,
   detection on (dlib HOG, adaptive search, ``--frames-per-video`` sampled frames):

   * ``one``: ``python -m deepfake preprocess`` (one process, one core);
   * ``shards``: ``python -m deepfake preprocess --shard 1/2`` and ``--shard 2/2`` started together
     (one core each), timed until both have ended; then ``merge``: ``--merge 2``, timed on its own.

   ``--rounds`` interleaved rounds (the order swapped every round), medians. Two ratios:
   ``one / shards`` (the work shared by two processes) and ``one / (shards + merge)`` (the wall time
   a user waits for the same cache). Each process's own start (imports, the params file validated:
   several seconds, torch included) is part of its time, as it is of a user's, so the second ratio
   nears the first only when the work is long beside it.
3. **Same bytes.** Every file of the merged cache compared with the one-process cache's, each round.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepfake.data.layouts import LayoutConfig, scan_dataset  # noqa: E402
from deepfake.data.preprocess import PreprocessConfig, resolve_workers  # noqa: E402
from deepfake.pipeline.quick import make_ffpp_tree, write_params  # noqa: E402


def make_videos(root: Path, copies: int, frames: int, size: int) -> Path:
    """``copies`` miniature FaceForensics++ trees' c23 videos as ``real/`` and ``fake/`` folders."""
    for seed in range(copies):
        tree = make_ffpp_tree(root.with_name(f"ffpp_{seed}"), frames=frames, size=size, seed=seed)
        for video in sorted(tree.glob("*_sequences/*/c23/videos/*.mp4")):
            kind = video.parts[-4]  # youtube, or the method
            label = "real" if kind == "youtube" else "fake"
            (root / label).mkdir(parents=True, exist_ok=True)
            shutil.move(video, root / label / f"{seed}_{kind}_{video.name}")
        shutil.rmtree(tree)
    return root


def command(params: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "deepfake", "preprocess", "--params", str(params), "--no-progress", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def timed(*commands: list[str], timeout: float) -> float:
    """Start every command at once and wait for all: the wall time, in seconds. A failure stops the benchmark."""
    logs = [tempfile.TemporaryFile("w+") for _ in commands]  # files, not pipes: no process waits on a full pipe
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(c, env=env(), stdout=log, stderr=subprocess.STDOUT, text=True)
        for c, log in zip(commands, logs)
    ]
    for p in procs:
        p.wait(timeout=timeout)
    seconds = time.perf_counter() - t0
    for c, p, log in zip(commands, procs, logs):
        log.seek(0)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(c)} exited with {p.returncode}:\n{log.read()}")
        log.close()
    return seconds


def cache_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def params_file(work: Path, name: str, data: Path, args: argparse.Namespace) -> Path:
    faces = work / f"faces_{name}"
    prep = {"detect": True, "workers": 1, "frames_per_video": args.frames_per_video, "size": 96}
    return write_params(
        work / f"params_{name}.yaml",
        {"data": {"raw_dir": str(data), "faces_dir": str(faces), "layout": "auto"}, "preprocess": prep},
    )


def run_one(params: Path, faces: Path, timeout: float) -> dict[str, float]:
    shutil.rmtree(faces, ignore_errors=True)
    return {"one": timed(command(params), timeout=timeout)}


def run_sharded(params: Path, faces: Path, timeout: float) -> dict[str, float]:
    shutil.rmtree(faces, ignore_errors=True)
    shards = timed(command(params, "--shard", "1/2"), command(params, "--shard", "2/2"), timeout=timeout)
    merge = timed(command(params, "--merge", "2"), timeout=timeout)
    return {"shards": shards, "merge": merge}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="a dataset folder instead of the generated videos")
    ap.add_argument("--copies", type=int, default=8, help="FaceForensics++ miniatures of 40 videos generated")
    ap.add_argument("--frames", type=int, default=64, help="frames of each generated video")
    ap.add_argument("--size", type=int, default=192, help="side of the generated videos' frames, in pixels")
    ap.add_argument("--frames-per-video", type=int, default=32, dest="frames_per_video")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds any one command may take")
    args = ap.parse_args(argv)

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            print("writing videos...", file=sys.stderr, flush=True)
            data = make_videos(work / "videos", args.copies, args.frames, args.size)
        videos = scan_dataset(data, LayoutConfig(layout="auto"), PreprocessConfig().ingest).counts()["videos"]
        p_one, p_sharded = params_file(work, "one", data, args), params_file(work, "sharded", data, args)
        f_one, f_sharded = work / "faces_one", work / "faces_sharded"
        rounds: list[dict[str, float]] = []
        identical: list[bool] = []
        for r in range(args.rounds):
            print(f"round {r + 1} of {args.rounds}...", file=sys.stderr, flush=True)
            times: dict[str, float] = {}
            for which in ("one", "sharded") if r % 2 == 0 else ("sharded", "one"):
                if which == "one":
                    times.update(run_one(p_one, f_one, args.timeout))
                else:
                    times.update(run_sharded(p_sharded, f_sharded, args.timeout))
            rounds.append(times)
            identical.append(cache_files(f_one) == cache_files(f_sharded))
        crops = sum(1 for p in f_one.rglob("*.png"))
    load_end = os.getloadavg()

    med = {k: statistics.median(t[k] for t in rounds) for k in ("one", "shards", "merge")}
    sharded_total = med["shards"] + med["merge"]
    print(f"- cpu: {cpu_name()}, {resolve_workers(0)} cores usable; python {platform.python_version()}")
    print(f"- load average (1, 5, 15 min): {load_start} at the start, {load_end} at the end")
    source = str(args.data) if args.data else f"{args.copies} x make_ffpp_tree, {args.frames} frames of {args.size} px"
    print(f"- data: {videos} videos ({source}); {args.frames_per_video} frames sampled per video; {crops} crops")
    print(f"- rounds: {args.rounds}, interleaved; medians\n")
    print("| run | seconds (median) | rounds (s) |")
    print("| --- | --- | --- |")
    for k, label in (("one", "1 process"), ("shards", "2 shards at once"), ("merge", "merge (--merge 2)")):
        print(f"| {label} | {med[k]:.1f} | {', '.join(f'{t[k]:.1f}' for t in rounds)} |")
    print(f"| 2 shards + merge | {sharded_total:.1f} | |")
    print(f"\nratio, 1 process / 2 shards at once: {med['one'] / med['shards']:.2f}x")
    print(f"ratio, 1 process / (2 shards + merge): {med['one'] / sharded_total:.2f}x")
    print(f"merged cache byte-identical to the one-process cache: {all(identical)} (rounds: {identical})")
    return 0 if all(identical) else 1


if __name__ == "__main__":
    sys.exit(main())
