"""Play an audio source into a live stream and keep what comes back: ``synctalk-client stream``.

The source is a sequence of chunks (a file cut into ``chunk_ms`` pieces, or raw 16 kHz s16le PCM
read from a pipe as it arrives: a TTS engine or ``arecord``). Chunks are sent without waiting for
the answers (``LiveStream.send_async``), paced at real time with ``realtime`` (a file played as a
live source; a pipe paces itself). Every frame's JPEG goes to ``frames_dir``; at the end the
frames and the audio are muxed into an MP4 as ``render`` does. Measured per frame: the delay from
the arrival of the chunk that completed it to the frame's arrival; and the first frame's latency
from the first chunk.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from synctalk_client.errors import CompositeError, ProcessingError
from synctalk_client.render import mp4_command, write_wav
from synctalk_client.stream import LiveStream, StreamFrame
from synctalk_common import contract


def file_chunks(audio: np.ndarray, chunk_samples: int) -> Iterator[np.ndarray]:
    for start in range(0, len(audio), chunk_samples):
        yield audio[start : start + chunk_samples]


def pcm_chunks(pipe, chunk_samples: int) -> Iterator[np.ndarray]:
    """Raw 16 kHz mono s16le PCM from a binary pipe, ``chunk_samples`` at a time as it arrives."""
    while True:
        data = pipe.read(chunk_samples * 2)
        if not data:
            return
        if len(data) % 2:  # a sample cut in two at the end of the input
            data = data[:-1]
        yield np.frombuffer(data, "<i2").copy()


def stream_source(
    url: str,
    avatar: str,
    chunks: Iterable[np.ndarray],
    out: Path | None,
    frames_dir: Path | None = None,
    realtime: bool = False,
    chunk_ms: float | None = None,
    timeout_s: float = 60.0,
) -> dict[str, object]:
    """Stream ``chunks`` (int16 or float32 16 kHz) to ``avatar``; write the frames and the MP4."""
    frames: dict[int, StreamFrame] = {}
    arrived: dict[int, float] = {}
    errors: list[CompositeError] = []
    answered = threading.Condition()
    pending = [0]
    audio: list[np.ndarray] = []

    def on_answer(batch: list[StreamFrame], error: CompositeError | None) -> None:
        now = time.perf_counter()
        with answered:
            for frame in batch:
                frames[frame.index], arrived[frame.index] = frame, now
            if error is not None:
                errors.append(error)
            pending[0] -= 1
            answered.notify_all()

    with LiveStream(url, avatar, timeout_s=timeout_s) as live:
        started = time.perf_counter()
        sent_samples = 0
        for chunk in chunks:
            if errors:
                break
            if realtime:  # a chunk is sent when its last sample would have been spoken
                delay = started + (sent_samples + len(chunk)) / contract.SAMPLE_RATE - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            audio.append(chunk.astype(np.float32) / 32768.0 if chunk.dtype == np.int16 else chunk)
            with answered:
                pending[0] += 1
            live.send_async(chunk, on_answer)
            sent_samples += len(chunk)
        if not errors:
            with answered:
                pending[0] += 1
            live.send_async(None, on_answer, end=True)
        with answered:
            if not answered.wait_for(lambda: pending[0] == 0 or errors, timeout=timeout_s):
                raise ProcessingError(f"stream to {avatar}: no answer within {timeout_s:g} s")
    if errors:
        raise errors[0]
    indices = sorted(frames)
    if indices != list(range(len(indices))):
        raise ProcessingError(f"stream to {avatar}: frames missing ({len(indices)} received, last {indices[-1]})")
    delays = np.array([arrived[i] - frames[i].sent_at for i in indices]) * 1000.0
    clip = np.concatenate(audio) if audio else np.zeros(0, np.float32)
    summary = {
        "frames": len(indices),
        "seconds": round(len(clip) / contract.SAMPLE_RATE, 3),
        "chunk_ms": chunk_ms,
        "realtime": realtime,
        "first_frame_ms": round((arrived[indices[0]] - started) * 1000.0, 1) if indices else None,
        "delay_p50_ms": round(float(np.percentile(delays, 50)), 1) if indices else None,
        "delay_p99_ms": round(float(np.percentile(delays, 99)), 1) if indices else None,
        "lookahead_ms": contract.STREAM_LOOKAHEAD * 1000 // contract.SAMPLE_RATE,
    }
    write_frames(frames, indices, clip, out, frames_dir)
    return summary


def write_frames(frames: dict, indices: list[int], clip: np.ndarray, out: Path | None, frames_dir: Path | None):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(frames_dir) if frames_dir is not None else Path(tmp) / "frames"
        folder.mkdir(parents=True, exist_ok=True)
        for i in indices:
            (folder / f"frame_{i:05d}.jpg").write_bytes(frames[i].jpeg)
        if out is None or not indices:
            return
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        wav = Path(tmp) / "audio.wav"
        write_wav(wav, clip)
        video = ["-framerate", str(contract.FPS), "-i", str(folder / "frame_%05d.jpg")]
        result = subprocess.run(mp4_command(video, wav, Path(out)), capture_output=True)
        if result.returncode != 0:
            raise ProcessingError(f"ffmpeg failed: {result.stderr.decode(errors='replace')[-2000:]}")
