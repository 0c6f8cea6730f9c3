"""synctalk_build.int8 on the tiny generator, in process: the calibration inputs are the avatar's own (its
faces and masked faces, speech through its front end and encoder), the quantized graph runs
integer operators, its faces stay close to FP32's, and the keep rule removes a model below the
speed-up asked for."""

import numpy as np
import onnx
import pytest

from synctalk_build import int8
from synctalk_client import synthetic
from synctalk_common import contract


@pytest.fixture(scope="module")
def avatar():
    frames, boxes = synthetic.avatar_background(6, 320, 180, face=96, seed=7)
    return frames, np.asarray(boxes)


@pytest.mark.parametrize(
    "preset, encoder", [("reference", "audio_encoder.onnx"), ("synctalk2d", "audio_encoder_synctalk2d.onnx")]
)
def test_audio_features_follow_the_avatars_front_end(models_dir, preset, encoder):
    audio = synthetic.speech_like_audio(10, seed=3)
    features = int8.audio_features(audio, preset, models_dir / "tiny" / encoder)
    assert features.shape == (10, *contract.AUDIO_FEATURE_SHAPE) and features.dtype == np.float32
    assert np.isfinite(features).all() and features.std() > 0


def test_calibration_feeds_are_the_avatars_own_faces(avatar):
    frames, boxes = avatar
    features = np.zeros((4, *contract.AUDIO_FEATURE_SHAPE), np.float32)
    feeds = int8.generator_feeds(frames, boxes, features, 9)
    assert len(feeds) == 9
    visual = feeds[0][contract.GENERATOR_VISUAL.name]
    assert visual.shape == (1, *contract.VISUAL.dims)
    x, y, w, h = contract.FACE_MASK_RECT
    assert visual[0, 3:, y : y + h, x : x + w].max() == 0 and visual[0, :3].max() > 0  # the face, and it masked


def test_quantized_is_close_and_the_keep_rule_holds(models_dir, avatar, tmp_path):
    frames, boxes = avatar
    audio = int8.speech(None)
    fp32 = models_dir / "tiny" / "synctalk.onnx"
    kept = int8.build(
        fp32,
        tmp_path / "kept.onnx",
        frames,
        boxes,
        "reference",
        models_dir / "tiny" / "audio_encoder.onnx",
        audio,
        min_speedup=0.0,
    )
    assert kept["kept"] and (tmp_path / "kept.onnx").is_file()
    ops = {n.op_type for n in onnx.load(str(tmp_path / "kept.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert kept["psnr_db"] > 30, kept
    slow = int8.build(
        fp32,
        tmp_path / "slow.onnx",
        frames,
        boxes,
        "reference",
        models_dir / "tiny" / "audio_encoder.onnx",
        audio,
        min_speedup=1e6,
    )
    assert not slow["kept"] and not (tmp_path / "slow.onnx").exists()
    assert "not kept" in int8.describe(slow) and "(kept)" in int8.describe(kept)
