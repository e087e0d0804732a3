"""The DVC pipeline: each stage is one papermill call that passes paths, and reads params.yaml itself."""

import ast
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from deepfake.__main__ import main
from deepfake.core import config, paths
from deepfake.data.split import SplitConfig
from deepfake.pipeline import sandbox, stages
from deepfake.pipeline.quick import write_params

RAW = config.read_yaml(paths.PARAMS_FILE)
DVC = yaml.safe_load((paths.ROOT / "dvc.yaml").read_text())
SMALL = {"synth": {"image_size": 32}, "preprocess": {"size": 32}, "train": {"image_size": 32}}


def _dvc() -> str:
    return shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")


def _notebook_parameters(path):
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path} needs exactly one cell tagged 'parameters'"
    tree = ast.parse(cells[0].source)
    return {node.target.id for node in tree.body if isinstance(node, ast.AnnAssign)}


def _stage(name):
    """A stage's definition; for a ``foreach`` stage, its ``do`` template."""
    stage = DVC["stages"][name]
    return stage.get("do", stage)


def _words(cmd):
    words = shlex.split(cmd)
    while "=" in words[0] and words[0].split("=")[0].isupper():  # leading environment assignments
        words = words[1:]
    return words


#: Stages that run a command of their own rather than a notebook.
COMMAND_STAGES = ("check_params", "inventory", "inventory_cross")
NOTEBOOK_STAGES = sorted(s for s in DVC["stages"] if s not in COMMAND_STAGES)


CHECK_RECORD = "reports/params_checked.txt"


def test_a_stage_checks_every_section_first():
    stage = DVC["stages"]["check_params"]
    assert stage["cmd"] == f"bin/python -m deepfake check-params --record {CHECK_RECORD}"
    assert set(stage["params"]) == set(RAW)
    assert stage["outs"] == [{CHECK_RECORD: {"cache": False}}]


@pytest.mark.parametrize("stage", NOTEBOOK_STAGES)
def test_every_stage_waits_for_the_params_check(stage):
    """DVC deletes a stage's outputs just before its command runs: the check must come first."""
    assert CHECK_RECORD in _stage(stage)["deps"]


def test_the_check_record_holds_no_value(tmp_path):
    """A valid change rewrites the same bytes, so the stages that do not read it stay up to date."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = write_params(tmp_path / "a" / "params.yaml", {})
    b = write_params(tmp_path / "b" / "params.yaml", {"train": {"epochs": 2}, "synth": {"seed": 9}})
    for params in (a, b):
        assert main(["check-params", "--params", str(params), "--record", str(params.parent / "ok.txt")]) == 0
    assert (tmp_path / "a" / "ok.txt").read_bytes() == (tmp_path / "b" / "ok.txt").read_bytes()
    assert str(tmp_path) not in (tmp_path / "a" / "ok.txt").read_text()  # the same in every clone


def test_a_failed_check_writes_no_record(tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml", {"train": {"epochs": "ten"}})
    assert main(["check-params", "--params", str(params), "--record", str(tmp_path / "ok.txt")]) == 2
    assert "train.epochs = 'ten'" in capsys.readouterr().err
    assert not (tmp_path / "ok.txt").exists()


@pytest.mark.parametrize("stage", NOTEBOOK_STAGES)
def test_each_stage_passes_paths_not_settings(stage):
    words = _words(_stage(stage)["cmd"])
    assert words[:4] == [
        "bin/python",
        "-m",
        "deepfake",
        "stage",
    ]  # papermill's arguments (pipeline.runner)
    words = words[3:]
    notebook = paths.ROOT / words[1]
    assert notebook.exists() and words[1] in _stage(stage)["deps"]
    assert words[2].startswith("reports/notebooks/") and words[2].endswith(".ipynb")
    passed = {words[i + 1]: words[i + 2] for i, w in enumerate(words) if w == "-p"}
    assert "-y" not in words, "settings come from params.yaml, not the command line"
    assert passed["params_file"] == "params.yaml" and passed["quick"] == "False"
    assert set(passed) <= _notebook_parameters(notebook)
    assert set(passed) <= {"params_file", "quick", "name"}, f"{stage} passes settings one by one: {sorted(passed)}"


def test_bin_python_in_an_experiments_copy_runs_the_queuing_workspaces_environment_on_the_copy(tmp_path):
    """DVC runs a queued experiment's commands in a copy of the repository (no .venv: git-ignored) with
    ``DVC_ROOT`` naming the workspace that queued it: bin/python takes that workspace's .venv, and the
    package's root is the copy whatever ``DEEPFAKE_ROOT`` the caller had."""
    copy, workspace = tmp_path / "copy", tmp_path / "workspace"
    shutil.copytree(paths.ROOT / "bin", copy / "bin")
    fake = workspace / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho "$0 $DEEPFAKE_ROOT $*"\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPFAKE_PYTHON", "VIRTUAL_ENV")}
    env.update(DVC_ROOT=str(workspace), DEEPFAKE_ROOT=str(tmp_path / "elsewhere"))
    out = subprocess.run(
        ["bin/python", "-m", "deepfake"], cwd=copy, env=env, capture_output=True, text=True, timeout=30
    )
    assert out.stdout.split() == [str(fake), str(copy.resolve()), "-m", "deepfake"]


