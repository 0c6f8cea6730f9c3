"""A live stream's video on the wire and on the server: JPEG frames against H.264, in one run.

    python -m benchmarks.video_delivery                     # full model, the demo's 1280x720 avatar
    python -m benchmarks.video_delivery --variant tiny --seconds 4

One CPU-profile server with ``benchmarks.live_speed``'s repository (the ``presenter`` avatar as
``make demo`` adds it, SyncTalk_2D's front end); streams of ``--seconds`` of speech sent at real
time in 40 ms chunks, one codec after another (``jpeg``, what the page's WebSocket carries, then
``h264`` at each ``--kbps``, what WebRTC carries):

- **bytes a frame** and **Mbit/s** at 25 frames a second (the frames themselves; RTP and SRTP add
  ~3 %, the WebSocket's frame header 4 bytes);
- **the server's CPU** per second of stream (tritonserver and its backend processes, psutil), and
  **the last frame's delay** after the last chunk (speech to frame, on the server);
- in process, on the same frames: **encoding time a frame** with libx264 as the stream model runs
  it (one thread, ultrafast, zerolatency) and with the JPEG encoder's libjpeg-turbo (quality 95,
  one frame at a time), and the PSNR of each against the frames.

Writes ``benchmarks/results/video_delivery.json`` and prints the table for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import queue
import time

import numpy as np

from synctalk_build import paths
from synctalk_build.render_repository import render
from synctalk_client import synthetic
from synctalk_client.stream import LiveStream
from synctalk_common import contract
from synctalk_ops.process_tree import server_cpu_seconds
from synctalk_ops.serve import TritonServer
from synctalk_preprocessing import video

SPF = contract.SAMPLES_PER_FRAME
RESULTS = paths.ROOT / "benchmarks" / "results" / "video_delivery.json"


def real_time_stream(url: str, avatar: str, audio: np.ndarray, codec: str, kbps: int | None) -> tuple[list, float]:
    """The stream's frames (in order) and the last frame's delay after the last chunk."""
    chunks = [audio[i : i + SPF] for i in range(0, len(audio), SPF)]
    answers: queue.Queue = queue.Queue()
    started = time.perf_counter()
    with LiveStream(url, avatar, timeout_s=600, codec=codec, bitrate_kbps=kbps) as live:
        for n, chunk in enumerate(chunks):
            time.sleep(max(0.0, started + n * SPF / contract.SAMPLE_RATE - time.perf_counter()))
            live.send_async(chunk, lambda f, e: answers.put((f, e, time.perf_counter())), end=n == len(chunks) - 1)
        last_sent = time.perf_counter()
        got = [answers.get(timeout=600) for _ in chunks]
    if any(e is not None for _, e, _ in got):
        raise next(e for _, e, _ in got if e is not None)
    frames = sorted((f for batch, _, _ in got for f in batch), key=lambda f: f.index)
    return frames, max(t for f, _, t in got if f) - last_sent


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def encode_in_process(frames: list[np.ndarray], kbps: int) -> dict:
    """libx264 as the stream model runs it and libjpeg-turbo as the JPEG encoder does, frame by
    frame on one thread: ms a frame, bytes a frame, PSNR against the frames."""
    import simplejpeg

    encoder = video.H264Encoder(contract.FPS, kbps)
    started = time.process_time()
    units = [encoder.encode(frame)[0] for frame in frames]
    h264_ms = 1000 * (time.process_time() - started) / len(frames)
    started = time.process_time()
    jpegs = [
        simplejpeg.encode_jpeg(
            f, quality=contract.JPEG_QUALITY, colorspace="RGB", colorsubsampling=contract.JPEG_SUBSAMPLING
        )
        for f in frames
    ]
    jpeg_ms = 1000 * (time.process_time() - started) / len(frames)
    decoded = video.decode(units)
    return {
        "h264_ms_per_frame": round(h264_ms, 1),
        "h264_bytes_per_frame": round(float(np.mean([len(u) for u in units]))),
        "h264_psnr_db": round(float(np.mean([psnr(d, f) for d, f in zip(decoded, frames)])), 1),
        "jpeg_ms_per_frame": round(jpeg_ms, 1),
        "jpeg_bytes_per_frame": round(float(np.mean([len(j) for j in jpegs]))),
        "jpeg_psnr_db": round(
            float(np.mean([psnr(simplejpeg.decode_jpeg(j, colorspace="RGB"), f) for j, f in zip(jpegs, frames)])), 1
        ),
    }


def main(argv=None) -> int:
    import simplejpeg

    from devtools.demo import AVATAR_ID, add_demo_avatar

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("tiny", "full"), default="full")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--kbps", type=int, nargs="+", default=[2000, 1000])
    parser.add_argument("--port", type=int, default=18500)
    args = parser.parse_args(argv)
    root = paths.BUILD / "live-speed"
    repository = render("cpu", root / "repository", paths.MODELS / args.variant, avatar_store=root / "avatars")
    (root / "source").mkdir(parents=True, exist_ok=True)
    add_demo_avatar(repository, root / "source")
    audio = synthetic.speech_like_audio(int(args.seconds * contract.FPS), seed=11)
    results = {"variant": args.variant, "seconds": args.seconds, "measured": time.strftime("%Y-%m-%d %H:%M UTC")}
    log = paths.BUILD / "logs" / "video-delivery.log"
    with TritonServer(repository, args.port, args.port + 1, args.port + 2, log_path=log) as server:
        real_time_stream(server.grpc_url, AVATAR_ID, audio[: 2 * contract.STREAM_LOOKAHEAD], "h264", None)  # warm
        for codec, kbps in [("jpeg", None), *(("h264", k) for k in args.kbps)]:
            before = server_cpu_seconds(server.process.pid)
            frames, delay = real_time_stream(server.grpc_url, AVATAR_ID, audio, codec, kbps)
            cpu = server_cpu_seconds(server.process.pid) - before
            sizes = [len(f.jpeg if codec == "jpeg" else f.h264) for f in frames]
            key = codec if kbps is None else f"{codec}_{kbps}kbps"
            results[key] = {
                "frames": len(frames),
                "bytes_per_frame": round(float(np.mean(sizes))),
                "mbit_per_s": round(float(np.mean(sizes)) * 8 * contract.FPS / 1e6, 2),
                "key_frames": sum(f.key_frame for f in frames),
                "server_cpu_s_per_s": round(cpu / args.seconds, 2),
                "last_frame_after_last_chunk_s": round(delay, 2),
            }
            print(key, json.dumps(results[key]), flush=True)
            if codec == "jpeg":
                pictures = [simplejpeg.decode_jpeg(f.jpeg, colorspace="RGB") for f in frames]
    results["in_process"] = {f"{k}kbps": encode_in_process(pictures, k) for k in args.kbps}
    print("in process", json.dumps(results["in_process"]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| stream | bytes a frame | Mbit/s at 25 fps | server CPU s per s | last frame after last chunk |")
    print("|---|---|---|---|---|")
    for key in ["jpeg", *(f"h264_{k}kbps" for k in args.kbps)]:
        r = results[key]
        print(
            f"| {key} | {r['bytes_per_frame']:,} | {r['mbit_per_s']} | {r['server_cpu_s_per_s']} | "
            f"{r['last_frame_after_last_chunk_s']} s |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
