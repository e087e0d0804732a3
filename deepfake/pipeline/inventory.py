"""The dataset's inventory: what the pipeline would read, by content, without DVC reading the dataset.

DVC decides whether a stage must run again by hashing its dependencies. Given the dataset
folder itself, it would open every path below it before any stage runs: a FIFO or a link to
``/dev/zero`` there hangs ``dvc repro`` and ``dvc status`` inside DVC, a link loop fails them,
and a large dataset is read byte by byte on the first ``dvc status``. The pipeline's stages
depend instead on its inventory (``reports/inventory/inventory.csv``), written by ``take_inventory``:

* one row per file the preprocess stage would use, listed by ``deepfake.data.layouts.scan_dataset``
  (the one lister of every layout: folders, a manifest, a benchmark with its index files), with
  its ``kind``, ``label``, ``group``, ``split``, the dataset's own columns, its size and its
  SHA-256;
* one row per path left out, with its reason (``deepfake.data.media.REASONS``): FIFOs, devices
  and sockets, broken links and link loops are listed from ``os.stat`` and never opened.

A file is read (to hash it) only when it is new or its ``os.stat`` changed (size, modification
and change times, inode, permissions, owner) since the last inventory, kept in a small record
of its own (``stat_file``, not part of the inventory); a file is opened without blocking and
checked again on the open handle (``deepfake.data.media.sha256_regular_file``). The inventory
holds no time stamps, so it is the same file in every clone with the same data, and it is
rewritten only when its content changes: a stage downstream runs again only when the dataset
it reads changed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ..core import paths
from ..core.progress import progress as progress_bar
from ..core.utils import atomic_path, write_if_changed
from ..data.ingest import DatasetLayoutError, IngestConfig, Source
from ..data.layouts import LayoutConfig, scan_dataset
from ..data.media import BadInputError, kind_of, sha256_regular_file
from .params import Params

log = logging.getLogger(__name__)

#: Its columns, before the dataset's own (a manifest's extra columns, a benchmark's ``manipulation``).
COLUMNS = ("path", "kind", "label", "group", "split", "bytes", "sha256", "reason", "detail")
#: Threads hashing files (reading is the bottleneck; hashlib releases the GIL).
HASH_THREADS = 4


def file_stat(path: str | os.PathLike) -> list[int] | None:
    """What tells a changed file without reading it (links followed): size, modification and change
    times, inode, permissions and owner; None when ``os.stat`` fails."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode, st.st_uid, st.st_gid]


@dataclass
class DatasetInventory:
    """What ``take_inventory`` found and did."""

    root: Path
    file: Path  # the inventory written
    layout: str  # the layout scan_dataset read the dataset as
    table: pd.DataFrame  # COLUMNS plus the dataset's own, one row per path, sorted by path
    hashed: int  # files read this time (new or changed)
    reused: int  # files whose hash was kept, their stat unchanged
    written: bool  # the inventory file changed

    def counts(self) -> dict[str, int]:
        used = self.table[self.table["reason"] == ""]
        return {
            "images": int((used["kind"] == "image").sum()),
            "videos": int((used["kind"] == "video").sum()),
            "left_out": int((self.table["reason"] != "").sum()),
        }

    def reasons(self) -> dict[str, int]:
        """Paths left out, by reason."""
        left = self.table.loc[self.table["reason"] != "", "reason"]
        return {str(k): int(v) for k, v in left.value_counts().sort_index().items()}


def _load_stats(stat_file: Path | None) -> dict[str, list]:
    if stat_file is None:
        return {}
    try:
        stats = json.loads(stat_file.read_text())
        return stats if isinstance(stats, dict) else {}
    except (OSError, ValueError):
        return {}


def _hash(src: Source, max_bytes: int | None) -> tuple[str, str, str]:
    """``(sha256, reason, detail)`` of one source: its hash, or why it cannot be read."""
    try:
        return sha256_regular_file(src.path, max_bytes), "", ""
    except BadInputError as e:
        return "", e.reason, e.detail


