"""Property-based fuzz of the client's validation and of the server's preprocessing maths
(bounded in examples and time)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from synctalk_client import CompositeBatchRequest, ValidationError
from synctalk_common import contract
from synctalk_preprocessing import checks
from synctalk_preprocessing.audio import MelFrontEnd
from synctalk_preprocessing.compositing import face_to_rgb8

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FRONT_END = MelFrontEnd()


@FUZZ
@given(
    model_id=st.text(max_size=8),
    batch=st.integers(min_value=-3, max_value=40),
    visual_len=st.integers(min_value=0, max_value=3 * contract.VISUAL_FRAME_BYTES),
    audio_len=st.integers(min_value=0, max_value=3 * contract.AUDIO_FRAME_BYTES + 7),
    rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
)
def test_client_validation_accepts_exactly_the_well_formed(model_id, batch, visual_len, audio_len, rate):
    request = CompositeBatchRequest(model_id, b"\0" * visual_len, b"\0" * audio_len, batch, sample_rate=rate)
    well_formed = (
        bool(model_id)
        and 1 <= batch <= 32
        and visual_len == batch * contract.VISUAL_FRAME_BYTES
        and audio_len == batch * contract.AUDIO_FRAME_BYTES
        and rate == 16000
    )
    try:
        request.validate()
        assert well_formed
    except ValidationError as error:
        assert not well_formed and error.category == "validation" and error.message


@FUZZ
@given(batch=st.integers(1, 4), data=st.data())
def test_client_validation_rejects_any_non_finite_audio(batch, data):
    audio = data.draw(
        arrays(
            np.float32, batch * 640, elements=st.floats(-1, 1, width=32) | st.sampled_from([np.nan, np.inf, -np.inf])
        )
    )
    request = CompositeBatchRequest("demo", b"\0" * batch * contract.VISUAL_FRAME_BYTES, audio.tobytes(), batch)
    finite = bool(np.isfinite(audio).all())
    try:
        request.validate()
        assert finite
    except ValidationError as error:
        assert not finite and error.message.startswith("raw_audio:")


@FUZZ
@given(frames=st.integers(1, 6), data=st.data())
def test_mel_windows_have_the_contract_shape_for_any_finite_audio(frames, data):
    audio = data.draw(arrays(np.float32, (frames, 640), elements=st.floats(-4, 4, width=32)))
    windows = FRONT_END.windows_for_audio(audio)
    assert windows.shape == (frames, 80, 16) and windows.dtype == np.float32
    assert np.isfinite(windows).all()
    assert checks.check_audio("AUDIO", audio) is None


@FUZZ
@given(data=st.data())
def test_value_checks_name_the_tensor_for_any_bad_value(data):
    visual = data.draw(
        arrays(np.float32, (2, 6, 4, 4), elements=st.floats(allow_nan=True, allow_infinity=True, width=32))
    )
    message = checks.check_visual("VISUAL", visual)
    ok = (
        np.isfinite(visual).all()
        and visual.min() >= -checks.VISUAL_TOLERANCE
        and visual.max() <= 1 + checks.VISUAL_TOLERANCE
    )
    assert (message is None) == bool(ok)
    if message:
        assert message.startswith("VISUAL: ") and "frame " in message


@FUZZ
@given(data=st.data())
def test_face_to_rgb8_never_fails_and_stays_in_range(data):
    face = data.draw(
        arrays(np.float32, (1, 3, 5, 7), elements=st.floats(allow_nan=True, allow_infinity=True, width=32))
    )
    rgb = face_to_rgb8(face)
    assert rgb.shape == (1, 5, 7, 3) and rgb.dtype == np.uint8
