"""Dataset adapters: each benchmark as its own download lays it out, listed as the same records.

``scan_dataset(path, cfg)`` lists a dataset with the adapter ``cfg.layout`` names and returns a
``deepfake.data.ingest.Inventory``: one ``Source`` per video (label, group, split, kind) and the
files left out with their reason. Nothing downstream knows which dataset it came from: every
benchmark adapter sets ``extra = {"manipulation": <kind of fake, "" for reals>, "dataset": <name>}``,
so results per kind of fake (``deepfake.metrics.classification.KIND_COLUMNS``) work unchanged.

* ``folders`` / ``manifest``: ``deepfake.data.ingest.scan`` (real/ and fake/ folders, a CSV).
* ``ffpp``: FaceForensics++ as its download script writes it (``scan_ffpp``).
* ``celebdf``: Celeb-DF v2 (``scan_celebdf``).
* ``dfdc``: the DFDC training parts with their ``metadata.json`` and the public test set's
  ``labels.csv`` (``scan_dfdc``), or the DFDC preview with its ``dataset.json`` (``scan_dfdc_preview``).
* ``auto``: recognised by its folders and index files (``detect_layout``), logged.

Groups keep together every video that shows the same person: the connected components
(``Components``) of the links each dataset's file names or index give (a fake to the videos,
or identities, it was made from), so with groups no identity crosses splits. With
``split: official`` each video carries its benchmark's split; with ``split: own`` the split is
left empty and the split stage draws one by these groups.

Adapters list folders with ``os.scandir``/``os.stat`` (``deepfake.data.ingest.walk``) and read the
dataset's own index files only: no video is opened here. In the folders an adapter reads, every
file is used or listed in ``skipped`` with its reason; the folders it does not read are out of
scope by design and named in each adapter's docstring. A video an index lists but the disk lacks
is a ``missing_file`` row, counted in the log with its first names, not an error. A tree that is
not what its layout claims is refused with ``DatasetLayoutError`` naming what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import COMPRESSIONS, DataConfig, build, comma_list
from .ingest import MANIFEST_NAME, DatasetLayoutError, IngestConfig, Inventory, Source, scan, skip_row, walk
from .media import kind_of

log = logging.getLogger(__name__)

#: The settings of ``params.yaml``'s ``data`` section a ``LayoutConfig`` holds.
LAYOUT_KEYS = ("layout", "compression", "methods", "ffpp_dfd", "split")
#: The ``dataset`` column's value for each benchmark.
DATASET_NAMES = {
    "ffpp": "FaceForensics++",
    "celebdf": "Celeb-DF-v2",
    "dfdc": "DFDC",
    "dfdcp": "DFDC-preview",
}
#: How many missing or odd names a log line shows.
SHOWN = 5


def _data_default(key: str) -> Any:
    """A field whose default is ``params.yaml``'s ``data.<key>`` (read when the config is built)."""
    return field(default_factory=lambda: getattr(DataConfig(), key))


@dataclass(frozen=True)
class LayoutConfig:
    """How a dataset folder is listed (``params.yaml``: ``data``; ``DataConfig`` checks each value).

    Attributes:
        layout: ``auto``, ``folders``, ``manifest``, ``ffpp``, ``celebdf`` or ``dfdc``.
        compression: FaceForensics++ compression level (``raw``, ``c23``, ``c40``).
        methods: comma-separated FaceForensics++ manipulations.
        ffpp_dfd: also list FaceForensics++'s actors and their DeepFakeDetection fakes.
        split: ``official`` (the benchmark's own split) or ``own`` (drawn by the split stage).
    """

    layout: str = _data_default("layout")
    compression: str = _data_default("compression")
    methods: str = _data_default("methods")
    ffpp_dfd: bool = _data_default("ffpp_dfd")
    split: str = _data_default("split")

    def __post_init__(self) -> None:
        build(DataConfig, {k: getattr(self, k) for k in LAYOUT_KEYS})  # one declaration of every check

    @classmethod
    def of(cls, data: DataConfig) -> LayoutConfig:
        """The layout settings of a validated ``data`` section."""
        return cls(**{k: getattr(data, k) for k in LAYOUT_KEYS})

    @property
    def method_names(self) -> tuple[str, ...]:
        return comma_list(self.methods)

    @property
    def official(self) -> bool:
        return self.split == "official"


# --------------------------------------------------------------------------------------------
# Groups: connected components of the links between videos and identities
# --------------------------------------------------------------------------------------------


def natural_key(text: str) -> list:
    """Sort key that orders ``id2`` before ``id10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


class Components:
    """Union-find over names (identities, videos): ``link`` joins them, ``name`` names each component.

    A component's name is its members joined by ``_`` in natural order (``033_097``), or, past
    ``MAX_JOINED`` members, its first member and the count of the others (``id0_and_58_more``):
    stable for the same links, and unique, since no name belongs to two components.
    """

    MAX_JOINED = 4

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._names: dict[str, str] | None = None

    def __len__(self) -> int:
        return len(self._parent)

    def add(self, x: str) -> None:
        if x not in self._parent:
            self._parent[x] = x
            self._names = None

    def _root(self, x: str) -> str:
        self.add(x)
        root = x
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[x] != root:  # path compression
            self._parent[x], x = root, self._parent[x]
        return root

    def link(self, *xs: str) -> None:
        """Put every one of ``xs`` in one component."""
        roots = [self._root(x) for x in xs]
        for r in roots[1:]:
            self._parent[self._root(r)] = self._root(roots[0])
        self._names = None

    def members(self) -> list[list[str]]:
        """Every component's members, in natural order; components by their first member."""
        groups: dict[str, list[str]] = {}
        for x in self._parent:
            groups.setdefault(self._root(x), []).append(x)
        return sorted((sorted(m, key=natural_key) for m in groups.values()), key=lambda m: natural_key(m[0]))

    def name(self, x: str) -> str:
        if self._names is None:
            names: dict[str, str] = {}
            for m in self.members():
                label = "_".join(m) if len(m) <= self.MAX_JOINED else f"{m[0]}_and_{len(m) - 1}_more"
                names.update(dict.fromkeys(m, label))
            self._names = names
        return self._names[x]


