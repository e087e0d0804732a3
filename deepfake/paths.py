"""Project paths, built from the repository root (never from the working directory)."""

from __future__ import annotations

import os
from pathlib import Path

#: Repository root: the folder holding ``params.yaml``. ``DEEPFAKE_ROOT`` overrides it.
ROOT = Path(os.environ.get("DEEPFAKE_ROOT", Path(__file__).resolve().parent.parent))

DATA_DIR = ROOT / "data"
RAW_DIR = DATA_DIR / "raw"
MODELS_DIR = ROOT / "models"
REPORTS_DIR = ROOT / "reports"
FIGURES_DIR = REPORTS_DIR / "figures"
NOTEBOOKS_DIR = ROOT / "notebooks"
PARAMS_FILE = ROOT / "params.yaml"
#: Scratch space for quick-check runs of the notebooks (nbval, interactive use).
QUICK_DIR = ROOT / "build" / "quick"


def resolve(path: str | os.PathLike) -> Path:
    """Return ``path`` as absolute, taking relative paths from the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p
