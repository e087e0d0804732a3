"""The package's layout shows its data flow: sub-packages by role, each importing only those below it.

``LAYERS`` lists the sub-packages from the ground floor up and, inside each, its modules in the
order data flows through them. A module may import a module of a lower sub-package, or one listed
before it in its own; never one above. The top level (``deepfake/__init__.py``, which names the
public API lazily, and ``__main__.py``, the command line) may import anything.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deepfake"

#: Sub-packages from the ground floor up, with their modules in data-flow order.
LAYERS: dict[str, list[str]] = {
    # paths, typed configs, atomic writes and devices, process lifetime, progress lines
    "core": ["paths", "config", "utils", "lifetime", "progress"],
    # decoding, listing (and the benchmarks' own layouts), the synthetic set, faces and the crop,
    # preprocess, splits and audits
    "data": [
        "media", "video", "ingest", "layouts", "synth", "detect", "inputs", "faces",
        "split", "audit", "shortcuts", "preprocess",
    ],
    # scores and their measures (training's validation uses them)
    "metrics": ["calibration", "classification", "video_level"],
    # networks and checkpoints
    "models": ["backbones", "architectures", "checkpoint"],
    # augmentation, self-blending, the train section's config, the loader, the scoring loop, the step,
    # resume, the run
    "training": ["augment", "blend", "config", "loading", "distributed", "scoring", "steps", "resume", "train"],
    # the evaluate stage's measurements, robustness, tables, figures
    "evaluation": ["robustness", "evaluate", "tables", "plots", "benchmark", "comparison"],
    # the predictor, its runtimes, Grad-CAM, the CLI's output, the widget
    "inference": ["backends", "gradcam", "prediction", "predict", "cli_output", "widgets"],
    # the params file, the dataset's inventory (what DVC depends on), tracking, quick-check fixtures,
    # repository copies for the user-command tests, stage functions, comparing detectors, the runner,
    # exploring, the shared DVC remote
    "pipeline": [
        "params", "inventory", "tracking", "quick", "sandbox", "stages", "compare", "runner", "explore", "remote",
    ],
}  # fmt: skip
#: At most this many modules in one sub-package: past it, the room wants dividing.
MAX_MODULES = 12


def _rank() -> dict[str, tuple[int, int]]:
    """``sub.module`` -> (sub-package's floor, module's place in it)."""
    return {f"{sub}.{m}": (i, j) for i, (sub, mods) in enumerate(LAYERS.items()) for j, m in enumerate(mods)}


def _modules() -> dict[str, Path]:
    """Every module below the top level, as ``sub.module``."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if len(parts) == 2 and parts[1] != "__init__":
            found[".".join(parts)] = path
        elif len(parts) > 2:
            found[".".join(parts)] = path  # deeper nesting: reported as unplaced
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports (``sub.module``, or ``sub`` for a sub-package's own
    ``__init__``, or ``""`` for the top level), relative and absolute, at any depth of the code."""
    here = ["deepfake", *name.split(".")[:-1]]  # the importing module's package
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "deepfake":
                target = node.module.split(".")
            else:
                continue
            inner = target[1:]
            if len(inner) == 1:  # from deepfake.sub import module (or a name of sub/__init__)
                found |= {f"{inner[0]}.{a.name}" for a in node.names}
            else:
                found.add(".".join(inner[:2]) if inner else "")
        elif isinstance(node, ast.Import):
            found |= {".".join(a.name.split(".")[1:3]) for a in node.names if a.name.split(".")[0] == "deepfake"}
    return found


def _violations(name: str, path: Path) -> list[str]:
    """The imports of module ``name`` (at ``path``) against the layers."""
    rank = _rank()
    bad = []
    for target in sorted(_imports(name, path) - {""}):  # "": the top level's __version__
        if target not in rank:
            bad.append(f"{target} (not a module of LAYERS)")
        elif rank[target] >= rank[name]:
            where = "a higher sub-package" if rank[target][0] > rank[name][0] else "later in its sub-package"
            bad.append(f"{target} ({where})")
    return bad


def test_every_module_is_placed():
    placed = set(_rank())
    modules = set(_modules())
    assert modules == placed, f"place new modules in LAYERS (and docs/layout.md): {sorted(modules ^ placed)}"
    assert all(len(mods) == len(set(mods)) for mods in LAYERS.values())


@pytest.mark.parametrize("sub", list(LAYERS))
def test_each_subpackage_says_what_it_owns(sub):
    init = PACKAGE / sub / "__init__.py"
    tree = ast.parse(init.read_text())
    assert ast.get_docstring(tree), f"{init} needs a docstring: what it owns and what it may import"
    assert all(isinstance(n, ast.Expr) for n in tree.body), f"{init} holds code: keep sub-package inits to a docstring"
    assert len(LAYERS[sub]) <= MAX_MODULES, f"{sub} holds {len(LAYERS[sub])} modules: divide it"


def test_top_level_is_small():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py"]


@pytest.mark.parametrize("module", list(_rank()))
def test_imports_follow_the_layers(module):
    bad = _violations(module, PACKAGE / (module.replace(".", "/") + ".py"))
    assert not bad, f"deepfake.{module} imports {bad}: move the code to the layer that owns it"


def test_a_planted_upward_import_is_caught(tmp_path):
    """The check can fail: a data module importing the predictor, or a training module importing
    evaluation, is reported."""
    planted = tmp_path / "faces.py"
    planted.write_text("from ..inference.predict import Predictor\nfrom .preprocess import preprocess\n")
    assert _violations("data.faces", planted) == [
        "data.preprocess (later in its sub-package)",
        "inference.predict (a higher sub-package)",
    ]
    lazy = tmp_path / "train.py"
    lazy.write_text("def f():\n    from deepfake.evaluation import plots\n")
    assert _violations("training.train", lazy) == ["evaluation.plots (a higher sub-package)"]


def test_no_import_cycle():
    graph = {m: {t for t in _imports(m, p) if t in _rank()} for m, p in _modules().items() if m in _rank()}
    seen: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        seen[m] = 1
        for t in graph[m]:
            assert seen.get(t) != 1, f"import cycle: {' -> '.join([*stack, m, t])}"
            if t not in seen:
                visit(t, [*stack, m])
        seen[m] = 2

    for m in graph:
        if m not in seen:
            visit(m, [])
