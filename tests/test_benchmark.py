import json

import numpy as np
import pandas as pd
import pytest

from deepfake.evaluation.benchmark import COLUMNS, collect, detector_name, markdown, wide_table, write_benchmark
from deepfake.metrics.video_level import video_metrics, video_table


def _details(auc, video_auc=None, kinds=(), video_kinds=(), ci=True):
    d = {
        "arch": "resnet18",
        "weights_used": "none (imagenet unavailable)",
        "roc_auc": auc,
        "average_precision": auc + 0.01,
        "eer": 1 - auc,
        "n": 100,
        "tn": 40,
        "fp": 10,
        "tp": 35,
        "fn": 15,
        "per_kind": {
            "column": "manipulation",
            "kinds": [{"kind": k, "n": 10, "n_real": 50, "roc_auc": a} for k, a in kinds],
        },
        "video_level": {"applicable": False, "note": "no videos"},
    }
    if ci:
        d["ci"] = {"roc_auc_low": auc - 0.05, "roc_auc_high": auc + 0.04}
    if video_auc is not None:
        d["video_level"] = {
            "applicable": True,
            "roc_auc_mean": video_auc,
            "average_precision_mean": video_auc,
            "eer_mean": 1 - video_auc,
            "n_videos": 20,
            "n_real_videos": 8,
            "n_fake_videos": 12,
            "ci": {"roc_auc_mean_low": video_auc - 0.1, "roc_auc_mean_high": min(1.0, video_auc + 0.05)},
            "per_kind": [{"kind": k, "n": 3, "n_real": 8, "roc_auc": a} for k, a in video_kinds],
        }
    return d


@pytest.fixture
def reports(tmp_path):
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "details.json").write_text(
        json.dumps(
            _details(0.9, 0.95, kinds=[("Deepfakes", 0.97), ("Face2Face", 0.8)], video_kinds=[("Deepfakes", 1.0)])
        )
    )
    cdf = tmp_path / "cross" / "CDF-v2"
    cdf.mkdir(parents=True)
    (cdf / "details.json").write_text(json.dumps(_details(0.64, 0.66)))
    images = tmp_path / "cross" / "photos"
    images.mkdir(parents=True)
    (images / "details.json").write_text(json.dumps(_details(0.55, None, ci=False)))
    return tmp_path


def test_collect_reads_every_test_set_with_intervals_and_counts(reports):
    long = collect(
        reports / "eval", {"CDF-v2": reports / "cross" / "CDF-v2", "photos": reports / "cross" / "photos"}, "FF++"
    )
    assert list(long.columns) == COLUMNS
    assert list(dict.fromkeys(long["test_set"])) == ["FF++ (test)", "CDF-v2", "photos"]
    ff = long[(long["test_set"] == "FF++ (test)") & (long["subset"] == "overall")].set_index("level")
    assert ff.loc["frame", "roc_auc"] == 0.9 and ff.loc["frame", "roc_auc_low"] == pytest.approx(0.85)
    assert ff.loc["frame", "n_real"] == 50 and ff.loc["frame", "n_fake"] == 50
    assert (
        ff.loc["video", "roc_auc"] == 0.95
        and ff.loc["video", "n"] == 20
        and ff.loc["video", "eer"] == pytest.approx(0.05)
    )
    kinds = long[(long["test_set"] == "FF++ (test)") & (long["subset"] != "overall")]
    assert set(zip(kinds["subset"], kinds["level"])) == {
        ("Deepfakes", "frame"),
        ("Face2Face", "frame"),
        ("Deepfakes", "video"),
    }
    photos = long[long["test_set"] == "photos"]
    assert list(photos["level"]) == ["frame"] and photos["roc_auc_low"].isna().all()  # no videos, no bootstrap
    assert set(long["detector"]) == {"resnet18 (random init)"}


