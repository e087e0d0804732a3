"""Time to a working model: ``dvc pull`` from a shared remote into a fresh clone, against ``make repro``.

One command measures both side by side on this machine and prints the table (markdown)::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_remote.py

1. moto's S3 server on 127.0.0.1 (``deepfake.pipeline.sandbox.local_s3_server``, credentials
   checked), the S3 API a lab's MinIO, Ceph or AWS bucket offers.
2. A copy of this checkout (``sandbox.copy_repository``: a git repository, as a clone is) runs
   ``make repro`` with the environment installed: the default dataset rendered, its inventory,
   every stage. Then ``make remote-s3``, the credentials and ``make push``.
3. A ``git clone`` of that copy, as a newcomer makes it, with the credentials: ``dvc pull``
   (``python -m deepfake remote pull``, the first half of ``make pull``) until the predictor
   answers on a photo (``python -m deepfake predict``, a new process loading the pulled model):
   the time to a working demo. Then ``make data`` (the second half of ``make pull``: the dataset
   rendered and its inventory) and ``dvc repro``, which must run the inventory only: the time to a
   clone whose pipeline is up to date.

``--tiny`` runs the same on the tests' tiny configuration (``sandbox.TINY_PROJECT``): a quick check of
the script, not a measurement. ``--keep`` keeps the copies (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepfake.pipeline import remote, sandbox  # noqa: E402

VENV = Path(sys.executable).parent.parent


def run(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 3600, errors: bool = True
) -> tuple[float, str]:
    """Seconds ``cmd`` took and its output (with its errors unless not ``errors``); stops the script when it fails."""
    t0 = time.perf_counter()
    stderr = subprocess.STDOUT if errors else subprocess.DEVNULL
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode} in {cwd}:\n{proc.stdout[-4000:]}")
    return seconds, proc.stdout


def clone_env(root: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "DEEPFAKE_ROOT"}
    return {
        **env,
        "PYTHONPATH": str(root),
        "DEEPFAKE_PYTHON": sys.executable,
        "DVC_NO_ANALYTICS": "1",
        "MPLBACKEND": "Agg",
        "TQDM_DISABLE": "1",
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
    }


def credentials(root: Path, env: dict[str, str], server: sandbox.S3Server) -> None:
    for key, value in (("access_key_id", server.access_key_id), ("secret_access_key", server.secret_access_key)):
        run([sys.executable, "-m", "dvc", "remote", "modify", "--local", remote.REMOTE, key, value], root, env)


def stored(server: sandbox.S3Server, bucket: str) -> tuple[int, int]:
    """Objects and bytes in ``bucket``."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name=server.region,
    )
    n = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            n, size = n + 1, size + obj["Size"]
    return n, size


def fmt(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny configuration: checks the script only")
    ap.add_argument("--keep", action="store_true", help="keep the copies")
    args = ap.parse_args()
    if not (VENV / ".deepfake-installed").is_file():
        sys.exit(f"{VENV} was not installed by make install: make would install it and the timing would include it")

    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    make = ["make", "--no-print-directory", f"VENV={VENV}"]
    rows: list[tuple[str, float, str]] = []
    load_start = os.getloadavg()
    t_all = time.perf_counter()
    try:
        with sandbox.local_s3_server(buckets=("lab",)) as server:
            source = sandbox.copy_repository(work / "source", sandbox.TINY_PROJECT if args.tiny else None)
            env = clone_env(source, work)
            seconds, out = run([*make, "repro"], source, env)
            ran = re.findall(r"Running stage '([^']+)'", out)
            rows.append(("make repro (a fresh copy, environment installed)", seconds, f"stages run: {', '.join(ran)}"))
            run([*make, "remote-s3", "URL=s3://lab/deepfake", f"ENDPOINT={server.endpoint}"], source, env)
            credentials(source, env, server)
            sandbox.git_commit(source, "results and the shared remote")
            seconds, _ = run([*make, "push"], source, env)
            n, size = stored(server, "lab")
            rows.append(("make push", seconds, f"{n} files, {size / 1e6:.1f} MB on the remote"))

            photo = sorted((source / "data" / "raw" / "fake").glob("*.jpg"))[0]
            t0 = time.perf_counter()
            clone = sandbox.clone_repository(source, work / "newcomer")
            cenv = clone_env(clone, work)
            credentials(clone, cenv, server)
            clone_s = time.perf_counter() - t0
            rows.append(("git clone, credentials", clone_s, ""))
            pull_s, _ = run([sys.executable, "-m", "deepfake", "remote", "pull"], clone, cenv)
            rows.append(("dvc pull (python -m deepfake remote pull)", pull_s, "cache/faces and models"))
            cmd = [sys.executable, "-m", "deepfake", "predict", "--json", "--no-progress", str(photo)]
            predict_s, out = run(cmd, clone, cenv, errors=False)
            p = json.loads(out)[0]["probability"]
            rows.append(("first prediction (python -m deepfake predict, one photo)", predict_s, f"P(fake) = {p:.3f}"))
            demo = clone_s + pull_s + predict_s
            data_s, _ = run([*make, "data"], clone, cenv)
            rows.append(("make data (the dataset rendered, its inventory)", data_s, ""))
            repro_s, out = run([sys.executable, "-m", "dvc", "repro"], clone, cenv)
            ran = re.findall(r"Running stage '([^']+)'", out)
            if ran != ["inventory"]:
                sys.exit(f"dvc repro after the pull ran {ran}, not the inventory alone:\n{out[-4000:]}")
            rows.append(("dvc repro (runs the inventory only)", repro_s, f"stages run: {', '.join(ran)}"))
            up_to_date = demo + data_s + repro_s
    finally:
        if args.keep:
            print(f"copies kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    import torch

    tiny = " (tiny configuration: a check of the script)" if args.tiny else ""
    print(f"## A shared remote: dvc pull against make repro{tiny}\n")
    print(
        f"- Machine: {cpu_name()}, {os.cpu_count()} cores visible, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}; load average "
        f"{load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
        f"whole script {fmt(time.perf_counter() - t_all)}."
    )
    print("- Remote: moto's S3 server on 127.0.0.1 (the S3 API, no network between the clones and the server).\n")
    print("| step | time | notes |")
    print("| --- | ---: | --- |")
    for name, seconds, note in rows:
        print(f"| {name} | {fmt(seconds)} | {note} |")
    repro = rows[0][1]
    print(
        f"\nTo a working demo: {fmt(demo)} (clone, pull, first prediction) against {fmt(repro)} for make repro "
        f"({repro / demo:.1f}x); to a clone whose dvc repro runs nothing but the inventory: {fmt(up_to_date)} "
        f"({repro / up_to_date:.1f}x)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
