"""Face preprocessing at the field's scale: ``face_search: full`` (every frame searched whole) against ``adaptive``.

One command prints the machine and every table (markdown):

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_face_search.py

1. **Clips.** 720p test clips written to a temporary folder: each of ``--clips`` real portraits
   (``../shared/real-faces/yonsei-rffd/real``; rendered faces when that folder is absent) placed
   in a 1280 x 720 frame with a slow pan and zoom over 2-3 s at 25 fps
   (``deepfake.pipeline.quick.pan_zoom_frames``), its face 70-250 px wide (the sizes FaceForensics++
   shows), encoded as FaceForensics++'s c23 videos are: H.264 (libx264, CRF 23; mp4v when PyAV has
   no H.264 encoder). One 20 s clip (500 frames, about an average FaceForensics++ video) measures
   what decoding a longer video adds.
2. **Faces found.** Each clip's 32 sampled frames (``deepfake.data.video.sample_video``) cropped
   by ``deepfake.data.faces.crop_frames`` with both contracts (dlib_hog, video_upsample 1, 68
   landmarks), in one process, the order alternating per clip: per frame, found by one, the other
   or both, and the IoU of the two boxes. The detector's own noise for comparison: the full
   search on a frame against the full search on the same frame cut by 3 px left and 5 px top.
3. **Throughput.** The preprocess stage itself (``deepfake.data.preprocess.preprocess``: decode,
   detect, follow, 68 landmarks, crop, PNG, manifest) on the clips into fresh temporary caches,
   with 1 and 2 worker processes, both strategies, ``--repeats`` interleaved rounds (ABAB, order
   swapped every round), medians.
4. **Photos.** Every shared photo searched by ``crop_image``'s detection with both contracts
   (found, IoU, ms), and the predictor (``deepfake.inference.predict.Predictor.predict``, a 600 x 600
   photo to a probability) timed on ``--latency-photos`` photos with two copies of a checkpoint
   whose contracts differ only by ``face_search`` (dlib_hog, no upsampling), calls alternating.

``--videos FOLDER`` compares the two on one's own videos (a folder with ``real/`` and ``fake/``, as
the preprocess stage reads it, e.g. FaceForensics++ c23) instead of the generated clips.

Extrapolations (FaceForensics++ c23, 6,000 videos x 32 frames; per 1,000 videos on N cores) use
the 1-worker rate per core and assume cores add up; the 2-worker row shows how far that holds here.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from _machine import cpu_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake.data.detect import FaceBox, get_detector  # noqa: E402
from deepfake.data.faces import crop_frames, find_largest  # noqa: E402
from deepfake.data.inputs import Preprocessing  # noqa: E402
from deepfake.data.media import kind_of, read_image  # noqa: E402
from deepfake.data.preprocess import PreprocessConfig, preprocess  # noqa: E402
from deepfake.data.video import sample_video  # noqa: E402
from deepfake.pipeline.quick import SHARED_PHOTOS, face_image, pan_zoom_frames  # noqa: E402

FPS = 25
FRAME = (1280, 720)
FACE_WIDTHS = (70, 250)
FFPP_VIDEOS, FFPP_FRAMES = 6000, 32
STRATEGIES = ("full", "adaptive")


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------


def write_clip(path: Path, frames: list[np.ndarray], fps: int = FPS) -> str:
    """Encode RGB frames as H.264 (CRF 23, as FaceForensics++'s c23) with PyAV, else mp4v; the codec used."""
    import av

    try:
        av.codec.Codec("libx264", "w")
        codec, options = "libx264", {"crf": "23"}
    except Exception:  # a PyAV build without an H.264 encoder
        codec, options = "mpeg4", {}
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return codec


def portraits(n: int) -> list[tuple[np.ndarray, FaceBox, str]]:
    """``n`` portraits whose face dlib_hog finds, with that face's box: shared photos, else rendered faces."""
    det, out, i = get_detector("dlib_hog"), [], 0
    while len(out) < n and i < 40 * n:
        rgb, source = face_image(i)
        i += 1
        box = det.largest(rgb)
        if box is not None:
            out.append((rgb, box, Path(source).name))
    if len(out) < n:
        raise SystemExit(f"found only {len(out)} portraits with a face")
    return out


def make_clips(folder: Path, n: int, seed: int) -> tuple[list[dict], str]:
    """``n`` 720p clips below ``folder/real`` and ``folder/fake`` (labels only split them in two)."""
    rng = np.random.default_rng(seed)
    clips, codec = [], ""
    for i, (photo, box, source) in enumerate(portraits(n)):
        width = rng.uniform(*FACE_WIDTHS)
        s0 = width / box.w
        frames = pan_zoom_frames(
            photo,
            int(rng.integers(2 * FPS, 3 * FPS + 1)),
            FRAME,
            scales=(s0, s0 * rng.uniform(0.9, 1.15)),
            centres=(
                (rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.65)),
                (rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.65)),
            ),
        )
        path = folder / ("real" if i % 2 == 0 else "fake") / f"clip{i:02d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        codec = write_clip(path, frames)
        clips.append({"path": path, "face_width": width, "frames": len(frames), "source": source})
    return clips, codec


