"""CompositeBatchRequest / CompositeBatchResponse, mirroring the reference service's messages.

A request goes one way: it checks itself (``validate_header``, then, once the client knows the
model id exists, ``validate_payload``) with the reference's messages verbatim, then lays itself out
as the input tensors the model id takes (``tensors``), into arrays the transport hands it (plain
arrays for the gRPC message, views of a shared-memory region). The client only transports.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from synctalk_common import contract
from synctalk_common.errors import BY_CATEGORY, CompositeError, ValidationError

# allocate(spec, shape) -> a writable array of that shape and the spec's dtype
Allocate = Callable[[contract.Tensor, tuple[int, ...]], np.ndarray]


def new_array(spec: contract.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    return np.empty(shape, dtype=spec.numpy_dtype)


_F32 = np.dtype("<f4")
_S = contract.FACE_SIZE


def visual_from_reference_bytes(visual_frames: bytes, batch_size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Reference bytes ``[all crops][all masked crops]`` -> VISUAL [B, 6, 320, 320] float32,
    written into ``out`` where given (one copy)."""
    flat = np.frombuffer(visual_frames, dtype=_F32)
    half = flat.size // 2
    if out is None:
        out = np.empty((batch_size, 6, _S, _S), np.float32)
    out[:, :3] = flat[:half].reshape(batch_size, 3, _S, _S)
    out[:, 3:] = flat[half:].reshape(batch_size, 3, _S, _S)
    return out


def _f32_bytes(samples) -> bytes | None:
    """float32 little-endian bytes of ``samples`` (None stays None: no audio context)."""
    return None if samples is None else np.asarray(samples, dtype=_F32).tobytes()


