"""A long clip streamed batch by batch with its audio context, on the live server: the mel windows
the served audio_features steps compute equal those of the whole clip, and a bad context sent to
an avatar is refused by name before anything runs."""

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from synctalk_client import CompositeBatchRequest, synthetic
from synctalk_common import contract
from synctalk_common.messages import audio_context_rows
from tests.e2e.one_frame_avatar import one_frame_avatar
from tests.e2e.test_pipeline import make_request, raw_infer, triton  # noqa: F401  (fixture)

SPF = contract.SAMPLES_PER_FRAME
C = contract.AUDIO_CONTEXT_SAMPLES
AVATAR = "streamer"


@pytest.fixture(scope="module")
def avatar(server, tmp_path_factory):
    """An avatar (the audio context is an avatar ensemble's optional input), removed afterwards."""
    with one_frame_avatar(server, tmp_path_factory, AVATAR) as avatar_id:
        yield avatar_id


def served_windows(triton, audio, context=None):
    arrays = {contract.AUDIO.name: audio}
    if context is not None:
        arrays[contract.AUDIO_CONTEXT.name], arrays[contract.AUDIO_CONTEXT_LENGTH.name] = context
    (windows,) = raw_infer(triton, contract.AUDIO_FEATURES_MODEL, arrays, [contract.MEL_WINDOWS.name])
    return windows


def test_served_chunked_windows_equal_the_whole_clip(triton):
    n = 30
    clip = synthetic.speech_like_audio(n, seed=11)
    whole = served_windows(triton, clip.reshape(n, SPF))
    chunks, bare = [], []
    for start, size in ((0, 8), (8, 8), (16, 8), (24, 6)):
        first, last = start * SPF, (start + size) * SPF
        audio = clip[first:last].reshape(size, SPF)
        rows = audio_context_rows(audio, clip[max(0, first - C) : first], clip[last : last + C])
        chunks.append(served_windows(triton, audio, rows))
        bare.append(served_windows(triton, audio))
    chunked, bare = np.concatenate(chunks), np.concatenate(bare)
    assert chunked.shape == whole.shape == (n, 1, 80, 16)
    assert np.abs(chunked - whole).max() < 1e-4
    assert np.abs(bare - whole).max() > 1.0  # without the context the batch edges differ


def test_the_client_sends_the_context_through_the_ensemble(avatar, client):
    clip = synthetic.speech_like_audio(12, seed=3)
    crops = synthetic.face_crops(4, seed=3)
    request = CompositeBatchRequest.from_arrays(
        avatar,
        crops,
        synthetic.masked(crops),
        clip[4 * SPF : 8 * SPF],
        start_frame_idx=4,
        audio_context_before=clip[: 4 * SPF],
        audio_context_after=clip[8 * SPF :],
    )
    assert request.has_audio_context
    response = client.infer_batch_composite(request).raise_for_error()
    assert len(response.composited_frames) == 4
    # the reference ensemble has no context input: the client leaves it out
    request.model_id = contract.DEFAULT_MODEL_ID
    assert client.infer_batch_composite(request).success


@pytest.mark.parametrize(
    "lengths,context_value,send,message",
    [
        (
            [[100, 0]],
            0.0,
            "both",
            r"AUDIO_CONTEXT_LENGTH: 100 samples before frame 0; expected 0\.\.8000 in steps of 160",
        ),
        ([[0, 8160]], 0.0, "both", r"AUDIO_CONTEXT_LENGTH: 8160 samples after frame 0"),
        ([[-160, 0]], 0.0, "both", r"AUDIO_CONTEXT_LENGTH: -160 samples before frame 0"),
        ([[160, 160]], np.nan, "both", r"AUDIO_CONTEXT: .* NaN or Inf"),
        ([[160, 160]], 9.0, "both", r"AUDIO_CONTEXT: sample magnitude 9 exceeds 4"),
        ([[160, 160]], 0.0, "context", r"AUDIO_CONTEXT was sent without AUDIO_CONTEXT_LENGTH"),
        ([[160, 160]], 0.0, "lengths", r"AUDIO_CONTEXT_LENGTH was sent without AUDIO_CONTEXT"),
    ],
)
def test_a_bad_context_is_refused_by_name_and_the_server_serves_on(
    avatar, triton, client, lengths, context_value, send, message
):
    request = make_request(1, seed=4, model_id=avatar)
    arrays = {
        contract.VISUAL.name: request.visual_tensor(),
        contract.AUDIO.name: request.audio_tensor(),
        contract.FRAME_INDEX.name: np.zeros((1, 1), np.int64),
    }
    if send in ("both", "context"):
        arrays[contract.AUDIO_CONTEXT.name] = np.full((1, 2, C), context_value, np.float32)
    if send in ("both", "lengths"):
        arrays[contract.AUDIO_CONTEXT_LENGTH.name] = np.array(lengths, np.int32)
    with pytest.raises(InferenceServerException, match=message) as error:
        raw_infer(triton, avatar, arrays, [contract.JPEG.name])
    assert "INVALID_ARG" in str(error.value.status())
    assert client.infer_batch_composite(make_request(1, seed=4, model_id=avatar)).success


def test_served_synctalk2d_front_end_chunked_equals_whole(triton):
    n = 30
    clip = synthetic.speech_like_audio(n, seed=12)

    def served(audio, context=None, first_frame=None):
        arrays = {contract.AUDIO.name: audio}
        if context is not None:
            arrays[contract.AUDIO_CONTEXT.name], arrays[contract.AUDIO_CONTEXT_LENGTH.name] = context
        if first_frame is not None:
            arrays[contract.FRAME_INDEX.name] = first_frame + np.arange(len(audio), dtype=np.int64)[:, None]
        return raw_infer(
            triton,
            contract.SYNCTALK2D_AUDIO_FEATURES_MODEL,
            arrays,
            [contract.MEL_NEIGHBOURS.name, contract.NEIGHBOUR_MASK.name],
        )

    whole, whole_mask = served(clip.reshape(n, SPF))
    assert whole.shape == (n, 16, 1, 80, 16) and whole_mask.shape == (n, 16)
    assert (
        whole_mask[0].tolist() == [0] * 8 + [1] * 8 and whole_mask[-1].tolist() == [1] * 8 + [0] * 8
    )  # N = 27: frame 29's rows past P + 1 = 28 are zero
    parts, masks = [], []
    for start, size in ((0, 7), (7, 16), (23, 7)):
        first, last = start * SPF, (start + size) * SPF
        audio = clip[first:last].reshape(size, SPF)
        rows = audio_context_rows(audio, clip[max(0, first - C) : first], clip[last : last + C])
        windows, mask = served(audio, rows, first_frame=start)
        parts.append(windows)
        masks.append(mask)
    assert np.array_equal(np.concatenate(masks), whole_mask)
    assert np.abs(np.concatenate(parts) - whole).max() < 2e-3
