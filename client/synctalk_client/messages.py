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


def audio_context_rows(audio: np.ndarray, before: np.ndarray, after: np.ndarray,
                       size: int = contract.AUDIO_CONTEXT_SAMPLES, align: int = contract.AUDIO_CONTEXT_ALIGN):
    """AUDIO_CONTEXT [B,2,size] and AUDIO_CONTEXT_LENGTH [B,2] for a batch's audio [B,640] and
    the real audio just before and after it (any lengths: the nearest ``size`` samples are kept,
    those before in whole steps of ``align``, which keep the clip's start on the mel grid). Row i
    holds frame i's own neighbourhood: the ``size`` samples before frame i and after it, zeros
    where the clip has none, and how many are real (fewer than ``size``: the clip starts or ends
    there)."""
    b = audio.shape[0]
    keep_before = min(len(before), size) // align * align
    keep_after = min(len(after), size)
    padded = np.zeros(size + b * contract.SAMPLES_PER_FRAME + size, np.float32)
    padded[size - keep_before : size] = before[len(before) - keep_before :]
    padded[size : size + audio.size] = audio.reshape(-1)
    padded[size + audio.size : size + audio.size + keep_after] = after[:keep_after]
    starts = size + contract.SAMPLES_PER_FRAME * np.arange(b)
    windows = np.lib.stride_tricks.sliding_window_view(padded, size)  # windows[k] = padded[k : k + size]
    context = np.stack([windows[starts - size], windows[starts + contract.SAMPLES_PER_FRAME]], axis=1)
    real_before = np.minimum(size, keep_before + contract.SAMPLES_PER_FRAME * np.arange(b))
    real_after = np.minimum(size, keep_after + contract.SAMPLES_PER_FRAME * np.arange(b)[::-1])
    return np.ascontiguousarray(context), np.stack([real_before, real_after], axis=1).astype(np.int32)


@dataclass
class CompositeBatchRequest:
    """One batch of video frames and their audio, in the reference's wire layout.

    - ``visual_frames``: float32 little-endian bytes, ``[all B face crops][all B masked crops]``,
      each crop 3 x 320 x 320, BGR in [0, 1]: B x 2,457,600 bytes in all.
    - ``raw_audio``: B x 640 float32 little-endian samples of 16 kHz audio (40 ms per frame).
    - ``batch_size``: B, 1..32. ``start_frame_idx``: index of the first frame in the stream.
    - ``audio_context_before`` / ``audio_context_after`` (optional, float32 bytes): the clip's real
      audio just before and just after this batch when a long clip is streamed batch by batch
      (empty at the clip's start or end); the server uses the nearest 8000 samples of each, so
      the batch's edge frames get the mel windows they would get in the whole clip. ``None``
      (both): no context, the batch's audio is the whole clip.
    """

    model_id: str
    visual_frames: bytes
    raw_audio: bytes
    batch_size: int
    start_frame_idx: int = 0
    sample_rate: int = contract.SAMPLE_RATE
    audio_context_before: Optional[bytes] = None
    audio_context_after: Optional[bytes] = None

    @classmethod
    def from_arrays(
        cls,
        model_id: str,
        crops: np.ndarray,
        masked_crops: np.ndarray,
        audio: np.ndarray,
        start_frame_idx: int = 0,
        sample_rate: int = contract.SAMPLE_RATE,
        audio_context_before: Optional[np.ndarray] = None,
        audio_context_after: Optional[np.ndarray] = None,
    ) -> "CompositeBatchRequest":
        """From crops and masked crops [B,3,320,320] (BGR, [0,1]) and audio [B*640] or [B,640];
        optionally the clip's audio just before and after the batch (see the class)."""
        crops = np.asarray(crops, dtype=_F32)
        masked = np.asarray(masked_crops, dtype=_F32)

        def as_bytes(samples):
            return None if samples is None else np.asarray(samples, dtype=_F32).tobytes()

        return cls(
            model_id=model_id,
            visual_frames=crops.tobytes() + masked.tobytes(),
            raw_audio=np.asarray(audio, dtype=_F32).tobytes(),
            batch_size=int(crops.shape[0]) if crops.ndim == 4 else 0,
            start_frame_idx=start_frame_idx,
            sample_rate=sample_rate,
            audio_context_before=as_bytes(audio_context_before),
            audio_context_after=as_bytes(audio_context_after),
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

    @property
    def has_audio_context(self) -> bool:
        return self.audio_context_before is not None or self.audio_context_after is not None

    def audio_context_tensors(self):
        """(AUDIO_CONTEXT [B,2,8000], AUDIO_CONTEXT_LENGTH [B,2]) of a request with context."""
        before, after = (np.frombuffer(x or b"", dtype=_F32) for x in (self.audio_context_before, self.audio_context_after))
        return audio_context_rows(self.audio_tensor(), before, after)

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
