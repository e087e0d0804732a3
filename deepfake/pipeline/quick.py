"""Quick-check inputs: the tiny datasets and runs behind the notebooks' defaults and the tests.

A notebook opened with ``quick=True`` (its default, which nbval runs) reads and writes under
``build/quick/`` with ``QUICK_OVERRIDES`` applied to ``params.yaml``; the stage module
(``deepfake.pipeline.stages.ensure_upstream``) builds whatever earlier stage's output such a run
lacks on the tiny datasets made here, so every notebook runs on a fresh clone. Imports no stage.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pandas as pd

from ..core import paths
from ..data.synth import SynthConfig, generate

#: What a quick check changes in params.yaml: a tiny dataset, one epoch, few bootstrap draws.
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "base": {"device": "cpu"},
    "synth": {"n_identities": 32, "images_per_identity": 1, "image_size": 64, "seed": 0},
    "preprocess": {"size": 64, "workers": 1},
    "train": {"weights": "none", "epochs": 1, "batch_size": 16, "image_size": 64, "patience": 0},
    "evaluate": {"bootstrap": 200, "latency_images": 5},
}
#: A second tiny dataset (other seed and resolution) standing in for a cross-dataset test.
QUICK_CROSS = {"n_identities": 8, "images_per_identity": 2, "image_size": 48, "seed": 1}
QUICK_CROSS_NAME = "quick"


def merge_overrides(*layers: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Section-wise merge of override mappings, later ones winning."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for sec, values in (layer or {}).items():
            out.setdefault(sec, {}).update(values)
    return out


def quick_synth(**overrides: Any) -> SynthConfig:
    """The quick dataset's config (one rendering process)."""
    return SynthConfig(**{**QUICK_OVERRIDES["synth"], "workers": 1, **overrides})


