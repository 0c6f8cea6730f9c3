"""Python client of the SyncTalk Triton ensemble, mirroring the reference's CompositeBatch API.

from synctalk_client import CompositeClient, CompositeBatchRequest
with CompositeClient("127.0.0.1:8001") as client:
    response = client.infer_batch_composite(CompositeBatchRequest.from_arrays("demo", crops, masked, audio))
    response.raise_for_error()
    jpegs = response.composited_frames
"""

from synctalk_client import contract
from synctalk_client.client import CompositeClient
from synctalk_client.errors import CompositeError, ModelNotFoundError, ProcessingError, ValidationError
from synctalk_client.messages import CompositeBatchRequest, CompositeBatchResponse

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
