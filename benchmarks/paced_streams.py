"""Real-time capacity: how many live avatar streams one server keeps in real time.

A live client sends a batch of frames as soon as its audio exists: 8 frames every 320 ms at
25 fps, each batch with the audio around it (``render``'s requests, audio only). N such streams
run at once against one avatar (each from its own frame index), for ``--seconds``; a stream keeps
real time when every response arrives before its batch's deadline (sent + one batch duration:
the next batch is due then) and its p99 latency is under the batch duration. A stream never
waits for a late response before sending its next batch on schedule (up to ``MAX_IN_FLIGHT``
per stream), so lateness shows as latency, not as a slower schedule. N doubles (1, 2, 4, ..)
until a stream falls behind, then the largest N that kept real time is bisected.

Also reports the request bytes per frame: the crop-upload request (VISUAL + AUDIO, what the
reference contract sends) against an avatar's audio-only request, with and without the audio
context that streaming sends.

    python -m benchmarks.paced_streams --variant tiny             # a fresh CPU-profile server
    python -m benchmarks.paced_streams --variant full --seconds 10
    python -m benchmarks.paced_streams --url gpu-host:8001 --avatar anna   # any running server (a GPU host)
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from synctalk_client import CompositeBatchRequest, CompositeClient, contract, synthetic
from tools import avatar_store, paths
from tools.render_repository import render
from tools.serve import TritonServer

AVATAR = "live"
BATCH = 8
PERIOD_S = BATCH / contract.FPS  # 0.32 s of video per batch
MAX_IN_FLIGHT = 3


def request_bytes_per_frame(batch: int = BATCH) -> dict[str, float]:
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
    }


def run_streams(url: str, n_streams: int, seconds: float, avatar: str = AVATAR) -> dict[str, object]:
    """N paced streams for ``seconds``: per-batch latencies and late batches."""
    n_batches = max(1, int(seconds / PERIOD_S))
    clip = synthetic.speech_like_audio(n_batches * BATCH + 50, seed=3)
    context = contract.AUDIO_CONTEXT_SAMPLES
    latencies: list[float] = []
    late, failed = [0], [0]
    lock = threading.Lock()
    start_at = time.monotonic() + 0.5

    def stream(s: int) -> None:
        pool = ThreadPoolExecutor(MAX_IN_FLIGHT)
        local, opened = threading.local(), []

        def send(k: int, due: float) -> None:
            if not hasattr(local, "client"):
                local.client = CompositeClient(url, stage_timings=False, timeout_s=60)
                opened.append(local.client)
            first, last = k * BATCH * contract.SAMPLES_PER_FRAME, (k + 1) * BATCH * contract.SAMPLES_PER_FRAME
            request = CompositeBatchRequest.audio_only(
                avatar,
                clip[first:last],
                start_frame_idx=s * 1000 + k * BATCH,
                audio_context_before=clip[max(0, first - context) : first],
                audio_context_after=clip[last : last + context],
            )
            sent = time.monotonic()
            response = local.client.infer_batch_composite(request)
            done = time.monotonic()
            with lock:
                latencies.append(done - sent)
                late[0] += done > due + PERIOD_S
                failed[0] += not response.success

        futures = []
        for k in range(n_batches):
            due = start_at + s * PERIOD_S / max(1, n_streams) + k * PERIOD_S  # streams spread over a period
            time.sleep(max(0.0, due - time.monotonic()))
            futures.append(pool.submit(send, k, due))
        for future in futures:
            future.result()
        pool.shutdown()
        for client in opened:
            client.close()

    threads = [threading.Thread(target=stream, args=(s,)) for s in range(n_streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ms = sorted(1000 * x for x in latencies)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return {
        "streams": n_streams,
        "batches": len(ms),
        "late_batches": late[0],
        "failed": failed[0],
        "p50_ms": statistics.median(ms),
        "p99_ms": p99,
        "real_time": late[0] == 0 and failed[0] == 0 and p99 < PERIOD_S * 1000,
    }


def capacity(url: str, seconds: float, max_streams: int = 64, avatar: str = AVATAR) -> dict[str, object]:
    """The largest N whose every stream keeps real time (0: not even one), and every trial."""
    trials: dict[int, dict] = {}

    def trial(n: int) -> bool:
        if n not in trials:
            trials[n] = run_streams(url, n, seconds, avatar)
            print(
                f"  {n} streams: p50 {trials[n]['p50_ms']:.0f} ms, p99 {trials[n]['p99_ms']:.0f} ms, "
                f"{trials[n]['late_batches']} late of {trials[n]['batches']}",
                flush=True,
            )
        return bool(trials[n]["real_time"])

    good, bad = 0, None
    n = 1
    while n <= max_streams and trial(n):
        good, n = n, n * 2
    bad = n if n <= max_streams else None
    while bad is not None and bad - good > 1:  # bisect between the last good and the first bad
        middle = (good + bad) // 2
        if trial(middle):
            good = middle
        else:
            bad = middle
    return {"max_real_time_streams": good, "trials": [trials[k] for k in sorted(trials)]}


def measure(variant: str, seconds: float, port_base: int = 18300) -> dict[str, object]:
    """A fresh server on the ``variant`` models, one avatar (SyncTalk_2D's front end, 25 frames
    of 640x360), its capacity."""
    import cv2

    models_dir = paths.MODELS / variant
    repository = render("cpu", paths.BUILD / "repository" / f"paced-{variant}", models_dir)
    frames, boxes = synthetic.avatar_background(25, 640, 360, face=160, seed=5)
    source = paths.BUILD / "paced-avatar"
    source.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(source / f"{i}.png"), frame[..., ::-1])
    (source.parent / "paced-avatar-boxes.json").write_text(json.dumps(boxes.tolist()))
    avatar_store.add(
        repository,
        AVATAR,
        source,
        source.parent / "paced-avatar-boxes.json",
        generator=models_dir / "synctalk.onnx",
        audio_preset="synctalk2d",
        replace=True,
    )
    log = paths.BUILD / "logs" / f"paced-{variant}-tritonserver.log"
    with TritonServer(
        repository, port_base, port_base + 1, port_base + 2, log_path=log, model_control_mode="explicit"
    ) as server:
        with CompositeClient(server.grpc_url) as client:
            client.load_model(AVATAR)
            for _ in range(2):  # the avatar's first requests after load
                client.infer_batch_composite(
                    CompositeBatchRequest.audio_only(AVATAR, synthetic.speech_like_audio(BATCH))
                ).raise_for_error()
        print(f"paced streams, {variant} model ({BATCH} frames every {PERIOD_S * 1000:.0f} ms per stream):", flush=True)
        result = capacity(server.grpc_url, seconds)
    return {"variant": variant, "batch": BATCH, "period_ms": PERIOD_S * 1000, "seconds": seconds, **result}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each trial streams")
    parser.add_argument("--url", help="measure this running server instead of a fresh CPU-profile one")
    parser.add_argument("--avatar", default=AVATAR, help="with --url: the (loaded) avatar to stream to")
    parser.add_argument("--max-streams", type=int, default=64)
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.url:
        measured = {
            "url": args.url,
            "avatar": args.avatar,
            "batch": BATCH,
            "period_ms": PERIOD_S * 1000,
            "seconds": args.seconds,
            **capacity(args.url, args.seconds, args.max_streams, args.avatar),
        }
    else:
        measured = measure(args.variant, args.seconds)
    result = {"bytes_per_frame": request_bytes_per_frame(), **measured}
    print(json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
