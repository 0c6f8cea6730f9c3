"""An avatar's INT8 generator for CPU hosts (``synctalk-avatars add --int8``).

onnxruntime's static quantization (QDQ: per-channel INT8 weights, UINT8 activations, which its
CPU provider runs as integer convolutions, VNNI where the CPU has it) calibrated on the avatar's
own inputs: its frames' face inputs (each face and its masked copy, as the server gives them) and
speech through the avatar's own audio front end and encoder (``synthetic.speech_like_audio``, or
a WAV of the avatar's voice). The INT8 model is measured against the FP32 one on this host, in
one process, on the avatar's frames: time per frame at batch 1 (the live path's batch), and the
PSNR of its generated faces against FP32's (8-bit, the faces the server pastes). It is kept only
if at least ``MIN_SPEEDUP`` times faster; otherwise the avatar keeps its FP32 generator, and the
measurement says why.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from synctalk_client import synthetic
from synctalk_common import contract
from synctalk_common.face_geometry import visual_inputs

MIN_SPEEDUP = 1.5  # kept only if at least this much faster than FP32 on this host
CALIBRATION_FRAMES = 32  # frames of the avatar (and of speech) the activation ranges come from
CHECK_FRAMES = 8  # other frames: speed and PSNR


def _spread(n_frames: int, count: int, offset: float = 0.0) -> np.ndarray:
    """``count`` frame indices spread over an avatar's ``n_frames`` (repeats when it has fewer)."""
    return (np.floor((np.arange(count) + offset) * n_frames / count).astype(np.int64)) % n_frames


def audio_features(audio: np.ndarray, audio_preset: str, encoder_onnx: Path, first_frame: int = 0) -> np.ndarray:
    """[n, 32, 16, 16] generator audio inputs for whole frames of ``audio`` (16 kHz float32),
    through the avatar's front end (``audio_preset``) and audio encoder, as the ensemble computes
    them for one request of the clip."""
    import onnxruntime as ort

    from synctalk_preprocessing.audio import PRESETS, MelFrontEnd

    spf = contract.SAMPLES_PER_FRAME
    frames = np.asarray(audio, np.float32)[: len(audio) // spf * spf].reshape(-1, spf)
    windows = MelFrontEnd(PRESETS[audio_preset]).windows_for_audio(frames, first_frame=first_frame)
    session = ort.InferenceSession(str(encoder_onnx), providers=["CPUExecutionProvider"])
    if isinstance(windows, tuple):  # SyncTalk_2D: 16 neighbouring windows and their mask
        neighbours, mask = windows
        feeds = {contract.MEL_NEIGHBOURS.name: neighbours[:, :, None], contract.NEIGHBOUR_MASK.name: mask}
    else:
        feeds = {contract.MEL_WINDOWS.name: windows[:, None]}
    feeds = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}
    (features,) = session.run([contract.AUDIO_FEATURES.name], feeds)
    return features.reshape((-1,) + tuple(contract.AUDIO_FEATURES.dims))


def generator_feeds(
    backgrounds: np.ndarray,
    boxes: np.ndarray,
    features: np.ndarray,
    count: int,
    offset: float = 0.0,
) -> list[dict[str, np.ndarray]]:
    """``count`` one-frame generator inputs: an avatar frame's VISUAL with a frame of speech."""
    frames = _spread(len(backgrounds), count, offset)
    speech = _spread(len(features), count, offset)
    visual = visual_inputs(backgrounds[frames], boxes[frames])
    return [
        {contract.GENERATOR_VISUAL.name: visual[i : i + 1], contract.GENERATOR_AUDIO.name: features[j : j + 1]}
        for i, j in enumerate(speech)
    ]


