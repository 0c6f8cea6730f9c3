"""The client's "server busy" category: Triton's queue-policy refusals (gRPC UNAVAILABLE with the
queue's message) are ServerBusyError (HTTP 503 in the reference's terms), retried with backoff a
capped number of times within the call's deadline; bad input and unreachable servers are not."""

import pytest
from tritonclient.utils import InferenceServerException

from synctalk_client import CompositeClient
from synctalk_client.client import busy_reason, error_from_exception, is_retryable
from synctalk_client.errors import ServerBusyError, ValidationError
from synctalk_common import contract

FULL = InferenceServerException(f"in ensemble 'demo', {contract.QUEUE_FULL_MESSAGE}", status="StatusCode.UNAVAILABLE")
WAITED = InferenceServerException(contract.QUEUE_TIMEOUT_MESSAGE, status="StatusCode.UNAVAILABLE")
DOWN = InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE")
BAD = InferenceServerException("AUDIO: 1 of 640 samples are NaN", status="StatusCode.INVALID_ARGUMENT")


def test_queue_refusals_are_busy_not_unreachable():
    for exc in (FULL, WAITED):
        assert busy_reason(exc) and not is_retryable(exc)
        error = error_from_exception(exc, "demo")
        assert isinstance(error, ServerBusyError)
        assert (error.category, error.http_status) == (contract.CATEGORY_BUSY, 503)
        assert error.message.startswith("server busy: demo refused the request")
    assert busy_reason(DOWN) is None and is_retryable(DOWN)
    assert isinstance(error_from_exception(BAD, "demo"), ValidationError)


def test_a_refusal_for_want_of_the_api_key_is_a_permission_error_never_retried():
    restricted = InferenceServerException(
        f"This protocol is restricted, expecting header '{contract.GRPC_API_KEY_HEADER}'",
        status="StatusCode.UNAVAILABLE",
    )
    assert busy_reason(restricted) is None and not is_retryable(restricted)
    error = error_from_exception(restricted, "demo")
    assert (error.category, error.http_status) == (contract.CATEGORY_PERMISSION, 403)
    assert error.message.endswith(": set SYNCTALK_API_KEY")


def test_the_doors_refusal_is_busy_with_its_numbers():
    door = contract.MSG_PIPELINE_FULL.format(in_flight=56, capacity=56)
    exc = InferenceServerException(f"in ensemble 'anna', {door}", status="StatusCode.UNAVAILABLE")
    assert error_from_exception(exc, "anna").message == (
        "server busy: anna refused the request (its queue is full: the pipeline holds 56 of its 56 frames in "
        "flight); retry later"
    )


class Scripted(CompositeClient):
    """A client whose calls answer from a script instead of a server."""

    def __init__(self, answers, **kwargs):
        super().__init__("127.0.0.1:1", busy_backoff_s=0.01, **kwargs)
        self.answers, self.timeouts = list(answers), []

    def _call_with_retries(self, model_id, inputs, outputs, timeout_s=None, priority=0, frames=None):
        self.timeouts.append(timeout_s)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_busy_is_retried_with_backoff_then_served():
    with Scripted([FULL, WAITED, "result"], busy_retries=3) as client:
        assert client._call_while_busy("demo", [], [], __import__("time").perf_counter(), 5.0) == "result"
        assert len(client.timeouts) == 3
        assert all(0 < t <= 5.0 for t in client.timeouts)  # each try within what is left of the deadline


def test_busy_retries_are_capped_with_a_clear_last_message():
    import time

    with Scripted([FULL] * 3, busy_retries=2) as client:
        with pytest.raises(
            ServerBusyError, match=r"server busy: demo refused the request \(its queue is full; tried 3"
        ):
            client._call_while_busy("demo", [], [], time.perf_counter(), 5.0)
        assert client.answers == []


def test_bad_input_is_never_retried():
    import time

    with Scripted([BAD, "result"], busy_retries=3) as client:
        with pytest.raises(InferenceServerException, match="NaN"):
            client._call_while_busy("demo", [], [], time.perf_counter(), 5.0)
        assert client.answers == ["result"]


def test_no_retry_past_the_deadline(monkeypatch):
    import time

    from synctalk_client import client as client_module

    monkeypatch.setattr(client_module.random, "uniform", lambda low, high: high)  # the longest pause
    with Scripted([FULL, "result"], busy_retries=5) as client:
        client.busy_backoff_s = 10.0  # the pause would pass the 0.05 s deadline
        with pytest.raises(ServerBusyError):
            client._call_while_busy("demo", [], [], time.perf_counter(), 0.05)
        assert client.answers == ["result"]


def test_an_unknown_or_unloaded_model_is_not_found_wherever_triton_says_so():
    from synctalk_client.errors import ModelNotFoundError

    for exc in (
        InferenceServerException("Request for unknown model: 'nobody' is not found", status="StatusCode.NOT_FOUND"),
        InferenceServerException("requested model 'nobody' is not available", status="StatusCode.INVALID_ARGUMENT"),
    ):
        error = error_from_exception(exc, "nobody")
        assert isinstance(error, ModelNotFoundError) and error.message == "model not found: nobody"
