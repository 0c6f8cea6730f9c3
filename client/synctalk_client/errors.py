"""What a Triton error means in the reference's categories (the SDK's rules: busy, retryable,
restricted), and the error types themselves (``synctalk_common.errors``, re-exported here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synctalk_common import contract
from synctalk_common.errors import (  # noqa: F401 - the SDK's error types, as callers import them
    BY_CATEGORY,
    CompositeError,
    ModelNotFoundError,
    PermissionDeniedError,
    ProcessingError,
    ServerBusyError,
    ServerUnreachableError,
    ValidationError,
)

if TYPE_CHECKING:
    from tritonclient.utils import InferenceServerException


RETRYABLE_STATUS = ("StatusCode.UNAVAILABLE",)


def busy_reason(exc: InferenceServerException) -> str | None:
    """Why the server refused a request for now (a queue policy's refusal), or None."""
    message = exc.message() or str(exc)
    if "UNAVAILABLE" not in str(exc.status() or ""):
        return None
    if contract.QUEUE_FULL_MESSAGE in message:  # a model's queue, or the door's gate (with its numbers)
        detail = message.split(contract.QUEUE_FULL_MESSAGE, 1)[1].split(";")[0]
        return "its queue is full" + (detail if detail.startswith(": ") else "")
    if contract.QUEUE_TIMEOUT_MESSAGE in message:
        return "it waited longer than its queue allows"
    if contract.EDGE_FULL_MESSAGE in message:  # refused by the edge before the request's body went anywhere
        return message[message.index(contract.EDGE_FULL_MESSAGE) :].splitlines()[0].strip()  # with its class
    if contract.EDGE_NO_ROOM_MESSAGE in message:  # an avatar on demand, every replica's room in use
        return message[message.index("no replica could load") :].splitlines()[0].strip()
    if contract.EDGE_LOADING_MESSAGE in message:  # an avatar on demand, loading on a replica
        return message[message.index(contract.EDGE_LOADING_MESSAGE) :].splitlines()[0].split(";")[0].strip()
    if contract.EDGE_OVERFLOW_MESSAGE in message:
        return contract.EDGE_FULL_MESSAGE
    return None


def is_restricted(exc: InferenceServerException) -> bool:
    """Triton refused a restricted API for want of the API key (gRPC says UNAVAILABLE)."""
    message = exc.message() or str(exc)
    return any(text in message for text in contract.RESTRICTED_MESSAGES)


def permission_error(api: str, key_sent: bool, exc: InferenceServerException | None = None) -> PermissionDeniedError:
    """The one line a caller without (or with a wrong) API key gets for ``api``; or, where the
    edge refused it (``exc`` says so), that the edge never serves it, key or not."""
    if exc is not None and contract.EDGE_RESTRICTED_MESSAGE in (exc.message() or str(exc)):
        return PermissionDeniedError(contract.MSG_EDGE_RESTRICTED.format(api=api))
    template = contract.MSG_KEY_REFUSED if key_sent else contract.MSG_RESTRICTED
    return PermissionDeniedError(template.format(api=api))


def is_retryable(exc: InferenceServerException) -> bool:
    """The server is not there (yet): restarting, connection refused. Not a refusal for load,
    nor one for want of the API key."""
    return str(exc.status() or "") in RETRYABLE_STATUS and busy_reason(exc) is None and not is_restricted(exc)


def error_from_exception(exc: InferenceServerException, model_id: str) -> CompositeError:
    """Map a Triton error to the reference's categories."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    reason = busy_reason(exc)
    if reason:
        return ServerBusyError(contract.MSG_SERVER_BUSY.format(model_id=model_id, reason=reason))
    if is_restricted(exc):
        return permission_error("this call", key_sent=False, exc=exc)
    # an inference: "Request for unknown model"; a model's config or statistics: INVALID_ARGUMENT
    # "requested model 'x' is not available" (unknown, or not loaded)
    if "NOT_FOUND" in status or "unknown model" in message.lower() or f"model '{model_id}' is not available" in message:
        return ModelNotFoundError(contract.MSG_MODEL_NOT_FOUND.format(model_id=model_id))
    if "INVALID_ARGUMENT" in status:
        return ValidationError(message)
    if "CANCELLED" in status:
        return ProcessingError(f"cancelled by the client: {message}")
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
        return ProcessingError(f"deadline exceeded: {message}")
    return ProcessingError(message)
