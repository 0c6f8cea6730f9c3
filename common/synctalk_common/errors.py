"""Error types, one per error category of the reference service: what the SDK raises and the
server's steps name."""

from __future__ import annotations

from synctalk_common import contract


class CompositeError(Exception):
    """Base class: ``category`` is the reference's error category, ``http_status`` its status."""

    category = contract.CATEGORY_PROCESSING

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @property
    def http_status(self) -> int:
        return contract.HTTP_STATUS[self.category]


class ValidationError(CompositeError):
    """The request is malformed (HTTP 400 in the reference). Never retried."""

    category = contract.CATEGORY_VALIDATION


class ModelNotFoundError(CompositeError):
    """The model id names no ensemble on the server (HTTP 404 in the reference)."""

    category = contract.CATEGORY_MODEL


class ProcessingError(CompositeError):
    """The server failed while processing a valid request (HTTP 500 in the reference)."""

    category = contract.CATEGORY_PROCESSING


class ServerBusyError(CompositeError):
    """The server refused the request for now: a queue of the model id's pipeline is full, or the
    request waited longer than that queue allows (HTTP 503 in the reference's terms). The request
    itself is fine: retry it later (``CompositeClient`` does, ``busy_retries`` times)."""

    category = contract.CATEGORY_BUSY


class PermissionDeniedError(CompositeError):
    """The call needs the server's API key (model control, shared memory): HTTP 403. Never
    retried; set ``SYNCTALK_API_KEY`` (or ``SYNCTALK_API_KEY_FILE``)."""

    category = contract.CATEGORY_PERMISSION


class ServerUnreachableError(ProcessingError):
    """No server answers at the client's URL (connection refused, or still UNAVAILABLE after the
    retries): a processing error in the reference's categories, its message naming the URL."""


BY_CATEGORY = {
    cls.category: cls
    for cls in (ValidationError, ModelNotFoundError, ProcessingError, ServerBusyError, PermissionDeniedError)
}
