"""The production compositor steps, run on the CPU: the DALI pipeline (same code, device
switched) against the CPU profile's resize, and nvImageCodec's encoder with its CPU backend."""

import importlib.util

import numpy as np
import pytest
import simplejpeg

from synctalk_build import paths
from synctalk_client import synthetic
from synctalk_common import contract
from synctalk_preprocessing.compositing import composite_frames, paste_faces
from synctalk_preprocessing.dali_pipeline import frame_paste_pipeline, frame_resize_pipeline
from synctalk_preprocessing.nvimgcodec_encoder import NvImageCodecEncoder

dali = pytest.importorskip("nvidia.dali", reason="nvidia-dali is in requirements.txt")

# DALI and OpenCV round the bilinear weights differently: at most 1 level apart per channel.
RESIZE_TOLERANCE = 1


def run_cpu_pipeline(faces: np.ndarray) -> np.ndarray:
    @dali.pipeline_def(
        batch_size=len(faces),
        num_threads=2,
        device_id=None,
        prefetch_queue_depth=1,
        exec_async=False,
        exec_pipelined=False,
    )
    def pipe():
        return frame_resize_pipeline(device="cpu")

    pipeline = pipe()
    pipeline.build()
    pipeline.feed_input(contract.GENERATED_FACE.name, list(faces))
    (out,) = pipeline.run()
    return np.stack([np.asarray(sample) for sample in out])


def generated_faces(n: int) -> np.ndarray:
    faces = 0.75 * synthetic.face_crops(n) + 0.25 * np.random.default_rng(0).random((n, 3, 320, 320), dtype=np.float32)
    faces[0, 0, 0, 0] = np.nan  # non-finite and out-of-range values are handled the same way
    faces[0, 1, 5, 5] = 3.0
    faces[0, 2, 7, 7] = -1.0
    return faces.astype(np.float32)


def test_dali_pipeline_matches_the_cpu_profile_resize():
    faces = generated_faces(4)
    dali_frames = run_cpu_pipeline(faces)
    cpu_frames = composite_frames(faces)
    assert dali_frames.shape == cpu_frames.shape == (4, contract.OUTPUT_HEIGHT, contract.OUTPUT_WIDTH, 3)
    assert dali_frames.dtype == np.uint8
    diff = np.abs(dali_frames.astype(int) - cpu_frames.astype(int))
    assert diff.max() <= RESIZE_TOLERANCE
    assert diff.mean() < 0.25


# The paste resamples bicubically twice (box -> 328 -> box): DALI's cubic kernel is Catmull-Rom,
# OpenCV's INTER_CUBIC (what SyncTalk_2D uses) has a = -0.75; inside the box the two agree to
# about 45 dB PSNR (1 level on average), under the noise of the JPEG that follows.
PASTE_MIN_PSNR_DB = 42.0


