"""Sampling frames from a video: decoding every frame, grabbing through, or seeking
(``deepfake.data.video.sample_video``).

One command prints the machine and the table (markdown):

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_video.py

It writes clips with OpenCV (25 fps, 640x360, mp4v in .mp4) of 10 s and 60 s (``--seconds``): a
textured background scrolling under a moving disc, and a top row of 16 black or white 40 px
blocks that spell the frame's index in binary. From each clip it samples 32 frames
(``--frames``, ``sample_frame_indices``) three ways, in interleaved rounds (best of
``--repeats``):

* ``all_frames``: ``cap.read()`` every frame and keep the sampled ones (the naive way);
* ``grab_sequential``: the previous ``read_video``, copied below: ``grab()`` every frame up to
  the last sampled one, ``retrieve()`` only the sampled ones;
* ``opencv_seek``: ``sample_video`` with OpenCV as the reader (PyAV made unavailable): seeks
  across gaps of ``SEEK_MIN_GAP`` frames or more, grabs through shorter ones, checks every
  position;
* ``seek``: ``sample_video`` as the package runs it: PyAV seeks to the keyframe before each far
  target and decodes forward from there, every frame's index checked from its timestamp.

Frames decoded: for ``all_frames`` and ``grab_sequential`` the successful ``read`` / ``grab``
calls; for ``seek``, ``VideoSample.frames_decoded`` (every frame PyAV decoded). For
``opencv_seek``, its grabs plus the frames OpenCV decodes inside each seek, which no API
reports: OpenCV's FFmpeg seek jumps to the keyframe at or before 16 frames ahead of the target
and decodes forward to the frame before it, so a seek to ``t`` decodes ``t - keyframe`` frames;
the keyframes are read from the packet flags (a raw, undecoded pass). The note column gives, as
a check, the time of each method divided by the time of one grab (from ``grab_sequential``).
``verified`` counts the returned frames whose pixels spell the index they were returned as,
against the number sampled.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from _machine import cpu_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake import video  # noqa: E402
from deepfake.data.video import SEEK_MIN_GAP, sample_frame_indices, sample_video  # noqa: E402

FPS, W, H = 25, 640, 360
BLOCK = 40  # index bits: one row of W // BLOCK blocks at the top
GAP_CODECS = ((".mp4", "mp4v"), (".avi", "MJPG"))  # clips of the break-even table
SEEK_BACKOFF = 16  # frames OpenCV's FFmpeg seek starts before its target (cap_ffmpeg_impl.hpp)

Frames = list[tuple[int, np.ndarray]]


def draw_frame(i: int, texture: np.ndarray) -> np.ndarray:
    """Frame ``i`` (BGR): the texture scrolled, a disc moving on a curve, the index in binary blocks."""
    x, y = (3 * i) % W, (2 * i) % H
    f = texture[y : y + H, x : x + W].copy()
    centre = (int(W / 2 + 220 * np.sin(i / 20)), int(H / 2 + 90 * np.cos(i / 15)))
    cv2.circle(f, centre, 45, (40, 180, 220), -1)
    for b in range(W // BLOCK):
        f[:BLOCK, b * BLOCK : (b + 1) * BLOCK] = 255 if (i >> b) & 1 else 0
    return f


def frame_index(rgb: np.ndarray) -> int:
    """The index ``draw_frame`` wrote, read from the centre of each block."""
    q = BLOCK // 4
    row = rgb[q : BLOCK - q].reshape(BLOCK - 2 * q, W // BLOCK, BLOCK, 3)[:, :, q : BLOCK - q]
    return sum(1 << b for b, v in enumerate(row.mean(axis=(0, 2, 3))) if v > 127)


def write_clip(path: Path, seconds: float, fourcc: str = "mp4v") -> Path:
    texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (2 * H, 2 * W, 3), np.uint8), (0, 0), 3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for i in range(round(seconds * FPS)):
        writer.write(draw_frame(i, texture))
    writer.release()
    return path


def keyframes(path: Path) -> list[int]:
    """Indices of the keyframes, from the packet flags (undecoded)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
    keys, i = [], 0
    while cap.grab():
        if cap.get(cv2.CAP_PROP_LRF_HAS_KEY_FRAME):
            keys.append(i)
        i += 1
    cap.release()
    return keys


