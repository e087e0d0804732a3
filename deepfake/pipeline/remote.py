"""A shared DVC remote: the face cache and the models pushed once, pulled by every other clone.

``python -m deepfake remote add|push|pull|status`` (and ``make remote-s3``, ``remote-ssh``,
``remote-dir``, ``push``, ``pull``) run DVC itself, in the repository root, and stream its own
output. The remote is ``shared`` (``REMOTE``), the project's default: its URL and, for an S3 API
other than AWS (MinIO, Ceph), its ``endpointurl`` go into the committed ``.dvc/config``, so a
clone finds it; credentials never do (``dvc remote modify --local``: ``.dvc/config.local``,
git-ignored; or the usual AWS variables and files).

When DVC fails, one line of ours follows its error, naming the setting to check
(``diagnose``): an endpoint that cannot be reached (``endpointurl``), credentials the server
refuses, a bucket or folder that does not exist (``url``), a missing plugin (the ``s3`` or ``ssh``
extra), no remote at all, files the remote lacks (push them from the clone that made them). The
command exits with DVC's status. DVC is never asked to force anything: a failed transfer
deletes nothing local.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO
from urllib.parse import urlsplit

from ..core import paths

#: The remote's name in ``.dvc/config`` (the project's default remote).
REMOTE = "shared"
#: URL scheme -> (DVC's plugin module, the package's extra that installs it).
PLUGINS = {"s3": ("dvc_s3", "s3"), "ssh": ("dvc_ssh", "ssh")}
#: Where the settings are explained.
DOC = "docs/remote.md"

#: DVC's error text -> the one line of ours that follows it, first match wins. The patterns are the
#: messages of botocore, s3fs, asyncssh and DVC itself as ``dvc push`` / ``pull`` / ``status -c`` print them.
DIAGNOSES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"requires '?dvc-(\w+)'? to be installed", re.I),
        'DVC lacks the remote\'s plugin: install it with pip install -e ".[{0}]" (make remote-{0} does)',
    ),
    (
        re.compile(r"no remote specified|remote .* doesn't exist", re.I),
        f"no DVC remote is set: add one with make remote-s3 / remote-ssh / remote-dir ({DOC})",
    ),
    (
        re.compile(
            r"InvalidAccessKeyId|SignatureDoesNotMatch|InvalidClientTokenId|AccessDenied|Access Denied|"
            r"Forbidden|\b403\b|Unable to locate credentials|NoCredentialsError|ExpiredToken|"
            r"Permission denied \(publickey|PermissionDenied|Authentication failed|auth.* failed",
            re.I,
        ),
        f"the remote refused the credentials: check access_key_id and secret_access_key (dvc remote modify "
        f"--local {REMOTE} access_key_id ...; or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or profile), "
        f"for SSH the user and key ({DOC})",
    ),
    (
        re.compile(r"NoSuchBucket|bucket .*does not exist|specified bucket does not exist", re.I),
        f"the bucket does not exist: check the remote's url (dvc remote modify {REMOTE} url s3://BUCKET/PATH) "
        f"or create the bucket ({DOC})",
    ),
    (
        re.compile(
            r"Could not connect to the endpoint|EndpointConnectionError|Connect timeout|ConnectTimeout|"
            r"Connection refused|Cannot connect to host|Name or service not known|nodename nor servname|"
            r"Temporary failure in name resolution|Network is unreachable|No route to host|timed out",
            re.I,
        ),
        f"the remote cannot be reached: check its endpointurl (dvc remote modify {REMOTE} endpointurl "
        f"http://HOST:PORT) or, without one, the host in its url, and that the server runs ({DOC})",
    ),
    (
        re.compile(r"missing cache files|failed to pull data from the cloud|cache files do not exist", re.I),
        "the remote lacks some files of this commit: check that its url is the lab's (dvc remote list; a shared "
        "folder must be mounted), or run make push in the clone that produced them, then pull again",
    ),
    (
        re.compile(r"No such file or directory|FileNotFoundError|does not exist", re.I),
        f"the remote's location does not exist: check its url (dvc remote list; dvc remote modify {REMOTE} url ...) "
        f"({DOC})",
    ),
]
#: When no pattern matches.
FALLBACK = f"check the remote's url, endpointurl and credentials (dvc remote list; {DOC})"


class RemoteError(ValueError):
    """A remote setting this command refuses before DVC runs (a URL with a password, a missing plugin)."""


def diagnose(output: str) -> str:
    """The one line naming the setting to check, for DVC's failing ``output``."""
    for pattern, line in DIAGNOSES:
        found = pattern.search(output)
        if found:
            return line.format(*found.groups())
    return FALLBACK


