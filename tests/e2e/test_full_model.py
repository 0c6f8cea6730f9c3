"""The full-size stand-in generator served end to end (one server, few requests: it is slow on CPU)."""
import numpy as np
import pytest
import simplejpeg

from synctalk_client import CompositeBatchRequest, CompositeClient, contract, synthetic

pytestmark = [pytest.mark.e2e, pytest.mark.full_model]


def test_full_model_batch_of_8(full_server):
    crops = synthetic.face_crops(8, seed=3)
    request = CompositeBatchRequest.from_arrays(contract.DEFAULT_MODEL_ID, crops, synthetic.masked(crops), synthetic.speech_like_audio(8, seed=3))
    with CompositeClient(full_server.grpc_url) as client:
        response = client.infer_batch_composite(request).raise_for_error()
    assert len(response.composited_frames) == 8
    frames = [simplejpeg.decode_jpeg(j) for j in response.composited_frames]
    assert all(f.shape == (1080, 1920, 3) for f in frames)
    assert np.std(frames[0]) > 5  # a picture, not a flat field
    assert response.inference_time_ms is not None and response.inference_time_ms > 0
