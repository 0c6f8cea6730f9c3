"""The demo: start the CPU-profile tritonserver, send one real request, write the JPEGs, stop.

A batch of synthesised speech-like audio (8 frames = 320 ms) and synthetic face crops goes
through the client library to the ``demo`` ensemble; the frames land in ``out/demo/`` with the
audio as a WAV, and the per-stage timings are printed. Then a 2-second clip is rendered to
``out/demo/demo.mp4`` (batches in flight, frames muxed with the audio).

    python -m tools.demo --repository build/repository/cpu --frames 8
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from synctalk_client import CompositeBatchRequest, CompositeClient, contract, synthetic
from synctalk_client.render import render_video, write_wav
from tools import paths
from tools.serve import TritonServer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=paths.RENDERED / "cpu")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--out", type=Path, default=paths.ROOT / "out" / "demo")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    args = parser.parse_args(argv)

    audio = synthetic.speech_like_audio(args.frames, seed=1)
    crops = synthetic.face_crops(args.frames, seed=1)
    request = CompositeBatchRequest.from_arrays(contract.DEFAULT_MODEL_ID, crops, synthetic.masked(crops), audio)
    started = time.perf_counter()
    log = paths.BUILD / "logs" / "demo-tritonserver.log"
    with TritonServer(args.repository, args.http_port, args.grpc_port, args.metrics_port, log_path=log) as server:
        ready_s = time.perf_counter() - started
        print(f"tritonserver ready in {ready_s:.1f} s (gRPC {server.grpc_url}); log: {log}")
        with CompositeClient(server.grpc_url) as client:
            print("models:", ", ".join(f"{m['name']} ({m['kind']}, {m['state']})" for m in client.list_models()))
            response = client.infer_batch_composite(request).raise_for_error()
        clip_seconds = 2.0
        args.out.mkdir(parents=True, exist_ok=True)
        video = render_video(server.grpc_url, contract.DEFAULT_MODEL_ID, synthetic.speech_like_audio(int(clip_seconds * contract.FPS), seed=2),
                             args.out / "demo.mp4", crops=crops, progress=False)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("frame_*.jpg"):
        old.unlink()
    for i, jpeg in enumerate(response.composited_frames):
        (args.out / f"frame_{i:05d}.jpg").write_bytes(jpeg)
    write_wav(args.out / "speech.wav", audio)
    timings = {"frames": len(response.composited_frames), "server_ready_s": round(ready_s, 2), **response.timings()}
    (args.out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"wrote {len(response.composited_frames)} JPEG frames (1920x1080) and speech.wav to {args.out}")
    print(f"rendered {video['frames']} frames ({video['seconds']:.1f} s) with their audio to {args.out / 'demo.mp4'}")
    print("per-stage timings of the 8-frame request (ms):")
    for key, value in response.timings().items():
        print(f"  {key:<20} {value:9.1f}" if value is not None else f"  {key:<20}       n/a")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