def test_dali_paste_matches_the_cpu_profile_paste():
    import cv2

    faces = generated_faces(3)
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 256, (3, 180, 320, 3), dtype=np.uint8)
    backgrounds = np.stack([cv2.GaussianBlur(b, (0, 0), 3) for b in noise])  # a picture, not white noise
    boxes = np.array([[10, 20, 170, 180], [0, 0, 320, 180], [250, 100, 320, 180]], np.int32)

    @dali.pipeline_def(
        batch_size=3, num_threads=2, device_id=None, prefetch_queue_depth=1, exec_async=False, exec_pipelined=False
    )
    def pipe():
        return frame_paste_pipeline(device="cpu")

    pipeline = pipe()
    pipeline.build()
    sizes = np.array([[180, 320]] * 3, np.int32)
    feeds = (
        (contract.GENERATED_FACE, faces),
        (contract.BACKGROUND, backgrounds),
        (contract.CROP_BOX, boxes),
        (contract.FRAME_SIZE, sizes),
    )
    for spec, data in feeds:
        name = spec.name
        pipeline.feed_input(name, list(data))
    (out,) = pipeline.run()
    dali_frames = np.stack([np.asarray(sample) for sample in out])
    cpu_frames = paste_faces(faces, backgrounds, boxes)
    assert dali_frames.shape == cpu_frames.shape == backgrounds.shape and dali_frames.dtype == np.uint8
    for frame, dali_frame, cpu_frame, (x0, y0, x1, y1) in zip(backgrounds, dali_frames, cpu_frames, boxes):
        outside = np.ones((180, 320), bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(dali_frame[outside], frame[outside]), "only the box is written"
        box = (dali_frame[y0:y1, x0:x1].astype(float) - cpu_frame[y0:y1, x0:x1]) ** 2
        assert 10 * np.log10(255**2 / box.mean()) > PASTE_MIN_PSNR_DB


@pytest.mark.parametrize("model", [contract.FRAME_RESIZE_MODEL, contract.FRAME_PASTE_MODEL])
def test_the_production_dali_model_file_is_an_autoserialized_pipeline(model):
    path = paths.MODEL_REPOSITORY / model / "1" / "dali.py"
    spec = importlib.util.spec_from_file_location(f"{model}_dali", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the GPU pipeline; building it needs a GPU
    assert getattr(module.pipeline, "_is_autoserialize", False)
    # the same definition serializes for the CPU (the backend does this on the GPU at load)
    graph = frame_resize_pipeline if model == contract.FRAME_RESIZE_MODEL else frame_paste_pipeline

    @dali.pipeline_def(batch_size=contract.MAX_BATCH_SIZE, num_threads=1, device_id=None)
    def cpu_pipeline():
        return graph(device="cpu")

    assert len(cpu_pipeline().serialize()) > 100


def test_nvimgcodec_encoder_writes_full_hd_420_jpegs():
    frames = composite_frames(generated_faces(3))
    jpegs = NvImageCodecEncoder(cpu_only=True).encode(list(frames))
    assert len(jpegs) == 3
    for jpeg, frame in zip(jpegs, frames):
        height, width, _, subsampling = simplejpeg.decode_jpeg_header(jpeg)
        assert (width, height, subsampling) == (1920, 1080, "420")
        decoded = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
        assert np.abs(decoded.astype(int) - frame.astype(int)).mean() < 3.0  # noisy content, quality 95


def test_nvimgcodec_and_the_cpu_encoder_agree():
    from synctalk_preprocessing.compositing import CpuJpegEncoder

    frame = composite_frames(generated_faces(1))[0]
    via_nvimgcodec = simplejpeg.decode_jpeg(NvImageCodecEncoder(cpu_only=True).encode([frame])[0]).astype(int)
    encoder = CpuJpegEncoder()
    via_libjpeg = simplejpeg.decode_jpeg(encoder.encode([frame])[0]).astype(int)
    encoder.close()
    assert np.abs(via_nvimgcodec - via_libjpeg).mean() < 1.0


def test_the_paste_works_on_the_box_in_uint8_never_on_the_whole_frame_in_wider_types():
    """The paste at 1080p on DALI's CPU device with memory statistics: no operator holds more than
    one uint8 frame per sample (a full-frame int32 or float temporary would be 4x that), only the
    input, the reassembled frame and its contiguous copy are frame-sized, and everything the
    pipeline holds stays under 6 frames a sample (those 3, the pieces around the box, which
    together are less than one, and the box's own work; measured: 5.6)."""
    batch, (height, width) = 2, (contract.OUTPUT_HEIGHT, contract.OUTPUT_WIDTH)
    frame_bytes = height * width * 3

    @dali.pipeline_def(
        batch_size=batch,
        num_threads=2,
        device_id=None,
        prefetch_queue_depth=1,
        exec_async=False,
        exec_pipelined=False,
        enable_memory_stats=True,
    )
    def pipe():
        return frame_paste_pipeline(device="cpu")

    pipeline = pipe()
    pipeline.build()
    feeds = {
        contract.GENERATED_FACE.name: generated_faces(batch),
        contract.BACKGROUND.name: np.zeros((batch, height, width, 3), np.uint8),
        contract.CROP_BOX.name: np.array([[800, 300, 1120, 620]] * batch, np.int32),
        contract.FRAME_SIZE.name: np.array([[height, width]] * batch, np.int32),
    }
    for name, data in feeds.items():
        pipeline.feed_input(name, list(data))
    (out,) = pipeline.run()
    assert np.asarray(out[0]).shape == (height, width, 3)
    per_sample = {op: sum(stats["max_real_memory_size"]) for op, stats in pipeline.executor_statistics().items()}
    assert max(per_sample.values()) <= frame_bytes, max(per_sample.items(), key=lambda kv: kv[1])
    frame_sized = sorted(op for op, size in per_sample.items() if size > frame_bytes // 2)
    assert len(frame_sized) <= 3, frame_sized
    assert sum(per_sample.values()) < 6 * frame_bytes


def test_the_production_dali_models_serialize_without_a_gpu(tmp_path, models_dir):
    """synctalk_build.serialize_dali, the Dockerfile's build step, on a rendered GPU repository: one
    model.dali per DALI model, next to the dali.py the backend would otherwise autoserialize."""
    from synctalk_build import serialize_dali
    from synctalk_build.render_repository import render

    root = render("gpu", tmp_path / "repo", models_dir / "tiny")
    versions = serialize_dali.dali_models(root)
    assert sorted(v.parent.name for v in versions) == sorted([contract.FRAME_RESIZE_MODEL, contract.FRAME_PASTE_MODEL])
    assert serialize_dali.main([str(root)]) == 0
    for version in versions:
        serialized = (version / serialize_dali.SERIALIZED_FILE).read_bytes()
        assert contract.GENERATED_FACE.name.encode() in serialized and b"gpu" in serialized


def test_a_gpu_encoder_is_required_where_the_profile_needs_one():
    """On a machine without a usable GPU JPEG encoder (this one: no CUDA driver), the production
    encoder refuses to exist instead of falling back to the CPU: the jpeg_encoder model fails to
    load with the reason."""
    from synctalk_preprocessing.nvimgcodec_encoder import EncodeError

    with pytest.raises(EncodeError, match="GPU JPEG encoder on device 0"):
        NvImageCodecEncoder(require_gpu=True)


def test_a_frame_the_encoder_cannot_encode_is_an_error_naming_it():
    from synctalk_preprocessing.nvimgcodec_encoder import EncodeError

    frames = [np.zeros((64, 64, 3), np.uint8), np.zeros((70000, 2, 3), np.uint8)]  # over JPEG's 65,535 limit
    with pytest.raises(EncodeError, match=r"could not encode 1 of 2 frames \(first: frame 1, shape \(70000, 2, 3\)\)"):
        NvImageCodecEncoder(cpu_only=True).encode(frames)
