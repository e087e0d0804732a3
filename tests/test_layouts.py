"""The benchmark adapters (``deepfake.data.layouts``) on miniatures of each download's tree
(``deepfake.pipeline.quick.make_*_tree``): labels, groups, official splits, kinds of fake, what is
skipped, recognition, every refusal, and that no video is opened while listing."""

import builtins
import io
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake.core import paths
from deepfake.core.config import ConfigError, DataConfig, read_yaml
from deepfake.data import layouts
from deepfake.data.ingest import DatasetLayoutError, IngestConfig, scan
from deepfake.data.layouts import (
    Components,
    LayoutConfig,
    detect_layout,
    read_ffpp_split,
    scan_dataset,
)
from deepfake.data.media import REASONS, VIDEO_EXTENSIONS
from deepfake.data.preprocess import PreprocessConfig, preprocess, settings_key
from deepfake.data.split import SplitConfig, check_leakage, keep_given_split
from deepfake.pipeline import quick, stages

OWN = {"split": "own"}
SMALL = {"frames": 4, "size": 64}  # short, small clips: the adapters never read them, preprocess barely


def cfg(**kw) -> LayoutConfig:
    return LayoutConfig(**kw)


def by_rel(inv) -> dict:
    return {s.rel: s for s in inv.sources}


def skipped(inv) -> dict[str, tuple[str, str]]:
    return {s["source"]: (s["reason"], s["detail"]) for s in inv.skipped}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """The four miniature trees, made once (about a second)."""
    base = tmp_path_factory.mktemp("benchmarks")
    return {
        "ffpp": quick.make_ffpp_tree(base / "ffpp", dfd=True, **SMALL),
        "celebdf": quick.make_celebdf_tree(base / "celebdf", **SMALL),
        "dfdc": quick.make_dfdc_tree(base / "dfdc", **SMALL),
        "dfdcp": quick.make_dfdcp_tree(base / "dfdcp", **SMALL),
    }


