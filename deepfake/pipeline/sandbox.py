"""A copy of the repository to run the user's own commands in, and an S3 API server to push to.

The tests and benchmarks of the user's commands (``make repro``, ``dvc exp run``, ``dvc push`` and
``dvc pull``, queued experiments) run them in a copy or a ``git clone`` of this checkout, with
``TINY_PROJECT``'s small ``params.yaml`` and, for a shared remote, moto's S3 server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import paths
from .quick import merge_overrides

#: A tiny but complete ``dvc repro`` (a minute or two on 2 CPU cores, seconds a stage): the tests of
#: the user's own commands and of ``dvc repro`` run the repository's pipeline with these changes to
#: ``params.yaml`` (the tiny dataset, one epoch, few bootstrap draws, one robustness level).
TINY_PROJECT: dict[str, dict[str, Any]] = {
    "base": {"device": "cpu"},
    "synth": {"n_identities": 24, "images_per_identity": 1, "image_size": 48, "family_size": 2},
    "preprocess": {"size": 48, "workers": 1},
    "split": {"val_frac": 0.25, "test_frac": 0.25},
    "train": {"weights": "none", "epochs": 1, "min_epochs": 1, "patience": 0, "image_size": 48, "batch_size": 8},
    "evaluate": {
        "bootstrap": 20,
        "latency_images": 2,
        "robust_jpeg": "50",
        "robust_blur": "",
        "robust_downscale": "",
        "robust_resize": "",
    },
}


#: what ``make install`` reinstalls the environment after (its recipe's prerequisites, Makefile)
INSTALL_INPUTS = ("pyproject.toml", "constraints.txt")


def _age_install_inputs(root: Path) -> None:
    """Old time stamps on :data:`INSTALL_INPUTS` in a copy or clone: ``make`` there must not reinstall
    the environment the tests share (``pip install -e`` would point the package at the copy)."""
    for name in INSTALL_INPUTS:
        os.utime(root / name, (1, 1))


def copy_repository(dest: str | os.PathLike, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    """The checkout's files as they are (committed or not, git-ignored ones left out) in ``dest``, a
    new git repository with one commit, its ``params.yaml`` changed by ``overrides`` (section-wise).
    Its install inputs get old time stamps (:func:`_age_install_inputs`)."""
    import yaml

    root = Path(dest)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=paths.ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for rel in filter(None, listed.split("\0")):
        src = paths.ROOT / rel
        if src.is_file() and not src.is_symlink() and rel != ".venv":
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    _age_install_inputs(root)
    params = merge_overrides(yaml.safe_load((root / "params.yaml").read_text()), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_commit(root, "copy", init=True)
    return root


def clone_repository(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """``git clone`` of ``source`` into ``dest``, as a newcomer makes one; its install inputs get old
    time stamps (:func:`_age_install_inputs`)."""
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True)
    _age_install_inputs(Path(dest))
    return Path(dest)


def git_commit(root: str | os.PathLike, message: str, init: bool = False) -> None:
    """Commit everything git does not ignore in ``root`` (a test's own repository), as a test user."""
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    if init:
        subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], cwd=root, check=True)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class S3Server:
    """An S3 API server on 127.0.0.1 and the one key it accepts."""

    endpoint: str  # http://127.0.0.1:PORT
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"


#: Every S3 action on every resource: the policy of the server's one user.
_ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@contextlib.contextmanager
def local_s3_server(buckets: tuple[str, ...] = ("deepfake",), timeout: float = 60.0) -> Iterator[S3Server]:
    """moto's S3 server (its server mode, which DVC's own S3 tests use) on 127.0.0.1 and a free port,
    as a child process that ends with this one, with ``buckets`` created and credentials checked:
    one IAM user may do anything, and a request signed with any other key is refused
    (``InvalidAccessKeyId``). Stopped on exit; ``TimeoutError`` when it does not answer within
    ``timeout`` seconds. Needs the dev extra (``moto[server]``, ``boto3``)."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # the server ends with its parent even when the parent is killed outright (deepfake.core.lifetime)
    code = (
        "from deepfake.core.lifetime import end_with_parent; end_with_parent(); "
        f"from moto.server import main; main(['-H', '127.0.0.1', '-p', '{port}'])"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this package's folder
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError as e:
                if proc.poll() is not None:
                    raise RuntimeError(f"moto's S3 server exited with status {proc.returncode} on port {port}") from e
                if time.monotonic() > deadline:
                    raise TimeoutError(f"moto's S3 server did not answer on {endpoint} within {timeout:.0f} s") from e
                time.sleep(0.2)
        # set up before authentication is switched on (moto counts requests: none is checked yet)
        session = boto3.session.Session(aws_access_key_id="-", aws_secret_access_key="-", region_name="us-east-1")
        iam = session.client("iam", endpoint_url=endpoint)
        iam.create_user(UserName="lab")
        iam.put_user_policy(UserName="lab", PolicyName="all", PolicyDocument=_ALLOW_ALL)
        key = iam.create_access_key(UserName="lab")["AccessKey"]
        s3 = session.client("s3", endpoint_url=endpoint)
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        # from now on every request is authenticated (moto's /moto-api/reset-auth: no more unchecked requests)
        auth = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(auth, timeout=10).close()
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