# --------------------------------------------------------------------------------------------
# Faces found, box agreement
# --------------------------------------------------------------------------------------------


def iou(a: FaceBox, b: FaceBox) -> float:
    iw = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    ih = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = iw * ih
    return inter / (a.area + b.area - inter)


def contracts(**kw) -> dict[str, Preprocessing]:
    base = Preprocessing(crop="face", detector="dlib_hog", margin=1.3, no_face="skip", crop_size=96, input_size=96)
    base = replace(base, **kw)
    return {s: replace(base, face_search=s) for s in STRATEGIES}


def compare_frames(clips: list[dict]) -> dict:
    """Both strategies on each clip's sampled frames (one process): found, IoU, n_faces, seconds."""
    preps = contracts(video_upsample=1, landmarks=68)
    seconds = {s: 0.0 for s in STRATEGIES}
    cpu = {s: 0.0 for s in STRATEGIES}
    counts = {"frames": 0, "both": 0, "full_only": 0, "adaptive_only": 0, "neither": 0, "n_faces_differ": 0}
    ious: list[float] = []
    for i, clip in enumerate(clips):
        sample = sample_video(clip["path"], FFPP_FRAMES)
        clip["frames"] = sample.n_frames
        frames = [rgb for _, rgb in sample.frames]
        crops = {}
        for s in STRATEGIES if i % 2 == 0 else STRATEGIES[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            crops[s] = crop_frames(frames, preps[s])
            seconds[s] += time.perf_counter() - t0
            cpu[s] += time.process_time() - c0
        clip["found"] = {s: sum(c.box is not None for c in crops[s]) for s in STRATEGIES}
        for a, b in zip(crops["full"], crops["adaptive"]):
            counts["frames"] += 1
            counts["n_faces_differ"] += a.n_faces != b.n_faces
            if a.box is not None and b.box is not None:
                counts["both"] += 1
                ious.append(iou(a.box, b.box))
            elif a.box is not None:
                counts["full_only"] += 1
            elif b.box is not None:
                counts["adaptive_only"] += 1
            else:
                counts["neither"] += 1
        print(f"  {clip['path'].name}: face {clip['face_width'] or '?'} px, found {clip['found']}", file=sys.stderr)
    return {**counts, "ious": np.array(ious), "seconds": seconds, "cpu": cpu}


def noise_floor(clips: list[dict], every: int = 4) -> np.ndarray:
    """IoU of the full search's box on a frame and on the same frame cut by 3 px left and 5 px top."""
    det, out = get_detector("dlib_hog"), []
    for clip in clips:
        for _, rgb in sample_video(clip["path"], FFPP_FRAMES).frames[::every]:
            a = det.detect(rgb, 1)
            b = det.detect(np.ascontiguousarray(rgb[5:, 3:]), 1)
            if a and b:
                out.append(iou(a[0], FaceBox(b[0].x + 3, b[0].y + 5, b[0].w, b[0].h)))
    return np.array(out)


def iou_summary(ious: np.ndarray) -> str:
    if not len(ious):
        return "no frame found by both"
    q = np.percentile(ious, [5, 25, 50])
    return (
        f"{(ious >= 0.8).mean():.1%} of {len(ious)} at IoU >= 0.8, {(ious >= 0.5).mean():.1%} at >= 0.5; "
        f"p5 {q[0]:.2f}, p25 {q[1]:.2f}, median {q[2]:.2f}, min {ious.min():.2f}"
    )


# --------------------------------------------------------------------------------------------
# Throughput of the preprocess stage
# --------------------------------------------------------------------------------------------


def stage_config(strategy: str, workers: int) -> PreprocessConfig:
    return PreprocessConfig(
        detect=True,
        detector="dlib_hog",
        upsample=0,
        video_upsample=1,
        landmarks=68,
        frames_per_video=FFPP_FRAMES,
        workers=workers,
        face_search=strategy,
    )


def stage_throughput(data: Path, work: Path, repeats: int) -> dict[tuple[str, int], dict]:
    """The preprocess stage on ``data`` into fresh caches: seconds per run, ABAB over strategies and workers."""
    runs: dict[tuple[str, int], dict] = {}
    for r in range(repeats):
        order = STRATEGIES if r % 2 == 0 else STRATEGIES[::-1]
        for workers in (1, 2):
            for s in order:
                out = work / f"cache_{s}_{workers}_{r}"
                t0, c0 = time.perf_counter(), time.process_time()
                res = preprocess(data, out, stage_config(s, workers), progress=False)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                shutil.rmtree(out)
                run = runs.setdefault((s, workers), {"seconds": [], "cpu": [], "summary": res.summary})
                run["seconds"].append(wall)
                run["cpu"].append(cpu)  # this process only: with 1 worker the stage runs in it
                print(
                    f"  round {r + 1}: {s}, {workers} worker(s): {wall:.1f} s, {res.summary['decoded']} frames, "
                    f"{res.summary['faces_found']} faces, load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
    return runs


def pool_start(folder: Path, work: Path, repeats: int = 2) -> float:
    """Seconds the stage takes with 2 workers on two 1-frame clips: starting the pool and loading the
    dlib models in each worker, which a 1-worker run in this process has already done."""
    photo, box, _ = portraits(1)[0]
    for label, width in (("real", 150), ("fake", 160)):  # two different clips (identical ones draw a warning)
        (folder / label).mkdir(parents=True, exist_ok=True)
        write_clip(folder / label / "one.mp4", pan_zoom_frames(photo, 1, FRAME, scales=(width / box.w,) * 2))
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        preprocess(folder, work / f"cache_start_{r}", stage_config("adaptive", 2), progress=False)
        times.append(time.perf_counter() - t0)
        shutil.rmtree(work / f"cache_start_{r}")
    return statistics.median(times)


def decode_cost(folder: Path, short: Path, repeats: int = 3) -> dict:
    """Seconds to sample 32 frames from a 20 s clip (500 frames) and from a short one, and from the
    20 s clip decoding every frame (as before non-reference frames were skipped).

    The 20 s clip pans over a mosaic of 24 portraits with a little noise: sharp detail everywhere,
    so it costs the decoder more than the clips above (its bitrate is reported).
    """
    from deepfake.data import video

    tiles = [cv2.resize(face_image(i)[0], (400, 400), interpolation=cv2.INTER_AREA) for i in range(24)]
    mosaic = np.vstack([np.hstack(tiles[r * 6 : (r + 1) * 6]) for r in range(4)])  # 1600 x 2400
    rng = np.random.default_rng(0)
    frames = []
    for t in range(20 * FPS):
        x, y = 2 * t, int(300 + 200 * np.sin(t / 60))
        noisy = mosaic[y : y + FRAME[1], x : x + FRAME[0]] + rng.normal(0, 3, (FRAME[1], FRAME[0], 3))
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    long = folder / "long.mp4"
    write_clip(long, frames)
    every = video._decode_sampled

    def decode_all(container, stream, sampled):
        return every(container, stream, lambda packet: True)

    t: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, path in (("long", long), ("short", short), ("long_every_frame", long)):
            if name == "long_every_frame":
                video._decode_sampled = decode_all
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                sample_video(path, FFPP_FRAMES)
            finally:
                video._decode_sampled = every
            t.setdefault(name, []).append(time.perf_counter() - t0)
            t.setdefault(f"{name}_cpu", []).append(time.process_time() - c0)
    out = {k: statistics.median(v) for k, v in t.items()}
    out["kbps"] = long.stat().st_size * 8 / 20 / 1000
    return out


# --------------------------------------------------------------------------------------------
# Photos
# --------------------------------------------------------------------------------------------


def compare_photos(files: list[Path]) -> dict:
    """Detection as ``crop_image`` runs it (no upsampling), both strategies on every photo, alternating."""
    preps = contracts(upsample=0)
    ms = {s: [] for s in STRATEGIES}
    cpu = {s: [] for s in STRATEGIES}
    found = {s: 0 for s in STRATEGIES}
    full_only = adaptive_only = 0
    ious = []
    for i, f in enumerate(files):
        rgb = read_image(f)
        boxes = {}
        for s in STRATEGIES if i % 2 == 0 else STRATEGIES[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            b = find_largest(rgb, preps[s])
            ms[s].append((time.perf_counter() - t0) * 1e3)
            cpu[s].append((time.process_time() - c0) * 1e3)
            boxes[s] = b[0] if b else None
            found[s] += bool(b)
        a, b = boxes["full"], boxes["adaptive"]
        if a is not None and b is not None:
            ious.append(iou(a, b))
        full_only += a is not None and b is None
        adaptive_only += a is None and b is not None
    return {
        "n": len(files),
        "found": found,
        "full_only": full_only,
        "adaptive_only": adaptive_only,
        "ious": np.array(ious),
        "ms": {s: statistics.median(v) for s, v in ms.items()},
        "cpu": {s: statistics.median(v) for s, v in cpu.items()},
    }


def predictor_latency(checkpoint: Path | None, files: list[Path], work: Path) -> dict:
    """Median ms of ``Predictor.predict`` on each photo, two checkpoint copies differing by ``face_search``."""
    import torch

    from deepfake.inference.predict import Predictor
    from deepfake.inference.prediction import NoFaceError, PredictConfig
    from deepfake.models.architectures import build_model
    from deepfake.models.checkpoint import preprocessing_of

    if checkpoint is None:
        torch.manual_seed(0)
        model, used = build_model("resnet18", weights="none")
        saved = {"model": model.state_dict(), "arch": "resnet18", "image_size": 96, "epoch": 0, "weights_used": used}
        note = "ResNet18, random weights, 96 px input"
    else:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        note = f"{checkpoint}: {saved['arch']}, {saved['image_size']} px input"
    size = int(saved["image_size"])
    base = preprocessing_of(saved) if "preprocessing" in saved else None
    predictors = {}
    for s in STRATEGIES:
        prep = Preprocessing(
            crop="face",
            detector="dlib_hog",
            margin=base.margin if base else 1.3,
            no_face="skip",
            crop_size=size,
            input_size=size,
            face_search=s,
        )
        path = work / f"predict_{s}.pt"
        torch.save({**saved, "preprocessing": prep.to_dict()}, path)
        predictors[s] = Predictor(path, "cpu", PredictConfig(calibration_file="", workers=0))
    ms = {s: [] for s in STRATEGIES}
    cpu = {s: [] for s in STRATEGIES}
    parts = {s: [] for s in STRATEGIES}
    for s in STRATEGIES:  # warm-up: models, first allocations
        try:
            predictors[s].predict(files[0])
        except NoFaceError:
            pass
    for i, f in enumerate(files):
        for s in STRATEGIES if i % 2 == 0 else STRATEGIES[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                parts[s].append(predictors[s].predict(f).timing_ms)
            except NoFaceError:  # still timed: it is what the user waits for
                pass
            ms[s].append((time.perf_counter() - t0) * 1e3)
            cpu[s].append((time.process_time() - c0) * 1e3)
    return {
        "note": note,
        "threads": torch.get_num_threads(),
        "median": {s: statistics.median(v) for s, v in ms.items()},
        "p90": {s: float(np.percentile(v, 90)) for s, v in ms.items()},
        "cpu": {s: statistics.median(v) for s, v in cpu.items()},
        "parts": {
            s: {k: statistics.median(t[k] for t in parts[s]) for k in ("decode", "face", "model")} for s in STRATEGIES
        },
        "n": len(files),
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine() -> str:
    import av
    import dlib
    import torch

    return (
        f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores usable, Python {platform.python_version()}, "
        f"dlib {dlib.__version__} (AVX {bool(getattr(dlib, 'USE_AVX_INSTRUCTIONS', False))}), "
        f"OpenCV {cv2.__version__}, PyAV {av.__version__}, torch {torch.__version__}"
    )


def minutes(seconds: float) -> str:
    return (
        f"{seconds / 60:.1f} min"
        if seconds < 600
        else f"{seconds / 60:.0f} min"
        if seconds < 5400
        else f"{seconds / 3600:.1f} h"
    )


def report_videos(clips, codec, frames, floor, runs, start, decode) -> list[str]:
    n = runs[("full", 1)]["summary"]["decoded"]  # frames per run
    med = {k: statistics.median(v["seconds"]) for k, v in runs.items()}
    rate = {k: n / med[k] for k in med}  # frames per second, all workers together
    cpu_rate = {s: n / statistics.median(runs[(s, 1)]["cpu"]) for s in STRATEGIES}  # per CPU-second, 1 worker
    widths = [c["face_width"] for c in clips if c["face_width"]]
    fs, fc = frames["seconds"], frames["cpu"]
    length = f"{min(c['frames'] for c in clips)}-{max(c['frames'] for c in clips)} frames"
    lines = [
        f"Clips: {len(clips)} x 1280x720, {codec}{' CRF 23' if codec == 'libx264' else ''}, 25 fps, {length}, faces "
        f"{min(widths):.0f}-{max(widths):.0f} px wide (median {statistics.median(widths):.0f}); "
        f"{'shared real portraits' if SHARED_PHOTOS.is_dir() else 'rendered faces'}."
        if widths
        else f"Videos: {len(clips)} from {codec}, {length}.",
        "",
        "### Faces found on the clips (32 sampled frames each, in one process)",
        "",
        "| | frames | found by both | full only (lost) | adaptive only (gained) | neither | n_faces differ |",
        "|:--|--:|--:|--:|--:|--:|--:|",
        f"| adaptive vs full | {frames['frames']} | {frames['both']} | {frames['full_only']} | "
        f"{frames['adaptive_only']} | {frames['neither']} | {frames['n_faces_differ']} |",
        "",
        f"- Box IoU, adaptive vs full: {iou_summary(frames['ious'])}.",
        f"- The full search against itself on the frame cut by 3 px left and 5 px top: {iou_summary(floor)}.",
        f"- Cropping all {frames['frames']} decoded frames (detect, follow, 68 landmarks, crop): full "
        f"{fs['full']:.1f} s ({fc['full']:.1f} s CPU), adaptive {fs['adaptive']:.1f} s ({fc['adaptive']:.1f} s CPU): "
        f"{fs['full'] / fs['adaptive']:.2f}x ({fc['full'] / fc['adaptive']:.2f}x in CPU time).",
        "",
        "### Preprocess stage throughput (decode, detect, follow, 68 landmarks, crop, PNG)",
        "",
        "| face_search | workers | seconds (median) | rounds (s) | frames/s | per core | vs full | frames per CPU-s |",
        "|:--|--:|--:|:--|--:|--:|--:|--:|",
    ]
    for workers in (1, 2):
        for s in STRATEGIES:
            r = runs[(s, workers)]
            lines.append(
                f"| {s} | {workers} | {med[(s, workers)]:.1f} | {', '.join(f'{x:.1f}' for x in r['seconds'])} | "
                f"{rate[(s, workers)]:.1f} | {rate[(s, workers)] / workers:.1f} | "
                f"{rate[(s, workers)] / rate[('full', workers)]:.2f}x | "
                f"{f'{cpu_rate[s]:.1f}' if workers == 1 else ''} |"
            )
    lines.append("")
    for s in STRATEGIES:
        sm = runs[(s, 1)]["summary"]
        lines.append(f"- {s}: {sm['faces_found']} of {sm['decoded']} frames with a face, {sm['written']} crops.")
    lines.append(
        f"- Starting 2 workers and loading the dlib models in each (2 one-frame clips): {start:.1f} s, paid once "
        "per run; the 1-worker runs reuse this process's models."
    )
    for s in STRATEGIES:
        steady = n / max(med[(s, 2)] - start, 1e-9)
        lines.append(
            f"- {s}: 2 workers {rate[(s, 2)] / rate[(s, 1)]:.2f}x the frames/s of 1 worker; "
            f"{steady / rate[(s, 1)]:.2f}x without the pool's start ({steady / 2:.1f} frames/s per core)."
        )
    per_video = {s: (FFPP_FRAMES / rate[(s, 1)], FFPP_FRAMES / cpu_rate[s]) for s in STRATEGIES}  # wall, CPU
    lines += ["", "### Extrapolation to FaceForensics++ c23 (6,000 videos x 32 frames), 8 cores", ""]
    if decode is None:  # the user's own videos: their own length
        lines += [
            "| face_search | s per video, wall clock | CPU time | FF++ c23 on 8 cores, wall clock | CPU time |",
            "|:--|--:|--:|--:|--:|",
        ]
        for s in STRATEGIES:
            a, c = per_video[s]
            lines.append(
                f"| {s} | {a:.2f} | {c:.2f} | {minutes(FFPP_VIDEOS * a / 8)} | {minutes(FFPP_VIDEOS * c / 8)} |"
            )
        longer = {s: per_video[s][0] for s in STRATEGIES}
    else:
        # a longer video adds decoding: today's path decoded every frame, the new one skips unreferenced ones
        extra = {
            "full": (
                decode["long_every_frame"] - decode["short"],
                decode["long_every_frame_cpu"] - decode["short_cpu"],
            ),
            "adaptive": (decode["long"] - decode["short"], decode["long_cpu"] - decode["short_cpu"]),
        }
        lines += [
            f"Sampling 32 frames from a 20 s clip (500 frames of sharp detail, {decode['kbps']:.0f} kbit/s): "
            f"{decode['long']:.2f} s ({decode['long_cpu']:.2f} s CPU), against {decode['long_every_frame']:.2f} s "
            f"({decode['long_every_frame_cpu']:.2f} s CPU) decoding every frame as before; from a "
            f"{clips[0]['frames']}-frame clip above: {decode['short']:.2f} s ({decode['short_cpu']:.2f} s CPU). "
            "The 20 s columns add that difference to each video (today's path: full search, every frame decoded; "
            "the new one: adaptive, unreferenced frames skipped).",
            "",
            "| face_search | rate from | s per video: these clips | 20 s videos | FF++ c23, 8 cores: these | 20 s |",
            "|:--|:--|--:|--:|--:|--:|",
        ]
        for s in STRATEGIES:
            for basis, base, x in (
                ("wall clock, 1 worker", per_video[s][0], extra[s][0]),
                ("CPU time, 1 worker", per_video[s][1], extra[s][1]),
            ):
                lines.append(
                    f"| {s} | {basis} | {base:.2f} | {base + x:.2f} | {minutes(FFPP_VIDEOS * base / 8)} | "
                    f"{minutes(FFPP_VIDEOS * (base + x) / 8)} |"
                )
        longer = {s: per_video[s][0] + extra[s][0] for s in STRATEGIES}
    lines += [
        "",
        "### Preprocessing time per 1,000 videos",
        "",
        "| face_search | videos | s per video per core | 1 core | 2 cores | 8 cores | 32 cores |",
        "|:--|:--|--:|--:|--:|--:|--:|",
    ]
    for s in STRATEGIES:
        rows = [(f"{clips[0]['frames']}-frame clips as here" if decode else "these videos", per_video[s][0])]
        if decode is not None:
            rows.append(("20 s", longer[s]))
        for label, sec in rows:
            cells = " | ".join(minutes(1000 * sec / k) for k in (1, 2, 8, 32))
            lines.append(f"| {s} | {label} | {sec:.2f} | {cells} |")
    return lines


def report_photos(photos, latency) -> list[str]:
    lines = [
        "### Photos",
        "",
        f"Detection as `crop_image` runs it (dlib_hog, no upsampling) on {photos['n']} photos: found "
        f"{photos['found']['full']} (full) / {photos['found']['adaptive']} (adaptive); lost "
        f"{photos['full_only']}, gained {photos['adaptive_only']}; box IoU {iou_summary(photos['ious'])}; "
        f"median ms full {photos['ms']['full']:.1f} ({photos['cpu']['full']:.1f} CPU), adaptive "
        f"{photos['ms']['adaptive']:.1f} ({photos['cpu']['adaptive']:.1f} CPU): "
        f"{photos['ms']['full'] / photos['ms']['adaptive']:.2f}x.",
        "",
        f"Predictor, a photo to a probability ({latency[0]['note']}), {latency[0]['n']} photos, calls alternating "
        "(decode, face, model: the medians of the predictor's own timings):",
        "",
        "| torch threads | face_search | median ms | p90 ms | CPU ms (median) | decode | face | model |",
        "|--:|:--|--:|--:|--:|--:|--:|--:|",
    ]
    for lat in latency:
        for s in STRATEGIES:
            p = lat["parts"][s]
            lines.append(
                f"| {lat['threads']} | {s} | {lat['median'][s]:.1f} | {lat['p90'][s]:.1f} | {lat['cpu'][s]:.1f} | "
                f"{p['decode']:.1f} | {p['face']:.1f} | {p['model']:.1f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", default=["videos", "photos"], choices=["videos", "photos"])
    ap.add_argument("--clips", type=int, default=20, help="720p test clips")
    ap.add_argument("--videos", type=Path, default=None, help="a folder with real/ and fake/ videos instead of clips")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds of the stage runs")
    ap.add_argument("--photos", type=Path, default=SHARED_PHOTOS, help="a folder with real/ and fake/ photos")
    ap.add_argument("--latency-photos", type=int, default=60, help="photos the predictor is timed on")
    ap.add_argument("--detect-photos", type=int, default=0, help="photos the detection is compared on (0: all)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: ResNet18 with random weights at 96 px")
    ap.add_argument(
        "--torch-threads", type=int, nargs="+", default=[0, 1], help="threads of the predictor's model (0: torch's own)"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t_start, loads = time.perf_counter(), [os.getloadavg()[0]]
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "videos" in args.parts:
            data = args.videos
            if data is None:
                print("writing clips...", file=sys.stderr, flush=True)
                data = work / "clips"
                clips, codec = make_clips(data, args.clips, args.seed)
            else:  # the user's own videos, e.g. FaceForensics++ c23's
                found = sorted(p for p in data.rglob("*") if kind_of(p) == "video")
                clips, codec = [{"path": p, "face_width": None, "frames": 0} for p in found], str(data)
            print("faces found...", file=sys.stderr, flush=True)
            frames = compare_frames(clips)
            floor = noise_floor(clips)
            print("decode cost...", file=sys.stderr, flush=True)
            decode = decode_cost(work, clips[0]["path"]) if args.videos is None else None
            print("preprocess stage...", file=sys.stderr, flush=True)
            runs = stage_throughput(data, work, args.repeats)
            start = pool_start(work / "start", work)
            lines += ["", *report_videos(clips, codec, frames, floor, runs, start, decode)]
        if "photos" in args.parts:
            files = sorted(p for lab in ("real", "fake") for p in (args.photos / lab).glob("*.jpg"))
            if not files:  # no shared photos: rendered portraits written as JPEG
                (work / "photos").mkdir()
                for i in range(args.latency_photos):
                    rgb, _ = face_image(i)
                    cv2.imwrite(str(work / "photos" / f"{i}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                files = sorted((work / "photos").glob("*.jpg"))
            print("photos...", file=sys.stderr, flush=True)
            photos = compare_photos(files[:: max(1, len(files) // args.detect_photos)] if args.detect_photos else files)
            picked = [files[i] for i in np.random.default_rng(args.seed).permutation(len(files))[: args.latency_photos]]
            import torch

            latency = []
            for threads in args.torch_threads:
                torch.set_num_threads(threads or os.cpu_count() or 1)
                latency.append(predictor_latency(args.checkpoint, picked, work))
            lines += ["", *report_photos(photos, latency)]
    loads.append(os.getloadavg()[0])
    head = [
        f"Machine: {machine()}.",
        f"Load average (1 min) before / after: {loads[0]:.1f} / {loads[1]:.1f}; "
        f"whole run {(time.perf_counter() - t_start) / 60:.1f} min.",
    ]
    print("\n".join(head + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