@pytest.fixture()
def copy_of(trees, tmp_path):
    """A scratch copy of one tree, for tests that change it."""

    def copy(name: str) -> Path:
        return Path(shutil.copytree(trees[name], tmp_path / name))

    return copy


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def test_layout_settings_come_from_params_yaml():
    data = read_yaml(paths.PARAMS_FILE)["data"]
    c = LayoutConfig()
    assert asdict(c) == {k: data[k] for k in layouts.LAYOUT_KEYS}
    assert (c.layout, c.compression, c.ffpp_dfd, c.split) == ("auto", "c23", False, "official")
    assert c.method_names == ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
    assert LayoutConfig.of(DataConfig(layout="ffpp", split="own")) == LayoutConfig(layout="ffpp", split="own")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"layout": "ff++"}, "data.layout = 'ff++' is not allowed"),
        ({"compression": "c0"}, "data.compression = 'c0' is not allowed; expected one of raw | c23 | c40"),
        ({"split": "offical"}, "did you mean 'official'"),
        ({"methods": "Deepfakes,FaceSwapp"}, "names ['FaceSwapp']"),
        ({"methods": "DeepFakeDetection"}, "set data.ffpp_dfd: true instead"),
        ({"methods": " , "}, "names no method"),
    ],
)
def test_bad_layout_settings_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[").replace("+", r"\+")):
        LayoutConfig(**bad)
    with pytest.raises(ConfigError):
        DataConfig(**bad)


def test_the_layout_is_part_of_the_cache_fingerprint():
    pre = PreprocessConfig(detect=False)
    keys = {settings_key(pre, LayoutConfig(**kw)) for kw in ({}, OWN, {"compression": "c40"}, {"layout": "ffpp"})}
    assert len(keys) == 4


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------


def test_components_link_through_shared_members_and_name_stably():
    c = Components()
    c.link("id0", "id16")
    c.link("id16", "id2")
    c.link("id10", "id9")
    c.add("id3")
    assert c.name("id2") == c.name("id0") == "id0_id2_id16"  # natural order
    assert c.name("id10") == "id9_id10" and c.name("id3") == "id3"
    for i in range(20, 30):
        c.link("id20", f"id{i}")
    assert c.name("id25") == "id20_and_9_more"
    assert len(c.members()) == 4


# --------------------------------------------------------------------------------------------
# FaceForensics++
# --------------------------------------------------------------------------------------------


def test_the_official_split_ships_with_the_package():
    split = read_ffpp_split()
    counts = pd.Series(split).value_counts().to_dict()
    assert counts == {"train": 720, "val": 140, "test": 140}  # 360 / 70 / 70 pairs
    assert sorted(split) == [f"{i:03d}" for i in range(1000)]
    folder = layouts.ffpp_split_files()
    assert folder.joinpath("LICENSE.FaceForensics").read_text(encoding="utf-8").startswith("Copyright 2018")
    for name, pairs in quick.FFPP_QUICK_PAIRS.items():
        assert all(split[i] == name for p in pairs for i in p), "the miniature's ids keep their official split"
    first = json.loads(folder.joinpath("train.json").read_text())[0]
    assert first == ["071", "054"]


def test_a_missing_or_altered_split_file_is_refused(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"official FaceForensics\+\+ split file .*train.json is missing"):
        read_ffpp_split(tmp_path)
    for name in ("train", "val", "test"):
        shutil.copy(layouts.ffpp_split_files().joinpath(f"{name}.json"), tmp_path / f"{name}.json")
    pairs = json.loads((tmp_path / "val.json").read_text())
    (tmp_path / "val.json").write_text(json.dumps(pairs[:-1]))
    with pytest.raises(DatasetLayoutError, match="val.json should hold 70 pairs"):
        read_ffpp_split(tmp_path)
    (tmp_path / "val.json").write_text(json.dumps([*pairs[:-1], ["071", "729"]]))
    with pytest.raises(DatasetLayoutError, match="id 071 is also in train.json"):
        read_ffpp_split(tmp_path)


def test_ffpp_official(trees):
    inv = scan_dataset(trees["ffpp"], cfg(layout="ffpp"))
    assert inv.layout == "ffpp" and inv.skipped == []  # masks/ and c40/ are out of scope: not even listed
    src = by_rel(inv)
    assert all("/c23/videos/" in r for r in src) and len(src) == 8 + 4 * 8
    kinds = pd.Series([s.extra["manipulation"] for s in inv.sources]).value_counts().to_dict()
    assert kinds == {"": 8, "Deepfakes": 8, "Face2Face": 8, "FaceSwap": 8, "NeuralTextures": 8}
    assert {s.extra["dataset"] for s in inv.sources} == {"FaceForensics++"}
    assert {s.label for s in inv.sources if s.extra["manipulation"]} == {"fake"}
    fake = src["manipulated_sequences/Face2Face/c23/videos/720_672.mp4"]
    assert (fake.label, fake.group, fake.split, fake.kind) == ("fake", "672_720", "val", "video")
    orig = src["original_sequences/youtube/c23/videos/953.mp4"]
    assert (orig.label, orig.group, orig.split) == ("real", "953_974", "test")
    per_split = pd.Series([s.split for s in inv.sources]).value_counts().to_dict()
    assert per_split == {"train": 20, "val": 10, "test": 10}  # each pair: 2 originals + 8 fakes
    for pair_split, pairs in quick.FFPP_QUICK_PAIRS.items():
        for a, b in pairs:
            members = [s for s in inv.sources if s.group == "_".join(sorted((a, b)))]
            assert len(members) == 10 and {s.split for s in members} == {pair_split}


def test_ffpp_own_split_and_deepfakedetection(trees):
    inv = scan_dataset(trees["ffpp"], cfg(layout="ffpp", ffpp_dfd=True, methods="Deepfakes", **OWN))
    assert {s.split for s in inv.sources} == {""}
    dfd = [s for s in inv.sources if "actors" in s.rel or "DeepFakeDetection" in s.rel]
    assert len(dfd) == 6
    # 01<->02 and 03->02 link the three actors: one identity group, the originals with their fakes
    assert {s.group for s in dfd} == {"a01_a02_a03"}
    assert {s.extra["manipulation"] for s in dfd if s.label == "fake"} == {"DeepFakeDetection"}
    groups = {s.group for s in inv.sources}
    assert groups == {"054_071", "081_087", "672_720", "953_974", "a01_a02_a03"}


def test_ffpp_with_deepfakedetection_and_the_official_split_is_refused(trees):
    with pytest.raises(DatasetLayoutError, match="ffpp_dfd: true with data.split: official.*set data.split: own"):
        scan_dataset(trees["ffpp"], cfg(layout="ffpp", ffpp_dfd=True))


def test_ffpp_refusals(trees, copy_of, tiny_dataset, tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"compression raw is not in .*youtube .*present: c23, c40"):
        scan_dataset(trees["ffpp"], cfg(layout="ffpp", compression="raw"))
    with pytest.raises(DatasetLayoutError, match=r"FaceShifter/c23/videos is missing.*drop FaceShifter from data"):
        scan_dataset(trees["ffpp"], cfg(layout="ffpp", methods="Deepfakes,FaceShifter"))
    # c40 holds placeholders of the originals only: the methods at c40 are named as missing
    with pytest.raises(DatasetLayoutError, match=r"Deepfakes/c40/videos is missing"):
        scan_dataset(trees["ffpp"], cfg(layout="ffpp", compression="c40"))
    tree = copy_of("ffpp")
    for f in (tree / "manipulated_sequences/FaceSwap/c23/videos").iterdir():
        f.unlink()
    with pytest.raises(DatasetLayoutError, match=r"FaceSwap/c23/videos is empty.*folders with c23 videos: "):
        scan_dataset(tree, cfg(layout="ffpp"))
    with pytest.raises(DatasetLayoutError, match=r"not a FaceForensics\+\+ download.*looks like a manifest dataset"):
        scan_dataset(tiny_dataset, cfg(layout="ffpp"))
    (tmp_path / "plain" / "real").mkdir(parents=True)
    (tmp_path / "plain" / "fake").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"no original_sequences/ and no manipulated_sequences/.*folders"):
        scan_dataset(tmp_path / "plain", cfg(layout="ffpp"))


