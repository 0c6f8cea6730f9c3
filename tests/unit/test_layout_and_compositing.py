"""Reference byte layout <-> tensors, and the compositor maths."""

import numpy as np
import pytest

from synctalk_client import CompositeBatchRequest, synthetic
from synctalk_common import contract
from synctalk_common.messages import visual_from_reference_bytes
from synctalk_preprocessing.compositing import CpuJpegEncoder, composite_frames, face_to_rgb8, resize_frames


def _visual(batch, seed=0):
    return np.random.default_rng(seed).random((batch, 6, 320, 320), dtype=np.float32)


@pytest.mark.parametrize("batch", [1, 3, 32])
def test_reference_layout_is_all_crops_then_all_rois(batch):
    visual = _visual(batch)
    audio = np.zeros(batch * contract.SAMPLES_PER_FRAME, np.float32)
    data = CompositeBatchRequest.from_visual("demo", visual, audio).visual_frames
    assert len(data) == batch * contract.VISUAL_FRAME_BYTES
    flat = np.frombuffer(data, "<f4")
    half = flat.size // 2
    np.testing.assert_array_equal(flat[: contract.CROP_BYTES // 4].reshape(3, 320, 320), visual[0, :3])  # crop 0 first
    np.testing.assert_array_equal(
        flat[half : half + contract.CROP_BYTES // 4].reshape(3, 320, 320), visual[0, 3:]
    )  # ROI 0 at half
    np.testing.assert_array_equal(visual_from_reference_bytes(data, batch), visual)


def test_request_round_trips_through_the_reference_layout():
    crops = synthetic.face_crops(4)
    masked = synthetic.masked(crops)
    audio = synthetic.speech_like_audio(4)
    request = CompositeBatchRequest.from_arrays("demo", crops, masked, audio, start_frame_idx=7)
    assert request.batch_size == 4 and request.start_frame_idx == 7
    assert len(request.raw_audio) == 4 * contract.AUDIO_FRAME_BYTES
    visual = request.visual_tensor()
    np.testing.assert_array_equal(visual[:, :3], crops)
    np.testing.assert_array_equal(visual[:, 3:], masked)
    np.testing.assert_array_equal(request.audio_tensor().reshape(-1), audio)
    # the wire bytes read back as the tensors
    np.testing.assert_array_equal(visual_from_reference_bytes(request.visual_frames, 4), visual)
    np.testing.assert_array_equal(np.frombuffer(request.raw_audio, "<f4").reshape(4, -1), request.audio_tensor())
    assert CompositeBatchRequest.from_visual("demo", visual, audio).visual_frames == request.visual_frames


def test_masked_crop_is_synctalk2d_rectangle():
    import cv2

    crops = synthetic.face_crops(2)
    masked = synthetic.masked(crops)
    for crop, mask in zip(crops, masked):  # cv2.rectangle(face, (5, 5, 310, 305), (0, 0, 0), -1), as upstream
        expected = cv2.rectangle(np.ascontiguousarray(crop.transpose(1, 2, 0)), (5, 5, 310, 305), (0, 0, 0), -1)
        np.testing.assert_array_equal(mask, expected.transpose(2, 0, 1))
    assert (masked[:, :, 5:310, 5:315] == 0).all() and (masked[:, :, :5] == crops[:, :, :5]).all()


def test_face_to_rgb8_swaps_channels_scales_rounds_and_clamps():
    face = np.zeros((1, 3, 2, 2), np.float32)
    face[0, 0] = 1.0  # blue in BGR
    face[0, 2, 0, 0] = 0.5  # some red
    face[0, 1, 1, 1] = 7.0  # out of range -> 255
    face[0, 1, 0, 1] = -3.0  # out of range -> 0
    face[0, 2, 1, 0] = np.nan  # -> 0
    rgb = face_to_rgb8(face)
    assert rgb.shape == (1, 2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[0, ..., 2] == 255).all()  # blue ends up last (RGB)
    assert rgb[0, 0, 0, 0] == 128  # round(0.5 * 255) = 128 (127.5 rounds to even)
    assert rgb[0, 1, 1, 1] == 255 and rgb[0, 0, 1, 1] == 0 and rgb[0, 1, 0, 0] == 0


def test_resize_is_bilinear_to_full_hd():
    rgb = face_to_rgb8(synthetic.face_crops(2))
    frames = resize_frames(rgb)
    assert frames.shape == (2, contract.OUTPUT_HEIGHT, contract.OUTPUT_WIDTH, 3)
    # a constant image stays constant; the image centre maps to the frame centre
    flat = resize_frames(np.full((1, 320, 320, 3), 77, np.uint8))
    assert (flat == 77).all()
    assert np.abs(frames[0, 540, 960].astype(int) - rgb[0, 160, 160].astype(int)).max() <= 2


def test_cpu_jpeg_encoder_writes_decodable_420_full_hd_jpegs():
    import simplejpeg

    frames = composite_frames(synthetic.face_crops(3))
    encoder = CpuJpegEncoder()
    jpegs = encoder.encode(list(frames))
    encoder.close()
    assert len(jpegs) == 3
    for jpeg, frame in zip(jpegs, frames):
        assert jpeg[:2] == b"\xff\xd8"
        height, width, _, subsampling = simplejpeg.decode_jpeg_header(jpeg)
        assert (width, height, subsampling) == (1920, 1080, "420")
        decoded = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
        assert np.abs(decoded.astype(int) - frame.astype(int)).mean() < 2.0  # quality 95
