"""Seeding, device selection, mixed precision, and writing outputs safely.

Outputs are written atomically (``atomic_path``): a temporary file beside the target, renamed
over it only when complete, so an interrupted run never leaves a partial file under the final
name. A write that fails because of the machine (read-only folder, full disk, no permission)
raises ``OutputError`` naming the path: an environment fault that stops a stage, never a
property of an input. ``prepare_output_dir`` checks a folder is writable before long work
starts and removes the temporary files interrupted runs left behind.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import random
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA); returns a seeded generator for loaders."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def worker_init_fn(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; any other value is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def cpu_bf16_supported() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX) for oneDNN."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 where supported, else fp16 on CUDA; bf16 on CPU."""
    if device.type == "cpu":
        return torch.bfloat16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed-precision context (bf16 on a CPU), or a no-op context when not ``enabled``."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@functools.lru_cache(maxsize=1)
def _current_umask() -> int:
    """The process's umask, read once without changing it (``/proc``), or 0o022 where it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


class EnvironmentFault(RuntimeError):
    """A fault of the machine, not of an input (full disk, read-only folder, no file handles or
    memory left): it stops the stage, and no input is recorded as bad because of it. Not an
    ``OSError``, so no handler of bad inputs takes it."""


class OutputError(EnvironmentFault):
    """An output could not be written (read-only folder, full disk, permissions)."""


#: ``errno`` codes that say the machine, not the file being read, is at fault.
MACHINE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def output_error(path: str | os.PathLike, e: OSError, doing: str = "write") -> OutputError:
    """The ``OutputError`` for an ``OSError`` met writing ``path``, with what to do about it."""
    code = errno.errorcode.get(e.errno or 0, "")
    hint = {
        "ENOSPC": "free disk space",
        "EDQUOT": "free space in your quota",
        "EROFS": "the file system is read-only: choose a writable folder",
        "EACCES": "fix the folder's permissions or choose another folder",
        "EPERM": "fix the folder's permissions or choose another folder",
    }.get(code, "check the folder and the disk")
    what = f"{e.strerror or e}{f' [{code}]' if code else ''}"
    return OutputError(f"cannot {doing} {path}: {what}; {hint}, then run again")


#: Temporary files of ``atomic_path``, ``.<name>.<pid>.<random>.tmp``, and of the stage runner
#: (``.<name>.<pid>.notebook.tmp.ipynb``: papermill needs the suffix).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]{8}\.tmp(\.ipynb)?$")
#: Temporary files of versions before the pid was in the name, ``.<name>.<random>.tmp``: removed
#: once this old (no write takes that long), as their writer cannot be checked.
_OLD_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")
_OLD_TEMPORARY_SECONDS = 3600


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    Raises:
        OutputError: the folder cannot be created or written, or the disk is full.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the file normal permissions
    except OSError as e:
        raise output_error(path, e) from e
    try:
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        except OSError as e:
            raise output_error(path, e) from e
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _left_over(p: Path) -> bool:
    m = _TEMPORARY.match(p.name)
    if m:
        return not _alive(int(m["pid"]))
    if _OLD_TEMPORARY.match(p.name):
        try:
            return time.time() - p.stat().st_mtime > _OLD_TEMPORARY_SECONDS
        except OSError:
            return False
    return False


def clean_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove the temporary files ``atomic_path`` left in ``folder`` when its process was killed.

    Only files of the ``.<name>.<pid>.<random>.tmp`` form whose process no longer runs are
    removed (a concurrent writer's are kept), and those of the older ``.<name>.<random>.tmp``
    form untouched for an hour. Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    found = folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")
    for p in sorted(found):
        if p.is_file() and _left_over(p):
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise output_error(p, e, "remove the leftover") from e
            removed.append(p)
    return removed


def is_temporary(name: str) -> bool:
    """Whether a file name is one of ``atomic_path``'s temporary files (or a write check's)."""
    return bool(_TEMPORARY.match(name) or _OLD_TEMPORARY.match(name))


def prepare_output_dir(folder: str | os.PathLike, recursive: bool = False, clean: bool = True) -> Path:
    """Create ``folder`` if needed, check that a file can be written in it, and remove the
    temporary files interrupted runs left there (``clean_temporaries``), before long work starts.

    ``clean=False`` keeps them: for a writer that shares the folder with processes on other machines,
    whose process ids this machine cannot check.

    Raises:
        OutputError: the folder cannot be created or written (permissions, read-only, full disk).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".write-check.{os.getpid()}.", suffix=".tmp", dir=folder)
        try:
            os.write(fd, b"0")  # a full disk may accept the empty file and refuse its first byte
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise output_error(folder, e, "write to the output folder") from e
    removed = clean_temporaries(folder, recursive) if clean else []
    if removed:
        log.info(f"removed {len(removed)} temporary file(s) an interrupted run left in {folder}")
    return folder


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds it (its time stamp then stays); True when written."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return True


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")