def quantize(fp32_onnx: Path, int8_onnx: Path, calibration: list[dict[str, np.ndarray]]) -> Path:
    """Static INT8 quantization of ``fp32_onnx`` calibrated on ``calibration`` (MinMax ranges)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="synctalk-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_onnx),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return Path(int8_onnx)


def _faces_u8(face: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(face * 255.0), 0, 255).astype(np.uint8)


def compare(fp32_onnx: Path, int8_onnx: Path, feeds: list[dict[str, np.ndarray]], rounds: int = 3) -> dict:
    """INT8 against FP32 on ``feeds``, in this process, in turns: median ms a frame (batch 1),
    the speed-up, and the PSNR (dB) of INT8's generated faces against FP32's, as 8-bit images."""
    import onnxruntime as ort

    sessions = {
        k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        for k, p in (("fp32", fp32_onnx), ("int8", int8_onnx))
    }
    output = contract.GENERATOR_OUTPUT.name
    faces: dict[str, list[np.ndarray]] = {"fp32": [], "int8": []}
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for session in sessions.values():  # warm-up
        session.run([output], feeds[0])
    for r in range(rounds):  # each model's frames in a block (one model's idle threads spin after its runs)
        for name, session in sessions.items():
            for feed in feeds:
                started = time.perf_counter()
                (face,) = session.run([output], feed)
                times[name].append(time.perf_counter() - started)
                if r == 0:
                    faces[name].append(_faces_u8(face))
    a = np.concatenate(faces["fp32"]).astype(np.float64)
    b = np.concatenate(faces["int8"]).astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    ms = {k: statistics.median(v) * 1000 for k, v in times.items()}
    return {
        "fp32_ms_per_frame": round(ms["fp32"], 1),
        "int8_ms_per_frame": round(ms["int8"], 1),
        "speedup": round(ms["fp32"] / ms["int8"], 2),
        "psnr_db": round(10 * np.log10(255.0**2 / mse), 1) if mse > 0 else float("inf"),
        "frames": len(feeds),
    }


def speech(audio_file: Path | None, n_frames: int = CALIBRATION_FRAMES + CHECK_FRAMES) -> np.ndarray:
    """The calibration speech: an audio file of the avatar's voice (its first ``n_frames`` frames,
    or all of it), else ``synthetic.speech_like_audio``."""
    if audio_file is None:
        return synthetic.speech_like_audio(n_frames, seed=35)
    from synctalk_client.audio_file import read_audio

    audio = read_audio(Path(audio_file))
    if len(audio) < contract.SAMPLES_PER_FRAME:
        raise ValueError(f"{audio_file}: shorter than one frame of audio (40 ms at 16 kHz)")
    return audio[: n_frames * contract.SAMPLES_PER_FRAME]


def build(
    fp32_onnx: Path,
    int8_onnx: Path,
    backgrounds: np.ndarray,
    boxes: np.ndarray,
    audio_preset: str,
    encoder_onnx: Path,
    audio: np.ndarray,
    min_speedup: float = MIN_SPEEDUP,
) -> dict:
    """Quantize ``fp32_onnx`` to ``int8_onnx`` on an avatar's frames and ``audio``, and measure it
    on other frames of both; the file is removed unless it is ``min_speedup`` times faster.
    Returns the measurement with ``kept``."""
    features = audio_features(audio, audio_preset, encoder_onnx)
    quantize(fp32_onnx, int8_onnx, generator_feeds(backgrounds, boxes, features, CALIBRATION_FRAMES))
    result = compare(fp32_onnx, int8_onnx, generator_feeds(backgrounds, boxes, features, CHECK_FRAMES, offset=0.5))
    result["min_speedup"] = min_speedup
    result["kept"] = result["speedup"] >= min_speedup
    if not result["kept"]:
        Path(int8_onnx).unlink()
    return result


def describe(result: dict) -> str:
    """One line for ``synctalk-avatars add --int8``."""
    verdict = "kept" if result["kept"] else f"not kept: below {result['min_speedup']:g}x, the FP32 generator serves"
    return (
        f"INT8 generator: {result['int8_ms_per_frame']} ms a frame against FP32's {result['fp32_ms_per_frame']} "
        f"({result['speedup']:g}x) on this host, PSNR {result['psnr_db']} dB against FP32 on "
        f"{result['frames']} of the avatar's frames ({verdict})"
    )