def test_no_stage_depends_on_a_dataset_folder():
    """DVC would hash every byte of a dataset folder before any stage runs, and hang on a FIFO in it: the
    stages depend on the dataset's inventory, which an always-changed stage rewrites only when it changes."""
    folders = {"${data.raw_dir}", "${item}"}
    for name in DVC["stages"]:
        assert not folders & set(_stage(name).get("deps", [])), f"{name} depends on a dataset folder"
    for name, out in (
        ("inventory", "reports/inventory/inventory.csv"),
        ("inventory_cross", "reports/inventory/cross_${key}.csv"),
    ):
        stage = _stage(name)
        assert stage["always_changed"] is True
        assert stage["outs"] == [{out: {"cache": False, "persist": True}}]  # persist: DVC does not delete it first
        assert _words(stage["cmd"])[:4] == ["bin/python", "-m", "deepfake", "inventory"]
    assert "reports/inventory/inventory.csv" in _stage("preprocess")["deps"]
    assert "reports/inventory/inventory.csv" in _stage("split")["deps"]
    assert "reports/inventory/cross_${key}.csv" in _stage("cross")["deps"]


def test_every_interpolation_in_a_command_is_quoted():
    """A dataset path with a space cannot break a stage: no ${...} reaches the shell unquoted."""
    for name in DVC["stages"]:
        cmd = _stage(name)["cmd"]
        quoted, unquoted = False, []
        for i, ch in enumerate(cmd):
            if ch == '"':
                quoted = not quoted
            elif cmd.startswith("${", i) and not quoted:
                unquoted.append(cmd[i : cmd.index("}", i) + 1])
        assert not unquoted, f"{name}: {unquoted}"


def test_stage_params_and_deps_exist():
    for name in DVC["stages"]:
        for ref in _stage(name).get("params", []):
            node = RAW
            for part in ref.split("."):
                assert part in node, f"{name} depends on params.yaml's {ref}, which does not exist"
                node = node[part]
        for dep in _stage(name)["deps"]:
            if dep.startswith("deepfake/") or dep.startswith("notebooks/"):
                assert (paths.ROOT / dep).exists(), f"{name} depends on {dep}, which does not exist"


def test_run_split_writes_manifests_and_reports(tiny_dataset, tmp_path):
    result = stages.run_split(
        tiny_dataset, tmp_path / "splits", tmp_path / "reports", SplitConfig(val_frac=0.25, test_frac=0.25)
    )
    assert {p.name for p in (tmp_path / "splits").iterdir()} == {"train.csv", "val.csv", "test.csv"}
    leak = json.loads((tmp_path / "reports" / "leakage.json").read_text())
    assert {k: leak[k] for k in ("groups_across_splits", "identical_files_across_splits", "n_groups", "n_images")} == {
        "groups_across_splits": 0,
        "identical_files_across_splits": 0,
        "n_groups": 12,
        "n_images": 48,
    }
    assert (
        leak["exact_duplicate_pairs_across_splits"]
        == leak["near_duplicate_pairs_across_splits"]
        == leak["removed_duplicates"]
        == 0
    )
    assert (tmp_path / "reports" / "duplicates.csv").read_text().startswith("kind,distance,cross_split,")
    assert result.balance["total"].sum() == 48


