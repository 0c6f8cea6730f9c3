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


# The wire format belongs to the client; these are its conversions, named for the server side.
visual_bytes_to_tensor = visual_from_reference_bytes
mask_face = synthetic.masked


def visual_tensor_to_bytes(visual: np.ndarray) -> bytes:
    """VISUAL [B, 6, 320, 320] -> reference bytes [all crops][all ROIs]."""
    v = np.asarray(visual, dtype=_F32)
    return v[:, :3].tobytes() + v[:, 3:].tobytes()


def audio_bytes_to_tensor(raw_audio: bytes, batch_size: int) -> np.ndarray:
    """float32 little-endian bytes -> AUDIO [B, 640]."""
    return np.frombuffer(raw_audio, dtype=_F32).reshape(batch_size, contract.SAMPLES_PER_FRAME).astype(np.float32)
