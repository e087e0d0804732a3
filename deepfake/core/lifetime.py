"""End a process with its parent, so that killing ``dvc repro`` leaves no stage processes behind.

A stage is a tree of processes: DVC starts the stage runner (``python -m deepfake stage``),
which starts a Jupyter kernel in a session of its own, whose preprocessing starts a
multiprocessing forkserver and, through it, worker processes. When a parent is killed outright
(``SIGKILL``), nothing tells its children: they are adopted by init and go on running and
writing. ``end_with_parent()`` makes the calling process receive a signal (``SIGTERM``) as soon
as its parent dies. The stage runner calls it (and turns the signal into a clean shutdown of its
kernel), the kernel calls it at start-up, and each preprocessing worker calls it.

A worker started through a forkserver has two parents: the server that forked it and the
process that asked for it (``multiprocessing.parent_process()``); it ends with either. The
server needs nothing more: it exits once the process that started it and all its workers are
gone (every one of them holds its "alive" pipe open).

On Linux the operating system delivers the signal (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon
thread checks the parent every half second.

``sigterm_exits()`` is the handler for a process that must clean up first: inside it, ``SIGTERM``
(from a dying parent, ``kill``, or a cluster scheduler ending a job: SLURM's ``scancel`` and time
limit, Kubernetes deleting a pod, each of which sends ``SIGKILL`` only after a grace period) raises
``SystemExit(143)`` in the main thread, so that ``finally`` blocks and ``except`` handlers run.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_SECONDS = 0.5

_watching: set[tuple[str, int, int]] = set()  # (what, this process, watched pid) of the watcher threads running


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)  # the interpreter's own C library


def _set_death_signal(sig: int) -> bool:
    """Ask the Linux kernel to send ``sig`` when the parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return _libc().prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no C library, or no prctl in it
        return False


def _signal_self(sig: int) -> None:
    """Deliver ``sig`` to this process's main thread (its handler, if any, runs there), else exit."""
    main = threading.main_thread().ident
    if hasattr(signal, "pthread_kill") and main is not None:
        signal.pthread_kill(main, sig)
    else:
        os._exit(128 + int(sig))


def _watch(what: str, pid: int, wait: Callable[[], None], sig: int) -> None:
    """Run ``wait`` in a daemon thread (one per process and watched pid) and send ``sig`` when it returns."""
    key = (what, os.getpid(), pid)  # a fork does not inherit the thread: the pid is part of the key
    if key in _watching:
        return
    _watching.add(key)

    def watch() -> None:
        wait()
        _signal_self(sig)

    threading.Thread(target=watch, name=f"end-with-{what}", daemon=True).start()


def _poll_parent(parent: int) -> Callable[[], None]:
    def wait() -> None:
        while os.getppid() == parent:
            time.sleep(_POLL_SECONDS)

    return wait


def _end_with_starter(sig: int) -> None:
    """A multiprocessing child forked by a server also ends with the process that asked for it."""
    mp = sys.modules.get("multiprocessing")  # not imported: not a multiprocessing child
    starter = mp.parent_process() if mp is not None else None
    if starter is not None and starter.pid is not None and starter.pid != os.getppid():
        _watch("starter", starter.pid, starter.join, sig)  # join: until its end of a pipe closes


def end_with_parent(sig: int = signal.SIGTERM) -> None:
    """Make this process receive ``sig`` when its parent process dies.

    With the default ``SIGTERM`` and no handler installed, the process ends; a process that must
    clean up first installs a handler. When the parent is already gone, the signal is sent at
    once. A multiprocessing child started through a forkserver also receives it when the process
    that started it dies. Cheap and safe to call again; children started afterwards are not
    affected (they call it themselves).

    On Linux, "dies" means the parent's thread that started this process ends: start children
    that call this from a thread that lives as long as they should (the main thread).

    Args:
        sig: the signal to receive.
    """
    parent = os.getppid()
    if not _set_death_signal(sig):
        _watch("parent", parent, _poll_parent(parent), sig)
    if os.getppid() != parent:  # the parent died before the death signal was armed: it will never come
        _signal_self(sig)
    _end_with_starter(sig)


@contextlib.contextmanager
def sigterm_exits(what: str, on_signal: Callable[[], None] | None = None) -> Iterator[None]:
    """Inside the block, ``SIGTERM`` raises ``SystemExit(143)`` in the main thread (elsewhere: no change).

    The first ``SIGTERM`` logs ``stopped by SIGTERM: <what>`` and raises; a second one ends the
    process at once (the default action), for a clean-up that hangs. The previous handler is back
    after the block.

    Args:
        what: what the process does before it exits, for the message (e.g. "shutting the kernel down").
        on_signal: called first when the signal arrives (in the main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_DFL)
        log.warning(f"stopped by SIGTERM: {what}")
        if on_signal is not None:
            on_signal()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