def test_split_audits_the_originals_and_warns_about_a_small_validation_split(tiny_dataset, tmp_path):
    from deepfake.data.preprocess import PreprocessConfig

    faces = tmp_path / "faces"
    stages.run_preprocess(tiny_dataset, faces, tmp_path / "pre", PreprocessConfig(detect=False, size=32, workers=1))
    cfg = SplitConfig(val_frac=0.25, test_frac=0.25)  # the defaults' minimum: 100 images, 10 groups
    result = stages.run_split(faces, tmp_path / "splits", tmp_path / "reports", cfg, sources_dir=tiny_dataset)
    leak = json.loads((tmp_path / "reports" / "leakage.json").read_text())
    table = pd.read_csv(tmp_path / "reports" / "shortcuts.csv")
    assert list(table["property"]) == ["jpeg_quality", "file_bytes", "pixels", "format", "progressive", "subsampling"]
    assert leak["shortcuts"]["files"] == 48 and leak["shortcuts"]["auc"]["format"] == 0.5  # every file a JPEG
    assert leak["shortcuts"]["auc"]["jpeg_quality"] < 0.8  # the same quality range for both classes
    assert len(leak["warnings"]) == 1 and "validation split holds" in leak["warnings"][0]
    assert result.warnings == leak["warnings"]
    quiet = stages.run_split(
        faces,
        tmp_path / "s2",
        tmp_path / "r2",
        SplitConfig(val_frac=0.25, test_frac=0.25, min_val_images=5, min_val_groups=2),
    )
    assert quiet.warnings == [] and quiet.shortcuts is None  # no originals given: no shortcut audit


def test_quick_chain_builds_every_upstream_input(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "QUICK_DIR", tmp_path / "quick")
    stage = stages.open_stage("plots", quick=True, overrides=SMALL)
    w = stage.where
    assert w.reports == tmp_path / "quick" / "reports" and stage.params.train.epochs == 1
    for f in (
        w.raw / "manifest.csv",
        w.faces / "manifest.csv",
        w.faces / "preprocessing.json",
        w.splits / "test.csv",
        w.checkpoint,
        w.train_reports / "plots" / "metrics" / "val" / "auc.tsv",
        w.eval_reports / "predictions.csv",
        w.calibration,
    ):
        assert f.exists(), f
    figures = stages.run_plots(w.train_reports, w.eval_reports, w.figures, w.faces)
    assert all(p.stat().st_size > 1000 for p in figures.values())


def test_a_dataset_path_with_a_space_runs_through_the_stages(tmp_path, tiny_dataset, monkeypatch):
    data = tmp_path / "my data" / "raw set"
    shutil.copytree(tiny_dataset, data)
    params = write_params(
        tmp_path / "params.yaml",
        {
            "data": {"raw_dir": str(data), "faces_dir": str(tmp_path / "my cache" / "faces")},
            "preprocess": {"size": 32, "workers": 1},
            "split": {"val_frac": 0.25, "test_frac": 0.25},
        },
    )
    stage = stages.open_stage("split", params)
    w = stage.where
    pre = stages.run_preprocess(
        w.raw, w.faces, tmp_path / "reports" / "preprocess", stage.params.preprocess, progress=False
    )
    assert len(pre.manifest) == 48 and " " in str(w.faces)
    split = stages.run_split(
        w.faces, tmp_path / "reports" / "split", tmp_path / "reports" / "split", stage.params.split
    )
    assert len(split.frame) == 48


