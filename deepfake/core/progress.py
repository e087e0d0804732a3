"""Progress a person can follow, in a terminal, in Jupyter and in the ``dvc repro`` log.

Interactively (a terminal, or a notebook open in Jupyter) ``progress`` is a tqdm bar. In a
pipeline stage (``python -m deepfake stage NAME`` sets ``DEEPFAKE_STAGE``) and whenever stderr
is not a terminal, it prints a line every ``DEEPFAKE_PROGRESS_SECONDS`` (default 15) with the
count, the rate and the time left, so a log file stays readable::

    12:04:31 [train] epoch 3/20: 832/1680 images (50%), 93.1 images/s, ETA 0:09

Inside a stage's notebook kernel those lines and the package's log go to the kernel's own
stderr, which is the ``dvc repro`` log, and not into the executed notebook: the notebook keeps
only what its cells show (and warnings), so re-running a stage rewrites identical files.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

STAGE_ENV = "DEEPFAKE_STAGE"  # set by the stage runner: the name of the pipeline stage running
INTERVAL_ENV = "DEEPFAKE_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 15.0

_terminal: TextIO | None = None


def stage_name() -> str | None:
    """The pipeline stage this process runs in, if any."""
    return os.environ.get(STAGE_ENV) or None


def terminal() -> TextIO:
    """The process's own stderr: in a Jupyter kernel, the kernel's terminal (the stage log), not the notebook.

    ipykernel redirects file descriptor 2 into the notebook; its stream's ``fileno()`` is a copy
    of the original descriptor, which is where this writes.
    """
    global _terminal
    if _terminal is None:
        try:
            fd = sys.stderr.fileno()
            _terminal = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            _terminal = sys.__stderr__ or sys.stderr
    return _terminal


def _interval() -> float:
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _is_interactive() -> bool:
    if stage_name():
        return False
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """A progress counter that prints one line every ``interval`` seconds (and a last one if it printed any)."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        interval: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.interval = _interval() if interval is None else interval
        self.stream = stream
        self.n = 0
        self.start = self.last = time.monotonic()
        self.printed_n: int | None = None  # the count the last printed line showed (None: nothing printed)
        self.closed = False

    def line(self, now: float | None = None) -> str:
        """The progress line as it would be printed now."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        text = f"{self.desc}: {self.n}" if self.desc else f"{self.n}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.1f} {self.unit}/s" if rate >= 1 else f", {elapsed / max(self.n, 1):.1f} s/{self.unit}"
        if self.total and self.n < self.total and self.n:
            text += f", ETA {_clock((self.total - self.n) / rate)}"
        else:
            text += f", {_clock(elapsed)} elapsed"
        return text

    def _emit(self, now: float) -> None:
        stamp = time.strftime("%H:%M:%S")
        stage = stage_name()
        prefix = f"{stamp} [{stage}] " if stage else f"{stamp} "
        print(prefix + self.line(now), file=self.stream or terminal(), flush=True)
        self.printed_n = self.n
        self.last = now

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self._emit(now)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.printed_n is not None and self.printed_n != self.n:  # a last line, unless the last said it all
                self._emit(time.monotonic())

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress was created without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
) -> Any:
    """A tqdm bar when a person watches a terminal or a notebook, else a ``LineProgress`` (periodic log lines).

    ``disable`` (or ``TQDM_DISABLE=1``) shows nothing. Use as an iterable wrapper or with ``update(n)``.
    """
    if disable or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        return LineProgress(iterable, total, desc, unit, interval=float("inf"))
    if _is_interactive():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave)
    return LineProgress(iterable, total, desc, unit)


class _StageFormatter(logging.Formatter):
    def __init__(self, stage: str) -> None:
        super().__init__(f"%(asctime)s [{stage}] %(message)s", datefmt="%H:%M:%S")


def configure_logging(stage: str | None = None) -> None:
    """Route the package's messages: in a stage, INFO and above to the stage log (``terminal()``),
    warnings also into the notebook; elsewhere a plain handler on stderr (if none is set up)."""
    root = logging.getLogger()
    stage = stage or stage_name()
    if stage is None:
        if not root.handlers:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
        return
    for h in list(root.handlers):  # the stage log has one format
        root.removeHandler(h)
    log_handler = logging.StreamHandler(terminal())
    log_handler.setFormatter(_StageFormatter(stage))
    log_handler.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [log_handler]
    if "ipykernel" in sys.modules:  # the notebook's stderr: warnings belong in the executed notebook too
        notebook_handler = logging.StreamHandler(sys.stderr)
        notebook_handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        notebook_handler.setLevel(logging.WARNING)
        handlers.append(notebook_handler)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warnings.formatwarning = _one_line_warning


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """A warning in the stage log: its category and message, without the source line."""
    return f"{category.__name__}: {message}"
