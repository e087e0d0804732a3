"""Run one pipeline stage: its notebook executed by papermill, quietly, into ``reports/notebooks/``.

``python -m deepfake stage NOTEBOOK OUTPUT -p NAME VALUE ...`` is the command of each stage in
``dvc.yaml``: the arguments of a ``papermill`` call. Compared with the ``papermill`` command line it

- needs nothing on ``PATH`` (the interpreter that runs it runs the kernel);
- keeps the ``dvc repro`` log to what a person follows: the package's messages and periodic
  progress lines (``deepfake.core.progress``), no cell banners, no copies of tables, no kernel
  transport warning;
- writes the executed notebook without run times (papermill's and the kernel's timestamps),
  atomically, so that re-running a stage on the same inputs rewrites identical bytes and
  ``git status`` stays clean.

A failing cell stops the stage with its error; the executed notebook (with the error shown at
the top, as papermill writes it) is kept for reading.

Killing ``dvc repro`` ends the whole stage (``deepfake.core.lifetime``): the runner receives ``SIGTERM``
when DVC dies and, on ``SIGTERM``, shuts its kernel down before exiting; the kernel ends with the
runner even when the runner is killed outright, and preprocessing workers with the kernel.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ..core import lifetime, paths
from ..core.progress import STAGE_ENV, configure_logging
from ..core.utils import atomic_path, clean_temporaries

log = logging.getLogger(__name__)

#: The notebook of each stage, under ``notebooks/``.
NOTEBOOKS = {
    "preprocess": "00_preprocess",
    "split": "01_split",
    "train": "02_train",
    "evaluate": "03_evaluate",
    "cross": "03b_cross_dataset",
    "plots": "04_plots",
}

# nbformat metadata that records when and how long, not what
_VOLATILE_CELL_KEYS = ("execution", "papermill")
_VOLATILE_NOTEBOOK_KEYS = ("start_time", "end_time", "duration", "exception")

# run by the kernel at start-up: it ends with the runner, even a runner killed by SIGKILL
_KERNEL_ENDS_WITH_RUNNER = (
    "--IPKernelApp.exec_lines=__import__('deepfake.core.lifetime').core.lifetime.end_with_parent()"
)


def stage_of(notebook: str | os.PathLike) -> str:
    """The stage a notebook belongs to (its stem when it is none of the pipeline's)."""
    stem = Path(notebook).stem
    return next((name for name, nb in NOTEBOOKS.items() if nb == stem), stem)


def scrub_times(nb: dict, input_path: str | None = None, output_path: str | None = None) -> dict:
    """Drop run times from an executed notebook (papermill's per-cell and total times, nbclient's
    timestamps) and record the notebook paths as given (relative to the project), not where it ran."""
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {})
        for key in _VOLATILE_CELL_KEYS:
            meta.pop(key, None)
        if "injected-parameters" in meta.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill draws a random id for the cell it adds
    pm = nb.get("metadata", {}).get("papermill", {})
    for key in _VOLATILE_NOTEBOOK_KEYS:
        pm.pop(key, None)
    if input_path is not None:
        pm["input_path"] = input_path
    if output_path is not None:
        pm["output_path"] = output_path
    return nb


def _quiet_asyncio() -> None:
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the abandoned cell's task: expected, not news


def run_stage(
    notebook: str | os.PathLike,
    output: str | os.PathLike,
    parameters: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> Path:
    """Execute ``notebook`` into ``output`` with ``parameters``, as papermill does, quietly and without run times.

    The calling process ends with its parent (DVC): it receives ``SIGTERM`` when the parent
    dies. While the notebook runs, ``SIGTERM`` raises ``SystemExit(143)`` (in the main thread),
    which shuts the kernel down first; the kernel itself ends with this process.

    Args:
        notebook: the stage's notebook, e.g. ``notebooks/02_train.ipynb``.
        output: the executed notebook, e.g. ``reports/notebooks/02_train.ipynb``.
        parameters: the notebook parameters (values as given; papermill's ``-p`` parses them).
        timeout: seconds a single cell may run (default: no limit).

    Raises:
        FileNotFoundError: no such notebook.
        papermill.PapermillExecutionError: a cell failed (the executed notebook shows where).
        SystemExit: ``SIGTERM`` arrived while the notebook ran.
    """
    import nbformat
    import papermill as pm

    notebook, out = paths.resolve(notebook), paths.resolve(output)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook {notebook} does not exist")
    name = stage_of(notebook)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ[STAGE_ENV] = name  # the kernel inherits it: progress lines and messages go to this log
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # a debugger notice of frozen modules
    configure_logging(name)
    logging.getLogger("papermill").setLevel(logging.WARNING)  # no "Executing Cell n" banners
    log.info(f"running {paths.shown(notebook)} -> {paths.shown(out)}")
    t0 = time.perf_counter()
    clean_temporaries(out.parent)  # notebooks of a killed run
    tmp = out.with_name(f".{out.name}.{os.getpid()}.notebook.tmp.ipynb")  # papermill wants the .ipynb suffix
    try:
        try:
            with lifetime.sigterm_exits("shutting the kernel down", on_signal=_quiet_asyncio):
                lifetime.end_with_parent()  # after the handler: a parent already gone is a clean exit too
                pm.execute_notebook(
                    str(notebook),
                    str(tmp),
                    parameters=dict(parameters or {}),
                    progress_bar=False,
                    log_output=False,
                    cwd=str(paths.ROOT),
                    execution_timeout=timeout,
                    # the kernel's own warning about TCP without encryption (it listens on localhost only)
                    extra_arguments=["--IPKernelApp.log_level=ERROR", _KERNEL_ENDS_WITH_RUNNER],
                )
        except BaseException:
            if tmp.exists():  # keep the notebook with the failing cell for reading
                os.replace(tmp, out)
            raise
        nb = scrub_times(nbformat.read(tmp, as_version=4), paths.shown(notebook), paths.shown(out))
        with atomic_path(out) as final:
            final.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
    finally:
        tmp.unlink(missing_ok=True)
    log.info(f"done in {time.perf_counter() - t0:.1f} s")
    return out
