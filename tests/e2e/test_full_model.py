"""The full-size stand-in generator served end to end (one server, few requests: it is slow on CPU)."""

import numpy as np
import pytest
import simplejpeg

from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_common import contract

pytestmark = [pytest.mark.e2e, pytest.mark.full_model]


def test_full_model_batch_of_8(full_server):
    crops = synthetic.face_crops(8, seed=3)
    request = CompositeBatchRequest.from_arrays(
        contract.DEFAULT_MODEL_ID, crops, synthetic.masked(crops), synthetic.speech_like_audio(8, seed=3)
    )
    with CompositeClient(full_server.grpc_url) as client:
        response = client.infer_batch_composite(request).raise_for_error()
    assert len(response.composited_frames) == 8
    frames = [simplejpeg.decode_jpeg(j) for j in response.composited_frames]
    assert all(f.shape == (1080, 1920, 3) for f in frames)
    assert np.std(frames[0]) > 5  # a picture, not a flat field
    assert response.inference_time_ms is not None and response.inference_time_ms > 0


def test_closing_a_client_cancels_its_call_in_flight_and_the_server_serves_on(full_server):
    """What Ctrl-C during ``render`` relies on: a 32-frame batch takes seconds on this model;
    closing the client from another thread ends the blocked call at once, as cancelled."""
    import threading
    import time

    crops = synthetic.face_crops(32, seed=4)
    request = CompositeBatchRequest.from_arrays(
        contract.DEFAULT_MODEL_ID, crops, synthetic.masked(crops), synthetic.speech_like_audio(32, seed=4)
    )
    with CompositeClient(full_server.grpc_url, stage_timings=False) as probe:
        assert probe.infer_batch_composite(request).success  # the first batch of 32 (arena growth)
        started = time.monotonic()
        assert probe.infer_batch_composite(request).success
        uncancelled_s = time.monotonic() - started
    client = CompositeClient(full_server.grpc_url, stage_timings=False)
    on_the_wire, send = threading.Event(), client._triton.infer

    def infer(*args, **kwargs):
        on_the_wire.set()
        return send(*args, **kwargs)

    client._triton.infer = infer
    result = {}
    call = threading.Thread(target=lambda: result.update(response=client.infer_batch_composite(request)))
    call.start()
    assert on_the_wire.wait(timeout=60)
    time.sleep(0.2)
    closed = time.monotonic()
    client.close()
    call.join(timeout=10)
    assert not call.is_alive()
    assert time.monotonic() - closed < 0.5 < uncancelled_s - 0.2, (
        f"the call ran on after close ({uncancelled_s:.1f} s uncancelled)"
    )
    response = result["response"]
    assert not response.success and response.error.startswith("cancelled by the client"), response.error
    assert not client.infer_batch_composite(request).success  # a closed client refuses cleanly
    # the cancelled request's admission ticket lapses with its lease (the ensemble stopped before
    # the step that gives it back): until then the door may refuse a second 32-frame request
    with CompositeClient(full_server.grpc_url, busy_retries=12, busy_backoff_s=0.25) as client:
        response = client.infer_batch_composite(request)
        assert response.success, response.error
