"""Audio front ends in NumPy: the request-flow reference's log-mel, and SyncTalk_2D's (``SYNCTALK_2D``).

The log-mel equals (to float32 rounding) ::

    log(librosa.feature.melspectrogram(y=clip, sr=16000, n_fft=400, hop_length=160,
        win_length=400, window="hann", center=True, pad_mode="constant", power=2.0,
        n_mels=80, fmin=0, fmax=8000, htk=False, norm="slaney") + 1e-5)

computed with a NumPy ``rfft`` STFT and librosa's own mel filter bank (built once; it needs no
JIT), so no request pays librosa's numba compilation. Video frame ``i`` (25 fps) gets the 16 mel
columns ``[4i - 8, 4i + 8)`` centred on its time (100 columns per second); columns outside the
clip are zero.

SyncTalk_2D's (wav2lip's) mel and its windows, indexed as its inference indexes them, are
``MelConfig`` ``SYNCTALK_2D`` and ``MelFrontEnd.synctalk2d_windows``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

from synctalk_common import contract


@dataclass(frozen=True)
class MelConfig:
    """Mel parameters; the ``audio_features`` model reads them from its config parameters.

    The defaults are the request-flow reference's. ``SYNCTALK_2D`` (below) is the front end of
    SyncTalk_2D / wav2lip: pre-emphasis, magnitude (not power) mel, dB normalised to [-4, 4],
    a window starting at frame i's time, and the 16 neighbouring frames' windows per frame.
    """

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
    preemphasis: float = 0.0  # y[n] - k * y[n-1] before the STFT (0: none)
    magnitude_power: float = 2.0  # |STFT| ** p before the mel filter bank (2: power, 1: magnitude)
    scale: str = "log"  # "log": log(mel + log_offset); "db": 20 log10(max(1e-5, mel)) - db_ref, normalised
    db_ref: float = 20.0
    db_min: float = -100.0
    db_clip: float = 4.0  # "db" maps [db_min, 0] dB to [-db_clip, db_clip] and clips
    window_start: str = "centred"  # "centred": [cpf*i - w/2, +w); "frame": [floor(cps * i / fps), +w)
    neighbours: int = 0  # > 0: each frame gets the windows of frames i - n/2 .. i + n/2 - 1

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> MelConfig:
        """Build from Triton string parameters; unknown keys are ignored, missing keep defaults."""
        values = {}
        for f in fields(cls):
            if f.name in parameters:
                cast = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
                values[f.name] = cast(parameters[f.name])
        config = cls(**values)
        config.check()
        return config

    def as_parameters(self) -> dict:
        return {k: str(v) for k, v in asdict(self).items()}

    def check(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if self.window_start not in ("centred", "frame"):
            raise ValueError(f"window_start must be 'centred' or 'frame', got {self.window_start!r}")
        if self.scale not in ("log", "db"):
            raise ValueError(f"scale must be 'log' or 'db', got {self.scale!r}")
        if self.window_start == "centred" and (self.sample_rate / self.hop_length) % self.fps:
            raise ValueError("sample_rate / hop_length must be a whole number of columns per video frame")
        if self.fmax > self.sample_rate / 2:
            raise ValueError(f"fmax {self.fmax} above Nyquist {self.sample_rate / 2}")

    @property
    def columns_per_frame(self) -> int:
        return int(self.sample_rate / self.hop_length) // self.fps

    @property
    def columns_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps


SYNCTALK_2D = MelConfig(
    n_fft=800,
    hop_length=200,
    win_length=800,
    fmin=55.0,
    fmax=7600.0,
    preemphasis=0.97,
    magnitude_power=1.0,
    scale="db",
    window_start="frame",
    neighbours=16,
)
PRESETS = {"reference": MelConfig(), "synctalk2d": SYNCTALK_2D}


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
        """[n_samples] float -> [n_mels, 1 + n_samples // hop] float32 (center=True, zero padding)."""
        c = self.config
        y = np.asarray(clip, dtype=np.float32).reshape(-1)
        if c.preemphasis:
            y = np.concatenate([y[:1], y[1:] - np.float32(c.preemphasis) * y[:-1]])
        half = c.n_fft // 2
        padded = np.pad(y, (half, half), mode="constant")
        frames = np.lib.stride_tricks.sliding_window_view(padded, c.n_fft)[:: c.hop_length]
        spectrum = np.fft.rfft(frames * self._window, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        if c.magnitude_power != 2.0:
            power = power ** np.float32(c.magnitude_power / 2.0)
        mel = self._mel_basis @ power.T
        if c.scale == "log":
            return np.log(mel + np.float32(c.log_offset)).astype(np.float32)
        db = 20.0 * np.log10(np.maximum(np.float32(1e-5), mel)) - np.float32(c.db_ref)
        scaled = 2.0 * c.db_clip * ((db - c.db_min) / -c.db_min) - c.db_clip
        return np.clip(scaled, -c.db_clip, c.db_clip).astype(np.float32)

    def window_starts(self, frames: np.ndarray) -> np.ndarray:
        """First mel column (absolute: column j is centred on sample j * hop of the clip) of the
        window of each absolute video frame index in ``frames``."""
        c = self.config
        if c.window_start == "centred":
            return c.columns_per_frame * frames - c.window_columns // 2
        return np.floor(c.columns_per_second * frames / c.fps + 1e-9).astype(np.int64)

    def frame_windows(
        self, log_mel: np.ndarray, n_frames: int, first_column: float = 0, first_frame: int = 0, offset: int = 0
    ) -> np.ndarray:
        """Cut one window per video frame: [n_frames, n_mels, window_columns], zeros outside.

        The windows of stream frames ``first_frame + offset`` onwards (``offset`` < 0: frames
        before the batch), on a ``log_mel`` whose column ``first_column`` is centred on
        ``first_frame``'s first sample. Reference layout: frame ``i``'s window is columns
        ``[first_column + cpf * i - w/2, + w)`` (cpf = 4 columns per frame at hop 160);
        SyncTalk_2D's starts at ``floor(80 * i / 25)`` of the stream.
        """
        c = self.config
        absolute = np.arange(first_frame + offset, first_frame + offset + n_frames)
        origin = first_frame * c.sample_rate / c.fps / c.hop_length - first_column  # stream column of log_mel[:, 0]
        return self._cut_windows(log_mel, self.window_starts(absolute) - int(round(origin)))

    def _cut_windows(self, log_mel: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """[n, n_mels, w]: columns ``starts[i] .. + w`` of ``log_mel``, zeros outside it."""
        w = self.config.window_columns
        n_mels, n_cols = log_mel.shape
        lo = max(0, -int(starts.min())) if len(starts) else 0
        hi = max(0, int(starts.max()) + w - n_cols) if len(starts) else 0
        padded = np.zeros((n_mels, lo + n_cols + hi), dtype=np.float32)
        padded[:, lo : lo + n_cols] = log_mel
        cols = starts[:, None] + lo + np.arange(w)[None, :]  # [n, w]
        return np.ascontiguousarray(padded[:, cols].transpose(1, 0, 2))

    @staticmethod
    def _extended_clip(audio: np.ndarray, context: np.ndarray | None, lengths: np.ndarray | None):
        """The request's clip extended by row 0's real audio before it and row B-1's after it:
        (clip, samples before, samples after, context size or None)."""
        clip = audio.reshape(-1)
        if context is None:
            return clip, 0, 0, None
        size = context.shape[-1]
        before_len, after_len = int(lengths[0, 0]), int(lengths[-1, 1])
        return (
            np.concatenate([context[0, 0, size - before_len :], clip, context[-1, 1, :after_len]]),
            before_len,
            after_len,
            size,
        )

    def _aligned_log_mel(self, clip: np.ndarray, align: int) -> np.ndarray:
        """log_mel of ``clip`` after ``align`` zeros (which put it on a column grid)."""
        return self.log_mel(np.concatenate([np.zeros(align, np.float32), clip]) if align else clip)

    def windows_for_audio(
        self, frames_audio: np.ndarray, context: np.ndarray = None, lengths: np.ndarray = None, first_frame: int = 0
    ):
        """[B, samples_per_frame] audio of one request (one contiguous clip) -> [B, n_mels, 16].

        With ``context`` [B, 2, C] and ``lengths`` [B, 2] (the AUDIO_CONTEXT tensors: row i's
        samples before and after frame i, and how many of them are real audio), the clip is
        extended by row 0's real samples before it and row B-1's real samples after it; the
        windows are cut on the extended clip's mel, so a clip streamed batch by batch with enough
        context gives the windows of the whole clip. ``first_frame``: the stream index of the
        batch's first frame (where a frame is not a whole number of mel columns, the extended clip
        starts on the stream's column grid, padded with up to hop - 1 zeros).

        With ``neighbours`` n > 0 (SyncTalk_2D): ``synctalk2d_windows``, the same arguments.
        """
        c = self.config
        if c.neighbours:
            return self.synctalk2d_windows(frames_audio, context, lengths, first_frame)
        audio = np.asarray(frames_audio, dtype=np.float32)
        n_frames, spf = audio.shape
        clip, before_len, _, _ = self._extended_clip(audio, context, lengths)
        align = (first_frame * spf - before_len) % c.hop_length  # zeros that put the clip on the stream's grid
        log_mel = self._aligned_log_mel(clip, align)
        first_column = (before_len + align) / c.hop_length
        return self.frame_windows(log_mel, n_frames, first_column, first_frame)

    # -- SyncTalk_2D: 16 neighbouring windows per frame, indexed as upstream's inference does ----
    def clip_window_starts(self, k: np.ndarray, n_columns: int | None) -> np.ndarray:
        """First mel column of window ``k`` (clip-relative, 0 .. N-1) of a clip of ``n_columns``
        columns (None: the clip goes on): ``int(80 * (k / 25))``, moved back to the last 16
        columns where it would run past the clip's end (``AudDataset.crop_audio_window``)."""
        c = self.config
        starts = (c.columns_per_second * (np.asarray(k, np.float64).reshape(-1) / float(c.fps))).astype(
            np.int64
        )  # int(): truncation
        if n_columns is not None:
            starts = np.where(starts + c.window_columns > n_columns, n_columns - c.window_columns, starts)
        return starts

    def synctalk2d_windows(
        self, frames_audio: np.ndarray, context: np.ndarray = None, lengths: np.ndarray = None, first_frame: int = 0
    ):
        """SyncTalk_2D's per-frame audio windows for one request: ([B, 16, n_mels, 16] windows,
        [B, 16] float mask).

        Upstream (``inference_328.py``, ``utils.get_audio_features``) encodes windows W_0 .. W_{N-1}
        of the whole clip (window k: mel columns ``clip_window_starts(k)``, N =
        ``contract.synctalk2d_window_count``), pads the list by repeating its ends, P = [W_0, W_0,
        W_1, .., W_{N-1}, W_{N-1}], and gives frame i the rows P[i-8 : i+8], zeros where the slice
        leaves P: row j of frame i is window clamp(i - 9 + j, 0, N - 1), masked (zero) unless
        0 <= i - 8 + j <= N + 1.

        The clip is the request's audio, extended by its context (as in ``windows_for_audio``).
        Its start is known when the context before the batch is shorter than the context size
        (or absent): the batch's first frame is then clip frame ``before // 640``. Otherwise the
        clip started further back and frame indices are ``FRAME_INDEX`` (``first_frame`` onwards:
        a stream counts its frames from its start). Its end is known likewise from the context
        after the batch; while it is not, no window is moved back and no end padding applies
        (the context reaches past every window the batch needs).
        """
        c = self.config
        audio = np.asarray(frames_audio, dtype=np.float32)
        n_frames, spf = audio.shape
        half = c.neighbours // 2
        clip, before_len, after_len, size = self._extended_clip(audio, context, lengths)
        start_known, end_known = size is None or before_len < size, size is None or after_len < size
        # clip frame index of the batch's first frame; the anchor (clip frame 0's first sample) in
        # batch-relative samples
        first = before_len // spf if start_known and before_len % spf == 0 else int(first_frame)
        anchor = -first * spf
        segment_start = -before_len
        align = (segment_start - anchor) % c.hop_length  # zeros that put the segment on the clip's column grid
        log_mel = self._aligned_log_mel(clip, align)
        first_column = (segment_start - align - anchor) // c.hop_length  # clip column of log_mel[:, 0]
        n_windows = n_columns = None
        if end_known:
            clip_samples = n_frames * spf + after_len - anchor
            n_columns = 1 + clip_samples // c.hop_length
            n_windows = contract.synctalk2d_window_count(clip_samples)
        # the B + 15 distinct rows of the request: row t is frame `first`'s neighbour t (t = b + j)
        p = first - half + np.arange(n_frames + c.neighbours - 1)  # index into the padded list P
        last = n_windows - 1 if n_windows is not None else None
        k = np.clip(p - 1, 0, last)
        in_clip = (p >= 0) & ((p <= n_windows + 1) if n_windows is not None else True)
        rows = self._cut_windows(log_mel, self.clip_window_starts(k, n_columns) - first_column)  # [B+15, n_mels, w]
        rows = rows * in_clip[:, None, None]
        index = np.arange(n_frames)[:, None] + np.arange(c.neighbours)[None, :]  # [B, 16]
        return np.ascontiguousarray(rows[index], dtype=np.float32), in_clip[index].astype(np.float32)


def librosa_log_mel(clip: np.ndarray) -> np.ndarray:
    """The request-flow reference's log-mel through librosa's own ``melspectrogram`` (its
    parameters as the reference states them), [80, T]: what ``MelFrontEnd`` is checked and
    benchmarked against (tests/unit/test_audio.py, benchmarks.bench)."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=clip,
        sr=16000,
        n_fft=400,
        hop_length=160,
        win_length=400,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=80,
        fmin=0,
        fmax=8000,
        htk=False,
        norm="slaney",
    )
    return np.log(mel + 1e-5)
