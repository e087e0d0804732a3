import ast
import json
import re
import shlex

import nbformat
import pytest
import yaml

from deepfake import paths, pipeline
from deepfake.evaluate import EvalConfig
from deepfake.preprocess import PreprocessConfig
from deepfake.split import SplitConfig
from deepfake.synth import SynthConfig
from deepfake.train import TrainConfig

PARAMS = pipeline.load_params()
DVC = yaml.safe_load((paths.ROOT / "dvc.yaml").read_text())


def test_make_config_rejects_unknown_keys():
    with pytest.raises(TypeError, match="unknown SplitConfig key"):
        pipeline.make_config(SplitConfig, {"val_frac": 0.1, "tset_frac": 0.1})
    assert pipeline.make_config(SplitConfig, {"val_frac": 0.1}, seed=4) == SplitConfig(val_frac=0.1, seed=4)


def test_params_yaml_sections_are_valid_configs():
    base = PARAMS["base"]
    pipeline.make_config(SynthConfig, {**PARAMS["synth"], "jpeg_quality": tuple(PARAMS["synth"]["jpeg_quality"])})
    pipeline.make_config(SplitConfig, PARAMS["split"], seed=base["seed"])
    pipeline.make_config(TrainConfig, PARAMS["train"], seed=base["seed"], device=base["device"])
    pipeline.make_config(EvalConfig, PARAMS["evaluate"], device=base["device"])
    pipeline.make_config(PreprocessConfig, PARAMS["preprocess"])


def _notebook_parameters(path):
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path} needs exactly one cell tagged 'parameters'"
    tree = ast.parse(cells[0].source)
    return {node.target.id for node in tree.body if isinstance(node, ast.AnnAssign)}


def _cmd_parameters(cmd):
    words = shlex.split(cmd)
    while re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # leading environment assignments
        words = words[1:]
    names = [words[i + 1] for i, w in enumerate(words) if w == "-p"]
    names += [words[i + 1].split(":")[0] for i, w in enumerate(words) if w == "-y"]
    return words, names


def _stage(name):
    """A stage's definition; for a ``foreach`` stage, its ``do`` template."""
    stage = DVC["stages"][name]
    return stage.get("do", stage)


@pytest.mark.parametrize("stage", sorted(DVC["stages"]))
def test_each_stage_passes_exactly_its_notebooks_parameters(stage):
    words, names = _cmd_parameters(_stage(stage)["cmd"])
    assert words[0] == "papermill"
    notebook = paths.ROOT / words[1]
    assert notebook.exists() and words[1] in _stage(stage)["deps"]
    assert len(names) == len(set(names)), "a parameter is passed twice"
    assert set(names) == _notebook_parameters(notebook)
    assert "quick" in names and words[words.index("quick") + 1] == "False"


def test_stage_param_references_exist():
    for name in DVC["stages"]:
        for ref in re.findall(r"\$\{([\w.]+)\}", _stage(name)["cmd"]):
            if ref.split(".")[0] in ("item", "key"):  # foreach variables
                continue
            node = PARAMS
            for part in ref.split("."):
                assert part in node, f"params.yaml lacks {ref}"
                node = node[part]


def test_run_split_writes_manifests_and_reports(tiny_dataset, tmp_path):
    result = pipeline.run_split(tiny_dataset, tmp_path / "splits", tmp_path / "reports", SplitConfig(val_frac=0.25, test_frac=0.25))
    assert {p.name for p in (tmp_path / "splits").iterdir()} == {"train.csv", "val.csv", "test.csv"}
    leak = json.loads((tmp_path / "reports" / "leakage.json").read_text())
    assert {k: leak[k] for k in ("groups_across_splits", "identical_files_across_splits", "n_groups", "n_images")} == \
        {"groups_across_splits": 0, "identical_files_across_splits": 0, "n_groups": 12, "n_images": 48}
    assert leak["exact_duplicate_pairs_across_splits"] == leak["near_duplicate_pairs_across_splits"] == leak["removed_duplicates"] == 0
    assert (tmp_path / "reports" / "duplicates.csv").read_text().startswith("kind,distance,cross_split,")
    assert result.balance["total"].sum() == 48


def test_quick_chain_builds_every_upstream_input(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "QUICK_SYNTH", SynthConfig(n_identities=32, images_per_identity=1, image_size=32, workers=1))
    monkeypatch.setitem(pipeline.QUICK_TRAIN, "image_size", 32)
    q = tmp_path / "quick"
    pipeline.ensure_quick_reports(q / "raw", q / "splits", q / "model", q / "train", q / "eval")
    for f in ("raw/manifest.csv", "splits/test.csv", "model/best.pt", "train/history.csv", "eval/predictions.csv", "eval/metrics.json",
              "eval/calibration.json"):
        assert (q / f).exists(), f
    figures = pipeline.run_plots(q / "train", q / "eval", q / "figures", q / "raw")
    assert all(p.stat().st_size > 1000 for p in figures.values())


def test_dvc_reads_the_pipeline():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    out = subprocess.run([dvc, "dag", "--md"], cwd=paths.ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for stage in DVC["stages"]:
        if "foreach" not in DVC["stages"][stage]:  # a foreach over an empty mapping has no stage
            assert stage in out.stdout


def test_cross_dataset_stage_appears_once_a_dataset_is_named(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(paths.ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = {**PARAMS, "cross_dataset": {"other": str(tmp_path / "other")}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = subprocess.run([dvc, "stage", "list"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cross@other" in out.stdout
