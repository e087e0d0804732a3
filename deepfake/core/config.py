"""One source for every setting: ``params.yaml``, read into typed, validated configs.

Every pipeline setting has its default written once, in ``params.yaml`` (one section per
stage plus ``base`` and ``data``). A config class declares each setting's type and allowed
values with ``setting(...)`` and names its section with ``@section``; its fields' defaults are
read from ``params.yaml`` when the config is built, so ``TrainConfig()`` is the pipeline's own
training run and ``TrainConfig(epochs=1)`` that run for one epoch. Adding a setting touches two
places: the config class and ``params.yaml``.

``deepfake.pipeline.params.load_params`` reads and validates a whole file before any long work starts:
a key that ``params.yaml`` holds but no config knows (``train.learning_rate``), a missing key,
a value of the wrong type (``epochs: "ten"``) or out of range (``image_size: 0``) raises
``ConfigError`` naming the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from . import paths

C = TypeVar("C")
_MARK = "deepfake_setting"


class ConfigError(ValueError):
    """A setting in ``params.yaml`` (or an override) is unknown, missing, mistyped or out of range."""


@dataclass(frozen=True)
class _Spec:
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    gt: float | None = None  # exclusive lower bound
    lt: float | None = None  # exclusive upper bound
    length: int | None = None  # sequences of a fixed length

    def describe(self) -> str:
        parts = []
        if self.choices is not None:
            parts.append("one of " + " | ".join(map(str, self.choices)))
        if self.min is not None:
            parts.append(f">= {self.min}")
        if self.gt is not None:
            parts.append(f"> {self.gt}")
        if self.max is not None:
            parts.append(f"<= {self.max}")
        if self.lt is not None:
            parts.append(f"< {self.lt}")
        if self.length is not None:
            parts.append(f"{self.length} values")
        return ", ".join(parts)


class _Setting:
    """Placeholder replaced by ``@section`` with a dataclass field whose default is read from params.yaml."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec


def setting(
    *,
    choices: tuple[Any, ...] | None = None,
    min: float | None = None,  # noqa: A002 - reads as the constraint it is
    max: float | None = None,  # noqa: A002
    gt: float | None = None,
    lt: float | None = None,
    length: int | None = None,
) -> Any:
    """A config field whose default is the value in ``params.yaml``; the arguments constrain it."""
    return _Setting(_Spec(choices, min, max, gt, lt, length))


# --------------------------------------------------------------------------------------------
# Reading params.yaml
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping of sections (base, data, train, ...), not a {type(data).__name__}"
        )
    return data


