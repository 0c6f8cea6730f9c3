"""End to end against a real tritonserver (CPU profile, tiny stand-in models) over gRPC."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import simplejpeg
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from synctalk_build import build_models
from synctalk_client import CompositeBatchRequest, synthetic
from synctalk_client.cli import main as cli_main
from synctalk_client.credentials import api_key_headers
from synctalk_common import contract
from synctalk_preprocessing.audio import MelFrontEnd
from synctalk_preprocessing.compositing import composite_frames

pytestmark = pytest.mark.e2e


def make_request(batch: int, seed: int = 0, model_id: str = contract.DEFAULT_MODEL_ID) -> CompositeBatchRequest:
    crops = synthetic.face_crops(batch, seed=seed)
    return CompositeBatchRequest.from_arrays(
        model_id, crops, synthetic.masked(crops), synthetic.speech_like_audio(batch, seed=seed)
    )


def decode(jpeg: bytes) -> np.ndarray:
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    return simplejpeg.decode_jpeg(jpeg, colorspace="RGB")


@pytest.fixture()
def triton(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


def raw_infer(triton, model, arrays, outputs, timeout=60):
    inputs = []
    for name, array in arrays.items():
        dtype = {np.float32: "FP32", np.uint8: "UINT8", np.float64: "FP64", np.int32: "INT32", np.int64: "INT64"}[
            array.dtype.type
        ]
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = triton.infer(
        model, inputs, outputs=[grpcclient.InferRequestedOutput(o) for o in outputs], client_timeout=timeout
    )
    return [result.as_numpy(o) for o in outputs]


@pytest.mark.parametrize("batch", [1, 8, 25, 32])
def test_a_batch_returns_one_decodable_full_hd_jpeg_per_frame(client, batch):
    response = client.infer_batch_composite(make_request(batch, seed=batch))
    assert response.success, response.error
    assert len(response.composited_frames) == batch
    for jpeg in response.composited_frames:
        assert decode(jpeg).shape == (contract.OUTPUT_HEIGHT, contract.OUTPUT_WIDTH, 3)
        assert simplejpeg.decode_jpeg_header(jpeg)[3] == "420"


def test_output_is_deterministic(client):
    request = make_request(4, seed=11)
    first = client.infer_batch_composite(request).raise_for_error().composited_frames
    second = client.infer_batch_composite(request).raise_for_error().composited_frames
    assert first == second
    other = client.infer_batch_composite(make_request(4, seed=12)).raise_for_error().composited_frames
    assert other != first


def test_served_frames_equal_the_pipeline_run_in_process(client, models_dir):
    batch = 4
    request = make_request(batch, seed=5)
    served = np.stack([decode(j) for j in client.infer_batch_composite(request).raise_for_error().composited_frames])
    # the same maths, in this process
    windows = MelFrontEnd().windows_for_audio(request.audio_tensor())[:, None]
    encoder = ort.InferenceSession(
        str(models_dir / "tiny" / build_models.AUDIO_ENCODER_FILE), providers=["CPUExecutionProvider"]
    )
    generator = ort.InferenceSession(
        str(models_dir / "tiny" / build_models.GENERATOR_FILE), providers=["CPUExecutionProvider"]
    )
    (features,) = encoder.run(None, {contract.MEL_WINDOWS.name: windows})
    (face,) = generator.run(None, {"input": request.visual_tensor(), "audio": features})
    expected = composite_frames(face)
    assert np.abs(served.astype(int) - expected.astype(int)).mean() < 1.5  # JPEG quality 95


def test_each_composing_model_can_be_called_on_its_own(triton, models_dir):
    batch = 3
    audio = synthetic.speech_like_audio(batch, seed=2).reshape(batch, 640)
    visual = np.concatenate([synthetic.face_crops(batch), synthetic.masked(synthetic.face_crops(batch))], axis=1)
    (validated,) = raw_infer(
        triton, contract.INPUT_VALIDATOR_MODEL, {"VISUAL": visual, "AUDIO": audio}, ["VALIDATED_AUDIO"]
    )
    np.testing.assert_array_equal(validated, audio)
    (windows,) = raw_infer(triton, contract.AUDIO_FEATURES_MODEL, {"AUDIO": audio}, ["MEL_WINDOWS"])
    np.testing.assert_allclose(windows, MelFrontEnd().windows_for_audio(audio)[:, None], atol=1e-5)

    (features,) = raw_infer(triton, contract.AUDIO_ENCODER_MODEL, {"MEL_WINDOWS": windows}, ["AUDIO_FEATURES"])
    encoder = ort.InferenceSession(
        str(models_dir / "tiny" / build_models.AUDIO_ENCODER_FILE), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(features, encoder.run(None, {"MEL_WINDOWS": windows})[0], rtol=1e-4, atol=1e-4)

    (face,) = raw_infer(triton, contract.GENERATOR_MODEL, {"input": visual, "audio": features}, ["output"])
    generator = ort.InferenceSession(
        str(models_dir / "tiny" / build_models.GENERATOR_FILE), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(face, generator.run(None, {"input": visual, "audio": features})[0], rtol=1e-4, atol=1e-4)

    (frames,) = raw_infer(triton, contract.FRAME_RESIZE_MODEL, {"GENERATED_FACE": face}, ["FRAMES_RGB"])
    assert frames.shape == (batch, 1080, 1920, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, composite_frames(face))

    (jpegs,) = raw_infer(triton, contract.JPEG_ENCODER_MODEL, {"FRAMES_RGB": frames}, ["JPEG"])
    assert jpegs.shape == (batch, 1)
    for jpeg, frame in zip(jpegs[:, 0], frames):
        assert np.abs(decode(jpeg).astype(int) - frame.astype(int)).mean() < 1.5


def test_lone_request_reports_measured_stage_timings(client):
    response = client.infer_batch_composite(make_request(2)).raise_for_error()
    stages = [response.audio_processing_ms, response.inference_time_ms, response.composite_time_ms]
    assert all(s is not None and s > 0 for s in stages), response.timings()
    assert sum(stages) < response.total_time_ms


def test_health_and_model_listing(client):
    health = client.health()
    assert health["live"] and health["ready"]
    shared = (contract.DEFAULT_MODEL_ID, *contract.SHARED_MODELS)
    assert {name: health["models"].get(name) for name in shared} == {name: True for name in shared}
    rows = {row["name"]: row for row in client.list_models()}
    assert rows[contract.DEFAULT_MODEL_ID]["kind"] == "model_id"
    assert all(rows[name]["kind"] == "step" and rows[name]["state"] == "READY" for name in contract.SHARED_MODELS)
    assert client.model_ids() == [contract.DEFAULT_MODEL_ID]


def test_unknown_model_id_is_a_model_error(client):
    response = client.infer_batch_composite(make_request(1, model_id="nobody"))
    assert not response.success
    assert response.error == "model not found: nobody"
    assert response.error_category == "model" and response.http_status == 404
    # a composing step is not a model id either
    assert (
        client.infer_batch_composite(make_request(1, model_id=contract.GENERATOR_MODEL)).error
        == "model not found: synctalk"
    )


def test_client_validation_messages_come_back_in_the_response(client):
    request = make_request(2)
    request.raw_audio = request.raw_audio[:-4]
    response = client.infer_batch_composite(request)
    assert not response.success and response.error.startswith("audio size mismatch") and response.http_status == 400


def test_server_rejects_bad_input_clearly_and_lives_on(client, triton):
    good = make_request(2, seed=9)
    expected = client.infer_batch_composite(good).raise_for_error().composited_frames
    visual, audio = good.visual_tensor(), good.audio_tensor()
    bad_audio = audio.copy()
    bad_audio[1, 7] = np.inf
    with pytest.raises(InferenceServerException, match=r"AUDIO: 1 of 1280 samples are NaN or Inf") as info:
        raw_infer(triton, contract.DEFAULT_MODEL_ID, {"VISUAL": visual, "AUDIO": bad_audio}, ["JPEG"])
    assert "INVALID_ARGUMENT" in str(info.value.status())
    too_big = np.zeros((33, 640), np.float32)
    with pytest.raises(InferenceServerException, match="batch-size must be <= 32"):
        raw_infer(triton, contract.AUDIO_FEATURES_MODEL, {"AUDIO": too_big}, ["MEL_WINDOWS"])
    with pytest.raises(InferenceServerException, match="AUDIO"):
        raw_infer(triton, contract.AUDIO_FEATURES_MODEL, {"AUDIO": np.zeros((2, 639), np.float32)}, ["MEL_WINDOWS"])
    with pytest.raises(InferenceServerException, match="data-type"):
        raw_infer(triton, contract.AUDIO_FEATURES_MODEL, {"AUDIO": np.zeros((2, 640), np.float64)}, ["MEL_WINDOWS"])
    with pytest.raises(InferenceServerException, match="unknown model"):
        raw_infer(triton, "nobody", {"AUDIO": audio}, ["MEL_WINDOWS"])
    assert triton.is_server_ready()
    assert client.infer_batch_composite(good).raise_for_error().composited_frames == expected


def test_cli_composite_models_and_health(server, tmp_path, capsys):
    out = tmp_path / "frames"
    assert (
        cli_main(["--url", server.grpc_url, "composite", "--batch-size", "3", "--start-frame", "10", "--out", str(out)])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 3 and summary["total_time_ms"] > 0
    files = sorted(p.name for p in out.glob("*.jpg"))
    assert files == ["frame_00010.jpg", "frame_00011.jpg", "frame_00012.jpg"]
    assert decode((out / files[0]).read_bytes()).shape == (1080, 1920, 3)
    assert cli_main(["--url", server.grpc_url, "models"]) == 0
    assert "demo" in capsys.readouterr().out
    assert cli_main(["--url", server.grpc_url, "health"]) == 0
    assert cli_main(["--url", server.grpc_url, "composite", "--model-id", "nobody", "--out", str(out)]) == 1
    assert "model not found: nobody" in capsys.readouterr().err


def test_cli_reads_a_wav_file(server, tmp_path):
    import soundfile

    wav = tmp_path / "speech.wav"
    soundfile.write(wav, synthetic.speech_like_audio(5), 16000, subtype="PCM_16")
    out = tmp_path / "frames"
    assert cli_main(["--url", server.grpc_url, "composite", "--audio", str(wav), "--out", str(out)]) == 0
    assert len(list(out.glob("*.jpg"))) == 5


def test_shared_memory_inputs_give_the_same_frames(server, client):
    from synctalk_client import CompositeClient

    request = make_request(5, seed=21)
    over_grpc = client.infer_batch_composite(request).raise_for_error().composited_frames
    with CompositeClient(server.grpc_url, shared_memory=True) as shm_client:
        for batch in (5, 2, 32):  # the region is reused across batch sizes
            response = shm_client.infer_batch_composite(
                make_request(batch, seed=21) if batch != 5 else request
            ).raise_for_error()
            assert len(response.composited_frames) == batch
            if batch == 5:
                assert response.composited_frames == over_grpc
        name = shm_client._shm.name
        assert name in str(shm_status(shm_client))  # registered (the status is a restricted API too)
    assert name not in str(shm_status(client))  # unregistered on close


def shm_status(client) -> dict:
    return client._triton.get_system_shared_memory_status(as_json=True, headers=api_key_headers(client._api_key))
