"""Python client of the SyncTalk Triton ensemble, mirroring the reference's CompositeBatch API.

from synctalk_client import CompositeBatchRequest, CompositeClient
with CompositeClient("127.0.0.1:8001") as client:
    response = client.infer_batch_composite(CompositeBatchRequest.from_arrays("demo", crops, masked, audio))
    response.raise_for_error()
    jpegs = response.composited_frames
"""

from __future__ import annotations

import importlib

from synctalk_common import contract

# The client classes load on first use, so that ``synctalk_common.contract`` (the tensors, names
# and limits) imports with the standard library alone: the model builders and the GPU check use it
# on hosts without tritonclient.
_LAZY = {
    "CompositeClient": "synctalk_client.client",
    "CompositeError": "synctalk_client.errors",
    "ModelNotFoundError": "synctalk_client.errors",
    "ProcessingError": "synctalk_client.errors",
    "ValidationError": "synctalk_client.errors",
    "CompositeBatchRequest": "synctalk_common.messages",
    "CompositeBatchResponse": "synctalk_common.messages",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'synctalk_client' has no attribute {name!r}")


__all__ = [
    "CompositeBatchRequest",
    "CompositeBatchResponse",
    "CompositeClient",
    "CompositeError",
    "ModelNotFoundError",
    "ProcessingError",
    "ValidationError",
    "contract",
]
