"""Render a whole clip to an MP4: the audio is cut into batches of frames (each sent with the audio
around it, so every frame's mel window is the one of the whole clip), several requests are kept
in flight, the JPEGs come back in order and are muxed with the audio by ffmpeg (the binary of the
``imageio-ffmpeg`` package)."""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from synctalk_client import synthetic
from synctalk_client.client import CompositeClient
from synctalk_client.errors import BY_CATEGORY, ProcessingError
from synctalk_common import contract, frame_loop
from synctalk_common.messages import CompositeBatchRequest


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = contract.SAMPLE_RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def mp4_command(video_input: list[str], wav: Path, out: Path) -> list[str]:
    """ffmpeg (the ``imageio-ffmpeg`` binary) muxing JPEG frames at 25 fps, read as ``video_input``
    says, with ``wav`` into an H.264 + AAC ``out``."""
    import imageio_ffmpeg

    return [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-y",
        "-loglevel",
        "error",
        *video_input,
        "-i",
        str(wav),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-preset",
        "veryfast",
        "-crf",
        "20",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-shortest",
        "-movflags",
        "+faststart",
        str(out),
    ]


def render_video(
    url: str,
    model_id: str,
    audio: np.ndarray,
    out: Path,
    crops: np.ndarray | None = None,
    batch_size: int = 8,
    in_flight: int = 3,
    timeout_s: float = 300.0,
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
    frames_dir: Path | None = None,
    start_frame: int = 0,
    loop_back: bool = True,
) -> dict[str, float]:
    """Render ``audio`` (16 kHz mono float) as ``out`` (H.264 + AAC MP4 at 25 fps).

    ``crops``: [n, 3, 320, 320] BGR face crops, one per image; the masked half of VISUAL is
    ``synthetic.masked`` of them. Without crops an avatar's batches carry audio only (the server
    cuts each frame's face from the avatar's own frames), other model ids get synthetic crops.
    The model id decides the frame count: one per whole 40 ms of audio, or SyncTalk_2D's N + 2
    (``CompositeClient.frames_for_audio``); the whole clip is the audio, so the last batch's
    context carries its tail. ``frames_dir``: also write
    every frame as the JPEG the server returned, ``frame_00000.jpg`` onwards.

    Each frame is drawn on an image as SyncTalk_2D's inference picks it (``frame_loop.image_indices``:
    audio frame i on image i + 1, ping-pong, from ``start_frame``; with ``loop_back``, the fork's
    default, turning at the clip's midpoint so the clip ends on the image it began with): an
    avatar's images (sent as IMAGE_INDEX), else the crops'.
    Returns the number of frames and batches, the wall time, and the server's time per stage on
    the model id's steps meanwhile (``CompositeClient.stage_totals``).
    """
    audio = np.asarray(audio, np.float32).reshape(-1)
    began = time.perf_counter()
    with CompositeClient(url, timeout_s=timeout_s, stage_timings=False) as client:
        statistics = client.statistics_snapshot()
        n_frames = client.frames_for_audio(model_id, len(audio))
        audio_only = crops is None and client.takes_audio_only(model_id)
        has_images = contract.IMAGE_INDEX.name in client.input_names(model_id)
        n_images = client.avatar_images(model_id) if has_images else None
    if n_frames < 1:
        raise ValueError(f"audio of {len(audio)} samples is too short to make a frame on {model_id}")
    if crops is None and not audio_only:
        crops = synthetic.face_crops(min(n_frames, 50))
    elif crops is not None:
        crops = np.asarray(crops, np.float32)
    images = frame_loop.image_indices(n_images or len(crops), n_frames, start_frame, loop_back)
    starts = list(range(0, n_frames, batch_size))
    local = threading.local()
    clients, clients_lock = [], threading.Lock()

    def send(start: int):
        if not hasattr(local, "client"):
            local.client = CompositeClient(url, timeout_s=timeout_s, stage_timings=False)
            with clients_lock:
                clients.append(local.client)
        end = min(start + batch_size, n_frames)
        first, last = start * contract.SAMPLES_PER_FRAME, end * contract.SAMPLES_PER_FRAME
        context = contract.AUDIO_CONTEXT_SAMPLES
        # the audio around the batch: its edge frames get the windows of the whole clip
        around = {
            "audio_context_before": audio[max(0, first - context) : first],
            "audio_context_after": audio[last : last + context],
        }
        if has_images:
            around["image_indices"] = images[start:end]
        if audio_only:
            request = CompositeBatchRequest.audio_only(model_id, audio[first:last], start_frame_idx=start, **around)
        else:
            batch_crops = crops[images[start:end] % len(crops)]
            request = CompositeBatchRequest.from_arrays(
                model_id, batch_crops, synthetic.masked(batch_crops), audio[first:last], start_frame_idx=start, **around
            )
        # offline: a live stream's frames waiting in the same queues go first
        response = local.client.infer_batch_composite(request, priority=contract.PRIORITY_OFFLINE)
        if not response.success:  # "server busy" after the client's retries stays ServerBusyError
            raise BY_CATEGORY.get(response.error_category, ProcessingError)(
                f"frames {start}-{end - 1}: {response.error}"
            )
        return response.composited_frames

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if frames_dir is not None:
        frames_dir = Path(frames_dir)
        frames_dir.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_frames, unit="frame", desc=out.name)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        write_wav(wav, audio[: n_frames * contract.SAMPLES_PER_FRAME])
        command = mp4_command(
            ["-f", "image2pipe", "-c:v", "mjpeg", "-framerate", str(contract.FPS), "-i", "-"], wav, out
        )
        ffmpeg = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        pool = ThreadPoolExecutor(max_workers=max(1, in_flight))
        written = []
        try:
            futures = [pool.submit(send, start) for start in starts]
            for index, future in enumerate(futures):  # in order; later batches stay in flight
                for offset, jpeg in enumerate(future.result()):
                    ffmpeg.stdin.write(jpeg)
                    if frames_dir is not None:
                        written.append(frames_dir / f"frame_{starts[index] + offset:05d}.jpg")
                        written[-1].write_bytes(jpeg)
                if bar is not None:
                    bar.update(min(batch_size, n_frames - starts[index]))
                if on_batch:
                    on_batch(index + 1, len(starts))
        except BaseException:
            # Ctrl-C or a failed batch: drop the queued batches, cancel the calls on the wire
            # (closing a channel ends its active RPCs at once), stop ffmpeg and leave no partial
            # output behind
            pool.shutdown(wait=False, cancel_futures=True)
            with clients_lock:
                for client in clients:
                    client.close()
            ffmpeg.kill()
            ffmpeg.wait()
            out.unlink(missing_ok=True)
            for path in written:
                path.unlink(missing_ok=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        pool.shutdown()
        for client in clients:
            client.close()
        ffmpeg.stdin.close()
        if ffmpeg.wait() != 0:
            raise ProcessingError(f"ffmpeg failed: {ffmpeg.stderr.read().decode(errors='replace')[-2000:]}")
    with CompositeClient(url, timeout_s=timeout_s, stage_timings=False) as client:
        stages = client.stage_totals(model_id, statistics)
    return {
        "frames": n_frames,
        "batches": len(starts),
        "seconds": n_frames / contract.FPS,
        "wall_s": round(time.perf_counter() - began, 3),
        "stages_ms": stages,
    }