def test_ffpp_lists_what_it_cannot_use(copy_of):
    tree = copy_of("ffpp")
    videos = tree / "manipulated_sequences/Deepfakes/c23/videos"
    (videos / "notes.txt").write_text("download log")
    shutil.copy(videos / "071_054.mp4", videos / "071_720.mp4")  # ids of two official splits
    shutil.copy(videos / "071_054.mp4", videos / "71_54.mp4")
    (videos / ".DS_Store").write_bytes(b"")
    inv = scan_dataset(tree, cfg(layout="ffpp"))
    assert skipped(inv) == {
        "manipulated_sequences/Deepfakes/c23/videos/.DS_Store": ("hidden", ""),
        "manipulated_sequences/Deepfakes/c23/videos/071_720.mp4": (
            "not_in_index",
            "not an official pair (071 in train, 720 in val)",
        ),
        "manipulated_sequences/Deepfakes/c23/videos/71_54.mp4": ("unexpected_name", r"expected (\d{3})_(\d{3}).mp4"),
        "manipulated_sequences/Deepfakes/c23/videos/notes.txt": ("unexpected_name", ".txt: a video was expected"),
    }
    assert all(s["reason"] in REASONS for s in inv.skipped)


# --------------------------------------------------------------------------------------------
# Celeb-DF v2
# --------------------------------------------------------------------------------------------


