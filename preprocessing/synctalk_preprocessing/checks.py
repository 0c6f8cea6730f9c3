"""Server-side value checks of the request tensors, shared by the models that guard them.

Triton itself rejects wrong shapes, dtypes and batch sizes; these catch what it cannot see:
non-finite and far out-of-range values. Each returns ``None`` or a message naming the tensor,
what was found and what was expected.
"""

from __future__ import annotations

import numpy as np

VISUAL_TOLERANCE = 1e-3  # BGR in [0, 1], with room for float rounding
AUDIO_ABS_MAX = 4.0  # 16 kHz float audio lives in [-1, 1]; far beyond this is not audio


def _first_bad(mask: np.ndarray) -> str:
    index = np.argwhere(mask)[0]
    return f"frame {int(index[0])}, index {tuple(int(i) for i in index[1:])}"


def non_finite(name: str, array: np.ndarray, unit: str = "values") -> str | None:
    bad = ~np.isfinite(array)
    if bad.any():
        return (
            f"{name}: {int(bad.sum())} of {array.size} {unit} are NaN or Inf "
            f"(first at {_first_bad(bad)}); expected finite float32"
        )
    return None


def check_visual(name: str, visual: np.ndarray, tolerance: float = VISUAL_TOLERANCE) -> str | None:
    """Two reads of VISUAL (min, max) and no temporary for a good request: NaN and Inf show in
    the extremes (NaN propagates through min/max), and only a bad request pays for locating the
    first bad value."""
    if visual.size == 0:
        return None
    low, high = float(visual.min()), float(visual.max())
    if np.isfinite(low) and np.isfinite(high) and low >= -tolerance and high <= 1 + tolerance:
        return None
    message = non_finite(name, visual)
    if message:
        return message
    low, high = float(visual.min()), float(visual.max())
    if low < -tolerance or high > 1 + tolerance:
        return (
            f"{name}: values must be BGR scaled to [0, 1]; got min {low:g}, max {high:g} "
            f"(first at {_first_bad((visual < -tolerance) | (visual > 1 + tolerance))})"
        )
    return None


def check_audio(name: str, audio: np.ndarray, abs_max: float = AUDIO_ABS_MAX) -> str | None:
    message = non_finite(name, audio, unit="samples")
    if message:
        return message
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > abs_max:
        return f"{name}: sample magnitude {peak:g} exceeds {abs_max:g}; expected float audio in [-1, 1]"
    return None


def check_frame_index(name: str, index: np.ndarray | None, what: str = "frame indices") -> str | None:
    """FRAME_INDEX, IMAGE_INDEX (None where the request has none): stream positions, images >= 0."""
    if index is not None and index.size and int(index.min()) < 0:
        first = int(np.argmax(index.reshape(-1) < 0))
        return f"{name}: {what} must be >= 0, got {int(index.reshape(-1)[first])} at frame {first}"
    return None


def check_audio_context(
    context: np.ndarray | None,
    lengths: np.ndarray | None,
    samples: int,
    align: int,
    abs_max: float = AUDIO_ABS_MAX,
) -> str | None:
    """AUDIO_CONTEXT [B,2,samples] and AUDIO_CONTEXT_LENGTH [B,2]: both or neither, finite audio,
    lengths in [0, samples], those before a frame multiples of ``align`` (they place the clip's
    start on the mel grid; the audio after a frame may end anywhere, as a clip does)."""
    if context is None and lengths is None:
        return None
    if context is None or lengths is None:
        given, missing = (
            ("AUDIO_CONTEXT", "AUDIO_CONTEXT_LENGTH") if lengths is None else ("AUDIO_CONTEXT_LENGTH", "AUDIO_CONTEXT")
        )
        return f"{given} was sent without {missing}: send both or neither"
    message = check_audio("AUDIO_CONTEXT", context, abs_max)
    if message:
        return message
    bad = (lengths < 0) | (lengths > samples)
    bad[:, 0] |= lengths[:, 0] % align != 0
    if bad.any():
        frame, side = (int(i) for i in np.argwhere(bad)[0])
        return (
            f"AUDIO_CONTEXT_LENGTH: {int(lengths[frame, side])} samples {('before', 'after')[side]} frame {frame}; "
            f"expected 0..{samples}" + (f" in steps of {align}" if side == 0 else "")
        )
    return None