def test_wide_table_is_the_papers_layout(reports):
    long = collect(reports / "eval", {"CDF-v2": reports / "cross" / "CDF-v2"}, "FF++")
    wide = wide_table(long)
    assert list(wide.index) == ["resnet18 (random init)"]
    assert list(wide.columns) == [
        "FF++ (test) frame AUC",
        "FF++ (test) video AUC",
        "FF++ (test) Deepfakes frame AUC",
        "FF++ (test) Deepfakes video AUC",
        "FF++ (test) Face2Face frame AUC",
        "CDF-v2 frame AUC",
        "CDF-v2 video AUC",
    ]
    assert wide.iloc[0, 0] == "0.900 (0.850–0.940)"
    assert wide.loc["resnet18 (random init)", "FF++ (test) Face2Face frame AUC"] == "0.800"
    text = markdown(wide)
    assert text.splitlines()[0].startswith("| detector | FF++ (test) frame AUC |") and "0.640 (0.590–0.680)" in text


def test_write_benchmark_writes_the_three_outputs(reports, tmp_path):
    long = collect(reports / "eval", {"CDF-v2": reports / "cross" / "CDF-v2"}, "FF++")
    written = write_benchmark(long, tmp_path / "out")
    assert pd.read_csv(written["table"]).shape == long.shape
    assert written["markdown"].read_text().count("\n") == 3
    assert written["figure"].is_file() and written["figure"].with_suffix(".svg").is_file()


def test_a_missing_stage_output_says_which_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="details.json does not exist: run the stage"):
        collect(tmp_path, {}, "x")


def test_detector_name_says_where_the_weights_came_from():
    assert detector_name({"arch": "resnet18", "weights_used": "imagenet"}) == "resnet18 (imagenet)"
    assert (
        detector_name({"arch": "dilated_cnn", "weights_used": "none (imagenet unavailable)"})
        == "dilated_cnn (random init)"
    )


def _frames():
    """Three groups: a real video and two fakes made from it (one per kind), and a lone real."""
    rows = []
    spec = [
        ("g1/real.mp4", 0, "g1", "", 0.2),
        ("g1/fake_a.mp4", 1, "g1", "swap", 0.9),
        ("g1/fake_b.mp4", 1, "g1", "reenact", 0.25),
        ("g2/real.mp4", 0, "g2", "", 0.3),
        ("g3/fake_a.mp4", 1, "g3", "swap", 0.8),
        ("g4/real.mp4", 0, "g4", "", 0.1),
    ]
    for video, target, group, kind, score in spec:
        for f in range(3):
            rows.append(
                {"video": video, "target": target, "group": group, "manipulation": kind, "score": score + 0.01 * f}
            )
    return pd.DataFrame(rows)


def test_video_level_metrics_carry_intervals_eer_and_kinds():
    videos = video_table(_frames(), "video", "manipulation")
    assert list(videos.columns[:5]) == ["video", "label", "target", "group", "kind"]
    assert len(videos) == 6 and videos["n_frames"].eq(3).all()
    m = video_metrics(videos, 0.5, "video", "test", n_boot=200, level=0.9, seed=0)
    assert m["n_videos"] == 6 and m["n_real_videos"] == 3 and m["n_fake_videos"] == 3
    # fakes 0.91, 0.81, 0.26 against reals 0.21, 0.31, 0.11: 8 of 9 pairs ranked right
    assert m["roc_auc_mean"] == pytest.approx(8 / 9)
    assert m["eer_mean"] is not None and 0 < m["eer_mean"] < 0.5
    assert m["ci"]["n_groups"] == 4 and m["ci"]["roc_auc_mean_low"] <= m["roc_auc_mean"] <= m["ci"]["roc_auc_mean_high"]
    kinds = {k["kind"]: k for k in m["per_kind"]}
    assert kinds["swap"]["roc_auc"] == 1.0 and kinds["swap"]["n"] == 2
    assert kinds["reenact"]["roc_auc"] == pytest.approx(2 / 3) and kinds["reenact"]["n_real"] == 3


def test_video_level_without_bootstrap_or_kinds():
    frames = _frames().drop(columns="manipulation")
    m = video_metrics(video_table(frames, "video"), 0.5, "video", "test")
    assert "ci" not in m and "per_kind" not in m
    assert np.isclose(m["roc_auc_mean"], 8 / 9)
