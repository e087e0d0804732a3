"""Face detection and landmarks on a folder of photos: detection rate and milliseconds per image.

One command prints the machine and the table (markdown):

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_faces.py --data ../shared/real-faces/yonsei-rffd

Every photo below ``real/`` and ``fake/`` is decoded once (not timed); then each detector
(``haar``, ``dlib_hog``, ``dlib_cnn``: ``deepfake.data.detect.get_detector``, as the preprocess stage
calls it, on one thread) searches every photo in turn, timed per image. The landmark rows time
``deepfake.data.detect.get_landmarker`` (5 and 68 points) in the faces dlib_hog found, and the ``align`` row the
aligned crop (landmarks, similarity transform, warp) against the plain square crop.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from _machine import cpu_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake.data.detect import DETECT_MAX_SIDE, DETECTORS, get_detector, get_landmarker  # noqa: E402
from deepfake.data.faces import crop_around, crop_face  # noqa: E402
from deepfake.data.inputs import Preprocessing  # noqa: E402
from deepfake.data.media import kind_of, read_image  # noqa: E402


def photos(root: Path) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for lab in ("real", "fake") for p in (root / lab).rglob("*") if kind_of(p) == "image")
    return [(p.relative_to(root).as_posix(), read_image(p)) for p in files]


def timed(fn, items) -> tuple[list, list[float]]:
    out, ms = [], []
    for item in items:
        t0 = time.perf_counter()
        out.append(fn(item))
        ms.append((time.perf_counter() - t0) * 1e3)
    return out, ms


def row(name: str, what: str, found: int | str, n: int, ms: list[float], note: str = "") -> dict:
    return {
        "line": name,
        "what": what,
        "found": found,
        "of": n,
        "ms_mean": float(np.mean(ms)),
        "ms_median": float(np.median(ms)),
        "ms_p95": float(np.percentile(ms, 95)),
        "note": note,
    }


def machine() -> dict:
    import dlib

    return {
        "cpu": cpu_name(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "dlib": dlib.__version__,
        "dlib_cuda": bool(getattr(dlib, "DLIB_USE_CUDA", False)),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "load_avg_start": os.getloadavg(),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| line | what | found | of | ms / image (mean) | median | p95 | note |",
        "|:--|:--|--:|--:|--:|--:|--:|:--|",
    ]
    for r in rows:
        lines.append(
            f"| {r['line']} | {r['what']} | {r['found']} | {r['of']} | {r['ms_mean']:.1f} | {r['ms_median']:.1f} | "
            f"{r['ms_p95']:.1f} | {r['note']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a folder with real/ and fake/ photos")
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS)
    args = ap.parse_args(argv)

    info = machine()
    t0 = time.perf_counter()
    items = photos(args.data)
    if not items:
        raise SystemExit(f"{args.data} holds no photos below real/ or fake/")
    print(f"decoded {len(items)} photos in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    rows, boxes = [], {}
    for name in args.detectors:
        det = get_detector(name)
        det.detect(items[0][1])  # warm-up (model loaded, first allocations)
        found, ms = timed(lambda it, det=det: det.detect(it[1]), items)
        boxes[name] = [b[0] if b else None for b in found]
        hits = sum(bool(b) for b in found)
        several = sum(len(b) > 1 for b in found)
        rows.append(
            row(
                name, "detection", hits, len(items), ms, f"searched at <= {DETECT_MAX_SIDE[name]} px; {several} >1 face"
            )
        )
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    if "dlib_hog" in boxes:
        faces = [(rgb, b) for (_, rgb), b in zip(items, boxes["dlib_hog"]) if b is not None]
        for n in (5, 68):
            lm = get_landmarker(n)
            _, ms = timed(lambda f, lm=lm: lm.locate(*f), faces)
            rows.append(row(f"landmarks_{n}", "in dlib_hog's faces", len(faces), len(faces), ms))
        plain = Preprocessing(
            crop="face", detector="dlib_hog", margin=1.3, no_face="skip", crop_size=224, input_size=224
        )
        aligned = Preprocessing(**{**plain.to_dict(), "landmarks": 68, "align": True})
        _, ms = timed(lambda f: crop_face(f[0], f[1], 224, 1.3), faces)
        rows.append(row("square_crop", "224 px crop of dlib_hog's face", len(faces), len(faces), ms))
        _, ms = timed(lambda f: crop_around(f[0], f[1], 1, aligned), faces)
        rows.append(row("align", "68 landmarks + aligned 224 px crop", len(faces), len(faces), ms))
        missed = [p for (p, _), b in zip(items, boxes["dlib_hog"]) if b is None]
        print(f"dlib_hog found no face in {len(missed)}: {', '.join(missed[:12])}", file=sys.stderr)
    info["load_avg_end"] = os.getloadavg()
    print(f"photos: {len(items)} from {args.data}; whole run {time.perf_counter() - t0:.0f} s")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
