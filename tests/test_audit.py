import io
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake.data.audit import (
    DuplicateLeakageError,
    audit_duplicates,
    cross_split_rows,
    find_duplicates,
    hex_to_words,
    near_pairs,
    phash,
    phash_hex,
)
from deepfake.data.media import sha256_file
from deepfake.data.split import LeakageError, SplitConfig, index_dataset, keep_given_split
from deepfake.pipeline import stages


def _distance(a: np.ndarray, b: np.ndarray) -> int:
    return int(sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(phash(a), phash(b))))


def _load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return _load(io.BytesIO(buf.getvalue()))


def test_phash_is_256_bits_and_deterministic(tiny_dataset):
    img = _load(sorted((tiny_dataset / "real").glob("*.jpg"))[0])
    h = phash(img)
    assert h.dtype == np.uint64 and h.shape == (4,)
    assert sum(bin(int(w)).count("1") for w in h) == 128  # median split of 256 coefficients
    assert phash_hex(img) == phash_hex(img.copy()) and len(phash_hex(img)) == 64
    assert np.array_equal(hex_to_words([phash_hex(img)])[0], h)


def test_near_copies_are_close_and_distinct_faces_far(tiny_dataset):
    files = sorted((tiny_dataset / "real").glob("*.jpg"))
    img = _load(files[0])
    assert _distance(img, _jpeg(img, 50)) <= 12
    assert _distance(img, cv2.resize(cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA), (48, 48))) <= 12
    assert _distance(img, np.clip(img.astype(int) + 15, 0, 255).astype(np.uint8)) <= 12
    others = [_distance(img, _load(f)) for f in files[1:]]
    assert min(others) > 20  # the default threshold separates copies from other faces


def test_near_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**63, (60, 4), dtype=np.uint64)
    words[7] = words[3]
    words[7, 0] ^= np.uint64(0b1011)  # 3 bits from item 3
    words[50] = words[3]
    i, j, d = near_pairs(words, 100, block_elems=97)  # tiny blocks: many block boundaries
    got = set(zip(i.tolist(), j.tolist(), d.tolist()))
    want = {
        (a, b, int(sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(words[a], words[b]))))
        for a in range(60)
        for b in range(a + 1, 60)
    }
    want = {t for t in want if t[2] <= 100}
    assert got == want and (3, 7, 3) in got and (3, 50, 0) in got


def _frame(tiny_dataset, splits):
    frame = index_dataset(tiny_dataset).head(len(splits)).copy()
    frame["split"] = splits
    return frame