def test_celebdf_official(trees, caplog):
    with caplog.at_level(logging.INFO, logger="deepfake.data.layouts"):
        inv = scan_dataset(trees["celebdf"], cfg(layout="celebdf"))
    src = by_rel(inv)
    listed = {line.split()[1] for line in quick.CELEBDF_QUICK["test"]}
    assert {r for r, s in src.items() if s.split == "test"} == listed
    assert {s.split for r, s in src.items() if r not in listed} == {"train"}
    assert src["Celeb-synthesis/id2_id3_0000.mp4"].extra == {
        "manipulation": "Celeb-synthesis",
        "dataset": "Celeb-DF-v2",
    }
    assert src["YouTube-real/00001.mp4"].label == "real" and src["YouTube-real/00001.mp4"].group == "YouTube-real/00001"
    # id0 and id1 are one identity group; the official list puts id0_0001 in test and the rest in train,
    # so that group is two, one per split, and no group crosses splits
    assert src["Celeb-real/id0_0001.mp4"].group == "id0_id1@test"
    assert src["Celeb-synthesis/id1_id0_0000.mp4"].group == src["Celeb-real/id0_0000.mp4"].group == "id0_id1@train"
    assert src["Celeb-synthesis/id2_id3_0000.mp4"].group == src["Celeb-real/id3_0000.mp4"].group == "id2_id3"
    frame = pd.DataFrame([{"group": s.group, "split": s.split} for s in inv.sources])
    assert (frame.groupby("group")["split"].nunique() == 1).all()
    assert "2 of 6 group(s) have videos in more than one split" in caplog.text
    assert "in 6 component(s), 8 group(s)" in caplog.text


def test_celebdf_validation_is_drawn_from_train_by_groups(trees):
    """No official validation set: the split stage's keep_given_split holds one out of train by group."""
    inv = scan_dataset(trees["celebdf"], cfg(layout="celebdf"))
    frame = pd.DataFrame(
        [{"path": s.rel, "label": s.label, "target": int(s.label == "fake"), "group": s.group, "split": s.split}
         for s in inv.sources]
    )  # fmt: skip
    out = keep_given_split(frame, SplitConfig(val_frac=0.3, test_frac=0.3, seed=0))
    assert set(out["split"]) == {"train", "val", "test"}
    assert (out.loc[frame["split"] == "test", "split"] == "test").all()  # the official test list is kept
    assert check_leakage(out)["groups_across_splits"] == []


def test_celebdf_own_split_keeps_identities_whole(trees):
    inv = scan_dataset(trees["celebdf"], cfg(layout="celebdf", **OWN))
    src = by_rel(inv)
    assert {s.split for s in inv.sources} == {""}
    assert src["Celeb-real/id0_0001.mp4"].group == src["Celeb-synthesis/id1_id0_0000.mp4"].group == "id0_id1"


def test_celebdf_missing_videos_are_counted_and_named(copy_of, caplog):
    tree = copy_of("celebdf")
    (tree / "Celeb-real/id0_0001.mp4").unlink()
    (tree / "Celeb-synthesis/id5_id4_0000.mp4").unlink()
    with caplog.at_level(logging.WARNING, logger="deepfake.data.layouts"):
        inv = scan_dataset(tree, cfg(layout="celebdf"))
    assert skipped(inv) == {
        "Celeb-real/id0_0001.mp4": ("missing_file", "listed in List_of_testing_videos.txt"),
        "Celeb-synthesis/id5_id4_0000.mp4": ("missing_file", "listed in List_of_testing_videos.txt"),
    }
    assert {s["label"] for s in inv.skipped} == {"real", "fake"}
    assert "2 video(s) listed in" in caplog.text
    assert "Celeb-real/id0_0001.mp4, Celeb-synthesis/id5_id4_0000.mp4" in caplog.text


@pytest.mark.parametrize(
    "line, message",
    [
        (
            "0 Celeb-real/id0_0001.mp4",
            r"line 6 \('0 Celeb-real/id0_0001.mp4'\) labels a video of Celeb-real/ 0 \(fake\)",
        ),
        ("1 Celeb-fake/id9_0000.mp4", r"line 6 .* names the folder Celeb-fake/, which is not in"),
        ("real Celeb-real/id0_0000.mp4", r"line 6 .* is not '<1\|0> <folder>/<file>.mp4'"),
        ("1 Celeb-real/id4_0000.mp4", r"line 6 .* repeats Celeb-real/id4_0000.mp4"),
    ],
)
def test_celebdf_test_list_is_checked_line_by_line(copy_of, line, message):
    tree = copy_of("celebdf")
    with open(tree / "List_of_testing_videos.txt", "a") as f:
        f.write(line + "\n")
    with pytest.raises(DatasetLayoutError, match=message):
        scan_dataset(tree, cfg(layout="celebdf"))


