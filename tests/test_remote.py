"""The shared DVC remote (``deepfake.pipeline.remote``, ``make remote-s3 / push / pull``).

The fast tests check the line that follows DVC's error, and what ``remote add`` refuses. The slow
ones run the user's commands against a real S3 API server on 127.0.0.1 (moto's server mode,
``sandbox.local_s3_server``, credentials checked): ``make repro`` and ``make push`` in one copy of the
repository, then in a ``git clone`` of it ``make pull``, ``dvc status``, ``dvc repro`` (only the
inventory runs) and the predictor with the pulled model; then an unreachable endpoint, wrong
credentials and a missing bucket, each giving DVC's error, our line and a non-zero exit, with
every local file as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_user_path import run

from deepfake.pipeline import remote, sandbox

VENV = Path(sys.executable).parent.parent
#: A command still running after this long is a hang: the test fails with its output.
COMMAND_SECONDS = 300
MAKE_REPRO_SECONDS = 900

# What DVC 3 printed for each fault, against moto's server (dvc-s3 3.3, s3fs, botocore).
DVC_UNREACHABLE = (
    'ERROR: unexpected error - Could not connect to the endpoint URL: "http://127.0.0.1:50845/deepfake/'
    'store/files/md5/cd/2ad7044312a7c9491b303521d8f2d7.dir"'
)
DVC_FORBIDDEN = (
    "ERROR: unexpected error - Forbidden: An error occurred (403) when calling the HeadObject operation: Forbidden"
)
DVC_NO_BUCKET = (
    "ERROR: unexpected error - The specified bucket does not exist: An error occurred (NoSuchBucket) when "
    "calling the ListObjectsV2 operation: The specified bucket does not exist"
)


@pytest.mark.parametrize(
    ("dvc_says", "setting"),
    [
        (DVC_UNREACHABLE, "endpointurl"),
        ("ERROR: failed to connect to s3 (b/x) - Cannot connect to host minio.lab:9000", "endpointurl"),
        (DVC_FORBIDDEN, "access_key_id"),
        ("InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records.", "access_key_id"),
        ("ERROR: unexpected error - Unable to locate credentials", "access_key_id"),
        (DVC_NO_BUCKET, "url s3://BUCKET/PATH"),
        ("ERROR: unexpected error - s3 is supported, but requires 'dvc-s3' to be installed", '".[s3]"'),
        ("ERROR: unexpected error - ssh is supported, but requires 'dvc-ssh' to be installed", '".[ssh]"'),
        ("ERROR: failed to push data to the cloud - config file error: no remote specified.", "make remote-s3"),
        ("ERROR: failed to pull data from the cloud - Checkout failed for following targets:\nmodels", "make push"),
        ("ERROR: unexpected error - [Errno 2] No such file or directory: '/mnt/lab/dvc'", "url"),
    ],
)
def test_each_fault_gets_one_line_naming_the_setting_to_check(dvc_says, setting):
    line = remote.diagnose(dvc_says)
    assert setting in line and "\n" not in line
    assert line != remote.FALLBACK


def test_an_unknown_failure_still_names_the_settings():
    assert remote.diagnose("ERROR: something nobody foresaw") == remote.FALLBACK
    assert all(s in remote.FALLBACK for s in ("url", "endpointurl", "credentials"))


def test_remote_add_refuses_a_password_in_the_url_and_takes_folders_from_the_root(monkeypatch):
    with pytest.raises(remote.RemoteError, match=r"dvc remote modify --local shared password") as e:
        remote.remote_url("ssh://me:secret@host/store")
    assert "secret" not in str(e.value)  # the message would end up in a log
    assert remote.remote_url("s3://lab/deepfake") == "s3://lab/deepfake"
    monkeypatch.setattr(remote.paths, "ROOT", Path("/repo"))
    assert remote.remote_url("../dvc-store") == "/repo/../dvc-store"
    assert remote.remote_url("/mnt/lab/dvc") == "/mnt/lab/dvc"


def test_remote_add_names_the_extra_when_the_plugin_is_missing(monkeypatch, capsys):
    from deepfake.__main__ import main

    monkeypatch.setattr(remote.importlib.util, "find_spec", lambda name: None)
    assert main(["remote", "add", "ssh://me@host/store"]) == 2
    assert 'pip install -e ".[ssh]"' in capsys.readouterr().err
    assert main(["remote", "add", "/mnt/x", "--endpoint", "http://h:9000"]) == 2
    assert "endpointurl is an S3 setting" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# The user's commands against moto's S3 server
# ------------------------------------------------------------------------------------------------


def clone_env(root: Path, home: Path) -> dict[str, str]:
    """The environment of a clone's commands: its own package, no AWS settings of the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("DEEPFAKE_ROOT", None)
    return {
        **env,
        "PYTHONPATH": str(root),  # this clone's package, also in the commands DVC starts
        "DEEPFAKE_PYTHON": sys.executable,
        "DVC_NO_ANALYTICS": "1",
        "MPLBACKEND": "Agg",
        "TQDM_DISABLE": "1",
        "AWS_CONFIG_FILE": str(home / "aws-config"),  # absent: only what the clone's DVC config says
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
    }