def test_exact_and_near_duplicates_across_splits_are_found(tiny_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    frame = index_dataset(root).head(6).copy()
    a, b = frame["path"].iloc[0], frame["path"].iloc[1]
    shutil.copy(root / a, root / "real" / "copy.jpg")  # exact copy
    Image.fromarray(_jpeg(_load(root / b), 60)).save(root / "real" / "recompressed.png")  # near copy
    extra = pd.DataFrame(
        {"path": ["real/copy.jpg", "real/recompressed.png"], "label": ["real", "real"], "group": ["x", "y"]}
    )
    extra["sha256"] = [sha256_file(root / p) for p in extra["path"]]
    frame = pd.concat([frame, extra], ignore_index=True)
    frame["split"] = ["train"] * 6 + ["test", "train"]
    pairs = find_duplicates(frame, root)
    exact = pairs[pairs["kind"] == "exact"]
    near = pairs[pairs["kind"] == "near"]
    assert exact[["path_a", "path_b", "cross_split", "distance"]].values.tolist() == [[a, "real/copy.jpg", True, 0]]
    assert near[["path_a", "path_b", "cross_split"]].values.tolist() == [[b, "real/recompressed.png", False]]
    assert 0 < near["distance"].iloc[0] <= 12
    assert find_duplicates(frame, root, near_dup_bits=-1)["kind"].tolist() == ["exact"]  # perceptual hash off


def test_cross_split_duplicates_fail_with_a_clear_message_and_leave_the_list(tiny_dataset, tmp_path):
    frame = _frame(tiny_dataset, ["train", "val", "test", "train"])
    frame.loc[2, "sha256"] = frame.loc[0, "sha256"]  # pretend row 2 is a copy of row 0
    report = tmp_path / "duplicates.csv"
    with pytest.raises(DuplicateLeakageError) as e:
        audit_duplicates(frame, tiny_dataset, near_dup_bits=-1, report=report)
    msg = str(e.value)
    assert (
        "1 exact and 0 near-duplicate pair(s) cross splits" in msg
        and frame.loc[2, "path"] in msg
        and "split.dedupe" in msg
    )
    assert isinstance(e.value, LeakageError)
    listed = pd.read_csv(report)
    assert listed[["path_b", "split_b", "dedupe_drops"]].values.tolist() == [[frame.loc[2, "path"], "test", True]]


def test_dedupe_keeps_the_earliest_split_of_each_cluster(tiny_dataset):
    frame = _frame(tiny_dataset, ["test", "train", "val", "val", "test", "train"])
    frame.loc[1, "sha256"] = frame.loc[0, "sha256"]  # cluster {0 test, 1 train}: keep train
    frame.loc[4, "sha256"] = frame.loc[2, "sha256"]  # cluster {2 val, 4 test}: keep val
    frame.loc[3, "sha256"] = frame.loc[2, "sha256"]  # and 3 (val) joins it: kept too
    res = audit_duplicates(frame, tiny_dataset, near_dup_bits=-1, dedupe=True)
    assert sorted(res.removed) == sorted([frame.loc[0, "path"], frame.loc[4, "path"]])
    assert len(res.frame) == 4 and res.summary["removed_duplicates"] == 2
    assert res.summary["exact_duplicate_pairs"] == 3 and res.summary["exact_duplicate_pairs_across_splits"] == 2
    again = find_duplicates(res.frame, tiny_dataset, near_dup_bits=-1)
    assert not again["cross_split"].any()


def test_duplicates_inside_one_split_are_not_leakage(tiny_dataset):
    frame = _frame(tiny_dataset, ["train", "train", "test"])
    frame.loc[1, "sha256"] = frame.loc[0, "sha256"]
    res = audit_duplicates(frame, tiny_dataset, near_dup_bits=-1)
    assert res.summary["exact_duplicate_pairs"] == 1 and res.summary["exact_duplicate_pairs_across_splits"] == 0
    assert len(res.frame) == 3 and not cross_split_rows(frame, res.pairs).any()


def _dataset_with_given_split(tiny_dataset, root):
    """The tiny set with its own split column, and one training image copied into test."""
    shutil.copytree(tiny_dataset, root)
    man = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    groups = sorted(man["group"].unique())
    man["split"] = ["test" if g in groups[:2] else "val" if g in groups[2:3] else "train" for g in man["group"]]
    src = man[man["split"] == "train"].iloc[0]
    shutil.copy(root / src["file"], root / "fake" / "leaked.jpg")
    man.loc[len(man)] = {**src.to_dict(), "file": "fake/leaked.jpg", "group": "someone-else", "split": "test"}
    man.to_csv(root / "manifest.csv", index=False)
    return src["file"]


def test_split_stage_fails_on_duplicates_then_dedupes_when_asked(tiny_dataset, tmp_path):
    root = tmp_path / "ds"
    original = _dataset_with_given_split(tiny_dataset, root)
    with pytest.raises(DuplicateLeakageError, match="leaked.jpg"):
        stages.run_split(root, tmp_path / "s", tmp_path / "r", SplitConfig())
    assert (tmp_path / "r" / "duplicates.csv").exists() and not (tmp_path / "s" / "train.csv").exists()
    res = stages.run_split(root, tmp_path / "s", tmp_path / "r", SplitConfig(dedupe=True))
    assert res.audit["removed_duplicates"] == 1 and "fake/leaked.jpg" not in set(res.frame["path"])
    assert original in set(pd.read_csv(tmp_path / "s" / "train.csv")["path"])
    test = pd.read_csv(tmp_path / "s" / "test.csv", dtype=str)
    assert test["group"].nunique() == 2  # the dataset's own split was kept


def test_given_split_gets_a_validation_split_when_it_has_none(tiny_dataset):
    frame = index_dataset(tiny_dataset)
    groups = sorted(frame["group"].unique())
    frame["split"] = ["test" if g in groups[:1] else "train" for g in frame["group"]]
    out = keep_given_split(frame, SplitConfig(val_frac=0.25))
    assert set(out["split"]) == {"train", "val", "test"}
    assert (out.loc[frame["split"] == "test", "split"] == "test").all()  # test untouched
    assert out.groupby("group")["split"].nunique().max() == 1  # groups stay whole
    with pytest.raises(ValueError, match="only"):
        keep_given_split(frame.assign(split="holdout"))