def _indices(values: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if values is None else tuple(int(v) if isinstance(v, np.integer) else v for v in values)


def audio_context_rows(
    audio: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    size: int = contract.AUDIO_CONTEXT_SAMPLES,
    align: int = contract.AUDIO_CONTEXT_ALIGN,
):
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
    - ``image_indices`` (optional, avatars): the image of the avatar's video each frame is drawn
      on (``frame_loop.image_indices`` of the whole clip: SyncTalk_2D's start frame and loop
      back); ``None``: the server's ping-pong of ``start_frame_idx + i`` (``frame_loop.live_images``).
    """

    model_id: str
    visual_frames: bytes
    raw_audio: bytes
    batch_size: int
    start_frame_idx: int = 0
    sample_rate: int = contract.SAMPLE_RATE
    audio_context_before: bytes | None = None
    audio_context_after: bytes | None = None
    image_indices: tuple[int, ...] | None = None

    @classmethod
    def from_arrays(
        cls,
        model_id: str,
        crops: np.ndarray,
        masked_crops: np.ndarray,
        audio: np.ndarray,
        start_frame_idx: int = 0,
        sample_rate: int = contract.SAMPLE_RATE,
        audio_context_before: np.ndarray | None = None,
        audio_context_after: np.ndarray | None = None,
        image_indices: Sequence[int] | None = None,
    ) -> CompositeBatchRequest:
        """From crops and masked crops [B,3,320,320] (BGR, [0,1]) and audio [B*640] or [B,640];
        optionally the clip's audio just before and after the batch (see the class)."""
        crops = np.asarray(crops, dtype=_F32)
        masked = np.asarray(masked_crops, dtype=_F32)
        return cls(
            model_id=model_id,
            visual_frames=crops.tobytes() + masked.tobytes(),
            raw_audio=np.asarray(audio, dtype=_F32).tobytes(),
            batch_size=int(crops.shape[0]) if crops.ndim == 4 else 0,
            start_frame_idx=start_frame_idx,
            sample_rate=sample_rate,
            audio_context_before=_f32_bytes(audio_context_before),
            audio_context_after=_f32_bytes(audio_context_after),
            image_indices=_indices(image_indices),
        )

    @classmethod
    def audio_only(
        cls,
        model_id: str,
        audio: np.ndarray,
        start_frame_idx: int = 0,
        audio_context_before: np.ndarray | None = None,
        audio_context_after: np.ndarray | None = None,
        image_indices: Sequence[int] | None = None,
    ) -> CompositeBatchRequest:
        """An avatar's request: the audio of B frames ([B*640] or [B,640]) and nothing else; the
        server cuts each frame's face input from the avatar's own frames (FRAME_INDEX =
        start_frame_idx + i). Optionally the clip's audio just before and after the batch, and the
        image each frame is drawn on."""
        audio = np.asarray(audio, dtype=_F32)
        return cls(
            model_id=model_id,
            visual_frames=b"",
            raw_audio=audio.tobytes(),
            batch_size=audio.size // contract.SAMPLES_PER_FRAME,
            start_frame_idx=start_frame_idx,
            audio_context_before=_f32_bytes(audio_context_before),
            audio_context_after=_f32_bytes(audio_context_after),
            image_indices=_indices(image_indices),
        )

    @classmethod
    def from_visual(cls, model_id: str, visual: np.ndarray, audio: np.ndarray, **kwargs) -> CompositeBatchRequest:
        """From the ensemble layout VISUAL [B,6,320,320] (crop channels 0-2, masked 3-5)."""
        visual = np.asarray(visual, dtype=_F32)
        return cls.from_arrays(model_id, visual[:, :3], visual[:, 3:], audio, **kwargs)

    # -- validation (the reference's order: model id, batch size | model exists | sizes, values) --
    def validate(self, takes: Collection[str] = (contract.VISUAL.name,), optional: Collection[str] = ()) -> None:
        """Raise ValidationError for a malformed request (everything but the model id's existence)."""
        self.validate_header()
        self.validate_payload(takes, optional)

    def validate_header(self) -> None:
        """Model id present and batch size in range."""
        if not self.model_id:
            raise ValidationError(contract.MSG_MODEL_ID_EMPTY)
        batch = self.batch_size
        if not isinstance(batch, (int, np.integer)) or not contract.MIN_BATCH_SIZE <= batch <= contract.MAX_BATCH_SIZE:
            raise ValidationError(
                f"batch_size must be between {contract.MIN_BATCH_SIZE} and {contract.MAX_BATCH_SIZE}, got {batch}"
            )

    def sends_visual(self, takes: Collection[str], optional: Collection[str] = ()) -> bool:
        """Whether VISUAL goes with the request: where the model id takes it, unless it is optional
        there (an avatar's) and the request has no crops (audio only)."""
        name = contract.VISUAL.name
        return name in takes and not (name in optional and len(self.visual_frames) == 0)

    def validate_payload(
        self, takes: Collection[str] = (contract.VISUAL.name,), optional: Collection[str] = ()
    ) -> None:
        """Sizes, sample rate and audio values, in the reference's order. ``takes`` / ``optional``:
        the input names of the model id, and those of them it can go without (VISUAL is checked
        where it is sent: ``sends_visual``)."""
        batch = self.batch_size
        if self.sends_visual(takes, optional):
            expected_visual = batch * contract.VISUAL_FRAME_BYTES
            if len(self.visual_frames) != expected_visual:
                raise ValidationError(
                    contract.MSG_VISUAL_SIZE.format(got=len(self.visual_frames), expected=expected_visual)
                )
        if len(self.raw_audio) == 0:
            raise ValidationError(contract.MSG_AUDIO_EMPTY)
        expected_audio = batch * contract.AUDIO_FRAME_BYTES
        if len(self.raw_audio) != expected_audio:
            raise ValidationError(
                f"{contract.MSG_AUDIO_SIZE}: got {len(self.raw_audio)} bytes, expected {expected_audio} "
                f"({batch} frames x {contract.SAMPLES_PER_FRAME} float32 samples)"
            )
        for side in ("audio_context_before", "audio_context_after"):
            context = getattr(self, side)
            if context is not None:
                if len(context) % contract.FLOAT32_BYTES:
                    raise ValidationError(f"{side}: {len(context)} bytes is not a whole number of float32 samples")
                samples = np.frombuffer(context, dtype=_F32)
                if not np.isfinite(samples).all():
                    raise ValidationError(
                        f"{side}: {int(np.count_nonzero(~np.isfinite(samples)))} samples are NaN or Inf"
                    )
        if self.image_indices is not None:
            if contract.IMAGE_INDEX.name not in takes:
                raise ValidationError(f"image_indices: model {self.model_id} has no images to choose from")
            images = self.image_indices
            if len(images) != batch or any(not isinstance(i, (int, np.integer)) or i < 0 for i in images):
                raise ValidationError(
                    f"image_indices must be {batch} whole numbers >= 0 (one per frame), got {list(images)[:40]}"
                )
        start = self.start_frame_idx
        if not isinstance(start, (int, np.integer)) or start < 0:
            raise ValidationError(f"start_frame_idx must be a whole number >= 0, got {start!r}")
        if self.sample_rate != contract.SAMPLE_RATE:
            raise ValidationError(f"sample_rate must be {contract.SAMPLE_RATE} Hz, got {self.sample_rate}")
        audio = np.frombuffer(self.raw_audio, dtype=_F32)
        if not np.isfinite(audio).all():
            bad = int(np.count_nonzero(~np.isfinite(audio)))
            raise ValidationError(
                f"raw_audio: {bad} of {audio.size} samples are NaN or Inf; expected finite float32 audio"
            )

    # -- layout -----------------------------------------------------------------------------------
    def tensors(
        self, takes: Collection[str], allocate: Allocate = new_array, optional: Collection[str] = ()
    ) -> dict[str, np.ndarray]:
        """Validate the payload, then lay the request out as the input tensors of a model id
        whose ensemble takes the input names ``takes`` (``optional``: those it can go without),
        each written once into ``allocate(spec, shape)``: VISUAL [B,6,320,320] (crop channels
        0-2, masked 3-5; not for an avatar's audio-only request), AUDIO [B,640], FRAME_INDEX [B,1]
        (start_frame_idx + i, avatars), IMAGE_INDEX [B,1] (where the request names images),
        AUDIO_CONTEXT [B,2,8000] and AUDIO_CONTEXT_LENGTH [B,2]
        (a request with context, where the model id takes them)."""
        self.validate_payload(takes, optional)
        b = self.batch_size
        out: dict[str, np.ndarray] = {}
        if self.sends_visual(takes, optional):
            out[contract.VISUAL.name] = visual_from_reference_bytes(
                self.visual_frames, b, allocate(contract.VISUAL, (b, *contract.VISUAL.dims))
            )
        audio = out[contract.AUDIO.name] = allocate(contract.AUDIO, (b, *contract.AUDIO.dims))
        audio[:] = np.frombuffer(self.raw_audio, dtype=_F32).reshape(b, contract.SAMPLES_PER_FRAME)
        if contract.FRAME_INDEX.name in takes:
            out[contract.FRAME_INDEX.name] = allocate(contract.FRAME_INDEX, (b, 1))
            out[contract.FRAME_INDEX.name][:] = self.frame_index_tensor()
        if self.image_indices is not None:
            out[contract.IMAGE_INDEX.name] = allocate(contract.IMAGE_INDEX, (b, 1))
            out[contract.IMAGE_INDEX.name][:, 0] = self.image_indices
        if self.has_audio_context and contract.AUDIO_CONTEXT.name in takes:
            for spec, array in zip(
                (contract.AUDIO_CONTEXT, contract.AUDIO_CONTEXT_LENGTH), self.audio_context_tensors()
            ):
                out[spec.name] = allocate(spec, array.shape)
                out[spec.name][...] = array
        return out

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
        before, after = (
            np.frombuffer(x or b"", dtype=_F32) for x in (self.audio_context_before, self.audio_context_after)
        )
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
    composited_frames: list[bytes] = field(default_factory=list)
    validation_ms: float | None = None
    audio_processing_ms: float | None = None
    inference_time_ms: float | None = None
    composite_time_ms: float | None = None
    queue_time_ms: float | None = None
    total_time_ms: float = 0.0
    error: str = ""
    error_category: str | None = None
    start_frame_idx: int = 0

    @property
    def http_status(self) -> int:
        return 200 if self.success else contract.HTTP_STATUS[self.error_category or contract.CATEGORY_PROCESSING]

    @classmethod
    def failure(
        cls, error: CompositeError, total_time_ms: float = 0.0, start_frame_idx: int = 0
    ) -> CompositeBatchResponse:
        return cls(
            success=False,
            error=error.message,
            error_category=error.category,
            total_time_ms=total_time_ms,
            start_frame_idx=start_frame_idx,
        )

    def raise_for_error(self) -> CompositeBatchResponse:
        if not self.success:
            raise BY_CATEGORY[self.error_category or contract.CATEGORY_PROCESSING](self.error)
        return self

    def timings(self) -> dict:
        keys = (
            "validation_ms",
            "audio_processing_ms",
            "inference_time_ms",
            "composite_time_ms",
            "queue_time_ms",
            "total_time_ms",
        )
        return {k: getattr(self, k) for k in keys}
