"""Audio files as the client sends them: 16 kHz mono float32, from any file libsndfile reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synctalk_common import contract


class AudioFileError(ValueError):
    """The file is missing, not audio, or empty: the message names it and says which."""


def read_audio(path: Path) -> np.ndarray:
    """Mono float32 16 kHz samples of an audio file (WAV, FLAC, OGG, MP3, .. as libsndfile reads
    them): channels averaged, any other sample rate resampled with soxr (high quality)."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise AudioFileError(
            f"audio file {path} not found" if not path.exists() else f"{path} is not an audio file (a directory?)"
        )
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise AudioFileError(f"{path}: not a readable audio file ({exc})") from None
    audio = np.asarray(data, np.float32).mean(axis=1)
    if rate != contract.SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, rate, contract.SAMPLE_RATE, quality="HQ").astype(np.float32)
    if audio.size == 0:
        raise AudioFileError(f"{path}: the audio is empty")
    return audio