def _source_row(src: Source, size: int | str, sha: str, reason: str, detail: str) -> dict:
    return {
        "path": src.rel,
        "kind": src.kind,
        "label": src.label,
        "group": src.group,
        "split": src.split,
        "bytes": size,
        "sha256": sha,
        "reason": reason,
        "detail": detail,
        **{k: "" if v is None else str(v) for k, v in src.extra.items()},
    }


def inventory_table(rows: list[dict]) -> pd.DataFrame:
    """The rows as the inventory writes them: ``COLUMNS`` first, then the dataset's own, sorted by path."""
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    table = pd.DataFrame(rows, columns=[*COLUMNS, *extra], dtype=object).fillna("")
    return table.sort_values(["path", "reason"], kind="stable").reset_index(drop=True)


def take_inventory(
    dataset: str | os.PathLike,
    out_file: str | os.PathLike,
    layout: LayoutConfig | None = None,
    ingest: IngestConfig | None = None,
    max_bytes: int | None = None,
    stat_file: str | os.PathLike | None = None,
    progress: bool = True,
) -> DatasetInventory:
    """List ``dataset`` and write its inventory to ``out_file`` (atomically, only when it changed).

    Args:
        dataset: the dataset folder (or a CSV manifest), as the preprocess stage reads it.
        out_file: the inventory CSV.
        layout: how the dataset is laid out (``params.yaml``'s ``data`` section by default).
        ingest: folder names, groups and kept splits (the preprocess section's).
        max_bytes: files above this size are listed as ``file_too_large`` unread, as the
            preprocess stage refuses them (``preprocess.max_file_mb``).
        stat_file: where the stat and hash of each file are kept between runs, so that unchanged
            files are not read again (None: every file is read).
        progress: show a progress bar while hashing.

    Raises:
        deepfake.data.ingest.DatasetLayoutError: the dataset has no usable layout.
        deepfake.core.utils.EnvironmentFault: the machine ran out of file handles or memory.
    """
    inv = scan_dataset(dataset, layout, ingest)
    stat_path = Path(stat_file) if stat_file is not None else None
    old = _load_stats(stat_path)
    # each file's stat before it is read: a change while it is read shows next time
    now = {str(src.path): file_stat(src.path) for src in inv.sources}
    stats: dict[str, list] = {}
    todo: list[Source] = []
    for src in inv.sources:
        key, st = str(src.path), now[str(src.path)]
        rec = old.get(key)
        if st is not None and isinstance(rec, list) and len(rec) == len(st) + 1 and rec[:-1] == st:
            stats[key] = rec
        else:
            todo.append(src)
    hashed: dict[str, tuple[str, str, str]] = {}
    if todo:
        bar = progress_bar(total=len(todo), desc="inventory", unit="files", disable=not progress)
        try:
            with ThreadPoolExecutor(max_workers=min(HASH_THREADS, len(todo))) as pool:
                for src, res in zip(todo, pool.map(lambda s: _hash(s, max_bytes), todo)):
                    hashed[str(src.path)] = res
                    bar.update()
        finally:
            bar.close()
    rows = [
        {"path": s["source"], "kind": kind_of(s["source"]) or "", "label": s["label"], "reason": s["reason"],
         "detail": s["detail"]}
        for s in inv.skipped
    ]  # fmt: skip
    for src in inv.sources:
        key, st = str(src.path), now[str(src.path)]
        if key in stats:
            rows.append(_source_row(src, stats[key][0], stats[key][-1], "", ""))
            continue
        sha, reason, detail = hashed[key]
        if sha and st is not None:
            stats[key] = [*st, sha]
        rows.append(_source_row(src, st[0] if st is not None else "", sha, reason, detail))
    table = inventory_table(rows)
    written = write_if_changed(out_file, table.to_csv(index=False))
    if stat_path is not None:
        write_if_changed(stat_path, json.dumps(stats))
    reused = len(inv.sources) - len(todo)
    return DatasetInventory(inv.root, Path(out_file), inv.layout, table, len(todo), reused, written)


