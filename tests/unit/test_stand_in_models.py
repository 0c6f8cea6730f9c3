"""The stand-in ONNX models: valid, deterministic, with the contract's tensors."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from synctalk_build import build_models
from synctalk_common import contract


def _io(model):
    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return {v.name: dims(v) for v in model.graph.input}, {v.name: dims(v) for v in model.graph.output}


@pytest.mark.parametrize("variant", sorted(build_models.VARIANTS))
def test_built_files_pass_the_checker_and_have_the_contract_tensors(models_dir, variant):
    generator = onnx.load(models_dir / variant / build_models.GENERATOR_FILE)
    onnx.checker.check_model(generator, full_check=True)
    inputs, outputs = _io(generator)
    assert inputs == {"input": ["batch", 6, 320, 320], "audio": ["batch", 32, 16, 16]}
    assert outputs == {"output": ["batch", 3, 320, 320]}
    encoder = onnx.load(models_dir / variant / build_models.AUDIO_ENCODER_FILE)
    onnx.checker.check_model(encoder, full_check=True)
    assert _io(encoder) == (
        {contract.MEL_WINDOWS.name: ["batch", 1, 80, 16]},
        {contract.AUDIO_FEATURES.name: ["batch", 32, 16, 16]},
    )


def test_full_generator_has_the_synctalk_2d_size():
    stats = build_models.model_stats(build_models.build_generator("full"))
    assert 12.1e6 < stats["parameters"] < 12.3e6  # SyncTalk_2D: about 12.2 M
    assert 4.8e9 < stats["macs_per_sample"] < 5.0e9  # about 4.9 GMACs per frame
    assert build_models.model_stats(build_models.build_generator("tiny"))["parameters"] < 0.5e6


def test_synctalk2d_encoder_encodes_each_window_once_and_gives_the_per_frame_result():
    from synctalk_client import synthetic
    from synctalk_preprocessing.audio import PRESETS, MelFrontEnd

    session = ort.InferenceSession(
        build_models.build_synctalk2d_audio_encoder("tiny").SerializeToString(), providers=["CPUExecutionProvider"]
    )
    n = 12
    windows, mask = MelFrontEnd(PRESETS["synctalk2d"]).windows_for_audio(
        synthetic.speech_like_audio(n, seed=1).reshape(n, 640)
    )
    feeds = {contract.MEL_NEIGHBOURS.name: windows[:, :, None], contract.NEIGHBOUR_MASK.name: mask}
    (batch,) = session.run(None, feeds)
    rows = [session.run(None, {k: v[i : i + 1] for k, v in feeds.items()})[0] for i in range(n)]  # 16 windows each
    assert batch.shape == (n, 32, 16, 16) and batch.std() > 0.1
    assert np.abs(batch - np.concatenate(rows)).max() < 1e-5
    # a masked neighbour (outside the clip) contributes zeros
    assert not batch[0].reshape(16, -1)[:8].any() and batch[0].reshape(16, -1)[8:].any()


def test_builds_are_deterministic():
    first = build_models.build_generator("tiny").SerializeToString()
    assert build_models.build_generator("tiny").SerializeToString() == first
    assert (
        build_models.build_audio_encoder("tiny").SerializeToString()
        == build_models.build_audio_encoder("tiny").SerializeToString()
    )


def test_tiny_models_run_in_onnxruntime_with_sane_outputs(models_dir):
    rng = np.random.default_rng(0)
    generator = ort.InferenceSession(
        str(models_dir / "tiny" / build_models.GENERATOR_FILE), providers=["CPUExecutionProvider"]
    )
    encoder = ort.InferenceSession(
        str(models_dir / "tiny" / build_models.AUDIO_ENCODER_FILE), providers=["CPUExecutionProvider"]
    )
    mel = rng.normal(-5, 2, (3, 1, 80, 16)).astype(np.float32)
    (features,) = encoder.run(None, {contract.MEL_WINDOWS.name: mel})
    assert features.shape == (3, 32, 16, 16) and np.isfinite(features).all() and features.std() > 0
    visual = rng.random((3, 6, 320, 320), dtype=np.float32)
    (face,) = generator.run(None, {"input": visual, "audio": features})
    assert face.shape == (3, 3, 320, 320) and 0 <= face.min() and face.max() <= 1
    # the audio drives the output: different audio, different face
    (other,) = generator.run(None, {"input": visual, "audio": features[::-1].copy()})
    assert np.abs(other[0] - face[0]).max() > 1e-4
