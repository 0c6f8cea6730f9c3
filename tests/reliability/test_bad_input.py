"""Malformed requests, sent with raw tritonclient (as perf_analyzer or another language would)
and through the client library: each gets a precise error naming the tensor or field, and the
very next valid request succeeds with identical output."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_common import contract

pytestmark = pytest.mark.e2e

B = 2


def visual(batch=B):
    crops = synthetic.face_crops(batch, seed=4)
    return np.concatenate([crops, synthetic.masked(crops)], axis=1)


def audio(batch=B):
    return synthetic.speech_like_audio(batch, seed=4).reshape(batch, 640)


def with_value(array, index, value):
    out = array.copy()
    out[index] = value
    return out


def tensor(name, array, datatype=None, shape=None, raw=None):
    datatype = (
        datatype or {np.float32: "FP32", np.float64: "FP64", np.uint8: "UINT8", np.int32: "INT32"}[array.dtype.type]
    )
    t = grpcclient.InferInput(name, list(shape or array.shape), datatype)
    if raw is not None:
        t._raw_content = raw  # a truncated or padded byte buffer, as a broken client would send
        t._input.ClearField("parameters")
    else:
        t.set_data_from_numpy(array)
    return t


# (id, model, inputs, outputs, expected error pattern)
RAW_CASES = [
    (
        "visual_wrong_width",
        "demo",
        lambda: [tensor("VISUAL", visual()[..., :319]), tensor("AUDIO", audio())],
        ["JPEG"],
        r"VISUAL.*\[-1,6,320,320\]",
    ),
    (
        "visual_three_channels",
        "demo",
        lambda: [tensor("VISUAL", visual()[:, :3]), tensor("AUDIO", audio())],
        ["JPEG"],
        r"VISUAL.*\[-1,6,320,320\]",
    ),
    (
        "audio_639_samples",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", audio()[:, :639])],
        ["JPEG"],
        r"AUDIO.*\[-1,640\]",
    ),
    (
        "audio_641_samples",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", np.pad(audio(), ((0, 0), (0, 1))))],
        ["JPEG"],
        r"AUDIO.*\[-1,640\]",
    ),
    (
        "audio_extra_dim",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", audio()[..., None])],
        ["JPEG"],
        r"unexpected shape for input 'AUDIO'.*Expected \[-1,640\], got \[2,640,1\]",
    ),
    (
        "empty_audio",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", np.zeros((B, 0), np.float32))],
        ["JPEG"],
        r"unexpected shape for input 'AUDIO'.*got \[2,0\]",
    ),
    (
        "visual_fp64",
        "demo",
        lambda: [tensor("VISUAL", visual().astype(np.float64)), tensor("AUDIO", audio())],
        ["JPEG"],
        r"VISUAL.*FP64.*FP32",
    ),
    (
        "audio_fp64",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", audio().astype(np.float64))],
        ["JPEG"],
        r"AUDIO.*FP64.*FP32",
    ),
    (
        "visual_uint8",
        "demo",
        lambda: [tensor("VISUAL", (visual() * 255).astype(np.uint8)), tensor("AUDIO", audio())],
        ["JPEG"],
        r"VISUAL.*UINT8.*FP32",
    ),
    (
        "audio_int32",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", (audio() * 32767).astype(np.int32))],
        ["JPEG"],
        r"AUDIO.*INT32.*FP32",
    ),
    (
        "batch_0",
        "demo",
        lambda: [tensor("VISUAL", visual()[:0]), tensor("AUDIO", audio()[:0])],
        ["JPEG"],
        r"input byte size mismatch for input '(AUDIO|VISUAL)'",
    ),
    (
        "batch_33",
        "demo",
        lambda: [
            tensor("VISUAL", np.zeros((33, 6, 320, 320), np.float32)),
            tensor("AUDIO", np.zeros((33, 640), np.float32)),
        ],
        ["JPEG"],
        r"batch-size must be <= 32",
    ),
    (
        "batch_mismatch",
        "demo",
        lambda: [tensor("VISUAL", visual(2)), tensor("AUDIO", audio(3))],
        ["JPEG"],
        r"input '(VISUAL|AUDIO)' batch size does not match other inputs",
    ),
    (
        "nan_in_audio",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", with_value(audio(), (1, 5), np.nan))],
        ["JPEG"],
        r"AUDIO: 1 of 1280 samples are NaN or Inf \(first at frame 1, index \(5,\)\)",
    ),
    (
        "inf_in_audio",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", with_value(audio(), (0, 0), np.inf))],
        ["JPEG"],
        r"AUDIO: 1 of 1280 samples are NaN or Inf",
    ),
    (
        "nan_in_visual",
        "demo",
        lambda: [tensor("VISUAL", with_value(visual(), (1, 4, 10, 20), np.nan)), tensor("AUDIO", audio())],
        ["JPEG"],
        r"VISUAL: 1 of \d+ values are NaN or Inf \(first at frame 1, index \(4, 10, 20\)\)",
    ),
    (
        "neg_inf_in_visual",
        "demo",
        lambda: [tensor("VISUAL", with_value(visual(), (0, 0, 0, 0), -np.inf)), tensor("AUDIO", audio())],
        ["JPEG"],
        r"VISUAL: 1 of",
    ),
    (
        "visual_uint8_scale",
        "demo",
        lambda: [tensor("VISUAL", visual() * 255), tensor("AUDIO", audio())],
        ["JPEG"],
        r"VISUAL: values must be BGR scaled to \[0, 1\]; got min 0, max 2\d\d",
    ),
    (
        "visual_negative",
        "demo",
        lambda: [tensor("VISUAL", visual() - 1), tensor("AUDIO", audio())],
        ["JPEG"],
        r"VISUAL: values must be BGR scaled to \[0, 1\]; got min -1",
    ),
    (
        "audio_far_out_of_range",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", with_value(audio(), (0, 3), 1e6))],
        ["JPEG"],
        r"AUDIO: sample magnitude 1e\+06 exceeds 4",
    ),
    ("missing_audio", "demo", lambda: [tensor("VISUAL", visual())], ["JPEG"], r"missing required input.*AUDIO"),
    ("missing_visual", "demo", lambda: [tensor("AUDIO", audio())], ["JPEG"], r"missing required input.*VISUAL"),
    (
        "unknown_input",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", audio()), tensor("EXTRA", audio())],
        ["JPEG"],
        r"expected 2 inputs but got 3 inputs.*'EXTRA'",
    ),
    (
        "unknown_output",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", audio())],
        ["FRAMES"],
        r"unexpected inference output 'FRAMES'",
    ),
    (
        "unknown_model",
        "nobody",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", audio())],
        ["JPEG"],
        r"unknown model.*nobody",
    ),
    (
        "truncated_audio_bytes",
        "demo",
        lambda: [tensor("VISUAL", visual()), tensor("AUDIO", audio(), shape=[B, 640], raw=audio().tobytes()[:-4])],
        ["JPEG"],
        r"input byte size mismatch for input 'AUDIO' for model 'demo'. Expected 5120, got 5116",
    ),
    (
        "truncated_visual_bytes",
        "demo",
        lambda: [
            tensor("VISUAL", visual(), shape=[B, 6, 320, 320], raw=visual().tobytes()[:-100]),
            tensor("AUDIO", audio()),
        ],
        ["JPEG"],
        r"input byte size mismatch for input 'VISUAL' for model 'demo'. Expected 4915200, got 4915100",
    ),
    (
        "generator_called_with_bad_shape",
        contract.GENERATOR_MODEL,
        lambda: [tensor("input", visual()[..., :160, :160]), tensor("audio", np.zeros((B, 32, 16, 16), np.float32))],
        ["output"],
        r"input.*\[-1,6,320,320\]",
    ),
    (
        "encoder_called_with_bad_shape",
        contract.AUDIO_ENCODER_MODEL,
        lambda: [tensor("MEL_WINDOWS", np.zeros((B, 1, 80, 15), np.float32))],
        ["AUDIO_FEATURES"],
        r"MEL_WINDOWS.*\[-1,1,80,16\]",
    ),
    (
        "resize_called_with_bad_dtype",
        contract.FRAME_RESIZE_MODEL,
        lambda: [tensor("GENERATED_FACE", np.zeros((B, 3, 320, 320), np.float64))],
        ["FRAMES_RGB"],
        r"GENERATED_FACE.*FP64",
    ),
    (
        "jpeg_encoder_called_with_floats",
        contract.JPEG_ENCODER_MODEL,
        lambda: [tensor("FRAMES_RGB", np.zeros((1, 1080, 1920, 3), np.float32))],
        ["JPEG"],
        r"FRAMES_RGB.*FP32.*UINT8",
    ),
    (
        "audio_features_called_with_nan",
        contract.AUDIO_FEATURES_MODEL,
        lambda: [tensor("AUDIO", with_value(audio(), (0, 1), np.nan))],
        ["MEL_WINDOWS"],
        r"AUDIO: 1 of 1280 samples are NaN or Inf",
    ),
    (
        "validator_called_with_bad_visual",
        contract.INPUT_VALIDATOR_MODEL,
        lambda: [tensor("VISUAL", visual() + 2), tensor("AUDIO", audio())],
        ["VALIDATED_AUDIO"],
        r"VISUAL: values must be",
    ),
]


@pytest.fixture(scope="module")
def reference(server):
    """A valid request and its output, to check that the server is unaffected after each bad one."""
    crops = synthetic.face_crops(B, seed=4)
    request = CompositeBatchRequest.from_arrays(
        contract.DEFAULT_MODEL_ID, crops, synthetic.masked(crops), synthetic.speech_like_audio(B, seed=4)
    )
    with CompositeClient(server.grpc_url) as client:
        return request, client.infer_batch_composite(request).raise_for_error().composited_frames


def assert_next_valid_request_is_unaffected(server, reference):
    request, expected = reference
    with CompositeClient(server.grpc_url, stage_timings=False) as client:
        assert client.infer_batch_composite(request).raise_for_error().composited_frames == expected


@pytest.mark.parametrize("case", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_raw_malformed_request_gets_a_precise_error(server, reference, case):
    _, model, make_inputs, outputs, pattern = case
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        with pytest.raises(InferenceServerException, match=pattern) as info:
            triton.infer(
                model, make_inputs(), outputs=[grpcclient.InferRequestedOutput(o) for o in outputs], client_timeout=60
            )
        expected_status = "StatusCode.NOT_FOUND" if model == "nobody" else "StatusCode.INVALID_ARGUMENT"
        assert str(info.value.status()) == expected_status
        assert triton.is_server_ready()
    assert_next_valid_request_is_unaffected(server, reference)


def _client_request(**overrides):
    crops = synthetic.face_crops(B, seed=4)
    request = CompositeBatchRequest.from_arrays(
        contract.DEFAULT_MODEL_ID, crops, synthetic.masked(crops), synthetic.speech_like_audio(B, seed=4)
    )
    for key, value in overrides.items():
        value = value(request) if callable(value) else value
        setattr(request, key, value)
    return request


def _scaled_visual(request):
    return (np.frombuffer(request.visual_frames, "<f4") * 255).tobytes()


def _nan_visual(request):
    data = np.frombuffer(request.visual_frames, "<f4").copy()
    data[123] = np.nan
    return data.tobytes()


# (id, overrides, category, message pattern)
CLIENT_CASES = [
    ("empty_model_id", {"model_id": ""}, "validation", r"^modelId cannot be empty$"),
    ("unknown_model_id", {"model_id": "nobody"}, "model", r"^model not found: nobody$"),
    ("step_is_not_a_model_id", {"model_id": contract.JPEG_ENCODER_MODEL}, "model", r"^model not found: jpeg_encoder$"),
    (
        "visual_size_mismatch",
        {"visual_frames": lambda r: r.visual_frames[:-8]},
        "validation",
        r"^visual frames size mismatch: got 4915192, expected 4915200$",
    ),
    ("audio_empty", {"raw_audio": b""}, "validation", r"^audio cannot be empty$"),
    (
        "audio_size_mismatch",
        {"raw_audio": lambda r: r.raw_audio + b"\0\0\0\0"},
        "validation",
        r"^audio size mismatch: got 5124 bytes, expected 5120",
    ),
    ("truncated_audio_buffer", {"raw_audio": lambda r: r.raw_audio[:-3]}, "validation", r"^audio size mismatch"),
    ("batch_0", {"batch_size": 0}, "validation", r"batch_size must be between 1 and 32, got 0"),
    ("batch_33", {"batch_size": 33}, "validation", r"batch_size must be between 1 and 32, got 33"),
    ("sample_rate_44100", {"sample_rate": 44100}, "validation", r"sample_rate must be 16000 Hz, got 44100"),
    (
        "nan_audio",
        {"raw_audio": lambda r: with_value(np.frombuffer(r.raw_audio, "<f4").copy(), 7, np.nan).tobytes()},
        "validation",
        r"raw_audio: 1 of 1280 samples are NaN or Inf",
    ),
    (
        "nan_visual_caught_by_the_server",
        {"visual_frames": _nan_visual},
        "validation",
        r"VISUAL: 1 of \d+ values are NaN or Inf",
    ),
    (
        "visual_scaled_to_255_caught_by_the_server",
        {"visual_frames": _scaled_visual},
        "validation",
        r"VISUAL: values must be BGR scaled to \[0, 1\]",
    ),
]


@pytest.mark.parametrize("case", CLIENT_CASES, ids=[c[0] for c in CLIENT_CASES])
def test_client_library_maps_errors_to_the_reference_categories(server, reference, case):
    _, overrides, category, pattern = case
    with CompositeClient(server.grpc_url) as client:
        response = client.infer_batch_composite(_client_request(**overrides))
    assert not response.success and not response.composited_frames
    assert response.error_category == category and response.http_status == contract.HTTP_STATUS[category]
    assert __import__("re").search(pattern, response.error), response.error
    assert_next_valid_request_is_unaffected(server, reference)


def test_a_request_over_the_grpc_message_limit_is_refused_cleanly(server, reference):
    limit = 8 * 1024 * 1024
    with grpcclient.InferenceServerClient(
        server.grpc_url, channel_args=[("grpc.max_send_message_length", limit)]
    ) as triton:
        big = np.zeros((4, 6, 320, 320), np.float32)  # 9.8 MB > 8 MB
        with pytest.raises(InferenceServerException, match=r"(?i)larger than max|RESOURCE_EXHAUSTED"):
            triton.infer(
                "demo", [tensor("VISUAL", big), tensor("AUDIO", np.zeros((4, 640), np.float32))], client_timeout=60
            )
    assert_next_valid_request_is_unaffected(server, reference)


def test_there_are_at_least_30_malformed_request_cases():
    assert len(RAW_CASES) + len(CLIENT_CASES) >= 30
