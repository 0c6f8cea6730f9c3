"""The server's API key: what a caller must send to use Triton's restricted APIs
(``contract.RESTRICTED_APIS``: model control, shared memory, logging, trace).

    python -m synctalk_ops.api_key --install       # create this checkout's key (once), print its file
    python -m synctalk_ops.api_key --server-args   # the tritonserver flags for the key in the environment

Every launcher restricts those APIs: ``synctalk_ops.serve`` (``make serve``, the tests, the demo, the
benchmarks) with this checkout's key, generated once per install into ``build/secrets/api_key``
(a file only its owner can read); the container's entrypoint with ``SYNCTALK_API_KEY`` (compose)
or ``SYNCTALK_API_KEY_FILE`` (Kubernetes: a Secret mounted as a file). Clients send it:
``CompositeClient(api_key=...)``, ``SYNCTALK_API_KEY`` or ``SYNCTALK_API_KEY_FILE``; the project's
tools read this checkout's file where neither is set.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path

from synctalk_build import paths
from synctalk_client.credentials import api_key_from_environment
from synctalk_common import contract

KEY_FILE = paths.BUILD / "secrets" / "api_key"
# Triton splits the flag's value at ':' and '=' and the APIs at ',': a key is URL-safe base64
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,}")


class ApiKeyError(ValueError):
    """No usable key."""


def check(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise ApiKeyError(
            "an API key is at least 16 characters of A-Z, a-z, 0-9, '_' and '-' "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))' makes one)"
        )
    return key


def install_key(path: Path = KEY_FILE) -> str:
    """This checkout's key: created once (32 random bytes, URL-safe), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return check(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        key = secrets.token_urlsafe(32)
        f.write(key + "\n")
    return key


def read_key(path: Path = KEY_FILE) -> str | None:
    """The key a tool of this checkout sends: ``SYNCTALK_API_KEY``, ``SYNCTALK_API_KEY_FILE``, else
    this checkout's key file where it exists."""
    key = api_key_from_environment()
    if key is None and path.is_file():
        key = path.read_text().strip() or None
    return key


def key_file_of(key: str, path: Path = KEY_FILE) -> Path:
    """A file holding ``key``: this checkout's where it holds that key, else a private temporary
    one (a key from ``SYNCTALK_API_KEY``), so that child processes get a file, not the key."""
    if path.is_file() and path.read_text().strip() == key:
        return path
    import tempfile

    fd, name = tempfile.mkstemp(prefix="synctalk-api-key-")  # mode 0600
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return Path(name)


def server_args(key: str) -> list[str]:
    """tritonserver's flags restricting ``contract.RESTRICTED_APIS`` to callers sending ``key``:
    the HTTP header ``synctalk-api-key``, gRPC metadata ``triton-grpc-protocol-synctalk-api-key``
    (Triton prefixes the gRPC one itself)."""
    restriction = f"{','.join(contract.RESTRICTED_APIS)}:{contract.API_KEY_HEADER}={check(key)}"
    return [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--install", action="store_true", help="create this checkout's key; print its file")
    group.add_argument(
        "--server-args",
        action="store_true",
        help=f"print tritonserver's flags (one a line) for {contract.API_KEY_ENV} or {contract.API_KEY_FILE_ENV}",
    )
    args = parser.parse_args(argv)
    try:
        if args.install:
            install_key()
            print(KEY_FILE)
            return 0
        key = api_key_from_environment()
        if key is None:
            raise ApiKeyError(
                f"set {contract.API_KEY_ENV} or {contract.API_KEY_FILE_ENV}: this server will not start with "
                "model control and shared memory open to every client"
            )
        print("\n".join(server_args(key)))
        return 0
    except (ApiKeyError, OSError) as exc:
        print(f"api_key: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
