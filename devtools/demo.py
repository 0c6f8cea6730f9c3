"""The demo: start the CPU-profile tritonserver, send real requests, write the JPEGs and an MP4, stop.

1. An avatar, ``presenter``, is added to the repository and the avatar store
   (``synctalk_ops.avatars``; it stays served by later ``make serve``): a synthetic 1280x720 background
   video with a swaying head and its per-frame crop boxes, with SyncTalk_2D's audio front end.
2. A batch of synthesised speech-like audio (8 frames = 320 ms) and synthetic face crops goes
   through the client library to the reference ensemble ``demo`` (the face resized to the full
   frame); the frames land in ``out/demo/`` with the audio as a WAV, and the per-stage timings
   are printed.
3. A 2-second clip of the ``presenter`` avatar speaking is rendered to ``out/demo/demo.mp4``:
   the requests carry audio only (the server cuts each frame's face from the avatar's frames),
   the generated faces are pasted back into them, batches in flight (each with the audio around
   it), frames muxed with the audio.

    python -m devtools.demo --repository build/repository/cpu --frames 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import imageio_ffmpeg

from synctalk_build import avatar_store, paths
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_client.render import render_video, write_wav
from synctalk_common import contract
from synctalk_ops.serve import TritonServer
from synctalk_preprocessing.avatar import AvatarAssets

AVATAR_ID = "presenter"
CLIP_SECONDS = 2.0


def add_demo_avatar(repository: Path, out: Path, size: tuple[int, int] = (1280, 720)) -> AvatarAssets:
    """Write the synthetic background video and boxes to ``out``, add the avatar to ``repository``
    (``size``: width, height; the face keeps its share of the picture)."""
    width, height = size
    frames, boxes = synthetic.avatar_background(int(CLIP_SECONDS * contract.FPS), width, height, face=height // 3)
    video = out / f"{AVATAR_ID}_background.mp4"
    writer = imageio_ffmpeg.write_frames(
        str(video),
        (frames.shape[2], frames.shape[1]),
        fps=contract.FPS,
        quality=9,
        macro_block_size=8,
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()
    (out / f"{AVATAR_ID}_boxes.json").write_text(json.dumps(boxes.tolist()) + "\n")
    avatar_store.add(
        repository,
        AVATAR_ID,
        video,
        out / f"{AVATAR_ID}_boxes.json",
        options=avatar_store.AvatarOptions(replace=True, audio_preset="synctalk2d"),
    )
    return AvatarAssets.load(repository / contract.avatar_models(AVATAR_ID)["background"] / "1")


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
    args.out.mkdir(parents=True, exist_ok=True)
    assets = add_demo_avatar(args.repository, args.out)
    print(f"added avatar {AVATAR_ID}: {assets.n_frames} background frames {assets.width}x{assets.height}")
    started = time.perf_counter()
    log = paths.BUILD / "logs" / "demo-tritonserver.log"
    with TritonServer(args.repository, args.http_port, args.grpc_port, args.metrics_port, log_path=log) as server:
        ready_s = time.perf_counter() - started
        print(f"tritonserver ready in {ready_s:.1f} s (gRPC {server.grpc_url}); log: {log}")
        with CompositeClient(server.grpc_url) as client:
            print("models:", ", ".join(f"{m['name']} ({m['kind']}, {m['state']})" for m in client.list_models()))
            response = client.infer_batch_composite(request).raise_for_error()
        # audio only: the server cuts each frame's face from the avatar's image SyncTalk_2D's loop picks, and its box
        video = render_video(
            server.grpc_url,
            AVATAR_ID,
            synthetic.speech_like_audio(int(CLIP_SECONDS * contract.FPS), seed=2),
            args.out / "demo.mp4",
            progress=False,
        )
    for old in args.out.glob("frame_*.jpg"):
        old.unlink()
    for i, jpeg in enumerate(response.composited_frames):
        (args.out / f"frame_{i:05d}.jpg").write_bytes(jpeg)
    write_wav(args.out / "speech.wav", audio)
    timings = {"frames": len(response.composited_frames), "server_ready_s": round(ready_s, 2), **response.timings()}
    (args.out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"wrote {len(response.composited_frames)} JPEG frames (1920x1080) and speech.wav to {args.out}")
    print(
        f"rendered {video['frames']} frames ({video['seconds']:.1f} s) of avatar {AVATAR_ID} "
        f"({assets.width}x{assets.height}, "
        f"face pasted into its background) with their audio to {args.out / 'demo.mp4'}"
    )
    print("per-stage timings of the 8-frame request (ms):")
    for key, value in response.timings().items():
        print(f"  {key:<20} {value:9.1f}" if value is not None else f"  {key:<20}       n/a")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
