"""Renew the constraints file `make install` takes: resolve ``.[dev]`` afresh and pin what pip chose.

    python .ci/lock.py constraints.txt ["boto3<1.43.118" ...]

pip resolves the package with its dev extras as a fresh environment would (``--ignore-installed``,
``--dry-run``: nothing is installed), for this interpreter and platform; extra arguments are added
to the resolution as requirements. The file keeps its leading comment lines and is replaced only
when pip succeeds, so a failed resolution leaves the tested set in place.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: installed by make itself (pip upgrades itself first) or the project under lock
NOT_PINNED = {"pip", "deepfake"}


def resolve(extra: list[str]) -> dict[str, str]:
    """The distributions pip would install for ``-e .[dev]`` plus ``extra``, by name."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        cmd += ["--report", str(report), "-e", ".[dev]", *extra]
        subprocess.run(cmd, cwd=ROOT, check=True)
        installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"]: item["metadata"]["version"] for item in installs}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    target = Path(argv[0])
    try:
        pins = resolve(argv[1:])
    except subprocess.CalledProcessError as e:
        print(f"lock: pip could not resolve .[dev] (exit {e.returncode}); {target} is unchanged", file=sys.stderr)
        return 1
    header = []
    if target.exists():
        for line in target.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line)
    lines = [f"{name}=={version}" for name, version in sorted(pins.items(), key=lambda kv: kv[0].lower())]
    lines = [line for line in lines if line.split("==")[0].lower() not in NOT_PINNED]
    text = "\n".join(header + lines) + "\n"
    if target.exists() and target.read_text() == text:  # untouched: make does not reinstall for nothing
        print(f"lock: {target} already holds these {len(lines)} versions")
        return 0
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
    print(f"lock: {len(lines)} versions written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