def dvc_command() -> list[str]:
    """DVC of this interpreter's environment (``python -m dvc``: nothing needed on ``PATH``)."""
    return [sys.executable, "-m", "dvc"]


def _forward(stream: IO[str], to: IO[str], kept: list[str]) -> None:
    for line in iter(stream.readline, ""):
        to.write(line)
        to.flush()
        kept.append(line)


def run_dvc(args: Sequence[str], what: str | None = None) -> int:
    """Run ``dvc ARGS`` in the repository root, its output and errors streamed as they come; when it
    fails, print ``diagnose``'s line on stderr and return its exit status (non-zero)."""
    cmd = [*dvc_command(), *args]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    kept: list[str] = []
    pipe = subprocess.PIPE
    with subprocess.Popen(
        cmd, cwd=paths.ROOT, env=env, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            threading.Thread(target=_forward, args=(proc.stdout, sys.stdout, kept), daemon=True),
            threading.Thread(target=_forward, args=(proc.stderr, sys.stderr, kept), daemon=True),
        ]
        for t in readers:
            t.start()
        code = proc.wait()
        for t in readers:
            t.join()
    if code != 0:
        sys.stderr.write(f"deepfake: {what or 'dvc ' + ' '.join(args)} failed: {diagnose(''.join(kept))}\n")
    return code


def remote_url(url: str) -> str:
    """``url`` as DVC's remote takes it: a local folder made absolute, relative ones taken from the
    repository root (DVC would read them from ``.dvc/``); an SSH or S3 URL unchanged, checked to hold
    no password (``RemoteError``)."""
    parts = urlsplit(url)
    if len(parts.scheme) <= 1:  # a path (a Windows drive letter is one character)
        return str(paths.resolve(url))
    if parts.password:
        raise RemoteError(
            f"{parts.scheme}://{parts.username}:***@{parts.hostname}...: a password in the URL would be written to "
            f"the committed .dvc/config; give the URL without it and the password with dvc remote modify --local "
            f"{REMOTE} password ... (or a key)"
        )
    return url


def check_plugin(url: str) -> None:
    """Raise ``RemoteError`` when ``url``'s scheme needs a DVC plugin this environment lacks."""
    scheme = urlsplit(url).scheme
    if scheme in PLUGINS and importlib.util.find_spec(PLUGINS[scheme][0]) is None:
        extra = PLUGINS[scheme][1]
        raise RemoteError(
            f"a {scheme}:// remote needs DVC's plugin {PLUGINS[scheme][0].replace('_', '-')}: "
            f'pip install -e ".[{extra}]" (make remote-{extra} installs it)'
        )


def add_remote(url: str, endpoint: str | None = None) -> int:
    """Make ``url`` the project's default remote ``REMOTE`` (replacing an earlier one), with
    ``endpoint`` as its ``endpointurl`` (an S3 API other than AWS); both in the committed
    ``.dvc/config``. Returns DVC's exit status."""
    target = remote_url(url)
    check_plugin(target)
    if endpoint and urlsplit(target).scheme != "s3":
        raise RemoteError(f"--endpoint {endpoint}: endpointurl is an S3 setting, and {url} is not an s3:// URL")
    code = run_dvc(["remote", "add", "--default", "--force", REMOTE, target], "dvc remote add")
    if code == 0 and endpoint:
        code = run_dvc(["remote", "modify", REMOTE, "endpointurl", endpoint], "dvc remote modify")
    return code


def transfer(action: str, targets: Sequence[str] = (), jobs: int | None = None) -> int:
    """``dvc push`` or ``dvc pull`` (``action``) of ``targets`` (default: every cached output of
    ``dvc.lock``: the face cache, the models), or ``status``: ``dvc status --cloud``."""
    args = ["status", "--cloud"] if action == "status" else [action]
    if jobs:
        args += ["--jobs", str(jobs)]
    return run_dvc([*args, *targets])
