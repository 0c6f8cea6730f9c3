"""synctalk_build.window_encoder: the one-window encoder cut from SyncTalk_2D's 16-neighbour encoder gives
each window the encoding the ensemble's encoder step stacks, so a stream that encodes each window
once and stacks them itself gives the generator the same AUDIO_FEATURES."""

import numpy as np
import onnxruntime as ort
import pytest

from synctalk_build import build_models, window_encoder
from synctalk_common import contract


@pytest.mark.parametrize("variant", ["tiny", "full"])
def test_stacked_window_encodings_are_the_encoder_steps_features(models_dir, tmp_path, variant):
    source = models_dir / variant / build_models.SYNCTALK2D_AUDIO_ENCODER_FILE
    derived = window_encoder.derive(source, tmp_path / "window.onnx")
    neighbours = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    windows = ort.InferenceSession(str(derived), providers=["CPUExecutionProvider"])
    assert [i.name for i in windows.get_inputs()] == [contract.MEL_WINDOWS.name]
    assert [o.name for o in windows.get_outputs()] == [contract.WINDOW_FEATURES.name]

    frames, n = 5, contract.AUDIO_NEIGHBOURS
    mel = np.random.default_rng(3).normal(size=(frames + n - 1, *contract.MEL_WINDOWS.dims)).astype(np.float32)
    rows = np.stack([mel[i : i + n] for i in range(frames)])  # consecutive frames' neighbours
    mask = np.ones((frames, n), np.float32)
    mask[0, :3] = 0  # rows outside upstream's padded list (a clip's start)
    (expected,) = neighbours.run(None, {contract.MEL_NEIGHBOURS.name: rows, contract.NEIGHBOUR_MASK.name: mask})
    # each window alone, in any order: what a stream encodes as its audio arrives
    order = np.random.default_rng(4).permutation(len(mel))
    encoded = np.empty((len(mel), *contract.WINDOW_FEATURES.dims), np.float32)
    for part in np.array_split(order, 4):
        (encoded[part],) = windows.run(None, {contract.MEL_WINDOWS.name: mel[part]})
    index = np.arange(frames)[:, None] + np.arange(n)[None, :]
    stacked = (encoded[index] * mask[:, :, None]).reshape(frames, *contract.AUDIO_FEATURE_SHAPE)
    np.testing.assert_allclose(stacked, expected, rtol=1e-5, atol=1e-5)


def test_a_graph_that_is_not_synctalk2ds_encoder_is_refused_by_name(models_dir, tmp_path):
    reference = models_dir / "tiny" / build_models.AUDIO_ENCODER_FILE
    with pytest.raises(ValueError, match="not a SyncTalk_2D audio encoder graph"):
        window_encoder.derive(reference, tmp_path / "window.onnx")