def dvc(root: Path, env: dict[str, str], *args: str, ok: bool = True) -> str:
    return run([sys.executable, "-m", "dvc", *args], root, env, ok=ok)


def set_credentials(root: Path, env: dict[str, str], key: str, secret: str) -> None:
    """As a newcomer does: in the clone's git-ignored .dvc/config.local."""
    dvc(root, env, "remote", "modify", "--local", remote.REMOTE, "access_key_id", key)
    dvc(root, env, "remote", "modify", "--local", remote.REMOTE, "secret_access_key", secret)


def snapshot(root: Path) -> dict[str, str]:
    """Every file below the clone's DVC outputs and DVC cache, with its SHA-256."""
    files = {}
    for top in ("models", "cache/faces", ".dvc/cache"):
        for p in sorted((root / top).rglob("*")):
            if p.is_file():
                files[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def probability(root: Path, env: dict[str, str], image: str) -> float:
    """P(fake) of ``image`` by ``python -m deepfake predict`` in the clone ``root`` (its models/best.pt)."""
    cmd = [sys.executable, "-m", "deepfake", "predict", "--json", "--no-progress", image]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=COMMAND_SECONDS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return float(json.loads(proc.stdout)[0]["probability"])


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """moto's S3 server, and a copy of the repository that ran ``make repro`` and ``make push`` to it."""
    if not (VENV / ".deepfake-installed").is_file():
        pytest.skip(f"{VENV} was not installed by make install: make would install it")
    pytest.importorskip("moto.server", reason="moto[server] (the dev extra) runs the S3 API server")
    work = tmp_path_factory.mktemp("remote")
    with sandbox.local_s3_server(buckets=("lab",)) as server:
        first = sandbox.copy_repository(work / "first", sandbox.TINY_PROJECT)
        env = clone_env(first, work)
        make = ["make", f"VENV={VENV}"]
        run([*make, "repro"], first, env, timeout=MAKE_REPRO_SECONDS)
        run([*make, "remote-s3", "URL=s3://lab/deepfake", f"ENDPOINT={server.endpoint}"], first, env)
        set_credentials(first, env, server.access_key_id, server.secret_access_key)
        sandbox.git_commit(first, "results and the shared remote")  # dvc.lock, reports, .dvc/config
        out = run([*make, "push"], first, env)
        yield server, first, env, out, work


@pytest.mark.slow
def test_the_remote_is_committed_without_its_credentials(pushed):
    server, first, _, out, _ = pushed
    assert re.search(r"\d+ files? pushed", out), out
    committed = (first / ".dvc" / "config").read_text()
    assert "url = s3://lab/deepfake" in committed and f"endpointurl = {server.endpoint}" in committed
    assert server.access_key_id not in committed and server.secret_access_key not in committed
    assert server.secret_access_key in (first / ".dvc" / "config.local").read_text()
    tracked = subprocess.run(["git", "ls-files"], cwd=first, capture_output=True, text=True, check=True).stdout
    assert ".dvc/config.local" not in tracked.split()


@pytest.mark.slow
def test_a_fresh_clone_pulls_and_has_the_model_and_a_repro_that_runs_nothing(pushed):
    server, first, first_env, _, work = pushed
    second = sandbox.clone_repository(first, work / "second")
    env = clone_env(second, work)
    set_credentials(second, env, server.access_key_id, server.secret_access_key)
    out = run(["make", f"VENV={VENV}", "pull"], second, env)
    assert "the dataset matches reports/inventory/inventory.csv" in out  # make data: the pulled results' dataset
    assert snapshot(second)["models/best.pt"] == snapshot(first)["models/best.pt"]
    assert (second / "cache" / "faces" / "manifest.csv").read_bytes() == (
        first / "cache" / "faces" / "manifest.csv"
    ).read_bytes()

    status = dvc(second, env, "status")
    changed = re.findall(r"^(\S[^:\n]*):\s*$", status, flags=re.M)
    assert changed == ["inventory"] and "always changed" in status, status  # always_changed, nothing else

    repro = dvc(second, env, "repro")
    assert re.findall(r"Running stage '([^']+)'", repro) == ["inventory"], repro
    for stage in ("check_params", "preprocess", "split", "train", "evaluate", "plots", "benchmark"):
        assert f"Stage '{stage}' didn't change, skipping" in repro
    assert subprocess.run(["git", "status", "--porcelain"], cwd=second, capture_output=True, text=True).stdout == ""

    image = "data/raw/fake/" + sorted(p.name for p in (second / "data/raw/fake").glob("*.jpg"))[0]
    p = probability(second, env, image)
    assert 0.0 <= p <= 1.0
    assert p == probability(first, first_env, image)  # the same model, calibration and crop


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "value", "dvc_says", "ours"),
    [
        ("endpointurl", "http://127.0.0.1:{free_port}", "Could not connect to the endpoint URL", "endpointurl"),
        ("access_key_id", "AKIAWRONGWRONGWRONG", "Forbidden", "refused the credentials"),
        ("url", "s3://no-such-bucket/deepfake", "NoSuchBucket", "the bucket does not exist"),
    ],
)
def test_a_wrong_setting_gives_dvcs_error_our_line_and_deletes_nothing(pushed, setting, value, dvc_says, ours):
    server, first, env, _, _ = pushed
    before = snapshot(first)
    dvc(first, env, "remote", "modify", "--local", remote.REMOTE, setting, value.format(free_port=sandbox.free_port()))
    try:
        out = run([sys.executable, "-m", "deepfake", "remote", "push"], first, env, ok=False)
    finally:
        dvc(first, env, "remote", "modify", "--local", "--unset", remote.REMOTE, setting)
        set_credentials(first, env, server.access_key_id, server.secret_access_key)
    assert "ERROR:" in out and dvc_says in out, out  # DVC's own error
    ours_lines = [line for line in out.splitlines() if line.startswith("deepfake: dvc push failed:")]
    assert len(ours_lines) == 1 and ours in ours_lines[0], out
    assert snapshot(first) == before  # nothing deleted, nothing changed
    assert "in sync" in run([sys.executable, "-m", "deepfake", "remote", "status"], first, env)  # the remote as it was


