"""Live streams load-tested with perf_analyzer's sequence mode: N concurrent streams, each sending
40 ms of real speech 25 times a second (or 160 ms 6.25 times) to the ``stream`` model (decoupled: ``--streaming``).

Each stream is a sequence of its own (``--num-of-sequences N``, ``--serial-sequences``: one
request of a stream in flight at a time, as a live client), replaying its own audio
(``--input-data``: one data stream per sequence) at ``--request-rate-range 25 N`` in all. A
request's latency is what a live client sees: from sending a chunk to receiving the frames it
completed (what the viewer sees is that plus the lookahead: ``FLOOR_MS``). With serial sequences a
stream whose answers come later than its chunks falls behind, so a level is kept in real time
when perf_analyzer achieves the offered rate (within 5 %).

    python -m benchmarks.live_streams --variant tiny                       # a fresh CPU-profile server
    python -m benchmarks.live_streams --url gpu-host:8001 --avatar anna    # any running server

The largest N kept in real time is found by doubling N, then bisecting, at 40 ms and 160 ms
chunks; the first frame's latency (from a stream's first chunk, played at real time) is measured
with the SDK, as perf_analyzer's per-request latency cannot see it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from benchmarks.perf_analyzer import PERF_DIR, edge_header_args, library_dir, perf_analyzer_binary
from synctalk_build import avatar_store, paths
from synctalk_build.render_repository import render
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_common import contract
from synctalk_ops.serve import TritonServer

AVATAR = "live"

CHUNK_FRAMES = 1  # 40 ms of audio a request by default: a frame's


def floor_ms(chunk_frames: int = CHUNK_FRAMES) -> float:
    """The least delay a viewer can see: the lookahead plus a chunk."""
    return (contract.STREAM_LOOKAHEAD + chunk_frames * contract.SAMPLES_PER_FRAME) * 1000 / contract.SAMPLE_RATE


def request_bytes_per_frame(batch: int = 8) -> dict[str, float]:
    """Bytes a request carries per frame (tensor payloads; the gRPC framing adds < 1 KB a request)."""
    crops = synthetic.face_crops(batch)
    audio = synthetic.speech_like_audio(batch + 40)
    context = {
        "audio_context_before": audio[: 20 * contract.SAMPLES_PER_FRAME],
        "audio_context_after": audio[-20 * contract.SAMPLES_PER_FRAME :],
    }
    middle = audio[20 * contract.SAMPLES_PER_FRAME : (20 + batch) * contract.SAMPLES_PER_FRAME]
    everything = set(t.name for t in contract.AVATAR_ENSEMBLE_INPUTS)
    optional = set(t.name for t in contract.AVATAR_OPTIONAL_INPUTS)

    def size(request):
        return sum(a.nbytes for a in request.tensors(everything, optional=optional).values()) / batch

    return {
        "crop_upload": size(CompositeBatchRequest.from_arrays(AVATAR, crops, synthetic.masked(crops), middle)),
        "crop_upload_with_context": size(
            CompositeBatchRequest.from_arrays(AVATAR, crops, synthetic.masked(crops), middle, **context)
        ),
        "audio_only": size(CompositeBatchRequest.audio_only(AVATAR, middle)),
        "audio_only_with_context": size(CompositeBatchRequest.audio_only(AVATAR, middle, **context)),
        # a live stream's request: the new audio as int16 (the avatar's name only on the first)
        "live_stream": float(np.dtype(np.int16).itemsize * contract.SAMPLES_PER_FRAME),
    }


def write_stream_data(path: Path, avatar: str, n_streams: int, steps: int, chunk_frames: int = CHUNK_FRAMES) -> Path:
    """perf_analyzer --input-data: one data stream per sequence, ``steps`` chunks of int16 speech,
    each step naming the avatar (the model reads it on the start request only)."""
    chunk = chunk_frames * contract.SAMPLES_PER_FRAME
    streams = []
    for s in range(n_streams):
        audio = synthetic.speech_like_audio(steps * chunk_frames, seed=100 + s)
        pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16).reshape(steps, chunk)
        streams.append(
            [
                {
                    contract.STREAM_AVATAR.name: [avatar],
                    contract.STREAM_AUDIO_INT16.name: {"content": row.tolist(), "shape": [chunk]},
                }
                for row in pcm
            ]
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": streams}))
    return path


def measure(
    url: str,
    avatar: str,
    n_streams: int,
    seconds: float = 8.0,
    out: Path = PERF_DIR / "live",
    chunk_frames: int = CHUNK_FRAMES,
) -> dict:
    """One level: ``n_streams`` streams, each sending ``chunk_frames`` frames of audio a request
    at real time (25 / chunk_frames requests a second), for about ``seconds``."""
    rate = contract.FPS / chunk_frames
    steps = max(2, int(seconds * rate))
    data = write_stream_data(out / f"streams-{n_streams}.json", avatar, n_streams, steps, chunk_frames)
    csv_path = out / f"streams-{n_streams}.csv"
    command = [
        str(perf_analyzer_binary()),
        *edge_header_args(avatar, 1),  # the edge's stream class, as LiveStream's
        "-m",
        contract.STREAM_MODEL,
        "-u",
        url,
        "-i",
        "grpc",
        "--streaming",
        "--input-data",
        str(data),
        "--request-rate-range",
        str(rate * n_streams),
        "--num-of-sequences",
        str(n_streams),
        "--serial-sequences",
        "--sequence-length",
        str(steps),
        "--sequence-length-variation",
        "0",
        "--sequence-id-range",
        f"1:{n_streams * 1000}",
        "--measurement-mode",
        "time_windows",
        "--measurement-interval",
        str(int(seconds * 1000)),
        "--stability-percentage",
        "1000",  # streams are paced: the rate is what was offered; each level measured, not searched
        "--max-trials",
        "3",
        "--percentile",
        "99",
        "-f",
        str(csv_path),
    ]
    env = dict(os.environ, LD_LIBRARY_PATH=f"{library_dir()}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30 + 10 * seconds)
    if result.returncode != 0 or not csv_path.is_file():
        raise RuntimeError(f"perf_analyzer failed ({result.returncode}): {(result.stdout + result.stderr)[-2000:]}")
    with csv_path.open() as f:
        (row,) = list(csv.DictReader(f))[:1]
    offered = rate * n_streams
    achieved = float(row["Inferences/Second"])
    p50, p99 = float(row["p50 latency"]) / 1000, float(row["p99 latency"]) / 1000
    return {
        "streams": n_streams,
        "chunk_ms": chunk_frames * 1000 // contract.FPS,
        "offered_per_s": offered,
        "achieved_per_s": round(achieved, 2),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "real_time": achieved >= 0.95 * offered,
    }


def capacity(url: str, avatar: str, seconds: float, chunk_frames: int = CHUNK_FRAMES, max_streams: int = 8) -> dict:
    """The largest N kept in real time (0: not even one stream), doubling then bisecting."""
    trials: dict[int, dict] = {}

    def trial(n: int) -> bool:
        if n not in trials:
            trials[n] = measure(url, avatar, n, seconds, chunk_frames=chunk_frames)
            print(f"  {n} streams: {trials[n]}", flush=True)
        return bool(trials[n]["real_time"])

    good, n = 0, 1
    while n <= max_streams and trial(n):
        good, n = n, n * 2
    bad = n if n <= max_streams else None
    while bad is not None and bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if trial(middle) else (good, middle)
    return {"max_real_time_streams": good, "trials": [trials[k] for k in sorted(trials)]}


def first_frame_ms(url: str, avatar: str, chunk_frames: int = CHUNK_FRAMES, seconds: float = 2.0) -> float:
    """A stream played at real time: from its first chunk to its first frame (perf_analyzer's
    latency is per request; the first frame comes only once its lookahead has been spoken)."""
    from synctalk_client.stream import LiveStream

    chunk = chunk_frames * contract.SAMPLES_PER_FRAME
    audio = synthetic.speech_like_audio(int(seconds * contract.FPS), seed=9)
    with LiveStream(url, avatar) as live:
        started = time.perf_counter()
        for k, first in enumerate(range(0, len(audio), chunk)):
            time.sleep(max(0.0, started + (k + 1) * chunk / contract.SAMPLE_RATE - time.perf_counter()))
            if live.send(audio[first : first + chunk]):
                return (time.perf_counter() - started) * 1000.0
    raise RuntimeError(f"no frame within {seconds:g} s of audio")


def stream_beside_render(url: str, avatar: str, seconds: float = 6.0, chunk_frames: int = 4) -> dict:
    """A stream's chunk-to-frame delay (p50/p99, the SDK played at real time) alone, then while
    renders of the same avatar run back to back: what a live stream pays for offline work beside
    it (its frames share the door and the queues with the render's: no priority, see
    docs/operations.md, "Live streams")."""
    import threading

    from synctalk_client.render import render_video
    from synctalk_client.stream import LiveStream

    chunk = chunk_frames * contract.SAMPLES_PER_FRAME
    audio = synthetic.speech_like_audio(int(seconds * contract.FPS), seed=13)

    def one_stream() -> list[float]:
        delays = []
        with LiveStream(url, avatar) as live:
            started = time.perf_counter()
            for k, first in enumerate(range(0, len(audio), chunk)):
                time.sleep(max(0.0, started + (k + 1) * chunk / contract.SAMPLE_RATE - time.perf_counter()))
                sent = time.perf_counter()
                if live.send(audio[first : first + chunk]):
                    delays.append((time.perf_counter() - sent) * 1000.0)
            live.end()
        return delays

    def percentiles(delays: list[float]) -> dict:
        return {
            "p50_ms": round(float(np.percentile(delays, 50)), 1),
            "p99_ms": round(float(np.percentile(delays, 99)), 1),
        }

    alone = one_stream()
    stop = threading.Event()
    renders = [0]

    def render_loop() -> None:
        clip = synthetic.speech_like_audio(50, seed=14)
        while not stop.is_set():
            render_video(url, avatar, clip, PERF_DIR / "live" / "render.mp4", progress=False)
            renders[0] += 1

    thread = threading.Thread(target=render_loop, daemon=True)
    thread.start()
    beside = one_stream()
    stop.set()
    thread.join()
    return {
        "chunk_ms": chunk_frames * 40,
        "alone": percentiles(alone),
        "beside_render": percentiles(beside),
        "renders": renders[0],
    }


def measure_variant(variant: str, seconds: float, port_base: int = 18300) -> dict:
    """A fresh CPU-profile server on the ``variant`` models with one avatar (SyncTalk_2D's front
    end, 25 frames of 640x360): real-time capacity at 40 ms and 160 ms chunks, first frame."""
    import cv2

    models_dir = paths.MODELS / variant
    repository = render("cpu", paths.BUILD / "repository" / f"live-{variant}", models_dir)
    frames, boxes = synthetic.avatar_background(25, 640, 360, face=160, seed=5)
    source = paths.BUILD / "live-avatar"
    source.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(source / f"{i}.png"), frame[..., ::-1])
    (source.parent / "live-avatar-boxes.json").write_text(json.dumps(boxes.tolist()))
    avatar_store.add(
        repository,
        AVATAR,
        source,
        source.parent / "live-avatar-boxes.json",
        options=avatar_store.AvatarOptions(
            generator=models_dir / "synctalk.onnx", audio_preset="synctalk2d", replace=True
        ),
    )
    log = paths.BUILD / "logs" / f"live-{variant}-tritonserver.log"
    with TritonServer(
        repository, port_base, port_base + 1, port_base + 2, log_path=log, model_control_mode="explicit"
    ) as server:
        with CompositeClient(server.grpc_url) as client:
            client.load_model(AVATAR)
        print(f"live streams, {variant} model:", flush=True)
        result = {
            "variant": variant,
            "seconds": seconds,
            "first_frame_ms": round(first_frame_ms(server.grpc_url, AVATAR)),
        }
        for chunk_frames in (1, 4):
            result[f"chunk_{chunk_frames * 40}ms"] = {
                "floor_ms": floor_ms(chunk_frames),
                **capacity(server.grpc_url, AVATAR, seconds, chunk_frames),
            }
        result["beside_render"] = stream_beside_render(server.grpc_url, AVATAR)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (a GPU host); default: a fresh CPU-profile one")
    parser.add_argument("--avatar", default=AVATAR, help="with --url: the (loaded) avatar to stream to")
    parser.add_argument("--variant", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--chunk-frames", type=int, default=CHUNK_FRAMES, help="frames of audio a request")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each level streams")
    parser.add_argument("--max-streams", type=int, default=8)
    args = parser.parse_args(argv)
    if args.url:
        result = {
            "first_frame_ms": round(first_frame_ms(args.url, args.avatar, args.chunk_frames)),
            "floor_ms": floor_ms(args.chunk_frames),
            **capacity(args.url, args.avatar, args.seconds, args.chunk_frames, args.max_streams),
        }
    else:
        result = measure_variant(args.variant, args.seconds)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