def _check_found_in_experiment(data: Path, dataset: str, origin: Path, setting: str) -> None:
    """Stop with what to do when a DVC experiment's temporary copy finds the dataset nowhere."""
    if os.path.lexists(data):
        return
    where = (
        f"{data}"
        if Path(dataset).expanduser().is_absolute()
        else f"this experiment's copy of the repository ({paths.ROOT}) nor in the workspace that queued it ({origin})"
    )
    raise DatasetLayoutError(
        f"dataset {dataset} ({setting}) is not in {where}: DVC runs a queued (or --temp) experiment in a copy "
        "that holds only what git and DVC track. Queue it from the workspace that holds the dataset, copy the "
        f"dataset in (dvc exp run --queue --copy-paths {dataset} ...), or set {setting} to an absolute path "
        "(docs/pipeline.md, Queued experiments)"
    )


def _seed_stats(own: Path, origin: Path) -> None:
    """Start a DVC experiment's empty stat record (``cache/inventory/``, git-ignored, so not in its copy)
    from the record of the workspace that queued it, so that unchanged files are not read again.

    The copy is the experiment's own: it never writes the workspace's record, which other experiments
    running at the same time read too (each record is written whole and atomically: a copy is complete)."""
    if own.exists() or not origin.is_file():
        return
    with atomic_path(own) as tmp:
        shutil.copyfile(origin, tmp)


def run_inventory(params: Params, cross: str = "", progress: bool = True) -> DatasetInventory:
    """The inventory stage: the inventory of ``data.raw_dir`` (``reports/inventory/inventory.csv``), or with
    ``cross`` of that cross-dataset test set (``reports/inventory/cross_<name>.csv``), listed as the
    preprocess stage (or the cross stage: any layout, the dataset's own split not kept) lists it.

    ``dvc.yaml``'s preprocess, split and cross stages depend on this file instead of the dataset
    folder. Each file's stat and hash are kept in ``cache/inventory/``, so only new or changed files
    are read. In a DVC experiment's temporary copy (queued, or ``--temp``) a relative dataset path is
    found in the workspace that queued it (``paths.resolve_data``), and that workspace's record starts
    the copy's own.
    """
    where = paths.layout(params.data.raw_dir, params.data.faces_dir)
    cfg = params.preprocess
    if cross:
        if cross not in params.cross_dataset:
            raise KeyError(
                f"{cross!r} is not under cross_dataset in {params.file} (named there: "
                f"{', '.join(params.cross_dataset) or 'none'})"
            )
        dataset, out, stat = params.cross_dataset[cross], where.cross_inventory(cross), f"cross_{cross}.json"
        cfg, layout = replace(cfg, keep_splits=False), LayoutConfig(layout="auto")
    else:
        dataset, out, stat, layout = params.data.raw_dir, where.inventory, "raw.json", LayoutConfig.of(params.data)
    data = paths.resolve_data(dataset)
    origin = paths.experiment_origin()
    if origin is not None:  # a DVC experiment's temporary copy (queued, or dvc exp run --temp)
        _check_found_in_experiment(data, dataset, origin, "data.raw_dir" if not cross else f"cross_dataset.{cross}")
        _seed_stats(paths.INVENTORY_STATS / stat, origin / paths.INVENTORY_STATS.relative_to(paths.ROOT) / stat)
    inv = take_inventory(data, out, layout, cfg.ingest, cfg.max_bytes, paths.INVENTORY_STATS / stat, progress)
    n = inv.counts()
    reasons = ", ".join(f"{k} {v}" for k, v in inv.reasons().items())
    log.info(
        f"{paths.shown(data)} ({inv.layout}): {n['images']} image(s) and {n['videos']} video(s) to use, "
        f"{n['left_out']} path(s) left out{f' ({reasons})' if reasons else ''}; read {inv.hashed} new or changed "
        f"file(s), {inv.reused} unchanged; {paths.shown(out)} {'written' if inv.written else 'unchanged'}"
    )
    return inv
