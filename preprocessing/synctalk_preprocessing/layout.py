"""Conversions between the reference request's byte layout and the ensemble's tensors.

The reference (CompositeBatchRequest) carries ``visual_frames`` as float32 little-endian bytes laid
out as ``[all B face crops (3x320x320 each)][all B masked crops]`` and ``raw_audio`` as B x 640
float32 little-endian samples. The ensemble takes ``VISUAL`` [B, 6, 320, 320] (channels 0-2 the
crop, 3-5 the masked crop) and ``AUDIO`` [B, 640].
"""
from __future__ import annotations

import numpy as np

from synctalk_client import contract, synthetic
from synctalk_client.messages import visual_from_reference_bytes

_F32 = np.dtype("<f4")
_S = contract.FACE_SIZE


# The wire format belongs to the client; these are its conversions, named for the server side.
visual_bytes_to_tensor = visual_from_reference_bytes
mask_lower_half = synthetic.masked


def visual_tensor_to_bytes(visual: np.ndarray) -> bytes:
    """VISUAL [B, 6, 320, 320] -> reference bytes [all crops][all ROIs]."""
    v = np.asarray(visual, dtype=_F32)
    return v[:, :3].tobytes() + v[:, 3:].tobytes()


def crops_to_visual(crops: np.ndarray, rois: np.ndarray) -> np.ndarray:
    """Crops and masked crops, each [B, 3, 320, 320], -> VISUAL [B, 6, 320, 320]."""
    return np.concatenate([np.asarray(crops, np.float32), np.asarray(rois, np.float32)], axis=1)


def audio_bytes_to_tensor(raw_audio: bytes, batch_size: int) -> np.ndarray:
    """float32 little-endian bytes -> AUDIO [B, 640]."""
    return np.frombuffer(raw_audio, dtype=_F32).reshape(batch_size, contract.SAMPLES_PER_FRAME).astype(np.float32)


def audio_tensor_to_bytes(audio: np.ndarray) -> bytes:
    return np.asarray(audio, dtype=_F32).tobytes()


def image_to_crop(image_bgr_uint8: np.ndarray) -> np.ndarray:
    """An HxWx3 BGR uint8 image -> one [3, 320, 320] float32 BGR crop in [0, 1]."""
    import cv2

    face = cv2.resize(image_bgr_uint8, (_S, _S), interpolation=cv2.INTER_AREA)
    return (face.astype(np.float32) / 255.0).transpose(2, 0, 1)