@pytest.mark.slow
def test_a_failed_pull_in_a_fresh_clone_stops_before_anything_else(pushed):
    server, _, _, _, work = pushed
    third = sandbox.clone_repository(work / "first", work / "third")
    env = clone_env(third, work)
    set_credentials(third, env, "AKIAWRONGWRONGWRONG", server.secret_access_key)
    out = run(["make", f"VENV={VENV}", "pull"], third, env, ok=False)
    assert "deepfake: dvc pull failed: the remote refused the credentials" in out, out
    assert not (third / "data").exists()  # make stopped: the dataset was not rendered
    assert subprocess.run(["git", "status", "--porcelain"], cwd=third, capture_output=True, text=True).stdout == ""


@pytest.mark.slow
def test_a_shared_folder_remote_pushes_and_pulls_and_a_missing_one_is_named(tmp_path):
    """``make remote-dir``'s remote on a tiny DVC repository: what one clone pushes, a clone of it pulls."""
    first, store = tmp_path / "first", tmp_path / "store"
    first.mkdir()
    # this checkout's package, run on the tiny repository (DEEPFAKE_ROOT: where DVC runs)
    env = {**clone_env(first, tmp_path), "PYTHONPATH": str(remote.paths.ROOT), "DEEPFAKE_ROOT": str(first)}
    subprocess.run(["git", "init", "-q"], cwd=first, check=True)
    dvc(first, env, "init", "-q")
    (first / "models").mkdir()
    (first / "models" / "best.pt").write_bytes(os.urandom(4096))
    dvc(first, env, "add", "-q", "models")
    cli = [sys.executable, "-m", "deepfake", "remote"]
    run([*cli, "add", str(store)], first, env)
    sandbox.git_commit(first, "a model and the shared folder")
    assert re.search(r"\d+ files? pushed", run([*cli, "push"], first, env))

    second = tmp_path / "second"
    subprocess.run(["git", "clone", "-q", str(first), str(second)], check=True)
    env2 = {**env, "DEEPFAKE_ROOT": str(second)}
    run([*cli, "pull"], second, env2)
    assert (second / "models" / "best.pt").read_bytes() == (first / "models" / "best.pt").read_bytes()

    dvc(second, env2, "remote", "modify", "--local", remote.REMOTE, "url", str(tmp_path / "unmounted"))
    (second / "models" / "best.pt").unlink()
    shutil.rmtree(second / ".dvc" / "cache")
    out = run([*cli, "pull"], second, env2, ok=False)
    assert "ERROR:" in out and "deepfake: dvc pull failed:" in out, out
    assert "the remote lacks some files" in out.splitlines()[-1] and "url" in out.splitlines()[-1], out
