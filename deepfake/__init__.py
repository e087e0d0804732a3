"""deepfake: reproducible detection of forged and synthetic face images and videos.

The names a user calls, without knowing where they live::

    from deepfake import get_predictor
    p = get_predictor("models/best.pt")          # loads once, cached per checkpoint and device
    result = p.predict("photo.jpg")              # probability, label, the face box ...

    from deepfake import load_params, open_stage, stages
    params = load_params()                       # params.yaml, every section validated
    stage = open_stage("train")                  # a stage's settings and folders (quick=True: a tiny run)

- ``Predictor``, ``get_predictor``: score images, folders and videos as the evaluation scored its test split.
- ``load_checkpoint``: a checkpoint file to ``(model, checkpoint dict)``, checked before use.
- ``build_model``: a network by name, with pretrained weights or a recorded fallback.
- ``load_params``: the whole ``params.yaml`` read and validated into typed configs.
- ``open_stage``, ``stages``: a pipeline stage's settings and folders, and the stage functions.
- ``run_stage``: run one stage's notebook through papermill, as ``dvc repro`` does.

The sub-packages, in the one order their imports run (``tests/test_layout.py``): ``core``,
``data``, ``metrics``, ``models``, ``training``, ``evaluation``, ``inference``, ``pipeline``.
Names are imported on first use, so ``import deepfake`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (a module itself when the name is the module's).
_PUBLIC = {
    "Predictor": "deepfake.inference.predict",
    "get_predictor": "deepfake.inference.predict",
    "load_checkpoint": "deepfake.models.checkpoint",
    "build_model": "deepfake.models.architectures",
    "load_params": "deepfake.pipeline.params",
    "open_stage": "deepfake.pipeline.stages",
    "run_stage": "deepfake.pipeline.runner",
    "stages": "deepfake.pipeline.stages",
}

__all__ = [
    "Predictor",
    "__version__",
    "build_model",
    "get_predictor",
    "load_checkpoint",
    "load_params",
    "open_stage",
    "run_stage",
    "stages",
]

if TYPE_CHECKING:
    from .inference.predict import Predictor, get_predictor
    from .models.architectures import build_model
    from .models.checkpoint import load_checkpoint
    from .pipeline import stages
    from .pipeline.params import load_params
    from .pipeline.runner import run_stage
    from .pipeline.stages import open_stage


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'deepfake' has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name])
    value = module if module.__name__.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