def _report_groups(dataset: str, comps: Components, sources: list[Source]) -> None:
    """Log how many groups the links make and how large the largest is; warn when few hold most videos."""
    if not sources:
        return
    members = comps.members()
    per_group = pd.Series([s.group for s in sources]).value_counts()
    largest = max(members, key=len)
    log.info(
        f"{dataset}: {len(comps)} ids in {len(members)} component(s), {per_group.size} group(s); the "
        f"largest component holds {len(largest)} ids, the largest group {per_group.iloc[0]} of {len(sources)} videos"
    )
    if per_group.size > 1 and per_group.iloc[0] > len(sources) / 2:
        log.warning(
            f"{dataset}: the groups are few and large ({per_group.size} groups, the largest "
            f"{per_group.index[0]!r} holds {per_group.iloc[0]} of {len(sources)} videos): a split by groups is coarse, "
            "and a validation or test split drawn by groups may lack one class"
        )


@dataclass
class _Video:
    """A video found in a benchmark folder, before groups and splits are assigned."""

    rel: str
    label: str
    manipulation: str
    ids: tuple[str, ...]  # identities (or videos) it shows: the first is its own group's anchor


def _sources(
    root: Path, dataset: str, videos: list[_Video], split_of: dict[str, str], comps: Components, index: str
) -> list[Source]:
    """The records of ``videos``: each in the group of its component, unless the official split
    (``split_of``) puts a component's videos in several splits, which the benchmark's own protocol
    then does: such a component is one group per split (``<name>@<split>``), counted in a warning."""
    splits_of: dict[str, set[str]] = {}
    for v in videos:
        splits_of.setdefault(comps.name(v.ids[0]), set()).add(split_of[v.rel])
    crossing = {g for g, s in splits_of.items() if len(s) > 1}
    if crossing:
        log.warning(
            f"{dataset}: {len(crossing)} of {len(splits_of)} group(s) have videos in more than one split ({index}) "
            "(the official protocol does not hold these identities apart): each is kept as one group per split, so "
            "a validation split drawn from train is identity-disjoint from train; data.split: own keeps every "
            "identity on one side"
        )
    out = []
    for v in videos:
        group, split = comps.name(v.ids[0]), split_of[v.rel]
        group = f"{group}@{split}" if group in crossing else group
        out.append(_source(root, v.rel, v.label, group, split, v.manipulation, dataset))
    _report_groups(dataset, comps, out)
    return out


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _list_videos(
    root: Path, folder: Path, label: str, skipped: list[dict], index_files: Iterable[str] = ()
) -> dict[str, Path]:
    """The video files below ``folder`` by path relative to ``root``, listed with ``walk`` (nothing is
    opened); paths that cannot be used and files of other types go to ``skipped``. ``index_files``
    (names, e.g. ``metadata.json``) are the dataset's own and neither listed nor skipped."""
    found: dict[str, Path] = {}
    keep = set(index_files)
    for entry in walk(folder):
        rel = _rel(root, entry.path)
        if entry.problem:
            skipped.append(skip_row(rel, entry.problem, entry.detail, label))
        elif entry.path.parent == folder and entry.path.name in keep:
            continue
        elif kind_of(entry.path) != "video":
            ext = entry.path.suffix.lower() or "no extension"
            skipped.append(skip_row(rel, "unexpected_name", f"{ext}: a video was expected", label))
        else:
            found[rel] = entry.path
    return found


def _source(root: Path, rel: str, label: str, group: str, split: str, manipulation: str, dataset: str) -> Source:
    path = root / rel
    return Source(
        path, rel, label, group, kind_of(path) or "video", split, {"manipulation": manipulation, "dataset": dataset}
    )


def _report_missing(index: Path | str, missing: list[str]) -> None:
    if missing:
        shown = ", ".join(missing[:SHOWN]) + (f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else "")
        log.warning(f"{len(missing)} video(s) listed in {index} are not on disk (skipped as missing_file): {shown}")