def all_frames(path: Path, k: int) -> tuple[Frames, int]:
    """Read (decode and convert) every frame, keeping the sampled ones as they pass."""
    cap = cv2.VideoCapture(str(path))
    wanted = set(sample_frame_indices(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), k))
    frames, i = [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if i in wanted:
            frames.append((i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        i += 1
    cap.release()
    return frames, i


def grab_sequential(path: Path, k: int) -> tuple[Frames, int]:
    """The previous ``read_video`` (its branch for a known frame count), returning the frames decoded too."""
    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wanted = set(sample_frame_indices(n, k))
        frames, i = [], 0
        while wanted and i <= max(wanted):
            if not cap.grab():
                break
            if i in wanted:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    frames.append((i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            i += 1
        return frames, i
    finally:
        cap.release()


def opencv_seek(path: Path, k: int, keys: list[int]) -> tuple[Frames, int, str]:
    """``sample_video`` read by OpenCV; frames decoded = its grabs + those OpenCV decodes inside each seek."""
    import_av = video._import_av
    video._import_av = lambda: None  # type: ignore[assignment]
    try:
        s = sample_video(path, k)
    finally:
        video._import_av = import_av  # type: ignore[assignment]
    assert s.reader == "opencv"
    inside = sum(t - max(kf for kf in keys if kf <= max(t - SEEK_BACKOFF, 0)) for t in s.seeks)
    return s.frames, s.frames_decoded + inside, f"{s.how}, {len(s.seeks)} seeks, decodes estimated"


def seek(path: Path, k: int) -> tuple[Frames, int, str]:
    """``sample_video`` as the package runs it (PyAV); frames decoded as it counts them."""
    s = sample_video(path, k)
    return s.frames, s.frames_decoded, f"{s.reader}, {s.how}, {len(s.seeks)} seeks"


def rounds(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


def verified(frames: Frames, wanted: list[int]) -> str:
    good = sum(frame_index(rgb) == i for i, rgb in frames) if [i for i, _ in frames] == wanted else 0
    return f"{good}/{len(wanted)}"


def bench_clip(path: Path, seconds: float, k: int, repeats: int) -> list[dict]:
    n = round(seconds * FPS)
    wanted, keys = sample_frame_indices(n, k), keyframes(path)
    methods: dict[str, Callable[[], tuple]] = {
        "all_frames": lambda: all_frames(path, k),
        "grab_sequential": lambda: grab_sequential(path, k),
        "opencv_seek": lambda: opencv_seek(path, k, keys),
        "seek": lambda: seek(path, k),
    }
    for run in methods.values():  # warm-up: the file in the page cache, first allocations
        run()
    times: dict[str, list[float]] = {m: [] for m in methods}
    results: dict[str, tuple] = {}
    for _ in range(repeats):  # rounds interleave the methods, so drifting load hits them alike
        for name, run in methods.items():
            t0 = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - t0)
    best = {m: min(ts) for m, ts in times.items()}
    per_grab = best["grab_sequential"] / results["grab_sequential"][1]
    rows = []
    for name in methods:
        frames, decoded, *how = results[name]
        rows.append(
            {
                "length_s": seconds,
                "clip": f"{seconds:g} s ({n} frames, keyframe every {keys[1] - keys[0] if len(keys) > 1 else n})",
                "method": name,
                "frames decoded": decoded,
                "seconds": best[name],
                "speed-up": best["all_frames"] / best[name],
                "verified": verified(frames, wanted),
                "note": "; ".join(
                    [
                        *how,
                        f"{best[name] / per_grab:.0f} grab-times",
                        f"rounds {', '.join(f'{t:.3f}' for t in times[name])}",
                    ]
                ),
            }
        )
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def step_cost(path: Path, gap: int, seeking: bool, targets: int = 20) -> float:
    """Seconds per frame reached ``gap`` frames past the decoder's position, by seeking or by grabbing through."""
    cap = cv2.VideoCapture(str(path))
    pos = 0
    t0 = time.perf_counter()
    for j in range(1, targets + 1):
        t = j * (gap + 1)
        if seeking:
            cap.set(cv2.CAP_PROP_POS_FRAMES, t)
        else:
            for _ in range(t - pos):
                cap.grab()
        if not cap.read()[0]:
            raise RuntimeError(f"{path} has fewer than {t + 1} frames")
        pos = t + 1
    dt = (time.perf_counter() - t0) / targets
    cap.release()
    return dt


def break_even(clips: dict[str, Path], gaps: list[int], repeats: int) -> str:
    """A markdown table: milliseconds per sampled frame, grabbing through a gap versus seeking across it."""
    lines = ["| clip | " + " | ".join(f"gap {g}" for g in gaps) + " |", "|:--|" + "--:|" * len(gaps)]
    for name, path in clips.items():
        cells = []
        for g in gaps:
            grab = min(step_cost(path, g, False) for _ in range(repeats))
            sought = min(step_cost(path, g, True) for _ in range(repeats))
            cells.append(f"{grab * 1e3:.1f} / {sought * 1e3:.1f}" + (" **seek**" if sought < grab else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict:
    import av

    return {
        "cpu": cpu_name(),
        "pyav": av.__version__,
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "opencv_threads": cv2.getNumThreads(),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "load_avg_start": os.getloadavg(),
    }


def markdown(rows: list[dict]) -> str:
    head = ["clip", "method", "frames decoded", "seconds", "speed-up", "verified", "note"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(":--" if h in ("clip", "method", "note") else "--:" for h in head) + "|",
    ]
    for r in rows:
        cells = [r["clip"], r["method"], str(r["frames decoded"]), f"{r['seconds']:.3f}", f"{r['speed-up']:.1f}x"]
        lines.append("| " + " | ".join([*cells, r["verified"], r["note"]]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 60], help="clip lengths")
    ap.add_argument("--frames", type=int, default=32, help="frames sampled per clip")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of timings; the best is reported")
    ap.add_argument(
        "--gaps",
        type=int,
        nargs="*",
        default=[8, 16, 20, 24, 32, 48],
        help="gaps of the break-even table (grab through versus seek, on 40 s mp4v and MJPG clips); none: skip it",
    )
    args = ap.parse_args(argv)

    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="bench_video_"))
    rows = []
    try:
        for seconds in args.seconds:
            t0 = time.perf_counter()
            clip = write_clip(workdir / f"clip_{seconds:g}s.mp4", seconds)
            print(f"wrote {clip.name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            rows += bench_clip(clip, seconds, args.frames, args.repeats)
        if args.gaps:
            pair = {f"{fourcc} {ext}": write_clip(workdir / f"gaps{ext}", 40, fourcc) for ext, fourcc in GAP_CODECS}
            gaps_table = break_even(pair, args.gaps, args.repeats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info["load_avg_end"] = os.getloadavg()
    print(f"clips: {W}x{H}, {FPS} fps, mp4v; {args.frames} frames sampled; SEEK_MIN_GAP = {SEEK_MIN_GAP}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(markdown(rows))
    seek_rows = [r for r in rows if r["method"] == "seek"]
    longest = max(seek_rows, key=lambda r: r["length_s"])
    per_clip = ", ".join(f"{r['length_s']:g} s clip {r['seconds'] * 1e3:.0f} ms" for r in seek_rows)
    print(f"seek: {per_clip}; on the longest, {longest['speed-up']:.1f}x faster than all_frames (goal: 5x)")
    if args.gaps:
        print("\nms per sampled frame, grabbing through a gap of N frames / seeking across it (best of each):")
        print(gaps_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
