"""The whole params file: every section read and validated into its config, before any work starts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..core import paths
from ..core.config import BaseConfig, ConfigError, DataConfig, build, read_yaml, settings_of, unknown_keys
from ..core.utils import atomic_path
from ..data.preprocess import PreprocessConfig
from ..data.split import SplitConfig
from ..data.synth import SynthConfig
from ..evaluation.evaluate import EvalConfig
from ..training.train import TrainConfig


@dataclass(frozen=True)
class Params:
    """Every section of a params file, validated."""

    file: Path
    base: BaseConfig
    data: DataConfig
    synth: SynthConfig
    preprocess: PreprocessConfig
    split: SplitConfig
    train: TrainConfig
    evaluate: EvalConfig
    cross_dataset: dict[str, str]

    SECTIONS: ClassVar[tuple[str, ...]] = (
        "base",
        "data",
        "synth",
        "preprocess",
        "split",
        "train",
        "evaluate",
        "cross_dataset",
    )


def _classes() -> dict[str, type]:
    return {
        "base": BaseConfig,
        "data": DataConfig,
        "synth": SynthConfig,
        "preprocess": PreprocessConfig,
        "split": SplitConfig,
        "train": TrainConfig,
        "evaluate": EvalConfig,
    }


def load_params(
    path: str | os.PathLike = paths.PARAMS_FILE, overrides: dict[str, dict[str, Any]] | None = None
) -> Params:
    """Read ``path`` and validate every section, with ``overrides`` (``{"train": {"epochs": 1}}``) applied.

    Every key of every section must be known, present and valid; the first fault raises
    ``ConfigError`` naming the file and the key.
    """
    file = paths.resolve(path)
    raw = read_yaml(file)
    overrides = overrides or {}
    bad_sections = sorted((set(raw) | set(overrides)) - set(Params.SECTIONS))
    if bad_sections:
        raise ConfigError(f"{file}: unknown section(s) {bad_sections}; the sections are {', '.join(Params.SECTIONS)}")
    classes = _classes()
    base_values = {**(raw.get("base") or {}), **overrides.get("base", {})}
    built: dict[str, Any] = {}
    for name, cls in classes.items():
        values = raw.get(name)
        if values is None:
            raise ConfigError(f"{file}: section {name} is missing")
        if not isinstance(values, dict):
            raise ConfigError(f"{file}: section {name} must be a mapping of settings, not {values!r}")
        base_keys = getattr(cls, "BASE_KEYS", ())
        own = [k for k in settings_of(cls) if k not in base_keys]  # the keys this section of the file holds
        stray = sorted(set(values) - set(own))
        if stray:
            raise ConfigError(
                f"{file}: unknown setting(s) {unknown_keys(stray, own, name)}; "
                f"the {name} section takes {', '.join(own)}"
            )
        missing = [k for k in own if k not in values]
        if missing:
            raise ConfigError(
                f"{file}: {', '.join(f'{name}.{k}' for k in missing)} missing; every setting is written in params.yaml"
            )
        base = {} if name == "base" else {k: base_values[k] for k in base_keys if k in base_values}
        built[name] = build(cls, {**values, **overrides.get(name, {}), **base}, origin=str(file))
    cross = {**(raw.get("cross_dataset") or {}), **overrides.get("cross_dataset", {})}
    if not isinstance(cross, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in cross.items()
    ):
        raise ConfigError(f"{file}: cross_dataset must map names to dataset paths (name: path), got {cross!r}")
    for k in cross:
        if not k.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(
                f"{file}: cross_dataset name {k!r} may hold only letters, digits, '-' and '_' (it names a folder)"
            )
    return Params(file=file, cross_dataset=cross, **built)


def write_check_record(params: Params, path: str | os.PathLike) -> Path:
    """Write the output of dvc.yaml's ``check_params`` stage, once ``params`` passed ``load_params``.

    Every stage depends on this file, so ``dvc repro STAGE`` runs the check, and stops at a faulty
    value, before DVC deletes the stage's outputs. The file names the params file and its sections,
    never a value: a valid change rewrites the same bytes, and re-runs only the stages that read
    the changed key (each stage lists its own keys under ``params:``).
    """
    text = (
        f"{params.file.name}: every section valid ({', '.join(params.SECTIONS)})\n"
        "Written by dvc.yaml's check_params stage (python -m deepfake check-params --record); every stage\n"
        "depends on this file, so a faulty setting stops `dvc repro STAGE` before any output is deleted.\n"
    )
    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return out
