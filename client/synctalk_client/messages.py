"""CompositeBatchRequest / CompositeBatchResponse, mirroring the reference service's messages."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from synctalk_client import contract
from synctalk_client.errors import BY_CATEGORY, CompositeError

_F32 = np.dtype("<f4")
_S = contract.FACE_SIZE


def visual_from_reference_bytes(visual_frames: bytes, batch_size: int) -> np.ndarray:
    """Reference bytes ``[all crops][all masked crops]`` -> VISUAL [B, 6, 320, 320] float32."""
    flat = np.frombuffer(visual_frames, dtype=_F32)
    half = flat.size // 2
    crops = flat[:half].reshape(batch_size, 3, _S, _S)
    masked = flat[half:].reshape(batch_size, 3, _S, _S)
    return np.concatenate([crops, masked], axis=1)


@dataclass
class CompositeBatchRequest:
    """One batch of video frames and their audio, in the reference's wire layout.

    - ``visual_frames``: float32 little-endian bytes, ``[all B face crops][all B masked crops]``,
      each crop 3 x 320 x 320, BGR in [0, 1]: B x 2,457,600 bytes in all.
    - ``raw_audio``: B x 640 float32 little-endian samples of 16 kHz audio (40 ms per frame).
    - ``batch_size``: B, 1..32. ``start_frame_idx``: index of the first frame in the stream.
    """

    model_id: str
    visual_frames: bytes
    raw_audio: bytes
    batch_size: int
    start_frame_idx: int = 0
    sample_rate: int = contract.SAMPLE_RATE

    @classmethod
    def from_arrays(
        cls,
        model_id: str,
        crops: np.ndarray,
        masked_crops: np.ndarray,
        audio: np.ndarray,
        start_frame_idx: int = 0,
        sample_rate: int = contract.SAMPLE_RATE,
    ) -> "CompositeBatchRequest":
        """From crops and masked crops [B,3,320,320] (BGR, [0,1]) and audio [B*640] or [B,640]."""
        crops = np.asarray(crops, dtype=_F32)
        masked = np.asarray(masked_crops, dtype=_F32)
        return cls(
            model_id=model_id,
            visual_frames=crops.tobytes() + masked.tobytes(),
            raw_audio=np.asarray(audio, dtype=_F32).tobytes(),
            batch_size=int(crops.shape[0]) if crops.ndim == 4 else 0,
            start_frame_idx=start_frame_idx,
            sample_rate=sample_rate,
        )

    @classmethod
    def from_visual(cls, model_id: str, visual: np.ndarray, audio: np.ndarray, **kwargs) -> "CompositeBatchRequest":
        """From the ensemble layout VISUAL [B,6,320,320] (crop channels 0-2, masked 3-5)."""
        visual = np.asarray(visual, dtype=_F32)
        return cls.from_arrays(model_id, visual[:, :3], visual[:, 3:], audio, **kwargs)

    def visual_tensor(self) -> np.ndarray:
        """VISUAL [B,6,320,320] float32 from the reference layout (assumes a validated request)."""
        return visual_from_reference_bytes(self.visual_frames, self.batch_size)

    def audio_tensor(self) -> np.ndarray:
        """AUDIO [B,640] float32 (assumes a validated request)."""
        return np.frombuffer(self.raw_audio, dtype=_F32).reshape(self.batch_size, contract.SAMPLES_PER_FRAME).copy()

    def frame_index_tensor(self) -> np.ndarray:
        """FRAME_INDEX [B,1] int64: start_frame_idx + i for frame i (avatars' background frame)."""
        return (self.start_frame_idx + np.arange(self.batch_size, dtype=np.int64))[:, None]


@dataclass
class CompositeBatchResponse:
    """The result of one batch. Timings are milliseconds; see ``CompositeClient`` for their sources.

    ``validation_ms``, ``audio_processing_ms``, ``inference_time_ms`` and ``composite_time_ms`` are server compute
    times from Triton's statistics API and are ``None`` when they could not be attributed to this
    request alone (another request ran at the same time, or stage timings were switched off).
    """

    success: bool
    composited_frames: List[bytes] = field(default_factory=list)
    validation_ms: Optional[float] = None
    audio_processing_ms: Optional[float] = None
    inference_time_ms: Optional[float] = None
    composite_time_ms: Optional[float] = None
    queue_time_ms: Optional[float] = None
    total_time_ms: float = 0.0
    error: str = ""
    error_category: Optional[str] = None
    start_frame_idx: int = 0

    @property
    def http_status(self) -> int:
        return 200 if self.success else contract.HTTP_STATUS[self.error_category or contract.CATEGORY_PROCESSING]

    @classmethod
    def failure(cls, error: CompositeError, total_time_ms: float = 0.0, start_frame_idx: int = 0) -> "CompositeBatchResponse":
        return cls(success=False, error=error.message, error_category=error.category, total_time_ms=total_time_ms, start_frame_idx=start_frame_idx)

    def raise_for_error(self) -> "CompositeBatchResponse":
        if not self.success:
            raise BY_CATEGORY[self.error_category or contract.CATEGORY_PROCESSING](self.error)
        return self

    def timings(self) -> dict:
        keys = ("validation_ms", "audio_processing_ms", "inference_time_ms", "composite_time_ms", "queue_time_ms", "total_time_ms")
        return {k: getattr(self, k) for k in keys}