def _cached_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed params file, shared while the file is unchanged: callers must not modify it."""
    p = paths.resolve(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"params file {p} does not exist") from None
    if not p.is_file():
        raise ConfigError(f"params file {p} is not a file")
    return _read_cached(str(p), st.st_mtime_ns, st.st_size)


def read_yaml(path: str | os.PathLike = paths.PARAMS_FILE) -> dict[str, Any]:
    """The raw contents of a params file (a fresh copy; parsed once while the file is unchanged)."""
    return copy.deepcopy(_cached_yaml(path))


def _default(section_name: str, key: str) -> Any:
    values = _cached_yaml(paths.PARAMS_FILE).get(section_name)
    if not isinstance(values, dict) or key not in values:
        raise ConfigError(f"{paths.PARAMS_FILE}: {section_name}.{key} is missing; every setting's default lives there")
    return copy.deepcopy(values[key])  # one value, not the whole file, for every field of every config built


# --------------------------------------------------------------------------------------------
# Declaring a config
# --------------------------------------------------------------------------------------------


def section(name: str, base_keys: tuple[str, ...] = ()) -> Callable[[type[C]], type[C]]:
    """Class decorator (put it *below* ``@dataclass``): the class reads section ``name`` of params.yaml.

    ``base_keys`` are fields whose values come from the ``base`` section (``seed``, ``device``).
    Fields declared with ``setting(...)`` get their default from params.yaml; the dataclass's
    ``__post_init__`` checks every field's type and constraints before the class's own checks.
    """

    def wrap(cls: type[C]) -> type[C]:
        for key, value in list(vars(cls).items()):
            if isinstance(value, _Setting):
                src = "base" if key in base_keys else name
                f = field(default_factory=functools.partial(_default, src, key), metadata={_MARK: value.spec})
                setattr(cls, key, f)
        own_post = getattr(cls, "__post_init__", None)

        def __post_init__(self: Any) -> None:
            check_fields(self)
            if own_post is not None:
                try:
                    own_post(self)
                except ConfigError:
                    raise
                except ValueError as e:
                    raise ConfigError(str(e)) from e

        cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
        cls.SECTION = name  # type: ignore[attr-defined]
        cls.BASE_KEYS = base_keys  # type: ignore[attr-defined]
        return cls

    return wrap


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (int -> float and list -> tuple are the only conversions), or ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where} = {value!r} has the wrong type")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r} must be a list, e.g. [70, 95]")
        args = tuple(a for a in typing.get_args(tp) if a is not Ellipsis)
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where} = {value!r} is {type(value).__name__}; expected {_type_name(tp)}")


def _check_spec(value: Any, spec: _Spec, where: str) -> None:
    def fail() -> None:
        raise ConfigError(f"{where} = {value!r} is not allowed; expected {spec.describe()}")

    if spec.choices is not None and value not in spec.choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in spec.choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where} = {value!r} is not allowed; expected {spec.describe()}{hint}")
    if spec.length is not None and len(value) != spec.length:
        fail()
    items = value if isinstance(value, tuple) else (value,)
    for v in items:
        if not isinstance(v, (int, float)):
            continue
        if (
            (spec.min is not None and v < spec.min)
            or (spec.max is not None and v > spec.max)
            or (spec.gt is not None and not v > spec.gt)
            or (spec.lt is not None and not v < spec.lt)
        ):
            fail()


def check_fields(obj: Any) -> None:
    """Check (and normalise: int -> float, list -> tuple) every declared field of a config instance."""
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    name = getattr(cls, "SECTION", cls.__name__)
    for f in dataclasses.fields(obj):
        where = f"{'base' if f.name in getattr(cls, 'BASE_KEYS', ()) else name}.{f.name}"
        value = _coerce(getattr(obj, f.name), hints[f.name], where)
        spec = f.metadata.get(_MARK)
        if spec is not None:
            _check_spec(value, spec, where)
        object.__setattr__(obj, f.name, value)


def settings_of(cls: type) -> list[str]:
    """The fields of a config class that params.yaml holds."""
    return [f.name for f in dataclasses.fields(cls) if _MARK in f.metadata]


def _nearest(key: str, known: list[str]) -> list[str]:
    """The known key a typo most likely meant: a close spelling, or the initials (``learning_rate`` -> ``lr``)."""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return close
    initials = "".join(part[:1] for part in key.split("_") if part)
    return [k for k in known if k == initials][:1]


def unknown_keys(keys: list[str], known: list[str], where: str) -> str:
    """``where.key`` for each unknown key, with the nearest known key where one is near."""
    msgs = []
    for k in keys:
        close = _nearest(k, known)
        msgs.append(f"{where}.{k}" + (f" (did you mean {where}.{close[0]}?)" if close else ""))
    return ", ".join(msgs)


def build(
    cls: type[C], values: dict[str, Any] | None = None, base: dict[str, Any] | None = None, origin: str = ""
) -> C:
    """A config from a params section (``values``) and the ``base`` section, every key checked.

    Keys missing from ``values`` keep params.yaml's defaults. Unknown keys raise ``ConfigError``
    naming them (with the nearest valid key).
    """
    values = dict(values or {})
    name = getattr(cls, "SECTION", cls.__name__)
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    base_keys = getattr(cls, "BASE_KEYS", ())
    unknown = sorted(set(values) - set(known) - set(base_keys))
    if unknown:
        takes = [k for k in settings_of(cls) if k not in base_keys]
        raise ConfigError(
            f"{origin or 'params'}: unknown setting(s) {unknown_keys(unknown, known, name)}; "
            f"the {name} section takes {', '.join(takes)}"
        )
    for k in base_keys:
        if base is not None and k in base:
            values.setdefault(k, base[k])
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}" if origin else str(e)) from None


# --------------------------------------------------------------------------------------------
# The whole file
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
@section("base")
class BaseConfig:
    """Settings shared by several stages.

    Attributes:
        seed: seed of the split, the initialisation, shuffling, augmentation and bootstrap.
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
    """

    seed: int = setting(min=0)
    device: str = setting()


#: ``data.layout``: how the dataset folder is laid out (``deepfake.data.layouts``); ``auto`` recognises it.
LAYOUTS = ("auto", "folders", "manifest", "ffpp", "celebdf", "dfdc")
#: ``data.compression``: the FaceForensics++ download's compression levels (H.264 rate factor 0, 23, 40).
COMPRESSIONS = ("raw", "c23", "c40")
#: ``data.methods``: the FaceForensics++ manipulation folders that share its official split
#: (``DeepFakeDetection`` has none: ``data.ffpp_dfd`` adds it).
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
#: ``data.split``: the benchmark's own split (``official``), or one drawn by the split stage (``own``).
SPLIT_MODES = ("official", "own")


@dataclass(frozen=True)
@section("data")
class DataConfig:
    """Where the data is, and how its folder is laid out.

    Attributes:
        raw_dir: the dataset (folder or CSV manifest) the preprocess stage reads.
        faces_dir: the face-crop cache the preprocess stage writes and later stages read.
        layout: ``auto`` (recognised by its folders and index files), ``folders``, ``manifest``,
            or a benchmark as its download lays it out: ``ffpp`` (FaceForensics++), ``celebdf``
            (Celeb-DF v2), ``dfdc`` (DFDC or its preview); ``docs/benchmarks.md``.
        compression: FaceForensics++ compression level read (``raw``, ``c23``, ``c40``).
        methods: comma-separated FaceForensics++ manipulations read (``FFPP_METHODS``).
        ffpp_dfd: also read FaceForensics++'s actors and their DeepFakeDetection fakes.
        split: ``official`` (a benchmark's own split) or ``own`` (the split stage draws one by
            groups); folders and manifests keep theirs with ``preprocess.keep_splits``.
    """

    raw_dir: str = setting()
    faces_dir: str = setting()
    layout: str = setting(choices=LAYOUTS)
    compression: str = setting(choices=COMPRESSIONS)
    methods: str = setting()
    ffpp_dfd: bool = setting()
    split: str = setting(choices=SPLIT_MODES)

    def __post_init__(self) -> None:
        for key in ("raw_dir", "faces_dir"):
            if not getattr(self, key).strip():
                raise ValueError(f"data.{key} is empty; name a folder")
        methods = self.method_names
        unknown = [m for m in methods if m not in FFPP_METHODS]
        if unknown or not methods:
            hint = " (DeepFakeDetection: set data.ffpp_dfd: true instead)" if "DeepFakeDetection" in unknown else ""
            raise ValueError(
                f"data.methods = {self.methods!r} names {unknown or 'no method'}; expected a comma-separated "
                f"list of {', '.join(FFPP_METHODS)}{hint}"
            )

    @property
    def method_names(self) -> tuple[str, ...]:
        """``methods`` as a tuple, in the order written."""
        return comma_list(self.methods)


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` as ``("a", "b", "c")``: the items of a comma-separated setting."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def override_pairs(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["train.epochs=2", "base.seed=1"]`` (YAML values) as an overrides mapping."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        sec, dot, name = key.partition(".")
        if not sep or not dot:
            raise ConfigError(f"override {item!r} must be section.key=value, e.g. train.epochs=2")
        out.setdefault(sec, {})[name] = yaml.safe_load(value)
    return out
