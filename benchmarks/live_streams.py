"""Live streams load-tested with perf_analyzer's sequence mode: N concurrent streams, each sending
40 ms of real speech 25 times a second to the ``stream`` model (decoupled: ``--streaming``).

Each stream is a sequence of its own (``--num-of-sequences N``, ``--serial-sequences``: one
request of a stream in flight at a time, as a live client), replaying its own audio
(``--input-data``: one data stream per sequence) at ``--request-rate-range 25 N`` in all. A
request's latency is what a live client sees: from sending a chunk to receiving the frames it
completed (what the viewer sees is that plus the lookahead: ``FLOOR_MS``). With serial sequences a
stream whose answers come later than its chunks falls behind, so a level is kept in real time
when perf_analyzer achieves the offered rate (within 5 %).

    python -m benchmarks.live_streams --url 127.0.0.1:8001 --avatar anna --streams 1 2 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np

from benchmarks.perf_analyzer import PERF_DIR, library_dir, perf_analyzer_binary
from synctalk_client import contract, synthetic

CHUNK = contract.SAMPLES_PER_FRAME  # 40 ms: one frame's audio a request
RATE = contract.SAMPLE_RATE / CHUNK  # requests a second per stream (25)
FLOOR_MS = (contract.STREAM_LOOKAHEAD + CHUNK) * 1000 / contract.SAMPLE_RATE  # lookahead + chunk


def write_stream_data(path: Path, avatar: str, n_streams: int, steps: int) -> Path:
    """perf_analyzer --input-data: one data stream per sequence, ``steps`` chunks of int16 speech,
    each step naming the avatar (the model reads it on the start request only)."""
    streams = []
    for s in range(n_streams):
        audio = synthetic.speech_like_audio(steps, seed=100 + s)
        pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16).reshape(steps, CHUNK)
        streams.append(
            [
                {
                    contract.STREAM_AVATAR.name: [avatar],
                    contract.STREAM_AUDIO_INT16.name: {"content": chunk.tolist(), "shape": [CHUNK]},
                }
                for chunk in pcm
            ]
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": streams}))
    return path


def measure(url: str, avatar: str, n_streams: int, seconds: float = 8.0, out: Path = PERF_DIR / "live") -> dict:
    """One level: ``n_streams`` streams at 25 requests/s each for about ``seconds``."""
    steps = max(2, int(seconds * RATE))
    data = write_stream_data(out / f"streams-{n_streams}.json", avatar, n_streams, steps)
    csv_path = out / f"streams-{n_streams}.csv"
    command = [
        str(perf_analyzer_binary()),
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
        str(RATE * n_streams),
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
    offered = RATE * n_streams
    achieved = float(row["Inferences/Second"])
    p50, p99 = float(row["p50 latency"]) / 1000, float(row["p99 latency"]) / 1000
    return {
        "streams": n_streams,
        "offered_per_s": offered,
        "achieved_per_s": round(achieved, 2),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "real_time": achieved >= 0.95 * offered,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--avatar", required=True)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    rows = [measure(args.url, args.avatar, n, args.seconds) for n in args.streams]
    print(json.dumps({"floor_ms": FLOOR_MS, "levels": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
