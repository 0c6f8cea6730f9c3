"""The server's API key on the client side: where it comes from and how it travels (standard
library only). Triton's restricted APIs (``contract.RESTRICTED_APIS``) answer only calls that
carry it; ``ops/synctalk_ops/api_key.py`` is the server side."""

from __future__ import annotations

import os

from synctalk_common import contract


def api_key_from_environment(api_key: str | None = None) -> str | None:
    """The API key to send: ``api_key`` where given ("" for none), else ``SYNCTALK_API_KEY``, else
    the content of the file ``SYNCTALK_API_KEY_FILE`` names."""
    if api_key is not None:
        return api_key or None
    if os.environ.get(contract.API_KEY_ENV):
        return os.environ[contract.API_KEY_ENV].strip()
    path = os.environ.get(contract.API_KEY_FILE_ENV)
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    return None


def api_key_headers(api_key: str | None) -> dict[str, str] | None:
    """The gRPC metadata that carries the key to Triton's restricted APIs."""
    return {contract.GRPC_API_KEY_HEADER: api_key} if api_key else None
