#!/usr/bin/env python3
"""Run the shell commands of the README and of docs/ as written, in a fresh clone, as a new user would.

Every line of every ```bash block is run in order, in a `git clone` of this checkout, with no
environment activated (the PATH of a new shell): README.md first, then docs/*.md sorted by
name, one clone for all of them (a page's commands see what the earlier pages did). Then the
DVC commands among them once more, each once, from an activated environment. The slow ones run
on a tiny configuration: the clone's params.yaml is shrunk first (a 96-image dataset, one
epoch, few bootstrap replicates). Placeholders (a dataset path, photo.jpg, clips/) are replaced
by small real inputs. Lines in SKIP are not run, and the reason is printed: `make test` is the
command CI itself runs, so it is not run again here.

The clone's environment reuses the installed packages of ENV (default: ./.venv) through a .pth
file, so `make repro`'s install step runs for real but downloads nothing.

    .venv/bin/python .ci/readme_commands.py [--env .venv] [--keep] [--uncommitted]

Exits non-zero when any command fails, printing its output.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Lines not run, with the reason (printed).
SKIP = {
    "make test-slow": "the slow tests, which CI runs itself (.ci/run)",
    "make test-all": "make test and make test-slow in one session, which CI runs itself (.ci/run)",
    "make test": "the command CI runs itself (.ci/run)",
    "make lint": "part of make test, which CI runs itself (.ci/run)",
    "make install TORCH_INDEX=": "CI cannot reach PyTorch's wheel index; it installs PyPI's wheels (plain make)",
    "torchrun": "several processes: tests/test_distributed.py runs the same under torchrun",
    # a lab's remote: tests/test_remote.py runs these commands against moto's S3 server on 127.0.0.1
    "make remote-": "needs a lab's remote: tests/test_remote.py runs it against moto's S3 server",
    "make push": "needs a lab's remote: tests/test_remote.py runs it against moto's S3 server",
    "make pull": "needs a lab's remote: tests/test_remote.py runs it against moto's S3 server",
    ".venv/bin/dvc remote modify --local": "a lab's credentials: tests/test_remote.py sets moto's",
    "git clone": "the lab's repository: CI runs these commands in its own clone",
    ".venv/bin/dvc add data/raw": "opt-in: a lab's real dataset through the remote",
    "git add data/raw.dvc": "opt-in: a lab's real dataset through the remote",
}

#: The tiny configuration: the same stages and settings, a smaller dataset and run.
TINY = {
    "synth": {"n_identities": 48, "images_per_identity": 1, "image_size": 48, "family_size": 2},
    "preprocess": {"size": 48},
    "train": {"epochs": 1, "image_size": 48, "batch_size": 8},
    "evaluate": {
        "bootstrap": 50,
        "latency_images": 3,
        "robust_jpeg": "50",
        "robust_blur": "1",
        "robust_downscale": "0.5",
        "robust_resize": "64",
    },
}


def pages(root: Path) -> list[Path]:
    """The pages whose commands run, in the order they run: README.md, then docs/*.md by name."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def bash_commands(*files: Path) -> list[str]:
    """The command lines of the ```bash blocks of ``files``, in order, comments stripped.

    A line ending in a backslash continues on the next one; ``bash_commands(*pages(root))``
    gives every command this script runs (before SKIP and placeholders).
    """
    lines: list[str] = []
    for file in files:
        inside, pending = False, ""
        for raw in file.read_text().splitlines():
            text = raw.strip()
            if text.startswith("```"):
                inside, pending = text == "```bash", ""
                continue
            if not inside or (not pending and (not text or text.startswith("#"))):
                continue
            text = pending + re.sub(r"\s+#\s.*$", "", text).strip()
            if text.endswith("\\"):
                pending = text[:-1].rstrip() + " "
                continue
            pending = ""
            lines.append(text)
    return lines


def skip_reason(cmd: str) -> str | None:
    """Why ``cmd`` is not run (``SKIP``), or None."""
    return next((why for start, why in SKIP.items() if cmd.startswith(start)), None)


def shrink_params(params: Path) -> None:
    import yaml

    values = yaml.safe_load(params.read_text())
    for section, changes in TINY.items():
        values[section].update(changes)
    params.write_text(yaml.safe_dump(values, sort_keys=False))


def _purelib(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip())


def clone_env(env: Path, clone: Path) -> None:
    """A virtual environment in the clone that sees ``env``'s packages (nothing downloaded)."""
    subprocess.run([sys.executable, "-m", "venv", str(clone / ".venv")], check=True)
    site, own = _purelib(env / "bin" / "python"), _purelib(clone / ".venv" / "bin" / "python")
    (own / "_shared_env.pth").write_text(f"{site}\n")
    # console scripts (dvc, papermill, jupyter, ...) of the shared environment, run by this one's python
    py = clone / ".venv" / "bin" / "python"
    for script in (env / "bin").iterdir():
        target = clone / ".venv" / "bin" / script.name
        if target.exists() or not script.is_file():
            continue
        head = script.read_bytes()[:200]
        if head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]:
            body = script.read_text().split("\n", 1)[1]
            target.write_text(f"#!{py}\n{body}")
            target.chmod(0o755)


def run(cmd: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default=str(ROOT / ".venv"), help="an installed environment to reuse")
    ap.add_argument("--keep", action="store_true", help="keep the clone (printed)")
    ap.add_argument(
        "--uncommitted", action="store_true", help="also copy the checkout's uncommitted changes into the clone"
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="readme-check-"))
    clone = work / "deepfake"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    if args.uncommitted:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        for rel in filter(None, listed.split("\0")):
            src, dst = ROOT / rel, clone / rel
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            elif not src.exists():
                dst.unlink(missing_ok=True)
    shrink_params(clone / "params.yaml")
    clone_env(Path(args.env).resolve(), clone)

    # inputs for the placeholders
    inputs = work / "inputs"
    subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-m", "deepfake", "synth", "--out", str(inputs / "dataset"),
         "--n-identities", "40", "--images-per-identity", "1", "--image-size", "48"],
        cwd=clone, check=True, capture_output=True,
    )  # fmt: skip
    (inputs / "clips").mkdir()
    shutil.copy(next((inputs / "dataset" / "fake").glob("*.jpg")), clone / "photo.jpg")
    shutil.copy(next((inputs / "dataset" / "real").glob("*.jpg")), inputs / "clips" / "a.jpg")
    placeholders = {"/path/to/dataset": str(inputs / "dataset"), "clips/": str(inputs / "clips") + "/"}

    plain = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "DEEPFAKE_PYTHON")}
    plain["PATH"] = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if not p.startswith(str(Path(args.env).resolve()))
    )
    plain["PYTHONPATH"] = ""
    failures = 0
    plan: list[tuple[str, str]] = []  # (page, command)
    for file in pages(clone):
        plan += [(file.relative_to(clone).as_posix(), c) for c in bash_commands(file)]
    commands = [c for _, c in plan]
    activated = [c for c in commands if c.startswith(".venv/bin/dvc ") and " exp run" not in c and not skip_reason(c)]
    plan += [
        ("activated environment", "source .venv/bin/activate && " + c.removeprefix(".venv/bin/"))
        for c in dict.fromkeys(activated)  # each once, in order
    ]
    shown = None
    for page, cmd in plan:
        if page != shown:
            print(f"== {page}", flush=True)
            shown = page
        skip = skip_reason(cmd)
        if skip:
            print(f"skip  {cmd}\n      ({skip})", flush=True)
            continue
        for key, value in placeholders.items():
            cmd = cmd.replace(key, value)
        code, out, seconds = run(cmd, clone, plain)
        print(f"{'ok   ' if code == 0 else 'FAIL '} {cmd}  [{seconds:.0f} s]", flush=True)
        if code != 0:
            failures += 1
            print("\n".join("      " + line for line in out.strip().splitlines()[-40:]), flush=True)
    print(f"{len(plan)} commands, {failures} failed; clone: {clone}" if args.keep else f"{failures} failed")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
