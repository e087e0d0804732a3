"""Project paths, and a dataset found from a DVC experiment's temporary copy of the repository."""

from pathlib import Path

import pytest

from deepfake.core import paths


@pytest.fixture()
def queued(tmp_path, monkeypatch):
    """This checkout as if a DVC experiment ran in its copy: ``DVC_ROOT`` names another workspace, which
    holds the dataset at data/raw."""
    origin = tmp_path / "workspace"
    (origin / "data" / "raw").mkdir(parents=True)
    monkeypatch.setenv("DVC_ROOT", str(origin))
    return origin


def test_outside_an_experiment_a_dataset_path_is_taken_from_the_root(monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert paths.experiment_origin() is None
    assert paths.resolve_data("no/such/dataset") == paths.ROOT / "no/such/dataset"


def test_dvc_root_naming_this_workspace_is_no_experiment(monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(paths.ROOT))  # what DVC sets in a plain dvc repro
    assert paths.experiment_origin() is None


def test_in_an_experiment_copy_a_missing_relative_dataset_comes_from_the_queuing_workspace(queued):
    assert paths.experiment_origin() == queued
    assert not (paths.ROOT / "data" / "raw" / "x").exists()
    (queued / "data" / "raw" / "x").mkdir()
    assert paths.resolve_data("data/raw/x") == queued / "data" / "raw" / "x"
    assert paths.layout("data/raw/x", "cache/faces").raw == queued / "data" / "raw" / "x"
    # the face cache is a DVC output, checked out in the copy: never the workspace's
    assert paths.layout("data/raw/x", "cache/faces").faces == paths.ROOT / "cache" / "faces"


def test_a_dataset_present_in_the_copy_or_absolute_is_used_as_it_is(queued, tmp_path):
    assert paths.resolve_data("deepfake") == paths.ROOT / "deepfake"  # copied in (dvc exp run --copy-paths)
    elsewhere = tmp_path / "elsewhere"
    assert paths.resolve_data(elsewhere) == elsewhere


def test_a_dataset_found_nowhere_keeps_the_copys_path(queued):
    assert paths.resolve_data("data/raw/none") == paths.ROOT / "data/raw/none"


def test_a_dvc_root_that_is_not_a_folder_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "gone"))
    assert paths.experiment_origin() is None


def test_shown_is_relative_inside_the_root():
    assert paths.shown(paths.ROOT / "reports" / "x.csv") == "reports/x.csv"
    assert paths.shown(Path("/elsewhere/x")) == "/elsewhere/x"
