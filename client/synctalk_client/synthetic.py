"""Synthetic inputs for demos and tests: speech-like audio and face-like crops (NumPy only)."""

from __future__ import annotations

import numpy as np

from synctalk_common import contract


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
    eyes = (((xx - 0.37) / 0.05) ** 2 + ((yy - 0.4) / 0.03) ** 2 < 1) | (
        ((xx - 0.63) / 0.05) ** 2 + ((yy - 0.4) / 0.03) ** 2 < 1
    )
    for i in range(n_frames):
        opening = 0.01 + 0.04 * (0.5 + 0.5 * np.sin(i * 0.9))
        mouth = ((xx - 0.5) / 0.12) ** 2 + ((yy - 0.72) / opening) ** 2 < 1
        image = np.where(face[..., None], skin, background)
        image[eyes] = (0.1, 0.1, 0.1)
        image[mouth] = (0.2, 0.15, 0.45)
        crops[i] = image.transpose(2, 0, 1)
    return crops


def masked(crops: np.ndarray) -> np.ndarray:
    """SyncTalk_2D's masked face: [..., 320, 320] crops with ``contract.FACE_MASK_RECT`` (x 5,
    y 5, w 310, h 305: rows 5..309, columns 5..314) blacked out, as ``cv2.rectangle(face, (5, 5,
    310, 305), (0, 0, 0), -1)`` does upstream; only a thin frame of the face stays visible."""
    x, y, w, h = contract.FACE_MASK_RECT
    out = np.array(crops, dtype=np.float32, copy=True)
    out[..., y : y + h, x : x + w] = 0.0
    return out


def avatar_background(n_frames: int, width: int = 1280, height: int = 720, face: int = 240, seed: int = 0):
    """A background video for a synthetic avatar: ([n, height, width, 3] uint8 RGB frames,
    [n, 4] int crop boxes). A lit studio wall and a torso whose head sways a little from side to
    side; the box (``face`` pixels square) follows the head, so each frame has its own box."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    wall = np.stack([70 + 60 * (1 - yy / height), 90 + 50 * (1 - yy / height), 120 + 40 * xx / width], axis=-1)
    wall += rng.normal(0, 2.0, wall.shape).astype(np.float32)
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    boxes = np.empty((n_frames, 4), np.int64)
    for i in range(n_frames):
        cx = width / 2 + 0.03 * width * np.sin(2 * np.pi * i / max(n_frames, 1))
        top = int(height * 0.18)
        image = wall.copy()
        torso = ((xx - cx) / (0.22 * width)) ** 2 + ((yy - height) / (0.38 * height)) ** 2 < 1
        image[torso] = (40, 55, 90)
        head = ((xx - cx) / (0.42 * face)) ** 2 + ((yy - top - face / 2) / (0.52 * face)) ** 2 < 1
        image[head] = (215, 165, 140)
        for ex in (-0.17, 0.17):
            eye = ((xx - cx - ex * face) / (0.05 * face)) ** 2 + ((yy - top - 0.4 * face) / (0.03 * face)) ** 2 < 1
            image[eye] = (30, 25, 25)
        mouth = ((xx - cx) / (0.12 * face)) ** 2 + ((yy - top - 0.72 * face) / (0.015 * face)) ** 2 < 1
        image[mouth] = (120, 40, 50)
        frames[i] = np.clip(image, 0, 255).astype(np.uint8)
        x0 = int(round(cx - face / 2))
        boxes[i] = (x0, top, x0 + face, top + face)
    return frames, boxes
