"""The package's layout shows its data flow: each module imports only modules listed before it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deepfake"

#: The modules in the order data flows through them (the README's Layout section).
ORDER = [
    # settings and places
    "paths", "utils", "lifetime", "config",
    # what a person watching a run sees (progress lines, the stage log)
    "progress",
    # reading data
    "media", "video", "ingest", "synth",
    # faces and model inputs
    "faces", "landmarks", "inputs",
    # preprocess and split
    "data", "split", "audit", "shortcuts", "preprocess",
    # scores and their measures (training's validation uses them too)
    "calibration", "metrics",
    # DVCLive tracking and each stage's headline metrics
    "tracking",
    # training
    "augment", "blend", "loading", "models", "checkpoint", "distributed", "inference", "steps", "resume", "train",
    # evaluation
    "video_level", "robustness", "evaluate", "tables", "plots", "gradcam",
    # the whole params file (every stage's config)
    "params",
    # serving
    "backends", "prediction", "predict", "widgets", "cli_output",
    # exploring a run by hand (notebooks/06_explore.ipynb)
    "explore",
    # stages and the command line
    "pipeline", "runner", "testing", "__main__",
]  # fmt: skip
#: Imports against the order that are part of the design: the stage runner builds quick-check inputs on demand.
ALLOWED = {("pipeline", "testing")}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
    return found - {"__version__"}


def test_every_module_is_placed():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(ORDER), f"place new modules in ORDER (and the README): {sorted(modules ^ set(ORDER))}"
    assert len(ORDER) == len(set(ORDER))


@pytest.mark.parametrize("module", ORDER)
def test_imports_follow_the_data_flow(module):
    rank = {m: i for i, m in enumerate(ORDER)}
    later = sorted(
        d for d in _imports(PACKAGE / f"{module}.py") if rank[d] > rank[module] and (module, d) not in ALLOWED
    )
    assert not later, f"{module} imports {later}, which come after it"
