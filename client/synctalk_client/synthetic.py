"""Synthetic inputs for demos and tests: speech-like audio and face-like crops (NumPy only)."""
from __future__ import annotations

import numpy as np

from synctalk_client import contract


def speech_like_audio(n_frames: int, seed: int = 0, sample_rate: int = contract.SAMPLE_RATE) -> np.ndarray:
    """[n_frames * 640] float32: a voiced source (110-180 Hz pitch with harmonics) shaped by
    moving formants and a ~4 Hz syllable envelope, with short unvoiced noise bursts."""
    rng = np.random.default_rng(seed)
    n = n_frames * sample_rate // contract.FPS
    t = np.arange(n) / sample_rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 16))
    formant = 0.6 + 0.4 * np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6))
    voiced = voiced * formant
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 1.5
    noise = rng.normal(0, 0.15, n) * (np.sin(2 * np.pi * 1.3 * t) > 0.8)
    audio = 0.25 * voiced * syllables + noise * (1 - syllables)
    return (0.5 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


def face_crops(n_frames: int, seed: int = 0, size: int = contract.FACE_SIZE) -> np.ndarray:
    """[n_frames, 3, size, size] float32 BGR in [0, 1]: a skin-toned face with eyes and a mouth
    that opens and closes over the frames, on a plain background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    background = np.array([0.35, 0.30, 0.25], np.float32)  # BGR
    skin = np.array([0.55, 0.65, 0.85], np.float32) + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    crops = np.empty((n_frames, 3, size, size), np.float32)
    face = ((xx - 0.5) / 0.33) ** 2 + ((yy - 0.5) / 0.43) ** 2 < 1
    eyes = (((xx - 0.37) / 0.05) ** 2 + ((yy - 0.4) / 0.03) ** 2 < 1) | (((xx - 0.63) / 0.05) ** 2 + ((yy - 0.4) / 0.03) ** 2 < 1)
    for i in range(n_frames):
        opening = 0.01 + 0.04 * (0.5 + 0.5 * np.sin(i * 0.9))
        mouth = ((xx - 0.5) / 0.12) ** 2 + ((yy - 0.72) / opening) ** 2 < 1
        image = np.where(face[..., None], skin, background)
        image[eyes] = (0.1, 0.1, 0.1)
        image[mouth] = (0.2, 0.15, 0.45)
        crops[i] = image.transpose(2, 0, 1)
    return crops


def masked(crops: np.ndarray) -> np.ndarray:
    """The SyncTalk masked crop: the lower (mouth) half blacked out."""
    out = np.array(crops, dtype=np.float32, copy=True)
    out[..., out.shape[-2] // 2 :, :] = 0.0
    return out