def test_a_stage_stops_within_seconds_naming_a_faulty_key(tmp_path):
    """What `dvc repro` runs: the stage's notebook, which validates params.yaml before any work."""
    params = write_params(tmp_path / "params.yaml", {"train": {"learning_rate": 0.001}})
    out = tmp_path / "out.ipynb"
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "deepfake", "stage", str(paths.NOTEBOOKS_DIR / "01_split.ipynb"), str(out)]
        + ["-p", "params_file", str(params), "-p", "quick", "False"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    seconds = time.perf_counter() - t0
    assert run.returncode != 0
    assert run.returncode == 1 and "error: stage split failed: ConfigError" in run.stderr
    assert "train.learning_rate (did you mean train.lr?)" in run.stderr + run.stdout
    assert seconds < 60


def test_dvc_reads_the_pipeline():
    out = subprocess.run([_dvc(), "dag", "--md"], cwd=paths.ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for stage in DVC["stages"]:
        if "foreach" not in DVC["stages"][stage]:  # a foreach over an empty mapping has no stage
            assert stage in out.stdout


def test_cross_dataset_stage_appears_once_a_dataset_is_named(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([_dvc(), "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(paths.ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    write_params(tmp_path / "params.yaml", {"cross_dataset": {"other": str(tmp_path / "other set")}})
    out = subprocess.run([_dvc(), "stage", "list"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cross@other" in out.stdout and "inventory_cross@other" in out.stdout


def test_make_install_takes_a_cpu_wheel_index():
    """``make install TORCH_INDEX=...`` installs torch and torchvision from that index before the
    package (whose torch requirement is then met); without it, nothing asks another index."""

    def recipe(*args: str) -> list[str]:
        out = subprocess.run(
            ["make", "-n", "-W", "pyproject.toml", "install", *args],
            cwd=paths.ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [line for line in out.splitlines() if "pip install" in line]

    index = "https://example.invalid/whl/cpu"
    lines = recipe(f"TORCH_INDEX={index}")
    pinned = "$(grep -E '^(torch|torchvision)==' constraints.txt)"
    torch_line = next(i for i, line in enumerate(lines) if f"--index-url {index} {pinned}" in line)
    package_line = next(i for i, line in enumerate(lines) if '-c constraints.txt -e ".[dev]"' in line)
    assert torch_line < package_line
    assert not any("--index-url" in line for line in recipe())
    picked = subprocess.run(
        ["bash", "-c", pinned.removeprefix("$(").removesuffix(")")], cwd=paths.ROOT, capture_output=True, text=True
    )
    assert sorted(line.split("==")[0] for line in picked.stdout.split()) == ["torch", "torchvision"]


def test_make_in_a_copy_keeps_the_shared_environment(tmp_path):
    """The tests' copies and clones run ``make ... VENV=<this checkout's .venv>``: none of the install
    recipe's inputs may look newer than that environment, or make would reinstall it and point the
    editable package at the copy (removed after the test)."""
    venv = paths.ROOT / ".venv"
    if not (venv / ".deepfake-installed").is_file():
        pytest.skip(f"{venv} was not installed by make install")
    root = sandbox.copy_repository(tmp_path / "copy")
    out = subprocess.run(["make", "-n", "install", f"VENV={venv}"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "pip install" not in out.stdout, out.stdout


def _constraints() -> dict[str, str]:
    """constraints.txt as {canonical name: version}; every line a comment or ``name==version``, once."""
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for number, line in enumerate((paths.ROOT / "constraints.txt").read_text().splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and name and version and " " not in line, f"constraints.txt:{number}: not name==version: {line!r}"
        key = canonicalize_name(name)
        assert key not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[key] = version
    return pins


def test_constraints_pin_every_requirement_within_its_range():
    """``make install`` takes constraints.txt: each requirement of the package, its dev and s3 extras
    is pinned there at a version its range in pyproject.toml allows (a requirement added without
    ``make lock`` or a range moved past the pin fails here, not in a fresh clone's install)."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = _constraints()
    checked = 0
    for spec in project["dependencies"] + extras["dev"] + extras["s3"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name == "deepfake":
            continue
        assert name in pins, f"{req.name} ({spec}) is not in constraints.txt: run make lock"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's {spec}: run make lock"
        )
        checked += 1
    assert checked >= 20  # the lists were read
    assert "pip" not in pins and "deepfake" not in pins


# The real `dvc repro` on a tiny project: a faulty setting never costs an output


def _tiny_dvc_project(root: Path, raw: Path) -> dict[str, str]:
    """A git + DVC repository at ``root`` with this checkout's pipeline, package and notebooks and the
    dataset ``raw``; returns the environment its stages run in (this interpreter, this package copy)."""
    root.mkdir()
    for name in ("dvc.yaml", "bin"):
        (shutil.copytree if (paths.ROOT / name).is_dir() else shutil.copy)(paths.ROOT / name, root / name)
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    shutil.copytree(paths.ROOT / "deepfake", root / "deepfake", ignore=ignore)
    shutil.copytree(paths.NOTEBOOKS_DIR, root / "notebooks", ignore=ignore)
    shutil.copytree(raw, root / "data" / "raw")
    write_params(root / "params.yaml", {**sandbox.TINY_PROJECT, "cross_dataset": {"other": "data/raw"}})
    env = {
        **os.environ,
        "DEEPFAKE_ROOT": str(root),
        "DEEPFAKE_PYTHON": sys.executable,
        "PYTHONPATH": str(root),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    for cmd in (["git", "init", "-q"], [_dvc(), "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True, timeout=120)  # DVCLive needs a commit
    return env


def _dvc_run(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_dvc(), *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)


def _outputs(root: Path) -> dict[str, str]:
    """SHA-256 of every file under models/ and reports/ but the check's own record."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in ("models", "reports")
        for p in sorted((root / folder).rglob("*"))
        if p.is_file() and p.name != Path(CHECK_RECORD).name
    }


def _set(root: Path, section: str, key: str, value) -> None:
    values = yaml.safe_load((root / "params.yaml").read_text())
    values[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))


@pytest.mark.slow
def test_a_faulty_setting_stops_dvc_repro_of_one_stage_before_any_output_is_deleted(tiny_dataset, tmp_path):
    root = tmp_path / "project"
    env = _tiny_dvc_project(root, tiny_dataset)
    first = _dvc_run(root, env, "repro", "cross@other")  # every stage but plots
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = _outputs(root)
    made = {"models/best.pt", "models/last.pt", "reports/train/metrics.json", "reports/eval/metrics.json"}
    assert made | {"reports/cross/other/metrics.json"} <= set(before)
    lock = (root / "dvc.lock").read_bytes()
    good = (root / "params.yaml").read_text()

    faults = [
        ("train", "train", "epochs", "ten", "train.epochs = 'ten'"),
        ("evaluate", "evaluate", "bootstrap", -1, "evaluate.bootstrap = -1"),
        ("cross@other", "preprocess", "margin", "wide", "preprocess.margin = 'wide'"),
    ]
    for target, section, key, value, message in faults:
        _set(root, section, key, value)
        run = _dvc_run(root, env, "repro", target)
        assert run.returncode != 0, f"dvc repro {target} ran with {section}.{key}: {value!r}"
        assert _outputs(root) == before, f"dvc repro {target} with a faulty {section}.{key} changed or deleted outputs"
        assert message in run.stderr, run.stderr[-3000:]
        assert "failed to reproduce 'check_params'" in run.stderr  # stopped by the check, before the stage
        assert "Traceback" not in run.stdout + run.stderr
        assert (root / "dvc.lock").read_bytes() == lock
        (root / "params.yaml").write_text(good)

    # a valid change of a setting no stage reads: the check runs again, and nothing else
    _set(root, "synth", "seed", 11)
    run = _dvc_run(root, env, "repro", "cross@other")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Running stage 'check_params'" in run.stdout
    for stage in ("preprocess", "split", "train", "evaluate", "cross@other"):
        assert f"Stage '{stage}' didn't change, skipping" in run.stdout, run.stdout
    assert _outputs(root) == before
    status = _dvc_run(root, env, "status", "--with-deps", "cross@other")
    # clean but for the inventories, which run on every dvc repro by design (always changed)
    listed = [line.rstrip(":") for line in status.stdout.splitlines() if line.strip() and not line[0].isspace()]
    assert status.returncode == 0 and set(listed) == {"inventory", "inventory_cross@other"}, status.stdout
    assert status.stdout.count("always changed") == 2, status.stdout
