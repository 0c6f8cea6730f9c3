"""Client-side validation: the reference's messages verbatim, and their categories."""

import numpy as np
import pytest

from synctalk_client import CompositeBatchRequest, CompositeBatchResponse, ValidationError, synthetic
from synctalk_client.errors import ModelNotFoundError, ProcessingError
from synctalk_common import contract


def _request(batch=2, **overrides):
    crops = synthetic.face_crops(batch)
    request = CompositeBatchRequest.from_arrays(
        "demo", crops, synthetic.masked(crops), synthetic.speech_like_audio(batch)
    )
    for key, value in overrides.items():
        setattr(request, key, value)
    return request


def test_a_valid_request_passes():
    _request().validate()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model_id": ""}, "modelId cannot be empty"),
        ({"visual_frames": b"\0" * 100}, f"visual frames size mismatch: got 100, expected {2 * 2457600}"),
        ({"batch_size": 3}, f"visual frames size mismatch: got {2 * 2457600}, expected {3 * 2457600}"),
        ({"raw_audio": b""}, "audio cannot be empty"),
        ({"raw_audio": b"\0" * 4 * 639}, "audio size mismatch"),
        ({"batch_size": 0}, "batch_size must be between 1 and 32, got 0"),
        ({"batch_size": 33}, "batch_size must be between 1 and 32, got 33"),
        ({"sample_rate": 44100}, "sample_rate must be 16000 Hz, got 44100"),
    ],
)
def test_invalid_requests_get_the_reference_messages(overrides, message):
    with pytest.raises(ValidationError) as info:
        _request(**overrides).validate()
    assert str(info.value).startswith(message)
    assert info.value.category == "validation" and info.value.http_status == 400


def test_audio_size_mismatch_names_the_sizes():
    with pytest.raises(ValidationError, match=r"^audio size mismatch: got 2556 bytes, expected 5120"):
        _request(raw_audio=b"\0" * 2556).validate()


def test_non_finite_audio_is_rejected_with_the_field_named():
    audio = synthetic.speech_like_audio(2)
    audio[5] = np.nan
    with pytest.raises(ValidationError, match="raw_audio: 1 of 1280 samples are NaN or Inf"):
        _request(raw_audio=audio.tobytes()).validate()


def test_categories_map_to_the_reference_statuses():
    assert ModelNotFoundError("model not found: x").http_status == 404
    assert ProcessingError("boom").http_status == 500
    response = CompositeBatchResponse.failure(ModelNotFoundError(contract.MSG_MODEL_NOT_FOUND.format(model_id="x")))
    assert not response.success and response.error == "model not found: x" and response.http_status == 404
    with pytest.raises(ModelNotFoundError):
        response.raise_for_error()


def test_the_request_lays_itself_out_as_the_tensors_its_model_id_takes():
    request = _request()
    takes = {contract.VISUAL.name, contract.AUDIO.name}
    tensors = request.tensors(takes)
    assert set(tensors) == takes
    np.testing.assert_array_equal(tensors["VISUAL"], request.visual_tensor())
    np.testing.assert_array_equal(tensors["AUDIO"], request.audio_tensor())
    avatar = {*takes, contract.FRAME_INDEX.name, contract.AUDIO_CONTEXT.name, contract.AUDIO_CONTEXT_LENGTH.name}
    request.start_frame_idx, request.audio_context_before, request.audio_context_after = 7, b"", b"\0" * 4000
    tensors = request.tensors(avatar)
    assert set(tensors) == avatar
    assert tensors["FRAME_INDEX"].ravel().tolist() == [7 + i for i in range(request.batch_size)]
    assert tensors["AUDIO_CONTEXT"].shape == (request.batch_size, 2, contract.AUDIO_CONTEXT_SAMPLES)
    # a model id without VISUAL does not need (or check) the crops
    request.visual_frames = b""
    assert set(request.tensors({contract.AUDIO.name})) == {contract.AUDIO.name}
    with pytest.raises(ValidationError, match="visual frames size mismatch: got 0"):
        request.tensors(takes)


@pytest.mark.parametrize(
    "value, found",
    [
        (float("nan"), "1 of 24 values are NaN or Inf (first at frame 1, index (2, 1, 0))"),
        (float("inf"), "1 of 24 values are NaN or Inf"),
        (-float("inf"), "1 of 24 values are NaN or Inf"),
        (1.5, "values must be BGR scaled to [0, 1]; got min 0, max 1.5 (first at frame 1, index (2, 1, 0))"),
        (-0.5, "got min -0.5, max 1"),
    ],
)
def test_the_server_side_visual_check_finds_one_bad_value_anywhere(value, found):
    """check_visual reads VISUAL twice (min, max) for a good request; one bad value, even the
    last one, still gets its full diagnosis."""
    from synctalk_preprocessing import checks

    visual = np.tile(np.array([0.0, 1.0], np.float32), 12).reshape(2, 3, 2, 2)
    assert checks.check_visual("VISUAL", visual) is None
    assert checks.check_visual("VISUAL", visual[:0]) is None
    visual[1, 2, 1, 0] = value
    assert found in checks.check_visual("VISUAL", visual)