def _read_json(path: Path) -> Any:
    """A dataset's JSON index, or ``DatasetLayoutError`` naming the file and where it breaks."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetLayoutError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); the dataset's index is damaged: "
            "download or extract it again"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetLayoutError(f"{path} cannot be read ({e}); check its permissions or extract it again") from None


def _finish(root: Path, layout: str, dataset: str, sources: list[Source], skipped: list[dict]) -> Inventory:
    if not sources:
        reasons = pd.Series([s["reason"] for s in skipped], dtype=object).value_counts().to_dict()
        raise DatasetLayoutError(
            f"no usable video found in {root} as a {dataset} tree (skipped: {reasons or 'nothing'}); check "
            "data.raw_dir and data.layout (docs/benchmarks.md)"
        )
    labels = {s.label for s in sources}
    splits = pd.Series([s.split or "(drawn by the split stage)" for s in sources]).value_counts().to_dict()
    log.info(
        f"{dataset}: {len(sources)} videos ({sum(s.label == 'fake' for s in sources)} fake), {len(skipped)} skipped; "
        f"splits {splits}; labels {sorted(labels)}"
    )
    return Inventory(root, layout, sources, skipped)


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def _subdirs(p: Path) -> list[str]:
    """Names of the folders in ``p`` (sorted; none when it cannot be listed)."""
    try:
        with os.scandir(p) as it:
            return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


# --------------------------------------------------------------------------------------------
# FaceForensics++
# --------------------------------------------------------------------------------------------

#: The official split (pairs of source-video ids) shipped with the package: ``splits/ffpp/``.
FFPP_SPLIT_DIR = "splits/ffpp"
#: Pairs per split of the official FaceForensics++ split (720 / 140 / 140 videos).
FFPP_SPLIT_PAIRS = {"train": 360, "val": 70, "test": 70}
_YOUTUBE = re.compile(r"(\d{3})")  # original_sequences/youtube: 033.mp4
_FFPP_FAKE = re.compile(r"(\d{3})_(\d{3})")  # manipulated_sequences/<method>: <target>_<source>.mp4
_ACTOR = re.compile(r"(\d+)__(.+)")  # original_sequences/actors: 01__exit_phone_room.mp4
_DFD_FAKE = re.compile(r"(\d+)_(\d+)__(.+)__(\w+)")  # DeepFakeDetection: 01_02__exit_phone_room__YVGY8LOK.mp4


def ffpp_split_files() -> Traversable:
    """The folder of the packaged official split (``train.json``, ``val.json``, ``test.json``)."""
    return resources.files("deepfake.data").joinpath(FFPP_SPLIT_DIR)


def read_ffpp_split(folder: Traversable | Path | None = None) -> dict[str, str]:
    """The official FaceForensics++ split as ``{video id: split}``, checked: 360 / 70 / 70 pairs of
    1,000 distinct ids, none in two splits.

    Args:
        folder: where ``train.json``, ``val.json`` and ``test.json`` are (default: the copies
            shipped with the package, from github.com/ondyari/FaceForensics ``dataset/splits``).
    """
    folder = ffpp_split_files() if folder is None else folder
    where: dict[str, str] = {}
    for name, n_pairs in FFPP_SPLIT_PAIRS.items():
        file = folder.joinpath(f"{name}.json")
        if not file.is_file():
            raise DatasetLayoutError(
                f"the official FaceForensics++ split file {file} is missing; reinstall the package (it ships "
                f"deepfake/data/{FFPP_SPLIT_DIR}/), or set data.split: own to let the split stage draw one"
            )
        try:
            pairs = json.loads(file.read_text(encoding="utf-8"))
        except ValueError as e:
            raise DatasetLayoutError(f"{file} is not valid JSON ({e}); reinstall the package") from None
        ok = isinstance(pairs, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) and _YOUTUBE.fullmatch(x) for x in p)
            for p in pairs
        )
        if not ok or len(pairs) != n_pairs:
            raise DatasetLayoutError(f"{file} should hold {n_pairs} pairs of 3-digit video ids; reinstall the package")
        for pair in pairs:
            for vid in pair:
                if vid in where:
                    raise DatasetLayoutError(f"{file}: id {vid} is also in {where[vid]}.json; reinstall the package")
                where[vid] = name
    if len(where) != 2 * sum(FFPP_SPLIT_PAIRS.values()):
        raise DatasetLayoutError(f"{folder}: the official split should name 1000 distinct ids, found {len(where)}")
    return where


def _check_ffpp(root: Path, cfg: LayoutConfig) -> None:
    """Refuse a tree that lacks what ``cfg`` asks for, naming what is missing and what is there."""
    missing = [d for d in ("original_sequences", "manipulated_sequences") if not _is_dir(root / d)]
    if missing:
        raise DatasetLayoutError(
            f"{root} is not a FaceForensics++ download: it has no {' and no '.join(d + '/' for d in missing)} "
            f"(the official download script writes original_sequences/ and manipulated_sequences/){_looks_like(root)}"
        )
    if cfg.ffpp_dfd and cfg.official:
        raise DatasetLayoutError(
            "data.ffpp_dfd: true with data.split: official: FaceForensics++'s actors and DeepFakeDetection videos have "
            "no official split; set data.split: own (the split stage draws every split by identity groups), or "
            "data.ffpp_dfd: false"
        )
    c = cfg.compression
    youtube = root / "original_sequences" / "youtube"
    if not _is_dir(youtube / c / "videos"):
        present = [x for x in COMPRESSIONS if _is_dir(youtube / x / "videos")]
        raise DatasetLayoutError(
            f"compression {c} is not in {youtube} (no {c}/videos/ folder; present: {', '.join(present) or 'none'}); "
            f"set data.compression to one that is, or download it (download script: -d original -c {c} -t videos)"
        )
    wanted = [("manipulated_sequences", m) for m in cfg.method_names]
    if cfg.ffpp_dfd:
        wanted += [("manipulated_sequences", "DeepFakeDetection"), ("original_sequences", "actors")]
    for top, name in wanted:
        videos = root / top / name / c / "videos"
        has_video = _is_dir(videos) and any(kind_of(e.path) == "video" for e in walk(videos) if not e.problem)
        if not has_video:
            state = "is empty" if _is_dir(videos) else "is missing"
            there = [m for m in _subdirs(root / top) if _is_dir(root / top / m / c / "videos")]
            raise DatasetLayoutError(
                f"{videos} {state}: {name} at {c} is not in this download (folders with {c} videos: "
                f"{', '.join(there) or 'none'}); download it (-d {name} -c {c} -t videos) or "
                + (
                    "set data.ffpp_dfd: false"
                    if name in ("DeepFakeDetection", "actors")
                    else f"drop {name} from data.methods"
                )
            )


def _ffpp_videos(root: Path, cfg: LayoutConfig, skipped: list[dict]) -> list[_Video]:
    """Every video of the selected folders, parsed by its name; odd names go to ``skipped``."""
    c = cfg.compression
    folders: list[tuple[Path, str, str, re.Pattern, Callable[[re.Match], tuple[str, ...]]]] = [
        (root / "original_sequences/youtube" / c / "videos", "real", "", _YOUTUBE, lambda m: (m[1],)),
    ]
    for method in cfg.method_names:
        folders.append(
            (root / "manipulated_sequences" / method / c / "videos", "fake", method, _FFPP_FAKE, lambda m: (m[1], m[2]))
        )
    if cfg.ffpp_dfd:
        folders.append((root / "original_sequences/actors" / c / "videos", "real", "", _ACTOR, lambda m: (f"a{m[1]}",)))
        folders.append(
            (
                root / "manipulated_sequences/DeepFakeDetection" / c / "videos",
                "fake",
                "DeepFakeDetection",
                _DFD_FAKE,
                lambda m: (f"a{m[1]}", f"a{m[2]}"),
            )
        )
    videos = []
    for folder, label, manipulation, pattern, ids in folders:
        for rel, path in _list_videos(root, folder, label, skipped).items():
            m = pattern.fullmatch(path.stem) if path.parent == folder else None
            if m is None:
                skipped.append(skip_row(rel, "unexpected_name", f"expected {pattern.pattern}{path.suffix}", label))
                continue
            videos.append(_Video(rel, label, manipulation, ids(m)))
    return videos


def scan_ffpp(root: str | os.PathLike, cfg: LayoutConfig) -> Inventory:
    """FaceForensics++ as the official download script lays it out.

    Reads ``original_sequences/youtube/<c>/videos/<id>.mp4`` (real) and
    ``manipulated_sequences/<method>/<c>/videos/<target>_<source>.mp4`` (fake, its kind the method
    folder's name) for ``c = cfg.compression`` and each of ``cfg.methods``; with ``cfg.ffpp_dfd``
    also ``original_sequences/actors/<c>/videos/<actor>__<scene>.mp4`` and their
    ``manipulated_sequences/DeepFakeDetection/<c>/videos/<target>_<source>__<scene>__<code>.mp4``.

    Groups: a fake links its target and source ids; each group is a connected component of those
    links, so no identity (and no pair) crosses splits. Split: with ``split: official`` a video's
    split is its pair's in the packaged official split (``read_ffpp_split``), fakes with their pair;
    the actors and DeepFakeDetection have none, so ``ffpp_dfd`` with the official split is refused.

    Out of scope by design (not read, not listed): other compression levels, methods not in
    ``cfg.methods``, ``masks/`` and ``models/`` folders, frame folders (``images/``), the actors
    and DeepFakeDetection unless ``ffpp_dfd``, and anything outside these folders.
    """
    root = Path(root)
    _check_ffpp(root, cfg)
    official = read_ffpp_split() if cfg.official else {}
    skipped: list[dict] = []
    comps = Components()
    kept = []
    for v in _ffpp_videos(root, cfg, skipped):
        split = ""
        if official:
            splits = {official.get(i, "") for i in v.ids}
            if len(splits) != 1 or "" in splits:
                where = ", ".join(f"{i} in {official.get(i) or 'no split'}" for i in v.ids)
                skipped.append(skip_row(v.rel, "not_in_index", f"not an official pair ({where})", v.label))
                continue
            split = splits.pop()
        comps.link(*v.ids)
        kept.append((v, split))
    name = DATASET_NAMES["ffpp"]
    sources = _sources(root, name, [v for v, _ in kept], {v.rel: sp for v, sp in kept}, comps, "the official split")
    if official:
        have = {v.ids[0] for v, _ in kept if v.label == "real"}
        absent = sorted(set(official) - have)
        if absent:
            log.info(
                f"{name}: {len(absent)} of the {len(official)} ids of the official split have no original video at "
                f"{cfg.compression} here (e.g. {', '.join(absent[:SHOWN])}); their fakes, if any, are still listed"
            )
    return _finish(root, "ffpp", name, sources, skipped)


# --------------------------------------------------------------------------------------------
# Celeb-DF v2
# --------------------------------------------------------------------------------------------

#: Celeb-DF v2's folders and the label of their videos.
CELEBDF_FOLDERS = {"Celeb-real": "real", "YouTube-real": "real", "Celeb-synthesis": "fake"}
CELEBDF_TEST_LIST = "List_of_testing_videos.txt"
#: ``List_of_testing_videos.txt`` holds ``<label> <folder>/<file>.mp4`` per line. The dataset's README
#: (github.com/yuezunli/celeb-deepfakeforensics, README.md and Celeb-DF-v2/README.md) lists the file
#: ("# 518 videos") but does not say what the first column means; public loaders read 1 as real and
#: 0 as fake. Every line's label is checked against its folder's (``CELEBDF_FOLDERS``), so a list
#: that meant otherwise is refused, naming the line, never misread.
CELEBDF_LIST_LABELS = {"1": "real", "0": "fake"}
_CELEB_REAL = re.compile(r"id(\d+)_(\d+)")  # Celeb-real/id0_0000.mp4
# Celeb-synthesis/id0_id16_0000.mp4: the maintainers (issue #6 of that repository): "aa_bb_cc.mp4,
# aa is the original id, bb is swapped id, cc is the video index"
_CELEB_FAKE = re.compile(r"id(\d+)_id(\d+)_(\d+)")
_YOUTUBE_REAL = re.compile(r"(\d+)")  # YouTube-real/00000.mp4: people with no other video


def _celebdf_ids(folder: str, stem: str) -> tuple[str, ...] | None:
    if folder == "Celeb-real":
        m = _CELEB_REAL.fullmatch(stem)
        return (f"id{int(m[1])}",) if m else None
    if folder == "Celeb-synthesis":
        m = _CELEB_FAKE.fullmatch(stem)
        return (f"id{int(m[1])}", f"id{int(m[2])}") if m else None
    m = _YOUTUBE_REAL.fullmatch(stem)
    return (f"YouTube-real/{stem}",) if m else None


def read_celebdf_test_list(root: Path) -> dict[str, str]:
    """``List_of_testing_videos.txt`` as ``{folder/file: label}``, every line checked.

    Raises:
        DatasetLayoutError: naming the line that is malformed, names a folder that is not in
            ``root``, carries a label other than its folder's, or repeats another.
    """
    path = root / CELEBDF_TEST_LIST
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetLayoutError(f"{path} cannot be read ({e}); extract it again from the download") from None
    listed: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path} line {n} ({line.strip()!r})"
        if len(fields) != 2 or fields[0] not in CELEBDF_LIST_LABELS:
            raise DatasetLayoutError(f"{where} is not '<1|0> <folder>/<file>.mp4'; restore the file from the download")
        rel = fields[1].replace("\\", "/")
        folder = rel.split("/")[0]
        if "/" not in rel or not _is_dir(root / folder):
            raise DatasetLayoutError(
                f"{where} names the folder {folder}/, which is not in {root} (folders: "
                f"{', '.join(_subdirs(root)) or 'none'}); point data.raw_dir at the Celeb-DF v2 folder"
            )
        label = CELEBDF_LIST_LABELS[fields[0]]
        if CELEBDF_FOLDERS.get(folder) != label:
            raise DatasetLayoutError(
                f"{where} labels a video of {folder}/ {fields[0]} ({label}), but {folder}/ holds "
                f"{CELEBDF_FOLDERS.get(folder, 'no Celeb-DF')} videos; this is not the Celeb-DF v2 test list"
            )
        if rel in listed:
            raise DatasetLayoutError(f"{where} repeats {rel}; keep one line per video")
        listed[rel] = label
    if not listed:
        raise DatasetLayoutError(f"{path} lists no video; restore it from the download")
    return listed


def scan_celebdf(root: str | os.PathLike, cfg: LayoutConfig) -> Inventory:
    """Celeb-DF v2: ``Celeb-real/id<i>_<n>.mp4`` and ``YouTube-real/<n>.mp4`` (real),
    ``Celeb-synthesis/id<i>_id<j>_<n>.mp4`` (fake: identity ``i``'s video with ``j``'s face, kind
    ``Celeb-synthesis``), and ``List_of_testing_videos.txt``, the official test set.

    Groups: a fake links identities ``i`` and ``j``; each group is a connected component of those
    links (few and large ones are logged); each YouTube-real video is its own group. Split: with
    ``split: official`` the listed videos are ``test`` and the rest ``train``; there is no official
    validation set, so the split stage holds one out of train by groups (``split.val_frac``). The
    official test list shares identities with the other videos (the dataset's own protocol): such
    an identity component is then two groups, one per split (counted in the log), so validation
    stays identity-disjoint from train; ``split: own`` keeps every component whole.

    Out of scope by design: any folder or file outside the three video folders and the list.
    """
    root = Path(root)
    present = [f for f in CELEBDF_FOLDERS if _is_dir(root / f)]
    needed = [f for f in ("Celeb-real", "Celeb-synthesis") if f not in present]
    if needed:
        raise DatasetLayoutError(
            f"{root} is not a Celeb-DF v2 folder: it has no {' and no '.join(f + '/' for f in needed)} (the download "
            f"holds Celeb-real/, YouTube-real/, Celeb-synthesis/ and {CELEBDF_TEST_LIST}){_looks_like(root)}"
        )
    listed: dict[str, str] = {}
    if cfg.official:
        if not (root / CELEBDF_TEST_LIST).is_file():
            raise DatasetLayoutError(
                f"{root / CELEBDF_TEST_LIST} is missing: data.split: official needs Celeb-DF v2's test list; restore "
                "it from the download, or set data.split: own"
            )
        listed = read_celebdf_test_list(root)
    skipped: list[dict] = []
    videos = []
    for folder in present:
        label = CELEBDF_FOLDERS[folder]
        for rel, path in _list_videos(root, root / folder, label, skipped).items():
            ids = _celebdf_ids(folder, path.stem) if path.parent == root / folder else None
            if ids is None:
                skipped.append(skip_row(rel, "unexpected_name", f"not named as {folder}/ names its videos", label))
                continue
            videos.append(_Video(rel, label, folder if label == "fake" else "", ids))
    missing = sorted(set(listed) - {v.rel for v in videos} - {s["source"] for s in skipped}, key=natural_key)
    skipped += [skip_row(rel, "missing_file", f"listed in {CELEBDF_TEST_LIST}", listed[rel]) for rel in missing]
    _report_missing(root / CELEBDF_TEST_LIST, missing)
    comps = Components()
    for v in videos:
        comps.link(*v.ids)
    split_of = {v.rel: ("test" if v.rel in listed else "train") if cfg.official else "" for v in videos}
    name = DATASET_NAMES["celebdf"]
    sources = _sources(root, name, videos, split_of, comps, CELEBDF_TEST_LIST)
    return _finish(root, "celebdf", name, sources, skipped)


# --------------------------------------------------------------------------------------------
# DFDC and its preview
# --------------------------------------------------------------------------------------------

DFDC_PART = re.compile(r"dfdc_train_part_(\d+)")
DFDC_METADATA = "metadata.json"
#: The public test set: ``test/labels.csv`` with ``filename,label`` (1 = fake), videos beside it.
DFDC_TEST_DIR = "test"
DFDC_TEST_LABELS = "labels.csv"
DFDC_LABELS = {"REAL": "real", "FAKE": "fake"}
DFDCP_INDEX = "dataset.json"
#: The DFDC preview's folders: the originals, and two methods whose name is the kind of fake.
DFDCP_FOLDERS = {"original_videos": "real", "method_A": "fake", "method_B": "fake"}


def dfdc_parts(root: Path) -> list[Path]:
    """The ``dfdc_train_part_<n>`` folders of ``root`` (or of ``root/train``), in numeric order."""
    parts = []
    for base in (root, root / "train"):
        parts += [base / n for n in _subdirs(base) if DFDC_PART.fullmatch(n)]
    return sorted(parts, key=lambda p: (natural_key(p.name), str(p)))


def _dfdc_metadata(path: Path) -> dict[str, tuple[str, str | None]]:
    """One part's ``metadata.json`` as ``{file: (label, original or None)}``, every label checked."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DatasetLayoutError(f"{path} should map each video file to its label, not hold a {type(data).__name__}")
    out = {}
    for name, entry in data.items():
        label = entry.get("label") if isinstance(entry, dict) else None
        if label not in DFDC_LABELS:
            raise DatasetLayoutError(
                f"{path}: {name!r} has label {label!r}; DFDC's metadata.json labels are REAL or FAKE (this is not a "
                "DFDC metadata file, or it is damaged)"
            )
        original = entry.get("original")
        out[name] = (DFDC_LABELS[label], original if isinstance(original, str) and original else None)
    return out


def _dfdc_test_labels(path: Path) -> dict[str, str]:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise DatasetLayoutError(f"{path} cannot be read as CSV ({e}); extract it again") from None
    missing = {"filename", "label"} - set(df.columns)
    if missing:
        raise DatasetLayoutError(
            f"{path} lacks the column(s) {sorted(missing)}; DFDC's test labels are filename,label (1 = fake)"
        )
    bad = df.index[~df["label"].str.strip().isin(["0", "1"])]
    if len(bad):
        raise DatasetLayoutError(
            f"{path} line {bad[0] + 2}: label {df.at[bad[0], 'label']!r} is not 0 (real) or 1 (fake)"
        )
    return {f.strip(): "fake" if lab.strip() == "1" else "real" for f, lab in zip(df["filename"], df["label"])}


def _indexed(
    root: Path,
    folder: Path,
    index: dict[str, Any],
    index_path: Path,
    skipped: list[dict],
    label_of: Callable[[Any], str],
) -> tuple[dict[str, Path], list[str]]:
    """The listed videos of ``folder`` found on disk (by index key) and the listed ones missing;
    files on disk the index does not list go to ``skipped`` as ``not_in_index``."""
    on_disk = _list_videos(root, folder, "", skipped, index_files=(index_path.name,))
    by_key = {Path(rel).relative_to(folder.relative_to(root)).as_posix(): p for rel, p in on_disk.items()}
    for key, p in by_key.items():
        if key not in index:
            skipped.append(skip_row(_rel(root, p), "not_in_index", f"not listed in {_rel(root, index_path)}"))
    found = {k: by_key[k] for k in index if k in by_key}
    missing = [k for k in index if k not in by_key]
    for k in missing:
        rel = (folder.relative_to(root) / k).as_posix()
        skipped.append(skip_row(rel, "missing_file", f"listed in {_rel(root, index_path)}", label_of(index[k])))
    return found, missing


def scan_dfdc(root: str | os.PathLike, cfg: LayoutConfig) -> Inventory:
    """The DFDC: ``dfdc_train_part_<n>/`` folders (at the top or below ``train/``), each with
    ``metadata.json`` mapping ``file.mp4 -> {"label": "REAL"|"FAKE", "split": "train", "original": ...}``,
    and the public test set, ``test/labels.csv`` (``filename,label``, 1 = fake) beside its videos.
    Without training parts, the DFDC preview (``scan_dfdc_preview``).

    Groups: a fake links to its ``original``; each group is a connected component (an original with
    its fakes). Test videos carry no original and are each their own group. Split: with ``split:
    official`` the training parts are ``train`` and the labelled test videos ``test``; the split stage
    holds validation out of train by groups (and test too, without ``test/labels.csv``). DFDC's
    metadata does not name the method: every fake's kind is empty.

    Out of scope by design: other folders (e.g. the Kaggle sample ``train_sample_videos/``).
    Listed: videos of a part or of ``test/`` that no index lists (``not_in_index``) and indexed
    videos missing on disk (``missing_file``).
    """
    root = Path(root)
    parts = dfdc_parts(root)
    if not parts:
        if (root / DFDCP_INDEX).is_file():
            return scan_dfdc_preview(root, cfg)
        raise DatasetLayoutError(
            f"{root} is not a DFDC folder: it has no dfdc_train_part_<n>/ folder with {DFDC_METADATA} (the DFDC) and "
            f"no {DFDCP_INDEX} (the DFDC preview){_looks_like(root)}"
        )
    name = DATASET_NAMES["dfdc"]
    skipped: list[dict] = []
    comps = Components()
    videos: list[_Video] = []
    splits: dict[str, str] = {}
    for part in parts:
        meta_path = part / DFDC_METADATA
        if not meta_path.is_file():
            raise DatasetLayoutError(
                f"{part} has no {DFDC_METADATA}: its videos' labels are unknown; extract the part again"
            )
        meta = _dfdc_metadata(meta_path)
        found, missing = _indexed(root, part, meta, meta_path, skipped, lambda e: e[0])
        _report_missing(meta_path, missing)
        for file, path in found.items():
            label, original = meta[file]
            ids = (Path(original).stem, path.stem) if label == "fake" and original else (path.stem,)
            videos.append(_Video(_rel(root, path), label, "", ids))
            splits[_rel(root, path)] = "train"
    test_dir = root / DFDC_TEST_DIR
    labels_path = test_dir / DFDC_TEST_LABELS
    if labels_path.is_file():
        labels = _dfdc_test_labels(labels_path)
        found, missing = _indexed(root, test_dir, labels, labels_path, skipped, lambda lab: lab)
        _report_missing(labels_path, missing)
        for file, path in found.items():
            videos.append(_Video(_rel(root, path), labels[file], "", (f"test/{path.stem}",)))
            splits[_rel(root, path)] = "test"
    elif cfg.official:
        log.info(f"{name}: no {DFDC_TEST_DIR}/{DFDC_TEST_LABELS}: the split stage holds a test split out of train")
    for v in videos:
        comps.link(*v.ids)
    split_of = {v.rel: splits[v.rel] if cfg.official else "" for v in videos}
    sources = _sources(root, name, videos, split_of, comps, f"the training parts and {DFDC_TEST_DIR}/")
    return _finish(root, "dfdc", name, sources, skipped)


def _dfdcp_identity(key: str) -> str:
    """The person a DFDC-preview video shows: the folder below its top folder
    (``method_A/<id>/...``, ``original_videos/<id>/...``), else the file itself."""
    parts = key.split("/")
    return parts[1] if len(parts) > 2 else Path(key).stem


def scan_dfdc_preview(root: str | os.PathLike, cfg: LayoutConfig) -> Inventory:
    """The DFDC preview: ``dataset.json`` mapping each video's path (``original_videos/...``,
    ``method_A/...``, ``method_B/...``) to ``{"label": "real"|"fake", "set": "train"|"test", ...}``.

    Kind of fake: the method folder (``method_A``, ``method_B``). Groups: by the person shown, the
    identity folder below the top folder (``method_A/<id>/...``), so fakes and originals of one
    person share a group (only ``label`` and ``set`` of the index's entries are read: the keys this
    adapter could verify). Split: with ``split: official`` the index's ``set`` (there is no
    validation set: the split stage holds one out of train by groups).

    Out of scope by design: folders other than the three above. Listed: their videos missing from
    ``dataset.json`` (``not_in_index``) and indexed videos missing on disk (``missing_file``).
    """
    root = Path(root)
    index_path = root / DFDCP_INDEX
    data = _read_json(index_path)
    if not isinstance(data, dict):
        raise DatasetLayoutError(f"{index_path} should map each video path to its label and set")
    index: dict[str, dict] = {}
    elsewhere = [key for key in data if key.split("/")[0] not in DFDCP_FOLDERS]
    if elsewhere:
        log.info(f"{index_path}: {len(elsewhere)} entries outside {', '.join(DFDCP_FOLDERS)} are not read")
    for key, entry in data.items():
        label, subset = (entry.get("label"), entry.get("set")) if isinstance(entry, dict) else (None, None)
        top = key.split("/")[0]
        if top not in DFDCP_FOLDERS:
            continue
        if label not in ("real", "fake") or subset not in ("train", "test"):
            raise DatasetLayoutError(
                f"{index_path}: {key!r} has label {label!r} and set {subset!r}; the DFDC preview's labels are real or "
                "fake and its sets train or test"
            )
        if DFDCP_FOLDERS[top] != label:
            raise DatasetLayoutError(
                f"{index_path}: {key!r} is labelled {label}, but {top}/ holds {DFDCP_FOLDERS[top]} videos; this is not "
                "the DFDC preview's index, or it is damaged"
            )
        index[key] = entry
    name = DATASET_NAMES["dfdcp"]
    skipped: list[dict] = []
    videos: list[_Video] = []
    missing_all: list[str] = []
    for folder in DFDCP_FOLDERS:
        keys = {k[len(folder) + 1 :]: e for k, e in index.items() if k.split("/")[0] == folder}
        if not _is_dir(root / folder):
            if keys:
                raise DatasetLayoutError(
                    f"{index_path} lists {len(keys)} video(s) in {folder}/, which is not in {root}; extract it"
                )
            continue
        found, missing = _indexed(root, root / folder, keys, index_path, skipped, lambda e: e["label"])
        missing_all += [f"{folder}/{k}" for k in missing]
        for key, path in found.items():
            entry = keys[key]
            videos.append(
                _Video(
                    _rel(root, path),
                    entry["label"],
                    folder if entry["label"] == "fake" else "",
                    (_dfdcp_identity(f"{folder}/{key}"),),
                )
            )
    _report_missing(index_path, missing_all)
    comps = Components()
    for v in videos:
        comps.link(*v.ids)
    split_of = {v.rel: index[v.rel]["set"] if cfg.official else "" for v in videos}
    sources = _sources(root, name, videos, split_of, comps, DFDCP_INDEX)
    return _finish(root, "dfdc", name, sources, skipped)


# --------------------------------------------------------------------------------------------
# Recognising a tree, and the one interface
# --------------------------------------------------------------------------------------------


def detect_layout(path: str | os.PathLike) -> tuple[str, str]:
    """The layout of ``path`` by its folders and index files, and what gave it away.

    FaceForensics++: ``original_sequences/`` or ``manipulated_sequences/``; Celeb-DF v2:
    ``Celeb-real/``, ``Celeb-synthesis/``, ``YouTube-real/`` or ``List_of_testing_videos.txt``;
    DFDC: ``dfdc_train_part_<n>/`` folders, or the preview's ``dataset.json``; else ``manifest``
    (a CSV, or a folder's ``manifest.csv``), else ``folders``.
    """
    p = Path(path)
    if not _is_dir(p):
        return "manifest", "a file" if p.is_file() else "not a folder"
    ffpp = [d + "/" for d in ("original_sequences", "manipulated_sequences") if _is_dir(p / d)]
    if ffpp:
        return "ffpp", " and ".join(ffpp)
    celeb = [f + "/" for f in CELEBDF_FOLDERS if _is_dir(p / f)]
    if (p / CELEBDF_TEST_LIST).is_file():
        celeb.append(CELEBDF_TEST_LIST)
    if celeb:
        return "celebdf", ", ".join(celeb)
    parts = dfdc_parts(p)
    if parts:
        return "dfdc", f"{len(parts)} dfdc_train_part_<n>/ folder(s)"
    if (p / DFDCP_INDEX).is_file():
        return "dfdc", f"{DFDCP_INDEX} (the DFDC preview)"
    if (p / MANIFEST_NAME).is_file():
        return "manifest", MANIFEST_NAME
    return "folders", f"no benchmark's folders and no {MANIFEST_NAME}"


def _looks_like(root: Path) -> str:
    """``; it looks like ...`` for a refusal: what ``auto`` would read ``root`` as."""
    layout, why = detect_layout(root)
    return f"; it looks like a {layout} dataset ({why}): set data.layout: auto, or {layout}"


#: The adapter of each benchmark layout.
ADAPTERS: dict[str, Callable[[Path, LayoutConfig], Inventory]] = {
    "ffpp": scan_ffpp,
    "celebdf": scan_celebdf,
    "dfdc": scan_dfdc,
}


def scan_dataset(
    path: str | os.PathLike, cfg: LayoutConfig | None = None, ingest: IngestConfig | None = None
) -> Inventory:
    """List a dataset with the adapter ``cfg.layout`` names (``auto``: the one ``detect_layout`` finds).

    Args:
        path: the dataset folder (or, for ``manifest``, a CSV).
        cfg: the layout settings (default: ``params.yaml``'s ``data`` section).
        ingest: folder names, groups and kept splits of the ``folders`` and ``manifest`` layouts
            (``deepfake.data.ingest.scan``).

    Returns:
        The same records whatever the layout: every usable video or image (label, group, split,
        kind, ``extra``) and every file left out with its reason.

    Raises:
        DatasetLayoutError: the tree is not what its layout claims, naming what is missing.
    """
    cfg = cfg or LayoutConfig()
    ingest = ingest or IngestConfig()
    layout = cfg.layout
    if layout == "auto":
        layout, why = detect_layout(path)
        log.info(f"{path}: read as {layout} (data.layout: auto; found {why})")
    if layout in ADAPTERS:
        if not _is_dir(Path(path)):
            raise DatasetLayoutError(
                f"data.layout: {layout} needs a dataset folder, and {path} is not one; point data.raw_dir at the "
                "folder the download wrote"
            )
        return ADAPTERS[layout](Path(path), cfg)
    if cfg.layout != "auto" and _is_dir(Path(path)):  # a forced layout the folder must have
        has_manifest = (Path(path) / MANIFEST_NAME).is_file()
        if layout == "manifest" and not has_manifest:
            raise DatasetLayoutError(
                f"data.layout: manifest, but {path} has no {MANIFEST_NAME}; add one (path,label[,group][,split]), or "
                "set data.layout: auto or folders"
            )
        if layout == "folders" and has_manifest:
            raise DatasetLayoutError(
                f"data.layout: folders, but {path} holds a {MANIFEST_NAME}, which is read instead of the folders; set "
                "data.layout: manifest (or auto), or move the manifest away"
            )
    return scan(path, ingest)  # folders or manifest: the one indexer of those layouts
