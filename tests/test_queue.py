"""Queued DVC experiments, as a person runs them: two tiny experiments queued with different learning
rates (``dvc exp run --queue -S train.lr=...``) and run at once by two workers (``dvc queue start -j 2``).

DVC runs each in its own temporary copy of the repository under ``.dvc/tmp/exps/``, which holds what
git and DVC track and nothing else: no dataset (git-ignored), no ``.venv``, no ``cache/inventory/``.
The test checks that both finish, each with its own results (the same split, a different model), that
the workspace's ``models/`` and ``reports/`` stay as they were, that ``python -m deepfake experiments``
lists both, and that a direct ``dvc exp run`` in the workspace with the same values trains the same
model byte for byte (training on a CPU is deterministic).

The environment is a plain shell's: no activated environment, no ``DEEPFAKE_PYTHON``; DVC's workers
start ``dvc`` from ``PATH``, which holds it (as a global install would) and no other tool of the
project's environment. The stage commands then find the interpreter through the queuing workspace's
``.venv`` (``bin/python``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_user_path import DVC, VENV, run

from deepfake.pipeline import explore, sandbox

pytestmark = pytest.mark.slow

#: The two experiments: name and learning rate (the default is 0.001).
RATES = {"lr-a": 0.003, "lr-b": 0.0003}
#: Hard limit for both to finish (each runs check_params, inventory, preprocess, split and train on 48
#: images; 3 to 7 minutes together on 2 CPU cores shared with other work), and the polling interval.
QUEUE_SECONDS = 1500
POLL_SECONDS = 10


def _hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under the workspace's models/ and reports/."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in ("models", "reports")
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


def _states(root: Path, env: dict[str, str]) -> dict[str, str]:
    """Each experiment's state as DVC records it (``dvc exp show --json``)."""
    proc = subprocess.run(
        [DVC, "exp", "show", "--json"], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    table = explore.experiments_frame(json.loads(proc.stdout))
    if table.empty:
        return {}
    exps = table[table["kind"] == "experiment"]
    return dict(zip(exps["experiment"], exps["state"]))


def _wait(root: Path, env: dict[str, str]) -> dict[str, str]:
    """Poll until every experiment has finished or failed; fail the test after QUEUE_SECONDS."""
    deadline = time.monotonic() + QUEUE_SECONDS
    while time.monotonic() < deadline:
        states = _states(root, env)
        if set(states) == set(RATES) and set(states.values()) <= {"success", "failed"}:
            return states
        time.sleep(POLL_SECONDS)
    pytest.fail(f"queued experiments still not finished after {QUEUE_SECONDS} s: {_states(root, env)}")


def _at(root: Path, ref: str, path: str) -> str:
    """A file of an experiment's commit."""
    return subprocess.run(
        ["git", "show", f"{ref}:{path}"], cwd=root, check=True, capture_output=True, text=True, timeout=60
    ).stdout


def _outs(lock: str, stage: str) -> dict[str, str]:
    """The MD5 DVC recorded of each output of ``stage`` in a ``dvc.lock``."""
    return {o["path"]: o["md5"] for o in yaml.safe_load(lock)["stages"][stage]["outs"]}


@pytest.fixture()
def workspace(tmp_path):
    """A clone-like copy of the repository (tiny settings), its dataset in data/raw, its .venv, and a
    plain shell's environment with ``dvc`` on PATH."""
    if not (VENV / ".deepfake-installed").is_file():
        pytest.skip(f"{VENV} was not installed by make install")
    root = tmp_path / "deepfake"
    root.mkdir()
    sandbox.copy_repository(root, sandbox.TINY_PROJECT)
    (root / ".venv").symlink_to(VENV)  # where make install puts it; git-ignored: not in the experiments' copies
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "dvc").symlink_to(DVC)
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPFAKE_ROOT", "DEEPFAKE_PYTHON", "VIRTUAL_ENV")}
    env.update(
        PATH=os.pathsep.join(
            [str(tools), *(p for p in env.get("PATH", "").split(os.pathsep) if p != str(VENV / "bin"))]
        ),
        PYTHONPATH="",
        DVC_NO_ANALYTICS="1",
        MPLBACKEND="Agg",
        TQDM_DISABLE="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
    )
    run([sys.executable, "-m", "deepfake", "synth"], root, env)  # data/raw: 48 images, git-ignored
    return root, env


def test_two_queued_experiments_run_at_once_each_with_its_own_results(workspace):
    root, env = workspace
    before = _hashes(root)
    assert not (root / "models").exists()
    for name, lr in RATES.items():
        run([DVC, "exp", "run", "--queue", "-n", name, "-S", f"train.lr={lr}", "train"], root, env)
    assert _states(root, env) == {name: "queued" for name in RATES}
    try:
        run([DVC, "queue", "start", "-j", "2"], root, env)
        states = _wait(root, env)
    finally:
        subprocess.run([DVC, "queue", "stop", "--kill"], cwd=root, env=env, capture_output=True, timeout=120)
    if states != {name: "success" for name in RATES}:
        logs = {n: run([DVC, "queue", "logs", n], root, env)[-3000:] for n, s in states.items() if s != "success"}
        pytest.fail(f"states {states}; logs of the failed ones:\n{logs}")

    # the workspace is as it was: DVC ran both in its own copies and applied nothing
    assert _hashes(root) == before and not (root / "models").exists()
    status = run(["git", "status", "--porcelain"], root, env).splitlines()
    assert [line for line in status if line != "?? .venv"] == []

    # each experiment's commit holds its own results: the same split of the same dataset, its own model
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], root, env).split()
    ref = {name: next(r for r in refs if r.endswith(f"/{name}")) for name in RATES}
    lock = {name: _at(root, ref[name], "dvc.lock") for name in RATES}
    metrics = {name: json.loads(_at(root, ref[name], "reports/train/metrics.json")) for name in RATES}
    for name, lr in RATES.items():
        assert yaml.safe_load(_at(root, ref[name], "params.yaml"))["train"]["lr"] == lr
    assert _outs(lock["lr-a"], "preprocess") == _outs(lock["lr-b"], "preprocess")
    assert _outs(lock["lr-a"], "split") == _outs(lock["lr-b"], "split")
    assert _outs(lock["lr-a"], "train")["models"] != _outs(lock["lr-b"], "train")["models"]
    assert metrics["lr-a"]["best_val_loss"] != metrics["lr-b"]["best_val_loss"]

    # python -m deepfake experiments lists both, finished, with their learning rates
    listed = run([sys.executable, "-m", "deepfake", "experiments"], root, env)
    rows = {line.split()[0]: line.split() for line in listed.splitlines() if line.split()[:1] in (["lr-a"], ["lr-b"])}
    assert set(rows) == set(RATES) and all(row[1] == "success" for row in rows.values())
    assert all(f"{lr:g}" in rows[name] for name, lr in RATES.items())
    assert "2 experiment(s) (2 success)" in listed and "params that differ: train.lr" in listed

    # the same values run directly in the workspace (from lr-b's results: only training runs) give
    # lr-a's model byte for byte, and its metrics
    run([DVC, "exp", "apply", "lr-b"], root, env)
    out = run([DVC, "exp", "run", "-S", f"train.lr={RATES['lr-a']}", "train"], root, env)
    assert "Stage 'preprocess' didn't change, skipping" in out and "Stage 'split' didn't change, skipping" in out
    assert _outs((root / "dvc.lock").read_text(), "train") == _outs(lock["lr-a"], "train")
    assert json.loads((root / "reports/train/metrics.json").read_text()) == metrics["lr-a"]
