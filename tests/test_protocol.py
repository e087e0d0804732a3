"""The field's protocol end to end on miniatures of the benchmark downloads: train on FaceForensics++
(official split, kinds of fake = methods), test within it per method and across Celeb-DF v2, DFDC
and DFDC preview (their official test sets), and the benchmark table of one training set and
three test sets. Nothing is written by hand: each tree is read as its download lays it out."""

import json

import pandas as pd
import pytest

from deepfake.core.config import DataConfig
from deepfake.data.layouts import read_ffpp_split
from deepfake.data.preprocess import PreprocessConfig
from deepfake.data.split import SplitConfig
from deepfake.evaluation.evaluate import EvalConfig
from deepfake.pipeline import quick, stages
from deepfake.training.train import TrainConfig

pytestmark = pytest.mark.slow

SMALL = {"frames": 4, "size": 64}
METHODS = {"Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"}
FAST_EVAL = {
    "bootstrap": 100,
    "latency_images": 0,
    "robust_jpeg": "",
    "robust_blur": "",
    "robust_downscale": "",
    "robust_resize": "",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("protocol")
    trees = {
        "ffpp": quick.make_ffpp_tree(base / "ffpp", **SMALL),
        "CDF-v2": quick.make_celebdf_tree(base / "celebdf", **SMALL),
        "DFDC": quick.make_dfdc_tree(base / "dfdc", **SMALL),
        "DFDCP": quick.make_dfdcp_tree(base / "dfdcp", **SMALL),
    }
    rep, faces = base / "reports", base / "faces"
    pre = PreprocessConfig(detect=False, size=48, frames_per_video=2, workers=1)
    data = DataConfig(layout="auto")
    prep = stages.run_preprocess(trees["ffpp"], faces, rep / "preprocess", pre, data, progress=False)
    split = stages.run_split(faces, rep / "split", rep / "split", SplitConfig(), sources_dir=trees["ffpp"])
    train = TrainConfig(weights="none", epochs=1, batch_size=16, image_size=48, patience=0, min_epochs=1)
    stages.run_train(train, faces, rep / "split", base / "models", rep / "train")
    ev = EvalConfig(**FAST_EVAL)
    stages.run_evaluate(ev, base / "models" / "best.pt", faces, rep / "split", rep / "eval")
    for name in ("CDF-v2", "DFDC", "DFDCP"):
        stages.run_cross_evaluate(
            ev,
            base / "models" / "best.pt",
            rep / "eval" / "calibration.json",
            trees[name],
            base / "cross_faces" / name,
            rep / "cross" / name,
            pre,
            figures=False,
            progress=False,
        )
    cross = {name: rep / "cross" / name for name in ("CDF-v2", "DFDC", "DFDCP")}
    table = stages.run_benchmark(rep / "eval", cross, rep / "benchmark", stages.training_set_name(faces, trees["ffpp"]))
    return {"trees": trees, "reports": rep, "prep": prep, "split": split, "table": table}


def test_ffpp_gets_the_official_split_and_groups_that_keep_pairs_together(run):
    frame = run["split"].frame
    assert run["prep"].summary["layout"] == "ffpp"
    official = read_ffpp_split()  # video id -> split
    for row in frame.itertuples():
        ids = row.video.split("/")[-1].removesuffix(".mp4").split("_")
        assert {official[i] for i in ids} == {row.split}, row.video  # a fake goes where both its sources go
    assert run["split"].leakage["groups_across_splits"] == []
    assert run["split"].audit["near_duplicate_pairs_across_splits"] == 0
    assert frame.groupby("group")["split"].nunique().max() == 1


def test_results_per_method_within_ffpp(run):
    details = json.loads((run["reports"] / "eval" / "details.json").read_text())
    assert details["per_kind"]["column"] == "manipulation"
    assert {k["kind"] for k in details["per_kind"]["kinds"]} == METHODS
    video = details["video_level"]
    assert video["applicable"] and video["n_videos"] == 10  # the test pair: 2 originals, 4 methods x 2 fakes
    assert {k["kind"] for k in video["per_kind"]} == METHODS and video["eer_mean"] is not None


def test_cross_datasets_score_their_official_test_sets(run):
    rep = run["reports"] / "cross"
    cdf = json.loads((rep / "CDF-v2" / "details.json").read_text())
    listed = (run["trees"]["CDF-v2"] / "List_of_testing_videos.txt").read_text().split("\n")
    assert cdf["video_level"]["n_videos"] == len([line for line in listed if line.strip()])
    assert cdf["split"].startswith("its official test split")
    dfdc = json.loads((rep / "DFDC" / "details.json").read_text())
    assert dfdc["video_level"]["n_videos"] == len(quick.DFDC_QUICK_TEST)
    dfdcp = json.loads((rep / "DFDCP" / "details.json").read_text())
    n_test = sum(1 for subset in quick.DFDCP_QUICK.values() if subset == "test")
    assert dfdcp["video_level"]["n_videos"] == n_test
    preds = pd.read_csv(rep / "DFDCP" / "predictions.csv", keep_default_na=False)
    assert set(preds["manipulation"]) <= {"", "method_A", "method_B"}


def test_the_benchmark_table_holds_one_training_set_and_three_test_sets(run):
    table = run["table"]
    assert list(dict.fromkeys(table["test_set"])) == ["FF++ (test)", "CDF-v2", "DFDC", "DFDCP"]
    overall = table[table["subset"] == "overall"]
    assert overall.groupby("test_set")["level"].apply(set).eq({"frame", "video"}).all()
    ff_kinds = set(table.loc[(table["test_set"] == "FF++ (test)") & (table["subset"] != "overall"), "subset"])
    assert ff_kinds == METHODS
    assert overall["roc_auc"].between(0, 1).all() and overall["n"].gt(0).all()
    md = (run["reports"] / "benchmark" / "table.md").read_text()
    assert md.count("\n") == 3 and "CDF-v2 video AUC" in md and "FF++ (test) Deepfakes frame AUC" in md