def write_params(path: str | os.PathLike, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    """A complete params file at ``path``: the repository's ``params.yaml`` with ``overrides`` applied."""
    import yaml

    from ..core.config import read_yaml

    out = Path(path)
    out.write_text(yaml.safe_dump(merge_overrides(read_yaml(paths.PARAMS_FILE), overrides), sort_keys=False))
    return out


def ensure_quick_dataset(raw_dir: str | os.PathLike, cfg: SynthConfig | None = None) -> Path:
    """Create the tiny synthetic dataset at ``raw_dir`` unless a dataset is already there."""
    raw = paths.resolve(raw_dir)
    if not raw.exists():
        generate(raw, cfg or quick_synth(), progress=False)
    return raw


def ensure_quick_mixed_dataset(raw_dir: str | os.PathLike, cfg: SynthConfig | None = None) -> Path:
    """A quick dataset with the awkward inputs real collections have, created when missing.

    The tiny synthetic set plus, listed in its manifest: a zero-byte file, a text file named
    ``.jpg``, a truncated JPEG, a grayscale PNG and an RGBA PNG (both usable after conversion),
    a 12-frame video of (mirrored) fake faces, and a video file that cannot be opened.
    """
    import cv2
    import numpy as np
    from PIL import Image

    raw = paths.resolve(raw_dir)
    if raw.exists():
        return raw
    tmp = raw.with_name(raw.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an interrupted run
    generate(tmp, cfg or quick_synth(), progress=False)
    manifest = pd.read_csv(tmp / "manifest.csv", dtype=str, keep_default_na=False)
    real = sorted((tmp / "real").glob("*.jpg"))
    fake = sorted((tmp / "fake").glob("*.jpg"))
    img = np.asarray(Image.open(real[0]).convert("RGB"))
    (tmp / "fake" / "empty.jpg").write_bytes(b"")
    (tmp / "real" / "notes.jpg").write_text("not a photo\n")
    (tmp / "real" / "cut.jpg").write_bytes(real[1].read_bytes()[: real[1].stat().st_size // 2])
    Image.fromarray(img).convert("L").save(tmp / "real" / "grey.png")
    Image.fromarray(img).convert("RGBA").save(tmp / "real" / "alpha.png")
    h, w = img.shape[:2]
    writer = cv2.VideoWriter(str(tmp / "fake" / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))  # type: ignore[attr-defined]
    for f in fake[:12]:  # mirrored: frames that are not copies of the dataset's images
        writer.write(cv2.cvtColor(np.asarray(Image.open(f).convert("RGB"))[:, ::-1], cv2.COLOR_RGB2BGR))
    writer.release()
    (tmp / "fake" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    files = [
        "fake/empty.jpg",
        "real/notes.jpg",
        "real/cut.jpg",
        "real/grey.png",
        "real/alpha.png",
        "fake/clip.avi",
        "fake/broken.mp4",
    ]
    labels = ["fake", "real", "real", "real", "real", "fake", "fake"]
    same = manifest.loc[manifest["file"] == real[0].relative_to(tmp).as_posix(), "group"].iloc[
        0
    ]  # grey/alpha: copies of real[0]
    groups = ["", "", "", same, same, "", ""]
    extra = pd.DataFrame({"file": files, "label": labels, "group": groups})
    pd.concat([manifest, extra], ignore_index=True).fillna("").to_csv(tmp / "manifest.csv", index=False)
    tmp.rename(raw)
    return raw


def ensure_quick_cross_dataset(data_dir: str | os.PathLike) -> Path:
    """A second tiny synthetic dataset (other seed, other image size) for the cross-dataset quick check."""
    return ensure_quick_dataset(data_dir, quick_synth(**QUICK_CROSS))


#: The shared real portraits (beside the repository), used by tests and benchmarks when present.
SHARED_PHOTOS = paths.ROOT.parent / "shared" / "real-faces" / "yonsei-rffd"


def face_image(index: int = 0) -> tuple[Any, str]:
    """A frontal face photo every detector finds, as (H, W, 3) uint8 RGB and where it came from:
    a shared real portrait when ``SHARED_PHOTOS`` is present, else a 256 px rendered face."""
    from ..data.media import decode_image, read_image
    from ..data.synth import make_image

    photos = sorted((SHARED_PHOTOS / "real").glob("*.jpg")) if SHARED_PHOTOS.is_dir() else []
    if photos:
        return read_image(photos[index % len(photos)]), str(photos[index % len(photos)])
    data, _ = make_image(SynthConfig(image_size=256), [0, 4, 6, 7][index % 4], 0, False)
    return decode_image(data), "rendered"


# --------------------------------------------------------------------------------------------
# Miniature benchmark trees: each laid out as its download lays it out (deepfake.data.layouts)
# --------------------------------------------------------------------------------------------

#: FaceForensics++ pairs of the miniature, taken from the official split (``read_ffpp_split``).
FFPP_QUICK_PAIRS = {"train": [("071", "054"), ("087", "081")], "val": [("720", "672")], "test": [("953", "974")]}
#: The synthetic forgery standing in for each FaceForensics++ method (``deepfake.data.synth``).
_FFPP_LOOK = {
    "Deepfakes": "swap",
    "FaceSwap": "swap",
    "FaceShifter": "swap",
    "DeepFakeDetection": "swap",
    "Face2Face": "partial",
    "NeuralTextures": "upsample",
}
#: DeepFakeDetection's actors and scenes in the miniature: originals ``01__<scene>.mp4`` and fakes
#: ``<target>_<source>__<scene>__<code>.mp4``.
DFD_QUICK = {
    "originals": ["01__exit_phone_room", "02__exit_phone_room", "03__walk_down_hall_angry"],
    "fakes": [
        "01_02__exit_phone_room__YVGY8LOK",
        "02_01__exit_phone_room__8DTEGQ54",
        "03_02__walk_down_hall_angry__MZWH8ATN",
    ],
}
#: Celeb-DF v2 in miniature: its three folders, and the official test list's lines.
CELEBDF_QUICK = {
    "Celeb-real": ["id0_0000", "id0_0001", "id1_0000", "id2_0000", "id3_0000", "id4_0000", "id5_0000"],
    "Celeb-synthesis": ["id0_id1_0000", "id1_id0_0000", "id2_id3_0000", "id3_id2_0000", "id4_id5_0000", "id5_id4_0000"],
    "YouTube-real": ["00000", "00001", "00002"],
    "test": ["1 Celeb-real/id0_0001.mp4", "1 Celeb-real/id4_0000.mp4", "1 YouTube-real/00002.mp4",
             "0 Celeb-synthesis/id4_id5_0000.mp4", "0 Celeb-synthesis/id5_id4_0000.mp4"],
}  # fmt: skip
#: DFDC in miniature: per training part, ``file -> (label, original)``.
DFDC_QUICK_PARTS: dict[str, dict[str, tuple[str, str | None]]] = {
    "dfdc_train_part_0": {
        "aaqaifqrwn.mp4": ("REAL", None),
        "abarnvbtwb.mp4": ("FAKE", "aaqaifqrwn.mp4"),
        "acxwigylke.mp4": ("FAKE", "aaqaifqrwn.mp4"),
        "bdnaqemxmr.mp4": ("REAL", None),
        "beboztfcme.mp4": ("FAKE", "bdnaqemxmr.mp4"),
    },
    "dfdc_train_part_1": {
        "cobjrlugvp.mp4": ("REAL", None),
        "crezycjqyk.mp4": ("FAKE", "cobjrlugvp.mp4"),
        "dakqwktlbi.mp4": ("REAL", None),
        "dbnygxtwek.mp4": ("FAKE", "dakqwktlbi.mp4"),
    },
}
#: The DFDC public test set in miniature: ``test/labels.csv``'s ``filename -> label`` (1 = fake).
DFDC_QUICK_TEST = {"eazvfqjxxw.mp4": 0, "ebebgmtlcu.mp4": 1, "ecujsjhscd.mp4": 1, "edyncaijwx.mp4": 0}
#: The DFDC preview in miniature: ``dataset.json``'s keys (top folder / identity folder / file) and sets.
DFDCP_QUICK = {
    "original_videos/1001/1001_a.mp4": "train",
    "original_videos/1002/1002_a.mp4": "train",
    "original_videos/1003/1003_a.mp4": "test",
    "method_A/1001/1001_1002_a.mp4": "train",
    "method_A/1003/1003_1002_a.mp4": "test",
    "method_B/1002/1002_1001_a.mp4": "train",
    "method_B/1003/1003_1001_a.mp4": "test",
}
#: Bytes standing in for files a layout never reads (masks, other compression levels): never opened.
PLACEHOLDER = b"not read by the adapters"


def _face_frames(
    identity: int, donor: int | None, look: str, frames: int, size: int, seed: int, variant: int = 0
) -> list:
    """``frames`` (size, size, 3) uint8 RGB frames of a rendered face that drifts a pixel per frame;
    with ``donor``, forged by ``look`` (``deepfake.data.synth.MANIPULATIONS``) with the donor's face.
    ``variant`` draws another scene (two methods forging the same pair give two videos)."""
    import numpy as np

    from ..data.synth import manipulate, postprocess, render, sample_identity, sample_scene

    rng = np.random.default_rng([seed, identity, 0 if donor is None else donor + 1, variant])
    ident = sample_identity(seed, identity)
    scene = sample_scene(rng, size)
    img, masks = render(ident, scene, size, rng)
    if donor is not None:
        img = manipulate(img, masks, ident, sample_identity(seed, donor), scene, look, size, rng)
    base = postprocess(img, scene, rng)
    return [np.roll(base, (k // 2, k), axis=(0, 1)) for k in range(frames)]


def write_clip(path: str | os.PathLike, frames: list) -> Path:
    """Write RGB frames as a 10 fps video: MJPG in ``.avi``, MPEG-4 part 2 (``mp4v``) otherwise."""
    import cv2

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if out.suffix.lower() == ".avi" else "mp4v"))  # type: ignore[attr-defined]
    writer = cv2.VideoWriter(str(out), fourcc, 10, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {out} (no {out.suffix} video encoder in this build)")
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return out


def make_ffpp_tree(
    root: str | os.PathLike,
    pairs: dict[str, list[tuple[str, str]]] | None = None,
    methods: tuple[str, ...] = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"),
    compression: str = "c23",
    dfd: bool = False,
    frames: int = 6,
    size: int = 96,
    seed: int = 0,
) -> Path:
    """A miniature FaceForensics++ download: ``original_sequences/youtube/<c>/videos/<id>.mp4`` for each
    id of ``pairs`` (default ``FFPP_QUICK_PAIRS``, ids of the official split), and for each method
    ``manipulated_sequences/<method>/<c>/videos/<target>_<source>.mp4`` in both directions of each
    pair, plus what a real download holds beside them that no adapter reads: ``masks/videos/`` of
    the methods and a ``c40`` copy of the originals (placeholder bytes). With ``dfd``, the actors'
    originals and their DeepFakeDetection fakes (``DFD_QUICK``). Short rendered videos; the fakes
    show the target's scene with the source's face (or a part of it)."""
    base = Path(root)
    ids = [i for ps in (pairs or FFPP_QUICK_PAIRS).values() for p in ps for i in p]
    youtube = base / "original_sequences" / "youtube"
    for i in ids:
        write_clip(youtube / compression / "videos" / f"{i}.mp4", _face_frames(int(i), None, "", frames, size, seed))
        other = youtube / "c40" / "videos" / f"{i}.mp4"
        other.parent.mkdir(parents=True, exist_ok=True)
        other.write_bytes(PLACEHOLDER)
    for method in methods:
        folder = base / "manipulated_sequences" / method
        for target, source in [p for ps in (pairs or FFPP_QUICK_PAIRS).values() for p in ps]:
            for t, s in ((target, source), (source, target)):
                variant = list(_FFPP_LOOK).index(method)
                clip = _face_frames(int(t), int(s), _FFPP_LOOK[method], frames, size, seed, variant)
                write_clip(folder / compression / "videos" / f"{t}_{s}.mp4", clip)
                mask = folder / "masks" / "videos" / f"{t}_{s}.mp4"
                mask.parent.mkdir(parents=True, exist_ok=True)
                mask.write_bytes(PLACEHOLDER)
    if dfd:
        actors = base / "original_sequences" / "actors" / compression / "videos"
        for name in DFD_QUICK["originals"]:
            write_clip(actors / f"{name}.mp4", _face_frames(2000 + int(name[:2]), None, "", frames, size, seed))
        fakes = base / "manipulated_sequences" / "DeepFakeDetection" / compression / "videos"
        for name in DFD_QUICK["fakes"]:
            actor, donor = int(name[:2]), int(name[3:5])
            clip = _face_frames(2000 + actor, 2000 + donor, "swap", frames, size, seed)
            write_clip(fakes / f"{name}.mp4", clip)
    return base


def make_celebdf_tree(root: str | os.PathLike, frames: int = 6, size: int = 96, seed: int = 0) -> Path:
    """A miniature Celeb-DF v2: ``Celeb-real/id<i>_<n>.mp4``, ``Celeb-synthesis/id<i>_id<j>_<n>.mp4``
    (identity ``i``'s video with ``j``'s face), ``YouTube-real/<n>.mp4`` and
    ``List_of_testing_videos.txt`` (``<1 real|0 fake> <folder>/<file>``), as ``CELEBDF_QUICK`` lists."""
    base = Path(root)
    for name in CELEBDF_QUICK["Celeb-real"]:
        person = int(name[2:].split("_")[0])
        write_clip(base / "Celeb-real" / f"{name}.mp4", _face_frames(100 + person, None, "", frames, size, seed))
    for name in CELEBDF_QUICK["Celeb-synthesis"]:
        a, b = (int(x[2:]) for x in name.split("_")[:2])
        write_clip(base / "Celeb-synthesis" / f"{name}.mp4", _face_frames(100 + a, 100 + b, "swap", frames, size, seed))
    for name in CELEBDF_QUICK["YouTube-real"]:
        write_clip(base / "YouTube-real" / f"{name}.mp4", _face_frames(200 + int(name), None, "", frames, size, seed))
    (base / "List_of_testing_videos.txt").write_text("\n".join(CELEBDF_QUICK["test"]) + "\n")
    return base


def make_dfdc_tree(root: str | os.PathLike, frames: int = 6, size: int = 96, seed: int = 0) -> Path:
    """A miniature DFDC: ``dfdc_train_part_<n>/`` folders of videos with their ``metadata.json``
    (``file -> {"label": "REAL"|"FAKE", "split": "train", "original": file or null}``), and the
    public test set, ``test/`` with ``labels.csv`` (``filename,label``, 1 = fake), as ``DFDC_QUICK_PARTS``
    and ``DFDC_QUICK_TEST`` list.
    A fake shows its original's scene with another person's face."""
    base = Path(root)
    person: dict[str, int] = {}
    for part, entries in DFDC_QUICK_PARTS.items():
        meta = {}
        for name, (label, original) in entries.items():
            person.setdefault(original or name, 300 + len(person))
            donor = None if original is None else 400 + len(person)
            clip = _face_frames(person[original or name], donor, "swap", frames, size, seed)
            write_clip(base / part / name, clip)
            meta[name] = {"label": label, "split": "train", "original": original}
        (base / part / "metadata.json").write_text(json.dumps(meta))
    rows = ["filename,label"]
    for n, (name, is_fake) in enumerate(DFDC_QUICK_TEST.items()):
        clip = _face_frames(500 + n, 600 + n if is_fake else None, "swap", frames, size, seed)
        write_clip(base / "test" / name, clip)
        rows.append(f"{name},{is_fake}")
    (base / "test" / "labels.csv").write_text("\n".join(rows) + "\n")
    return base


def make_dfdcp_tree(root: str | os.PathLike, frames: int = 6, size: int = 96, seed: int = 0) -> Path:
    """A miniature DFDC preview: ``original_videos/``, ``method_A/`` and ``method_B/`` with one folder
    per person, and ``dataset.json`` mapping each video's path to ``{"label": "real"|"fake",
    "set": "train"|"test"}``, as ``DFDCP_QUICK`` lists. (Only the top folders and the index's
    ``label`` and ``set`` follow the public description; the file names are illustrative.)"""
    base = Path(root)
    index = {}
    for key, subset in DFDCP_QUICK.items():
        top, person, name = key.split("/")
        fake = top != "original_videos"
        donor = int(Path(name).stem.split("_")[1]) if fake else None
        look = "swap" if top == "method_A" else "partial"
        write_clip(base / key, _face_frames(int(person), donor, look, frames, size, seed))
        index[key] = {"label": "fake" if fake else "real", "set": subset}
    (base / "dataset.json").write_text(json.dumps(index, indent=1))
    return base


def pan_zoom_frames(
    photo: Any,
    n_frames: int,
    size: tuple[int, int] = (1280, 720),
    scales: tuple[float, float] = (0.3, 0.33),
    centres: tuple[tuple[float, float], tuple[float, float]] = ((0.4, 0.5), (0.55, 0.45)),
) -> list[Any]:
    """Video-like frames of a still photo: a slow pan and zoom over it, placed in a larger frame.

    The photo is scaled from ``scales[0]`` to ``scales[1]`` times its size while its centre moves
    from ``centres[0]`` to ``centres[1]`` (fractions of the frame's width and height), its edges
    feathered into a background made of its own left and right borders, widened and blurred (a
    wall, with no second face). Gives real faces at a chosen size in a ``size`` (width, height)
    frame: ``n_frames`` (H, W, 3) uint8 RGB frames.
    """
    import cv2
    import numpy as np

    w, h = size
    ph, pw = photo.shape[:2]
    strip = max(2, pw // 12)  # the photo's outer columns: background, hardly ever face
    wall = np.concatenate([photo[:, :strip], photo[:, pw - strip :]], axis=1)
    wall = cv2.GaussianBlur(cv2.resize(wall, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), 15)
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    edge = np.minimum.reduce([xx, yy, pw - 1 - xx, ph - 1 - yy]) / (0.12 * min(ph, pw))
    alpha = np.clip(edge, 0, 1)  # 1 inside, fading to 0 over the outer 12 %
    frames = []
    for t in np.linspace(0.0, 1.0, n_frames):
        s = scales[0] + (scales[1] - scales[0]) * t
        cx = (centres[0][0] + (centres[1][0] - centres[0][0]) * t) * w
        cy = (centres[0][1] + (centres[1][1] - centres[0][1]) * t) * h
        size = (max(1, round(pw * s)), max(1, round(ph * s)))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR  # shrunk without aliasing
        m = np.array([[1.0, 0.0, cx - size[0] / 2], [0.0, 1.0, cy - size[1] / 2]])  # then placed, to the sub-pixel
        img = cv2.warpAffine(cv2.resize(photo, size, interpolation=interp), m, (w, h), flags=cv2.INTER_LINEAR)
        a = cv2.warpAffine(cv2.resize(alpha, size, interpolation=interp), m, (w, h), flags=cv2.INTER_LINEAR)
        frames.append(cv2.blendLinear(img, wall, a, 1 - a))
    return frames


def add_special_files(folder: str | os.PathLike) -> None:
    """A FIFO, a link to /dev/zero, a UNIX socket, a broken link and a link loop in ``folder``/real:
    the paths a dataset listing must name and never open (the tests of the user's own commands)."""
    root = Path(folder)
    real = root / "real"
    os.mkfifo(real / "fifo.jpg")
    os.symlink("/dev/zero", real / "zero.jpg")
    os.symlink(root / "nowhere.jpg", real / "broken.jpg")
    os.symlink("loop.jpg", real / "loop.jpg")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(real / "socket.jpg"))  # the socket file stays after the socket is closed
