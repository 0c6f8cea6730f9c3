"""Where a cold avatar's first frame goes: each avatar added to the store but not loaded, then
loaded (Triton's explicit model control, as ``synctalk-client load`` does) and asked for its first
frame (a live stream of 0.6 s of speech-like noise, ended), then unloaded:

    python -m benchmarks.cold_start                          # tiny models, 3 avatars
    python -m benchmarks.cold_start --variant full --avatars 2

Each avatar: the load's wall time, split by model from tritonserver's own log (the time from
``loading: M:1`` to ``successfully loaded 'M'`` for each model the load brought in, and its kind:
the avatar's ensemble, its background step, its generator, its JPEG encoder, its steps after the
audio), the Python-backend processes it started, the first frame's time after the load, two
requests of 32 frames (the first pays what the load did not warm), and the server's memory (its
process tree's proportional set sizes) before the load, after the frame, after the 32-frame
requests and after the unload. An avatar of 10 frames at 320 x 240 (the synthetic studio), SyncTalk_2D's audio
front end. Writes ``benchmarks/results/cold_start.json`` and prints the table for
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from synctalk_build import avatar_store, paths
from synctalk_build.render_repository import render
from synctalk_client import CompositeClient
from synctalk_client.stream import LiveStream
from synctalk_common import contract
from synctalk_common.messages import CompositeBatchRequest
from synctalk_ops.launched import free_port
from synctalk_ops.process_tree import host_memory_bytes, server_processes, stub_counts
from synctalk_ops.serve import TritonServer

RESULTS = paths.ROOT / "benchmarks" / "results" / "cold_start.json"
LOGS = paths.BUILD / "logs" / "cold-start"
LOADING = re.compile(r"^I(\d{4}) (\d\d:\d\d:\d\d\.\d+) .*\"loading: ([\w.-]+):\d+\"")
LOADED = re.compile(r"^I(\d{4}) (\d\d:\d\d:\d\d\.\d+) .*\"successfully loaded '([\w.-]+)'")
KINDS = ("background", "synctalk", "jpeg_encoder", "from_features", "audio_encoder", "audio_window_encoder")


def kind(model: str, avatar: str) -> str:
    """The part of an avatar a model is: its ensemble, or the step named after the id."""
    if model == avatar:
        return "ensemble"
    rest = model[len(avatar) + 1 :] if model.startswith(avatar + "_") else model
    return rest if rest in KINDS else f"other ({model})"


def model_loads(log: Path, since: int, avatar: str) -> dict[str, float]:
    """{part of the avatar: seconds from its "loading" to its "successfully loaded"} in the log's
    lines after the first ``since``."""

    def at(match) -> float:
        return datetime.datetime.strptime(match[2], "%H:%M:%S.%f").timestamp()

    started, took = {}, {}
    for line in log.read_text().splitlines()[since:]:
        if match := LOADING.match(line):
            started[match[3]] = at(match)
        elif (match := LOADED.match(line)) and match[3] in started:
            took[kind(match[3], avatar)] = round(at(match) - started[match[3]], 2)
    return took


def pss_mb(server: TritonServer) -> float:
    return round(sum(server_processes(server.process.pid, pss=True).values()) / 2**20)


def host_mb(server: TritonServer) -> float:
    """Its processes' private memory and its shared-memory regions' pages (``host_memory_bytes``)."""
    return round(host_memory_bytes(server.process.pid) / 2**20)


def first_frame(url: str, avatar: str) -> float:
    """Seconds to the first frame of a stream of 0.6 s of noise at speech level, ended."""
    audio = (np.random.default_rng(0).normal(0, 3000, int(0.6 * contract.SAMPLE_RATE))).astype(np.int16)
    started = time.perf_counter()
    with LiveStream(url, avatar) as live:
        frames = live.send(audio)
        frames += live.end()
    assert frames, "no frame"
    return round(time.perf_counter() - started, 3)


def bulk_request_s(client: CompositeClient, avatar: str) -> float:
    """Seconds for one request of ``contract.MAX_BATCH_SIZE`` frames (the reference's largest)."""
    from synctalk_client import synthetic

    frames = contract.MAX_BATCH_SIZE
    request = CompositeBatchRequest(avatar, b"", synthetic.speech_like_audio(frames).tobytes(), frames)
    started = time.perf_counter()
    response = client.infer_batch_composite(request)
    assert response.success, response.error
    return round(time.perf_counter() - started, 3)


def measure(variant: str, avatars: int) -> list[dict]:
    import cv2

    from synctalk_client import synthetic

    LOGS.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        repository = render("cpu", scratch / "repository" / "cpu", paths.MODELS / variant)
        log = LOGS / f"tritonserver-{variant}.log"
        ports = [free_port() for _ in range(3)]
        with TritonServer(repository, *ports, log_path=log, model_control_mode="explicit") as server:
            frames, _ = synthetic.avatar_background(10, 320, 240, face=128, seed=3)
            folder = scratch / "frames"
            folder.mkdir()
            for i, frame in enumerate(frames):
                cv2.imwrite(str(folder / f"{i}.png"), frame[..., ::-1])
            options = avatar_store.AvatarOptions(audio_preset="synctalk2d")
            ids = [f"cold{i}" for i in range(avatars)]
            for avatar in ids:
                avatar_store.add(server.repository, avatar, folder, [96, 56, 224, 184], options=options)
            with CompositeClient(server.grpc_url) as client:
                for avatar in ids:
                    before, stubs = pss_mb(server), sum(stub_counts(server.process.pid).values())
                    host_before = host_mb(server)
                    lines = len(log.read_text().splitlines())
                    started = time.perf_counter()
                    client.load_model(avatar)
                    loaded = round(time.perf_counter() - started, 2)
                    frame = first_frame(server.grpc_url, avatar)
                    after, stubs_after = pss_mb(server), sum(stub_counts(server.process.pid).values())
                    host_after = host_mb(server)
                    bulk = [bulk_request_s(client, avatar) for _ in range(2)]
                    after_bulk, host_bulk = pss_mb(server), host_mb(server)
                    client.unload_model(avatar)
                    time.sleep(2)  # the stubs' exits
                    rows.append(
                        {
                            "avatar": avatar,
                            "load_s": loaded,
                            "first_frame_s": frame,
                            "bulk_request_s": bulk,
                            "models_s": model_loads(log, lines, avatar),
                            "stubs_started": stubs_after - stubs,
                            "pss_mb": {
                                "before": before,
                                "loaded": after,
                                "bulk": after_bulk,
                                "unloaded": pss_mb(server),
                            },
                            "host_mb": {"before": host_before, "loaded": host_after, "bulk": host_bulk},
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
            for avatar in ids:
                avatar_store.remove(server.repository, avatar)
    return rows


def table(variant: str, rows: list[dict]) -> str:
    # the avatar's own models (a shared step reloaded beside them, "other (...)", is left out)
    parts = sorted({part for row in rows for part in row["models_s"] if not part.startswith("other")})
    lines = [
        f"| {variant}: avatar | load | first frame | "
        + " | ".join(parts)
        + " | stubs | memory loaded | 32 frames, first / second | memory after |"
        " host memory loaded / after |",
        "|---|---|---|" + "---|" * len(parts) + "---|---|---|---|---|",
    ]
    for row in rows:
        each = " | ".join(f"{row['models_s'].get(part, '')} s" if part in row["models_s"] else "" for part in parts)
        grown = row["pss_mb"]["loaded"] - row["pss_mb"]["before"]
        after_bulk = row["pss_mb"]["bulk"] - row["pss_mb"]["before"]
        first, second = row["bulk_request_s"]
        host = {k: v - row["host_mb"]["before"] for k, v in row["host_mb"].items()}
        lines.append(
            f"| {row['avatar']} | {row['load_s']} s | {row['first_frame_s']} s | {each} | "
            f"{row['stubs_started']} | +{grown} MB | {first} / {second} s | +{after_bulk} MB | "
            f"+{host['loaded']} / +{host['bulk']} MB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--avatars", type=int, default=3)
    args = parser.parse_args()
    rows = measure(args.variant, args.avatars)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.variant] = rows
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(args.variant, rows))


if __name__ == "__main__":
    main()
