"""Soak: N concurrent clients on loopback for a bounded time, mixed batch sizes, a share of bad
requests; checks every valid response against a single request's output for the same input and
samples the resident memory of tritonserver and every backend stub.

    python -m benchmarks.soak --url 127.0.0.1:8001 --clients 4 --duration 300     # make soak
    python -m benchmarks.soak --start-server --variant tiny --duration 30

Exit status 0 only when no valid request failed, every output was identical to the reference,
every bad request got a clear error, and memory after warm-up grew by at most --max-growth.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synctalk_build import paths
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_common import contract
from synctalk_ops.process_tree import server_processes


def make_request(batch: int, seed: int, model_id: str = contract.DEFAULT_MODEL_ID) -> CompositeBatchRequest:
    crops = synthetic.face_crops(batch, seed=seed)
    return CompositeBatchRequest.from_arrays(
        model_id, crops, synthetic.masked(crops), synthetic.speech_like_audio(batch, seed=seed)
    )


def bad_requests(seed: int) -> dict[str, tuple]:
    """name -> (request, expected category). Client-side and server-side rejections."""
    nan_audio = make_request(2, seed)
    audio = np.frombuffer(nan_audio.raw_audio, "<f4").copy()
    audio[3] = np.nan
    nan_audio.raw_audio = audio.tobytes()
    loud_visual = make_request(2, seed)
    visual = np.frombuffer(loud_visual.visual_frames, "<f4").copy() * 255  # uint8 scale, not [0, 1]
    loud_visual.visual_frames = visual.tobytes()
    short_audio = make_request(2, seed)
    short_audio.raw_audio = short_audio.raw_audio[:-4]
    return {
        "nan_audio": (nan_audio, contract.CATEGORY_VALIDATION),
        "visual_out_of_range": (loud_visual, contract.CATEGORY_VALIDATION),
        "short_audio": (short_audio, contract.CATEGORY_VALIDATION),
        "unknown_model": (make_request(1, seed, model_id="nobody"), contract.CATEGORY_MODEL),
    }


@dataclass
class Tally:
    valid_sent: int = 0
    valid_failed: int = 0
    mismatched: int = 0
    bad_sent: int = 0
    bad_unclear: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def soak(
    url: str,
    clients: int,
    duration_s: float,
    batch_sizes: list[int],
    bad_share: float,
    server_pid: int | None,
    warmup_s: float,
    max_growth: float,
    seed: int = 0,
) -> dict:
    references = {}
    with CompositeClient(url, timeout_s=300) as client:
        for b in batch_sizes:
            references[b] = client.infer_batch_composite(make_request(b, seed=b)).raise_for_error().composited_frames
    requests = {b: make_request(b, seed=b) for b in batch_sizes}
    bad = bad_requests(seed)
    tally = Tally()
    memory: dict[str, dict[str, int]] = {}
    samples: list[dict[str, int]] = []
    stop = threading.Event()

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with CompositeClient(url, timeout_s=300, stage_timings=False) as client:
            while not stop.is_set():
                if rng.random() < bad_share:
                    name = rng.choice(sorted(bad))
                    request, category = bad[name]
                    response = client.infer_batch_composite(request)
                    with tally.lock:
                        tally.bad_sent += 1
                        if response.success or response.error_category != category or not response.error:
                            tally.bad_unclear += 1
                            tally.failures.append(
                                f"bad {name}: {response.success} {response.error_category} {response.error}"
                            )
                    continue
                b = rng.choice(batch_sizes)
                response = client.infer_batch_composite(requests[b])
                with tally.lock:
                    tally.valid_sent += 1
                    if not response.success:
                        tally.valid_failed += 1
                        tally.failures.append(f"valid b{b}: {response.error}")
                    elif response.composited_frames != references[b]:
                        tally.mismatched += 1
                        tally.failures.append(f"valid b{b}: output differs from the single-request reference")
                    else:
                        tally.latencies_ms.append(response.total_time_ms)

    if server_pid:
        memory["before"] = server_processes(server_pid)
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    while time.monotonic() - started < duration_s:
        time.sleep(min(2.0, max(0.1, duration_s / 20)))
        if server_pid:
            sample = server_processes(server_pid)
            samples.append(sample)
            if "warm" not in memory and time.monotonic() - started >= warmup_s:
                memory["warm"] = sample
    stop.set()
    for t in threads:
        t.join(timeout=600)
    elapsed = time.monotonic() - started
    report: dict = {
        "clients": clients,
        "duration_s": round(elapsed, 1),
        "batch_sizes": batch_sizes,
        "bad_share": bad_share,
        "valid_requests": tally.valid_sent,
        "valid_failed": tally.valid_failed,
        "outputs_differing_from_reference": tally.mismatched,
        "bad_requests": tally.bad_sent,
        "bad_requests_without_a_clear_error": tally.bad_unclear,
        "failures": tally.failures[:20],
    }
    if tally.latencies_ms:
        lat = sorted(tally.latencies_ms)
        report["p50_ms"] = statistics.median(lat)
        report["p99_ms"] = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    if server_pid:
        memory["after"] = server_processes(server_pid)
        warm = memory.get("warm") or (samples[0] if samples else memory["before"])
        memory["peak_during"] = {k: max(s.get(k, 0) for s in samples) for k in warm} if samples else {}
        total = lambda m: sum(v for k, v in m.items() if k in warm)  # noqa: E731
        report["memory_bytes"] = {k: {p: v for p, v in m.items()} for k, m in memory.items()}
        report["memory_growth_after_warmup"] = total(memory["after"]) / total(warm) - 1
        report["max_growth"] = max_growth
    report["ok"] = (
        tally.valid_sent > 0
        and tally.valid_failed == 0
        and tally.mismatched == 0
        and tally.bad_unclear == 0
        and report.get("memory_growth_after_warmup", 0) <= max_growth
    )
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--server-pid", type=int, help="tritonserver's pid, for memory sampling")
    parser.add_argument("--start-server", action="store_true", help="start a CPU-profile server for the run")
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the memory baseline")
    parser.add_argument("--batch-sizes", default="1,8,25")
    parser.add_argument("--bad-share", type=float, default=0.15)
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--out", type=Path, default=paths.BUILD / "soak" / "report.json")
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    def run(url, pid):
        return soak(url, args.clients, args.duration, batch_sizes, args.bad_share, pid, args.warmup, args.max_growth)

    if args.start_server:
        from synctalk_build.render_repository import render
        from synctalk_ops.serve import TritonServer

        repository = render("cpu", paths.BUILD / "repository" / f"soak-{args.variant}", paths.MODELS / args.variant)
        with TritonServer(
            repository, 19000, 19001, 19002, log_path=paths.BUILD / "logs" / "soak-tritonserver.log"
        ) as server:
            report = run(server.grpc_url, server.process.pid)
    else:
        report = run(args.url, args.server_pid)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k not in ("memory_bytes", "failures")}
    print(json.dumps(summary, indent=2))
    for failure in report["failures"]:
        print("FAILURE:", failure)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
