"""Short-lived TURN credentials: the TURN REST convention, which coturn checks with
``use-auth-secret`` and ``static-auth-secret``.

The operator gives the TURN server and this service one shared secret (``--turn-secret-file``,
``SYNCTALK_TURN_SECRET_FILE`` or ``SYNCTALK_TURN_SECRET``; in Kubernetes a Secret mounted as a
file). The secret never leaves this process: each page that asks (``GET /webrtc/config``) and each
peer this server opens gets a credential of its own::

    username   = "<expiry, Unix seconds>:<a random session name>"
    credential = base64(HMAC-SHA1(secret, username))

The TURN server recomputes the credential from the username and the secret, and refuses it once
the expiry has passed, so a credential copied from a page is worth ``ttl_s`` at most, and nothing
a visitor sees lets them mint another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SECRET_ENVIRONMENT = "SYNCTALK_TURN_SECRET"
SECRET_FILE_ENVIRONMENT = "SYNCTALK_TURN_SECRET_FILE"
TURN_URLS_ENVIRONMENT = "SYNCTALK_TURN_URLS"
DEFAULT_TTL_S = 600


def rest_credential(secret: bytes, expiry: int, name: str) -> tuple[str, str]:
    """(username, credential) of the TURN REST convention for ``name``, valid until ``expiry``."""
    username = f"{int(expiry)}:{name}"
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


@dataclass
class TurnCredentials:
    """Mints credentials for ``urls`` (``turn:`` / ``turns:`` URLs of one TURN service) with
    ``secret``, each valid for ``ttl_s``."""

    urls: list[str]
    secret: bytes = field(repr=False)
    ttl_s: int = DEFAULT_TTL_S
    now: Callable[[], float] = time.time

    def __post_init__(self):
        if not self.urls or not all(url.startswith(("turn:", "turns:")) for url in self.urls):
            raise ValueError(f"--turn: turn:HOST:PORT or turns:HOST:PORT URLs, got {self.urls!r}")
        if len(self.secret) < 16:
            raise ValueError("the TURN secret is shorter than 16 bytes: make a long random one (openssl rand -hex 32)")
        if not 30 <= self.ttl_s <= 7 * 86_400:
            raise ValueError(f"--turn-ttl must be 30 s .. 7 days, got {self.ttl_s}")

    def ice_server(self) -> dict:
        """An RTCIceServer (JSON) with a credential of its own."""
        username, credential = rest_credential(self.secret, int(self.now()) + self.ttl_s, secrets.token_hex(6))
        return {"urls": list(self.urls), "username": username, "credential": credential}


def read_secret(path: str | None, environ: dict | None = None) -> bytes | None:
    """The shared secret: ``path`` (``--turn-secret-file``), else the file ``SYNCTALK_TURN_SECRET_FILE``
    names, else ``SYNCTALK_TURN_SECRET``; None when none is given. Surrounding white space is not
    part of it (coturn's ``static-auth-secret`` is the same text)."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(SECRET_FILE_ENVIRONMENT)
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"the TURN secret file {path}: {exc.strerror}") from None
    else:
        text = environ.get(SECRET_ENVIRONMENT, "")
    return text.strip().encode() or None


def turn_credentials(
    urls: list[str] | None, secret_file: str | None, ttl_s: int = DEFAULT_TTL_S, environ: dict | None = None
) -> TurnCredentials | None:
    """``--turn URL`` values (else ``SYNCTALK_TURN_URLS``, comma-separated) with the shared secret
    (``turn.read_secret``): None when neither is given; ValueError when one comes without the other."""
    environ = os.environ if environ is None else environ
    urls = urls or [url for url in environ.get(TURN_URLS_ENVIRONMENT, "").split(",") if url.strip()]
    secret = read_secret(secret_file, environ)
    if not urls and secret is None:
        return None
    if not urls or secret is None:
        raise ValueError("a TURN service needs both its URLs (--turn) and the shared secret (--turn-secret-file)")
    return TurnCredentials([url.strip() for url in urls], secret, ttl_s)


def add_turn_arguments(parser) -> None:
    """``--turn``, ``--turn-secret-file``, ``--turn-ttl`` (the WebRTC service's and the page's)."""
    parser.add_argument(
        "--turn",
        action="append",
        help="a TURN service's URL, turn:HOST:3478?transport=udp or turns:HOST:443?transport=tcp (repeatable; "
        f"else {TURN_URLS_ENVIRONMENT}): each page and peer gets a short-lived credential",
    )
    parser.add_argument(
        "--turn-secret-file",
        help=f"the TURN service's shared secret (coturn's static-auth-secret; else {SECRET_FILE_ENVIRONMENT} "
        f"or {SECRET_ENVIRONMENT}): never sent to a browser",
    )
    parser.add_argument(
        "--turn-ttl", type=int, default=DEFAULT_TTL_S, help=f"seconds a credential lives (default {DEFAULT_TTL_S})"
    )
