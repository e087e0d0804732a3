"""Leakage audit: exact duplicates (SHA-256) and near duplicates (perceptual hash) across splits.

Identical bytes are found by the ``sha256`` column the index carries. Near duplicates (the same
picture re-encoded, resized, brightened) are found with a DCT perceptual hash: the image is
reduced to 64 x 64 grey levels, its 2-D DCT is taken, and each of the 16 x 16 lowest-frequency
coefficients becomes one bit (above or below their median), giving 256 bits. On face crops
the Hamming distance between such hashes stays at or below about 12 bits for re-encoded or
resized copies, while distinct faces are 40+ bits apart (measured on the embedded synthetic
set and on the shared real photos), so the default threshold of 20 bits separates the two.
It does not see through crops, flips or rotations.

Duplicates are grouped into clusters (connected components of duplicate pairs). A cluster
whose members lie in more than one split is leakage: the split stage fails with
``DuplicateLeakageError``, or, with ``dedupe``, keeps the members in the earliest split
(train, then val, then test) and drops the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .split import SPLITS, LeakageError

HASH_SIDE = 16  # 16 x 16 DCT coefficients: 256 bits
_WORDS = HASH_SIDE * HASH_SIDE // 64
PAIR_COLUMNS = (
    "kind",
    "distance",
    "cross_split",
    "path_a",
    "path_b",
    "split_a",
    "split_b",
    "label_a",
    "label_b",
    "group_a",
    "group_b",
    "cluster",
)


class DuplicateLeakageError(LeakageError):
    """The same (or nearly the same) picture appears in more than one split."""


def phash(rgb: np.ndarray) -> np.ndarray:
    """256-bit DCT perceptual hash of an (H, W, 3) uint8 RGB or (H, W) grey image, as 4 uint64 words."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    small = cv2.resize(grey, (4 * HASH_SIDE, 4 * HASH_SIDE), interpolation=cv2.INTER_AREA).astype(
        np.float32
    )  # (64, 64)
    low = cv2.dct(small)[:HASH_SIDE, :HASH_SIDE]  # (16, 16) lowest frequencies
    bits = (low > np.median(low)).reshape(-1)  # (256,)
    return np.packbits(bits).view(">u8").astype(np.uint64)  # (4,)


def phash_hex(rgb: np.ndarray) -> str:
    """``phash`` as 64 hex digits (how manifests store it)."""
    return "".join(f"{int(w):016x}" for w in phash(rgb))


def hex_to_words(hexes: list[str]) -> np.ndarray:
    """(N, 4) uint64 words from hex strings written by ``phash_hex``."""
    out = np.zeros((len(hexes), _WORDS), np.uint64)
    for i, h in enumerate(hexes):
        if len(h) != 16 * _WORDS:
            raise ValueError(f"perceptual hash {h!r} does not have {16 * _WORDS} hex digits")
        out[i] = [int(h[16 * k : 16 * (k + 1)], 16) for k in range(_WORDS)]
    return out


