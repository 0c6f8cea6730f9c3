"""Log-mel front end of the request-flow reference, in NumPy.

The log-mel equals (to float32 rounding) ::

    log(librosa.feature.melspectrogram(y=clip, sr=16000, n_fft=400, hop_length=160,
        win_length=400, window="hann", center=True, pad_mode="constant", power=2.0,
        n_mels=80, fmin=0, fmax=8000, htk=False, norm="slaney") + 1e-5)

computed with a NumPy ``rfft`` STFT and librosa's own mel filter bank (built once; it needs no
JIT), so no request pays librosa's numba compilation. Video frame ``i`` (25 fps) gets the 16 mel
columns ``[4i - 8, 4i + 8)`` centred on its time (100 columns per second); columns outside the
clip are zero.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping

import numpy as np

from synctalk_client import contract


@dataclass(frozen=True)
class MelConfig:
    """Mel parameters; the ``audio_features`` model reads them from its config parameters."""

    sample_rate: int = contract.SAMPLE_RATE
    n_fft: int = 400
    hop_length: int = 160
    win_length: int = 400
    n_mels: int = contract.N_MELS
    fmin: float = 0.0
    fmax: float = 8000.0
    log_offset: float = 1e-5
    fps: int = contract.FPS
    window_columns: int = contract.MEL_WINDOW_COLUMNS

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> "MelConfig":
        """Build from Triton string parameters; unknown keys are ignored, missing keep defaults."""
        values = {}
        for f in fields(cls):
            if f.name in parameters:
                cast = int if f.type in ("int", int) else float
                values[f.name] = cast(parameters[f.name])
        config = cls(**values)
        config.check()
        return config

    def as_parameters(self) -> dict:
        return {k: str(v) for k, v in asdict(self).items()}

    def check(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if (self.sample_rate / self.hop_length) % self.fps:
            raise ValueError("sample_rate / hop_length must be a whole number of columns per video frame")
        if self.fmax > self.sample_rate / 2:
            raise ValueError(f"fmax {self.fmax} above Nyquist {self.sample_rate / 2}")

    @property
    def columns_per_frame(self) -> int:
        return int(self.sample_rate / self.hop_length) // self.fps

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps


class MelFrontEnd:
    """STFT -> power -> mel -> log, and per-frame windows. Thread-safe, no state per call."""

    def __init__(self, config: MelConfig = MelConfig()):
        import librosa  # the filter bank and the window only; both need no JIT

        config.check()
        self.config = config
        window = librosa.filters.get_window("hann", config.win_length, fftbins=True)
        pad = (config.n_fft - config.win_length) // 2  # librosa centres a short window in n_fft
        self._window = np.pad(window, (pad, config.n_fft - config.win_length - pad)).astype(np.float64)
        self._mel_basis = librosa.filters.mel(
            sr=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.fmin,
            fmax=config.fmax,
            htk=False,
            norm="slaney",
        ).astype(np.float32)

    def log_mel(self, clip: np.ndarray) -> np.ndarray:
        """[n_samples] float -> [n_mels, 1 + n_samples // hop] float32 log-mel (center=True)."""
        c = self.config
        y = np.asarray(clip, dtype=np.float32).reshape(-1)
        half = c.n_fft // 2
        padded = np.pad(y, (half, half), mode="constant")
        frames = np.lib.stride_tricks.sliding_window_view(padded, c.n_fft)[:: c.hop_length]
        spectrum = np.fft.rfft(frames * self._window, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        mel = self._mel_basis @ power.T
        return np.log(mel + np.float32(c.log_offset)).astype(np.float32)

    def frame_windows(self, log_mel: np.ndarray, n_frames: int, first_column: int = 0) -> np.ndarray:
        """Cut one window per video frame: [n_frames, n_mels, window_columns], zeros outside.

        Frame ``i``'s window starts at column ``first_column + cpf * i - window_columns // 2``
        where ``cpf`` is the number of mel columns per video frame (4 at 16 kHz, hop 160, 25 fps).
        """
        c = self.config
        w = c.window_columns
        n_mels, n_cols = log_mel.shape
        cpf = c.columns_per_frame
        starts = first_column + cpf * np.arange(n_frames) - w // 2
        lo = max(0, -int(starts.min())) if n_frames else 0
        hi = max(0, int(starts.max()) + w - n_cols) if n_frames else 0
        padded = np.zeros((n_mels, lo + n_cols + hi), dtype=np.float32)
        padded[:, lo : lo + n_cols] = log_mel
        cols = starts[:, None] + lo + np.arange(w)[None, :]  # [n_frames, w]
        return np.ascontiguousarray(padded[:, cols].transpose(1, 0, 2))

    def windows_for_audio(self, frames_audio: np.ndarray, context: np.ndarray = None, lengths: np.ndarray = None) -> np.ndarray:
        """[B, samples_per_frame] audio of one request (one contiguous clip) -> [B, n_mels, 16].

        With ``context`` [B, 2, C] and ``lengths`` [B, 2] (the AUDIO_CONTEXT tensors: row i's
        samples before and after frame i, and how many of them are real audio), the clip is
        extended by row 0's real samples before it and row B-1's real samples after it; the
        windows are cut on the extended clip's mel, so a clip streamed batch by batch with enough
        context gives the windows of the whole clip.
        """
        audio = np.asarray(frames_audio, dtype=np.float32)
        n_frames = audio.shape[0]
        if context is None:
            return self.frame_windows(self.log_mel(audio.reshape(-1)), n_frames)
        before_len, after_len = int(lengths[0, 0]), int(lengths[-1, 1])
        if before_len % self.config.hop_length:
            raise ValueError(f"context before the clip must be a multiple of {self.config.hop_length} samples, got {before_len}")
        size = context.shape[-1]
        clip = np.concatenate([context[0, 0, size - before_len :], audio.reshape(-1), context[-1, 1, :after_len]])
        return self.frame_windows(self.log_mel(clip), n_frames, first_column=before_len // self.config.hop_length)