def test_celebdf_refusals(copy_of):
    tree = copy_of("celebdf")
    (tree / "List_of_testing_videos.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="List_of_testing_videos.txt is missing.*set data.split: own"):
        scan_dataset(tree, cfg(layout="celebdf"))
    assert len(scan_dataset(tree, cfg(layout="celebdf", **OWN)).sources) == 16  # own: the list is not needed
    shutil.rmtree(tree / "Celeb-synthesis")
    with pytest.raises(DatasetLayoutError, match="not a Celeb-DF v2 folder: it has no Celeb-synthesis/"):
        scan_dataset(tree, cfg(layout="celebdf", **OWN))


# --------------------------------------------------------------------------------------------
# DFDC and its preview
# --------------------------------------------------------------------------------------------


def test_dfdc(trees):
    inv = scan_dataset(trees["dfdc"], cfg(layout="dfdc"))
    assert inv.layout == "dfdc" and inv.skipped == []
    src = by_rel(inv)
    assert len(src) == 13 and {s.extra["dataset"] for s in inv.sources} == {"DFDC"}
    fake = src["dfdc_train_part_0/acxwigylke.mp4"]
    assert (fake.label, fake.split, fake.extra["manipulation"]) == ("fake", "train", "")
    assert fake.group == src["dfdc_train_part_0/aaqaifqrwn.mp4"].group == "aaqaifqrwn_abarnvbtwb_acxwigylke"
    assert src["dfdc_train_part_1/dbnygxtwek.mp4"].group == "dakqwktlbi_dbnygxtwek"
    test = {r: s.label for r, s in src.items() if s.split == "test"}
    assert test == {f"test/{n}": ("fake" if v else "real") for n, v in quick.DFDC_QUICK_TEST.items()}
    assert {s.split for s in scan_dataset(trees["dfdc"], cfg(layout="dfdc", **OWN)).sources} == {""}


def test_dfdc_lists_unlisted_and_missing_videos(copy_of, caplog):
    tree = copy_of("dfdc")
    part = tree / "dfdc_train_part_1"
    shutil.copy(part / "cobjrlugvp.mp4", part / "zzzzzzzzzz.mp4")  # on disk, not in metadata.json
    (part / "crezycjqyk.mp4").unlink()  # in metadata.json, not on disk
    (tree / "test/edyncaijwx.mp4").unlink()
    with caplog.at_level(logging.WARNING, logger="deepfake.data.layouts"):
        inv = scan_dataset(tree, cfg(layout="dfdc"))
    assert skipped(inv) == {
        "dfdc_train_part_1/zzzzzzzzzz.mp4": ("not_in_index", "not listed in dfdc_train_part_1/metadata.json"),
        "dfdc_train_part_1/crezycjqyk.mp4": ("missing_file", "listed in dfdc_train_part_1/metadata.json"),
        "test/edyncaijwx.mp4": ("missing_file", "listed in test/labels.csv"),
    }
    assert "1 video(s) listed in" in caplog.text and "crezycjqyk.mp4" in caplog.text and "edyncaijwx.mp4" in caplog.text


def test_dfdc_refusals(copy_of):
    tree = copy_of("dfdc")
    meta = tree / "dfdc_train_part_1/metadata.json"
    good = meta.read_text()
    meta.write_text(good[:-5])
    with pytest.raises(DatasetLayoutError, match=r"dfdc_train_part_1/metadata.json is not valid JSON \("):
        scan_dataset(tree, cfg(layout="dfdc"))
    meta.write_text(good.replace('"REAL"', '"ORIGINAL"', 1))
    with pytest.raises(DatasetLayoutError, match="has label 'ORIGINAL'; DFDC's metadata.json labels are REAL or FAKE"):
        scan_dataset(tree, cfg(layout="dfdc"))
    meta.unlink()
    with pytest.raises(DatasetLayoutError, match="dfdc_train_part_1 has no metadata.json"):
        scan_dataset(tree, cfg(layout="dfdc"))
    meta.write_text(good)
    (tree / "test/labels.csv").write_text("file,is_fake\neazvfqjxxw.mp4,0\n")
    with pytest.raises(DatasetLayoutError, match=r"labels.csv lacks the column\(s\) \['filename', 'label'\]"):
        scan_dataset(tree, cfg(layout="dfdc"))
    with pytest.raises(DatasetLayoutError, match="not a DFDC folder: it has no dfdc_train_part_<n>/.*celebdf"):
        scan_dataset(copy_of("celebdf"), cfg(layout="dfdc"))


def test_dfdc_preview(trees):
    inv = scan_dataset(trees["dfdcp"], cfg(layout="dfdc"))
    src = by_rel(inv)
    assert {s.extra["dataset"] for s in inv.sources} == {"DFDC-preview"} and inv.skipped == []
    assert {r: s.split for r, s in src.items()} == quick.DFDCP_QUICK
    kinds = {r.split("/")[0]: s.extra["manipulation"] for r, s in src.items()}
    assert kinds == {"original_videos": "", "method_A": "method_A", "method_B": "method_B"}
    # the person's folder links the fakes of a target to its original
    assert src["method_A/1001/1001_1002_a.mp4"].group == src["original_videos/1001/1001_a.mp4"].group == "1001"
    assert len({s.group for s in inv.sources}) == 3


def test_dfdc_preview_refusals_and_missing(copy_of):
    tree = copy_of("dfdcp")
    index = json.loads((tree / "dataset.json").read_text())
    (tree / "dataset.json").write_text(
        json.dumps({**index, "method_B/1009/1009_1001_a.mp4": {"label": "fake", "set": "test"}})
    )
    inv = scan_dataset(tree, cfg(layout="dfdc"))
    assert skipped(inv) == {"method_B/1009/1009_1001_a.mp4": ("missing_file", "listed in dataset.json")}
    (tree / "dataset.json").write_text(
        json.dumps({**index, "method_A/1001/1001_1002_a.mp4": {"label": "real", "set": "train"}})
    )
    with pytest.raises(
        DatasetLayoutError, match="'method_A/1001/1001_1002_a.mp4' is labelled real, but method_A/ holds fake"
    ):
        scan_dataset(tree, cfg(layout="dfdc"))
    (tree / "dataset.json").write_text("{")
    with pytest.raises(DatasetLayoutError, match=r"dataset.json is not valid JSON"):
        scan_dataset(tree, cfg(layout="dfdc"))


# --------------------------------------------------------------------------------------------
# Recognition, the default dataset, and no video opened
# --------------------------------------------------------------------------------------------


def test_auto_recognises_each_tree_and_says_so(trees, caplog):
    expected = {"ffpp": "ffpp", "celebdf": "celebdf", "dfdc": "dfdc", "dfdcp": "dfdc"}
    for name, tree in trees.items():
        assert detect_layout(tree)[0] == expected[name]
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="deepfake.data.layouts"):
            inv = scan_dataset(tree, cfg(layout="auto", **(OWN if name == "ffpp" else {})))
        assert inv.layout == expected[name]
        assert f"read as {expected[name]} (data.layout: auto" in caplog.text