def near_pairs(
    words: np.ndarray, max_bits: int, block_elems: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` whose hashes differ in at most ``max_bits`` bits.

    Exact, blockwise: memory stays near ``block_elems`` distances whatever the dataset size.

    Returns:
        Index arrays ``i``, ``j`` and the distances ``d``.
    """
    n = len(words)
    ii, jj, dd = [], [], []
    rows = max(1, block_elems // max(n, 1))
    for start in range(0, n, rows):
        a = words[start : start + rows]  # (r, W)
        b = words[start:]  # (n - start, W): only j >= start
        dist = np.zeros((len(a), len(b)), np.uint16)  # (r, n - start)
        for k in range(words.shape[1]):
            dist += np.bitwise_count(a[:, None, k] ^ b[None, :, k]).astype(np.uint16)
        r, c = np.nonzero(dist <= max_bits)
        keep = c > r  # j > i (c is relative to start, as is r)
        ii.append(r[keep] + start)
        jj.append(c[keep] + start)
        dd.append(dist[r[keep], c[keep]])
    cat = lambda xs, t: np.concatenate(xs).astype(t) if xs else np.zeros(0, t)  # noqa: E731
    return cat(ii, np.int64), cat(jj, np.int64), cat(dd, np.int64)


def compute_phashes(frame: pd.DataFrame, root: str | os.PathLike) -> list[str]:
    """The ``phash`` column when the index has it, else hashes computed from the files."""
    from .media import read_image

    have = frame["phash"].tolist() if "phash" in frame.columns else [""] * len(frame)
    return [h if h else phash_hex(read_image(Path(root) / p)) for h, p in zip(have, frame["path"])]


def _clusters(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component id per item from edges ``(i, j)`` (union-find); singletons get -1."""
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(x) for x in range(n)])
    linked = np.zeros(n, bool)
    linked[i], linked[j] = True, True
    return np.where(linked, roots, -1)


def find_duplicates(frame: pd.DataFrame, root: str | os.PathLike, near_dup_bits: int = 20) -> pd.DataFrame:
    """Exact and near-duplicate pairs of a split frame (``path``, ``split``, ``sha256``...).

    ``near_dup_bits < 0`` turns the perceptual hash off (exact duplicates only). Exact
    duplicates are listed as pairs with the first copy of each content hash.

    Returns:
        One row per pair (``PAIR_COLUMNS``): kind ``exact`` or ``near``, Hamming distance,
        whether the two lie in different splits, both sides' path/split/label/group, and the
        duplicate cluster (row index of its first member).
    """
    frame = frame.reset_index(drop=True)
    n = len(frame)
    ii, jj, dd, kinds = [], [], [], []
    if "sha256" in frame.columns:
        first = frame.groupby("sha256", sort=False).cumcount() > 0
        head = frame.reset_index().groupby("sha256", sort=False)["index"].transform("first")
        for k in np.flatnonzero(first.to_numpy()):
            ii.append(int(head.iloc[k]))
            jj.append(int(k))
            dd.append(0)
            kinds.append("exact")
    if near_dup_bits >= 0 and n > 1:
        words = hex_to_words(compute_phashes(frame, root))
        i, j, d = near_pairs(words, near_dup_bits)
        sha = frame["sha256"].to_numpy() if "sha256" in frame.columns else None
        for a, b, dist in zip(i.tolist(), j.tolist(), d.tolist()):
            if sha is not None and sha[a] == sha[b]:
                continue  # already an exact pair (or the same content reached through another copy)
            ii.append(a)
            jj.append(b)
            dd.append(dist)
            kinds.append("near")
    if not ii:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    i, j = np.asarray(ii), np.asarray(jj)
    cluster = _clusters(n, i, j)
    split = frame["split"].to_numpy() if "split" in frame.columns else np.full(n, "")
    col = lambda c: frame[c].to_numpy() if c in frame.columns else np.full(n, "")  # noqa: E731
    pairs = pd.DataFrame(
        {
            "kind": kinds,
            "distance": dd,
            "cross_split": split[i] != split[j],
            "path_a": frame["path"].to_numpy()[i],
            "path_b": frame["path"].to_numpy()[j],
            "split_a": split[i],
            "split_b": split[j],
            "label_a": col("label")[i],
            "label_b": col("label")[j],
            "group_a": col("group")[i],
            "group_b": col("group")[j],
            "cluster": cluster[i],
        }
    )
    return pairs.sort_values(["kind", "distance", "path_a", "path_b"]).reset_index(drop=True)


def cross_split_rows(frame: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows to drop so that no duplicate cluster spans two splits.

    In every cluster that spans splits, the members in its earliest split (train before val
    before test) are kept and the others dropped: training keeps its data, evaluation stays
    clean.
    """
    frame = frame.reset_index(drop=True)
    drop = np.zeros(len(frame), bool)
    if pairs.empty:
        return drop
    index = {p: k for k, p in enumerate(frame["path"])}
    order = {s: k for k, s in enumerate(SPLITS)}
    members: dict[int, set[int]] = {}
    for a, b, c in zip(pairs["path_a"], pairs["path_b"], pairs["cluster"]):
        members.setdefault(int(c), set()).update((index[a], index[b]))
    splits = frame["split"].to_numpy()
    for rows in members.values():
        keep_split = min((splits[r] for r in rows), key=lambda s: order.get(s, len(order)))
        for r in rows:
            if splits[r] != keep_split:
                drop[r] = True
    return drop


@dataclass
class AuditResult:
    """Outcome of ``audit_duplicates``."""

    frame: pd.DataFrame  # the split frame, minus dropped duplicates when ``dedupe``
    pairs: pd.DataFrame  # every duplicate pair; ``dedupe_drops``: a member is (or, without dedupe, would be) dropped
    removed: list[str]  # paths dropped by ``dedupe``
    summary: dict


def audit_duplicates(
    frame: pd.DataFrame,
    root: str | os.PathLike,
    near_dup_bits: int = 20,
    dedupe: bool = False,
    report: str | os.PathLike | None = None,
) -> AuditResult:
    """Find duplicates in a split frame; drop the cross-split ones when ``dedupe``, else raise.

    ``report``, when given, receives the pair list (``write_pairs``) before anything is raised,
    so a failed split still leaves the evidence.

    Raises:
        DuplicateLeakageError: when duplicates cross splits and ``dedupe`` is off; the message
        gives the counts, examples and the two ways out.
    """
    frame = frame.reset_index(drop=True)
    pairs = find_duplicates(frame, root, near_dup_bits)
    cross = pairs[pairs["cross_split"]] if not pairs.empty else pairs
    drop = cross_split_rows(frame, cross)
    removed = frame.loc[drop, "path"].tolist()
    gone = set(removed)
    pairs = pairs.assign(dedupe_drops=[(a in gone) or (b in gone) for a, b in zip(pairs["path_a"], pairs["path_b"])])
    summary = {
        "exact_duplicate_pairs": int((pairs["kind"] == "exact").sum()),
        "near_duplicate_pairs": int((pairs["kind"] == "near").sum()),
        "exact_duplicate_pairs_across_splits": int((cross["kind"] == "exact").sum()),
        "near_duplicate_pairs_across_splits": int((cross["kind"] == "near").sum()),
        "duplicate_label_conflicts": int((pairs["label_a"] != pairs["label_b"]).sum()) if not pairs.empty else 0,
        "removed_duplicates": len(removed) if dedupe else 0,
        "near_dup_bits": near_dup_bits,
    }
    if report is not None:
        write_pairs(pairs, report)
    if len(cross) and not dedupe:
        ex = cross.iloc[0]
        raise DuplicateLeakageError(
            f"{summary['exact_duplicate_pairs_across_splits']} exact and "
            f"{summary['near_duplicate_pairs_across_splits']} near-duplicate "
            f"pair(s) cross splits, e.g. {ex['path_a']} [{ex['split_a']}] ~ {ex['path_b']} [{ex['split_b']}] "
            f"({ex['kind']}, "
            f"{ex['distance']} bits); the list is in {report or 'the pairs of find_duplicates'}. Set split.dedupe: "
            "true to drop the held-out copies "
            f"({len(removed)} image(s)), give the copies one group, or remove them from the dataset"
        )
    kept = frame[~drop].reset_index(drop=True) if dedupe else frame
    return AuditResult(kept, pairs, removed if dedupe else [], summary)


def write_pairs(pairs: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the duplicate pairs as CSV (header only when there are none)."""
    from ..core.utils import atomic_path

    out = pairs.reindex(columns=[*PAIR_COLUMNS, "dedupe_drops"])
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False)
    return Path(path)
