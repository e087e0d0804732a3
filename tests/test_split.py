import pandas as pd
import pytest
from PIL import Image

from deepfake.data.media import UnreadableImageError, read_image, sha256_file
from deepfake.data.split import (
    DatasetLayoutError,
    LeakageError,
    SplitConfig,
    balance_table,
    check_leakage,
    index_dataset,
    leakage_report,
    read_split,
    split_dataset,
    write_splits,
)


def _frame(n_groups=40, per_group=4, fake_every=2):
    rows = []
    for g in range(n_groups):
        for k in range(per_group):
            fake = k % fake_every == 0
            rows.append(
                {
                    "path": f"{g}_{k}.jpg",
                    "label": "fake" if fake else "real",
                    "target": int(fake),
                    "group": f"g{g}",
                    "sha256": f"{g:04d}{k:04d}",
                }
            )
    return pd.DataFrame(rows)


def test_groups_never_cross_splits_and_fractions_are_close():
    df = split_dataset(_frame(), SplitConfig(val_frac=0.2, test_frac=0.2, seed=1))
    assert df.groupby("group")["split"].nunique().max() == 1
    share = df.groupby("split")["group"].nunique() / 40
    assert abs(share["test"] - 0.2) <= 0.05 and abs(share["val"] - 0.2) <= 0.05
    assert check_leakage(df)["groups_across_splits"] == []


def test_split_is_stratified():
    df = split_dataset(_frame(n_groups=60), SplitConfig(val_frac=0.15, test_frac=0.15))
    for _, part in df.groupby("split"):
        assert part["target"].mean() == pytest.approx(0.5, abs=0.05)


def test_split_is_deterministic_and_seed_dependent():
    a = split_dataset(_frame(), SplitConfig(seed=5))["split"].tolist()
    assert a == split_dataset(_frame(), SplitConfig(seed=5))["split"].tolist()
    assert a != split_dataset(_frame(), SplitConfig(seed=6))["split"].tolist()


def test_leakage_of_groups_and_identical_files_is_detected():
    df = split_dataset(_frame(), SplitConfig())
    moved = df.copy()
    i = moved.index[moved["split"] == "train"][0]
    moved.loc[i, "split"] = "test"  # one image of a train identity lands in test
    assert leakage_report(moved)["groups_across_splits"] == [moved.loc[i, "group"]]
    with pytest.raises(LeakageError, match="1 group"):
        check_leakage(moved)
    dup = df.copy()
    a = dup.index[dup["split"] == "train"][0]
    b = dup.index[dup["split"] == "test"][0]
    dup.loc[b, "sha256"] = dup.loc[a, "sha256"]  # the same file under two identities
    with pytest.raises(LeakageError, match="1 identical file"):
        check_leakage(dup)


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="too few"):
        split_dataset(_frame(n_groups=3), SplitConfig(test_frac=0.2))


@pytest.mark.parametrize("frac", [0.0, 0.5, -0.1])
def test_bad_fractions_rejected(frac):
    with pytest.raises(ValueError, match="split"):
        SplitConfig(val_frac=frac)


def test_balance_table_and_manifests(tmp_path):
    df = split_dataset(_frame(), SplitConfig())
    t = balance_table(df)
    assert list(t.index) == ["train", "val", "test"]
    assert t["total"].sum() == len(df) and (t["real"] + t["fake"] == t["total"]).all()
    paths = write_splits(df, tmp_path)
    back = pd.concat(pd.read_csv(p) for p in paths.values())
    assert len(back) == len(df) and "split" not in back.columns


def _img(path, color=(200, 10, 10), size=(20, 20), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def test_index_folder_layout_any_depth_and_case(tmp_path):
    _img(tmp_path / "real" / "a.jpg")
    _img(tmp_path / "Real" / "sub" / "b.png", (1, 2, 3))
    _img(tmp_path / "fake" / "deep" / "er" / "c.webp", (9, 9, 9))
    (tmp_path / "fake" / "notes.txt").write_text("not an image")
    df = index_dataset(tmp_path)
    assert list(df["path"]) == ["Real/sub/b.png", "fake/deep/er/c.webp", "real/a.jpg"]
    assert dict(zip(df["path"], df["target"])) == {"Real/sub/b.png": 0, "fake/deep/er/c.webp": 1, "real/a.jpg": 0}
    assert list(df["group"]) == list(df["path"])  # no group info: one group per file
    assert df["sha256"].str.len().eq(64).all()


def test_index_uses_manifest_with_groups(tiny_dataset):
    df = index_dataset(tiny_dataset)
    assert len(df) == 48 and df["group"].nunique() == 12
    assert set(df["label"]) == {"real", "fake"}
    assert (df["target"] == (df["label"] == "fake")).all()


def test_manifest_errors_name_the_problem(tmp_path):
    _img(tmp_path / "real" / "a.jpg")
    (tmp_path / "manifest.csv").write_text("file,label\nreal/a.jpg,maybe\n")
    with pytest.raises(DatasetLayoutError, match="maybe"):
        index_dataset(tmp_path)
    (tmp_path / "manifest.csv").write_text("file,label\nreal/missing.jpg,real\n")
    with pytest.raises(DatasetLayoutError, match="missing.jpg"):
        index_dataset(tmp_path)
    (tmp_path / "manifest.csv").write_text("path,y\nreal/a.jpg,real\n")
    with pytest.raises(DatasetLayoutError, match=r"lacks the column.*label"):
        index_dataset(tmp_path)


def test_missing_or_empty_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        index_dataset(tmp_path / "nope")
    (tmp_path / "real").mkdir()
    with pytest.raises(DatasetLayoutError, match="no images"):
        index_dataset(tmp_path)


def test_read_image_converts_to_rgb_and_names_bad_files(tmp_path):
    gray = tmp_path / "g.png"
    Image.new("L", (5, 5), 128).save(gray)
    assert read_image(gray).shape == (5, 5, 3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(UnreadableImageError, match="bad.jpg"):
        read_image(bad)


def test_index_refuses_videos_it_cannot_sample(tmp_path):
    _img(tmp_path / "real" / "a.jpg")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "clip.mp4").write_bytes(b"\x00" * 10)
    with pytest.raises(DatasetLayoutError, match="preprocess"):
        index_dataset(tmp_path)


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    p = tmp_path / "x.bin"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_read_split_missing_says_which_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="split stage"):
        read_split(tmp_path, "train")


def test_read_split_keeps_groups_as_strings(tmp_path):
    pd.DataFrame({"path": ["a.jpg"], "label": ["real"], "target": [0], "group": ["007"]}).to_csv(
        tmp_path / "val.csv", index=False
    )
    assert read_split(tmp_path, "val")["group"].iloc[0] == "007"