def test_auto_reads_the_default_dataset_as_ingest_does(tiny_dataset, tmp_path):
    """The embedded synthetic set (real/, fake/ and a manifest.csv) and a plain folders tree: auto
    gives the very records ingest.scan gives, so the default pipeline is unchanged."""
    mixed = quick.ensure_quick_mixed_dataset(tmp_path / "mixed", quick.quick_synth(n_identities=4))
    folders = tmp_path / "folders"
    shutil.copytree(tiny_dataset / "real", folders / "real")
    shutil.copytree(tiny_dataset / "fake", folders / "fake")
    for path, layout in ((tiny_dataset, "manifest"), (mixed, "manifest"), (folders, "folders")):
        for ingest in (IngestConfig(), IngestConfig(group_by="folder")):
            auto = scan_dataset(path, cfg(layout="auto"), ingest)
            assert auto == scan(path, ingest) and auto.layout == layout
    assert scan_dataset(folders, cfg(layout="folders")) == scan(folders)
    with pytest.raises(DatasetLayoutError, match="data.layout: manifest, but .* has no manifest.csv"):
        scan_dataset(folders, cfg(layout="manifest"))
    with pytest.raises(DatasetLayoutError, match="data.layout: folders, but .* holds a manifest.csv"):
        scan_dataset(tiny_dataset, cfg(layout="folders"))


