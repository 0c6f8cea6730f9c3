"""Client-side validation of a CompositeBatchRequest, with the reference's messages verbatim.

The server validates too (shapes, dtypes, batch limits, non-finite audio); checking here first
gives the reference's exact messages and saves sending up to 39 MB of a request that must fail.
"""
from __future__ import annotations

import numpy as np

from synctalk_client import contract
from synctalk_client.errors import ValidationError


def validate_request(request) -> None:
    """Raise ValidationError for a malformed request (everything but the model id's existence)."""
    validate_header(request)
    validate_payload(request)


def validate_header(request) -> None:
    """Model id present and batch size in range."""
    if not request.model_id:
        raise ValidationError(contract.MSG_MODEL_ID_EMPTY)
    batch = request.batch_size
    if not isinstance(batch, (int, np.integer)) or not contract.MIN_BATCH_SIZE <= batch <= contract.MAX_BATCH_SIZE:
        raise ValidationError(
            f"batch_size must be between {contract.MIN_BATCH_SIZE} and {contract.MAX_BATCH_SIZE}, got {batch}"
        )


def validate_payload(request) -> None:
    """Sizes, sample rate and audio values, in the reference's order."""
    batch = request.batch_size
    expected_visual = batch * contract.VISUAL_FRAME_BYTES
    if len(request.visual_frames) != expected_visual:
        raise ValidationError(contract.MSG_VISUAL_SIZE.format(got=len(request.visual_frames), expected=expected_visual))
    if len(request.raw_audio) == 0:
        raise ValidationError(contract.MSG_AUDIO_EMPTY)
    expected_audio = batch * contract.AUDIO_FRAME_BYTES
    if len(request.raw_audio) != expected_audio:
        raise ValidationError(
            f"{contract.MSG_AUDIO_SIZE}: got {len(request.raw_audio)} bytes, expected {expected_audio} "
            f"({batch} frames x {contract.SAMPLES_PER_FRAME} float32 samples)"
        )
    for side in ("audio_context_before", "audio_context_after"):
        context = getattr(request, side, None)
        if context is not None:
            if len(context) % contract.FLOAT32_BYTES:
                raise ValidationError(f"{side}: {len(context)} bytes is not a whole number of float32 samples")
            samples = np.frombuffer(context, dtype="<f4")
            if not np.isfinite(samples).all():
                raise ValidationError(f"{side}: {int(np.count_nonzero(~np.isfinite(samples)))} samples are NaN or Inf")
    start = request.start_frame_idx
    if not isinstance(start, (int, np.integer)) or start < 0:
        raise ValidationError(f"start_frame_idx must be a whole number >= 0, got {start!r}")
    if request.sample_rate != contract.SAMPLE_RATE:
        raise ValidationError(f"sample_rate must be {contract.SAMPLE_RATE} Hz, got {request.sample_rate}")
    audio = np.frombuffer(request.raw_audio, dtype="<f4")
    if not np.isfinite(audio).all():
        bad = int(np.count_nonzero(~np.isfinite(audio)))
        raise ValidationError(f"raw_audio: {bad} of {audio.size} samples are NaN or Inf; expected finite float32 audio")
