"""Project paths, built from the repository root (never from the working directory)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Repository root: the folder holding ``params.yaml``. ``DEEPFAKE_ROOT`` overrides it.
ROOT = Path(os.environ.get("DEEPFAKE_ROOT", Path(__file__).resolve().parents[2]))

DATA_DIR = ROOT / "data"
RAW_DIR = DATA_DIR / "raw"
MODELS_DIR = ROOT / "models"
REPORTS_DIR = ROOT / "reports"
FIGURES_DIR = REPORTS_DIR / "figures"
NOTEBOOKS_DIR = ROOT / "notebooks"
PARAMS_FILE = ROOT / "params.yaml"
#: Face-crop caches of the cross-dataset test sets (``cache/cross/<name>``, a DVC output of stage ``cross@<name>``).
CROSS_DIR = ROOT / "cache" / "cross"
#: What the inventory stage keeps between runs: each listed file's stat and hash (not the inventory itself).
INVENTORY_STATS = ROOT / "cache" / "inventory"
#: Scratch space for quick-check runs of the notebooks (nbval, interactive use).
QUICK_DIR = ROOT / "build" / "quick"


def resolve(path: str | os.PathLike) -> Path:
    """Return ``path`` as absolute, taking relative paths from the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p


def experiment_origin() -> Path | None:
    """The workspace that queued the DVC experiment running here, or None outside one.

    DVC runs a queued experiment (``dvc exp run --queue``, then ``dvc queue start``) and a
    ``dvc exp run --temp`` in a temporary copy of the repository under ``.dvc/tmp/exps/``, which
    holds what git and DVC track and nothing else (not the dataset), and gives its stage commands
    ``DVC_ROOT``: the repository that queued it (in the workspace itself, the workspace).
    """
    origin = os.environ.get("DVC_ROOT", "")
    if not origin or not os.path.isdir(origin):
        return None
    try:
        if os.path.samefile(origin, ROOT):
            return None
    except OSError:
        return None
    return Path(origin)


def resolve_data(path: str | os.PathLike) -> Path:
    """A dataset of params.yaml (``data.raw_dir``, a ``cross_dataset`` folder) as absolute: ``resolve``,
    except that in a DVC experiment's temporary copy (``experiment_origin``) a relative path that is
    absent there is taken from the workspace that queued the experiment, where it lies (git-ignored,
    so never copied). A path copied in (``dvc exp run --copy-paths``) or absolute is used as it is."""
    here = resolve(path)
    origin = experiment_origin()
    if origin is None or Path(path).expanduser().is_absolute() or os.path.lexists(here):
        return here
    there = origin / path
    return there if os.path.lexists(there) else here


def shown(path: str | os.PathLike) -> str:
    """``path`` as messages and records name it: relative to the project root when inside it (short and
    the same in every clone), else absolute. Symbolic links are kept, not resolved."""
    p = Path(os.path.abspath(resolve(path)))
    root = Path(os.path.abspath(ROOT))
    return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)


@dataclass(frozen=True)
class Layout:
    """Where every stage reads and writes: the pipeline's (``reports/``, ``models/``) or a quick check's."""

    raw: Path  # the dataset the preprocess stage reads (data.raw_dir, by resolve_data)
    faces: Path  # the face-crop cache (data.faces_dir)
    models: Path
    reports: Path
    cross_caches: Path  # one face-crop cache per cross-dataset test set

    @property
    def splits(self) -> Path:
        return self.reports / "split"

    @property
    def inventory(self) -> Path:
        """The dataset's inventory (stage ``inventory``): what the preprocess and split stages depend on."""
        return self.reports / "inventory" / "inventory.csv"

    def cross_inventory(self, name: str) -> Path:
        """The inventory of a cross-dataset test set (stage ``inventory_cross@<name>``)."""
        return self.reports / "inventory" / f"cross_{name}.csv"

    @property
    def preprocess_reports(self) -> Path:
        return self.reports / "preprocess"

    @property
    def split_reports(self) -> Path:
        return self.reports / "split"

    @property
    def train_reports(self) -> Path:
        return self.reports / "train"

    @property
    def eval_reports(self) -> Path:
        return self.reports / "eval"

    @property
    def figures(self) -> Path:
        return self.reports / "figures"

    @property
    def checkpoint(self) -> Path:
        return self.models / "best.pt"

    @property
    def calibration(self) -> Path:
        return self.eval_reports / "calibration.json"

    @property
    def benchmark_reports(self) -> Path:
        return self.reports / "benchmark"

    def cross_reports(self, name: str) -> Path:
        return self.reports / "cross" / name

    def cross_faces(self, name: str) -> Path:
        """Face-crop cache of a cross-dataset test set (the preprocess stage's code, its own folder)."""
        return self.cross_caches / name


def layout(raw_dir: str | os.PathLike, faces_dir: str | os.PathLike, quick: bool = False) -> Layout:
    """The pipeline's layout (data.raw_dir and data.faces_dir of params.yaml) or the quick check's (build/quick)."""
    if quick:
        q = QUICK_DIR
        return Layout(
            raw=q / "raw", faces=q / "faces", models=q / "models", reports=q / "reports", cross_caches=q / "cross_faces"
        )
    return Layout(
        raw=resolve_data(raw_dir),
        faces=resolve(faces_dir),
        models=MODELS_DIR,
        reports=REPORTS_DIR,
        cross_caches=CROSS_DIR,
    )
