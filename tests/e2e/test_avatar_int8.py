"""``synctalk-avatars add --int8`` on a live server (tiny models): the avatar's generator is
quantized on its own frames, measured against FP32 (speed, PSNR), and served when kept: the installed
model is the INT8 graph, its frames close to the FP32 avatar's but not the same (the keep rule
itself: tests/unit/test_int8.py)."""

import json

import cv2
import numpy as np
import onnx
import simplejpeg

from synctalk_client import CompositeBatchRequest, synthetic
from synctalk_common import contract
from synctalk_preprocessing.avatar import read_manifest
from tests.e2e.one_frame_avatar import loaded_avatar
from tests.synctalk2d_reference import psnr


def _avatar_source(folder):
    frames, boxes = synthetic.avatar_background(12, 320, 180, face=96, seed=35)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i}.png"), frame[..., ::-1])
    (folder / "boxes.json").write_text(json.dumps(boxes.tolist()))
    return folder, folder / "boxes.json"


def _frames(client, avatar_id, audio):
    answer = client.infer_batch_composite(CompositeBatchRequest.audio_only(avatar_id, audio))
    answer.raise_for_error()
    return np.stack([simplejpeg.decode_jpeg(jpeg, colorspace="RGB") for jpeg in answer.composited_frames])


def test_an_int8_generator_is_calibrated_measured_and_served(server, client, tmp_path):
    background, boxes = _avatar_source(tmp_path)
    audio = synthetic.speech_like_audio(8, seed=36)
    with (
        loaded_avatar(server, "int8_kept", background, boxes, int8=True, int8_min_speedup=0.0) as kept,
        loaded_avatar(server, "int8_fp32", background, boxes) as fp32,
    ):
        models = contract.avatar_models(kept)
        result = read_manifest(server.repository / models["background"] / "1")["source"]["int8"]
        assert result["kept"] and result["frames"] > 0
        assert result["fp32_ms_per_frame"] > 0 and result["int8_ms_per_frame"] > 0 and result["speedup"] > 0
        installed = server.repository / models["generator"] / "1" / "model.onnx"
        ops = {node.op_type for node in onnx.load(str(installed)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # a quantized graph, not the FP32 one
        int8_frames, fp32_frames = _frames(client, kept, audio), _frames(client, fp32, audio)
        assert int8_frames.shape == fp32_frames.shape
        assert not np.array_equal(int8_frames, fp32_frames)
        assert psnr(int8_frames, fp32_frames) > 30.0, psnr(int8_frames, fp32_frames)