def test_listing_opens_no_video(trees, monkeypatch):
    import av
    import cv2

    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        assert Path(str(file)).suffix.lower() not in VIDEO_EXTENSIONS, f"opened {file}"
        return real_open(file, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError(f"a video was opened: {args}")

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)  # pathlib's
    monkeypatch.setattr(cv2, "VideoCapture", refuse)
    monkeypatch.setattr(av, "open", refuse)
    monkeypatch.setattr(Path, "read_bytes", refuse)
    for name, tree in trees.items():
        inv = scan_dataset(tree, cfg(**(OWN | {"ffpp_dfd": True} if name == "ffpp" else {})))
        assert inv.sources


# --------------------------------------------------------------------------------------------
# Through the pipeline: preprocess, then the split stage
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ffpp_cache(trees, tmp_path_factory):
    out = tmp_path_factory.mktemp("ffpp_cache") / "faces"
    pre = PreprocessConfig(detect=False, size=48, frames_per_video=2, workers=1)
    return preprocess(trees["ffpp"], out, pre, progress=False, layout=LayoutConfig(layout="auto"))


def test_preprocess_keeps_labels_groups_splits_and_kinds(ffpp_cache, trees):
    m = ffpp_cache.manifest
    assert ffpp_cache.summary["layout"] == "ffpp" and ffpp_cache.summary["videos"] == 40 and len(m) == 80
    assert {"split", "manipulation", "dataset", "group", "video"} <= set(m.columns)
    inv = by_rel(scan_dataset(trees["ffpp"], cfg(layout="ffpp")))
    for row in m.itertuples():
        s = inv[row.source]
        assert (row.label, row.group, row.split, row.manipulation) == (
            s.label,
            s.group,
            s.split,
            s.extra["manipulation"],
        )
    # the fixture's fakes differ visibly from their target's original
    from deepfake.data.media import read_image

    real = read_image(ffpp_cache.out_dir / m[m["source"].str.endswith("youtube/c23/videos/071.mp4")]["path"].iloc[0])
    for method in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"):
        rows = m[m["source"] == f"manipulated_sequences/{method}/c23/videos/071_054.mp4"]
        fake = read_image(ffpp_cache.out_dir / rows["path"].iloc[0])
        assert np.abs(fake.astype(int) - real.astype(int)).mean() > 3, method


def test_split_stage_keeps_the_official_split(ffpp_cache, tmp_path):
    result = stages.run_split(ffpp_cache.out_dir, tmp_path / "splits", tmp_path / "reports", SplitConfig())
    frame = result.frame
    official = read_ffpp_split()
    ids = frame["source"].str.extract(r"/(\d{3})(?:_\d{3})?\.mp4$")[0]
    assert (frame["split"] == ids.map(official)).all()
    assert result.leakage["groups_across_splits"] == [] and result.leakage["identical_files_across_splits"] == []
    assert result.audit["near_duplicate_pairs_across_splits"] == 0
    counts = frame.groupby("split")["group"].nunique().to_dict()
    assert counts == {"train": 2, "val": 1, "test": 1}


def test_split_stage_with_the_shortcut_audit(ffpp_cache, trees, tmp_path):
    result = stages.run_split(
        ffpp_cache.out_dir, tmp_path / "splits", tmp_path / "reports", SplitConfig(), sources_dir=trees["ffpp"]
    )
    assert result.leakage["groups_across_splits"] == []
    assert set(result.frame["split"]) == {"train", "val", "test"}


def test_the_preprocess_stage_passes_the_data_section(trees, tmp_path):
    pre = PreprocessConfig(detect=False, size=32, frames_per_video=1, workers=1)
    result = stages.run_preprocess(
        trees["dfdcp"],
        tmp_path / "faces",
        tmp_path / "reports",
        pre,
        DataConfig(layout="dfdc", split="own"),
        progress=False,
    )
    assert result.summary["layout"] == "dfdc" and "split" not in result.manifest.columns
    assert set(result.manifest["manipulation"].fillna("")) == {"", "method_A", "method_B"}
