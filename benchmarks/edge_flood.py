"""A flood of heavy requests, straight to Triton and through the edge, side by side in one run.

A dozen eager clients, each sending the reference's own 32-frame ``demo`` request (78 MB) again as
soon as it is answered, no busy retries, for ``--seconds``; beside them one light client sending
1-frame requests the same way. The same server takes the flood twice: once straight (its gRPC
port), once through the edge (``synctalk_ops.edge``, in front of it). For each: the heavy requests served
a second, how fast refusals come (from the call to the refusal, the client's own serialisation
included: that is what a client waits), the light client's latency, the server's peak resident
memory over its idle, and the edge's CPU per 1,000 requests. Before the flood, unloaded: what the
edge adds to a 1-frame request and to a live stream's frame (``added_latency``).

``--levels``: the same heavy requests offered open loop (they arrive at a fixed rate whether or not
earlier ones were answered) at multiples of the server's unloaded rate of them, beside the light
client, straight and through the edge in turn at each level (``offered``): goodput, refusals and
how fast they come, the light client's latency, the server's peak memory over idle.

    python -m benchmarks.edge_flood --variant full --clients 12 --seconds 45
    python -m benchmarks.edge_flood --variant full --clients 0 --levels 1 2 8 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from functools import partial
from pathlib import Path

from benchmarks.overload import MemorySampler, _request
from synctalk_build import avatar_store, paths
from synctalk_build.render_repository import render
from synctalk_client import CompositeClient, synthetic
from synctalk_client.stream import LiveStream
from synctalk_common import contract
from synctalk_ops.edge import Edge, Replica
from synctalk_ops.launched import free_port
from synctalk_ops.process_tree import server_processes
from synctalk_ops.serve import TritonServer

TICKS = 100  # /proc/<pid>/stat's clock ticks a second (Linux)


def quantile(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def client_process(url: str, frames: int, start_at: float, stop_at: float, results) -> None:
    """One client, a process of its own (as a dozen real clients are: no GIL shared between them):
    builds its request, then from ``start_at`` sends it again as soon as it is answered, until
    ``stop_at`` (time.time())."""
    request = _request(frames)
    rows = []
    time.sleep(max(0.0, start_at - time.time()))
    with CompositeClient(url, timeout_s=25, stage_timings=False, busy_retries=0, retries=0) as client:
        while time.time() < stop_at:
            sent = time.perf_counter()
            response = client.infer_batch_composite(request)
            result = "served" if response.success else (response.error_category or "failed")
            rows.append((result, time.perf_counter() - sent, response.error[:200]))
    results.put(("heavy" if frames > 1 else "light", rows))


def open_loop_process(url: str, frames: int, times: list[float], deadline_s: float, results) -> None:
    """Sends its request at each of ``times`` (time.time()), whether or not the earlier ones were
    answered (a thread each), with a deadline and no retries."""
    from concurrent.futures import ThreadPoolExecutor

    request = _request(frames)
    rows = []

    with CompositeClient(url, timeout_s=deadline_s, stage_timings=False, busy_retries=0, retries=0) as client:

        def one(at: float) -> None:
            time.sleep(max(0.0, at - time.time()))
            sent = time.perf_counter()
            response = client.infer_batch_composite(request)
            result = "served" if response.success else (response.error_category or "failed")
            rows.append((result, time.perf_counter() - sent, response.error[:200]))

        with ThreadPoolExecutor(max_workers=max(1, len(times))) as pool:
            list(pool.map(one, times))
    results.put(("heavy", rows))


def unloaded_rate(url: str, seconds: float) -> float:
    """Heavy requests a second one closed-loop client gets served, alone (the CPU profile's edge
    admits one 32-frame request a replica at a time, and the door 40 frames: one is the capacity)."""
    request = _request(contract.MAX_BATCH_SIZE)
    served, stop = 0, time.monotonic() + seconds
    with CompositeClient(url, timeout_s=120, stage_timings=False) as client:
        client.infer_batch_composite(request).raise_for_error()  # warm: the largest batch's arena
        started = time.monotonic()
        stop = started + seconds
        while time.monotonic() < stop:
            client.infer_batch_composite(request).raise_for_error()
            served += 1
        return served / (time.monotonic() - started)


def offered(url: str, rate: float, seconds: float, server_pid: int, deadline_s: float, senders: int = 4) -> dict:
    """Heavy requests at ``rate`` a second for ``seconds`` from ``senders`` processes (each taking
    every ``senders``-th arrival), beside one light client sending 1-frame requests back to back."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    idle = sum(server_processes(server_pid).values())
    start_at = time.time() + 8.0  # every sender built its request and connected
    stop_at = start_at + seconds
    arrivals = [start_at + i / rate for i in range(max(1, round(rate * seconds)))]
    processes = [
        context.Process(
            target=open_loop_process, args=(url, contract.MAX_BATCH_SIZE, arrivals[k::senders], deadline_s, results)
        )
        for k in range(min(senders, len(arrivals)))
    ]
    processes.append(context.Process(target=client_process, args=(url, 1, start_at, stop_at, results)))
    return _collect(processes, results, seconds, server_pid, idle, start_at, deadline_s)


def flood(url: str, clients: int, seconds: float, server_pid: int) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    idle = sum(server_processes(server_pid).values())
    start_at = time.time() + 8.0  # every client built its request and connected: they start together
    stop_at = start_at + seconds
    frames = [contract.MAX_BATCH_SIZE] * clients + [1]
    processes = [context.Process(target=client_process, args=(url, n, start_at, stop_at, results)) for n in frames]
    return _collect(processes, results, seconds, server_pid, idle, start_at, 25.0)


def _collect(
    processes, results, seconds: float, server_pid: int, idle: int, start_at: float, deadline_s: float
) -> dict:
    for process in processes:
        process.start()
    time.sleep(max(0.0, start_at - time.time()))
    sampler = MemorySampler(server_pid)
    sampler.start()
    outcomes: dict[str, list[tuple[str, float, str]]] = {"heavy": [], "light": []}
    for _ in processes:
        kind, rows = results.get(timeout=seconds + deadline_s + 120)
        outcomes[kind] += rows
    for process in processes:
        process.join(30)
    peak = sampler.stop()
    row: dict = {"peak_memory_over_idle_mb": round((peak - idle) / 2**20)}
    for kind, rows in outcomes.items():
        served = [t for r, t, _ in rows if r == "served"]
        busy = [t for r, t, _ in rows if r == contract.CATEGORY_BUSY]
        row[kind] = {
            "sent": len(rows),
            "served": len(served),
            "served_per_s": round(len(served) / seconds, 3),
            "served_p50_s": quantile(served, 0.5),
            "served_p99_s": quantile(served, 0.99),
            "refused": len(busy),
            "refused_p50_s": quantile(busy, 0.5),
            "refused_p90_s": quantile(busy, 0.9),
            "refused_p99_s": quantile(busy, 0.99),
            "failed_otherwise": len(rows) - len(served) - len(busy),
            "failures": sorted({e for r, _, e in rows if r not in ("served", contract.CATEGORY_BUSY)})[:3],
        }
    return row


AVATAR = "edgeflood"


def added_latency(direct_url: str, edge_url: str, rounds: int = 40) -> dict:
    """What the edge adds, unloaded: a 1-frame request and a live stream's frame (one 40 ms chunk a
    request), each sent straight and through the edge in turn (interleaved, so the host's noise
    falls on both alike); medians in ms."""
    request = _request(1)
    spent = {"direct": [], "edge": []}
    with (
        CompositeClient(direct_url, stage_timings=False) as direct,
        CompositeClient(edge_url, stage_timings=False) as edge,
    ):
        for _ in range(rounds):
            for name, client in (("direct", direct), ("edge", edge)):
                sent = time.perf_counter()
                client.infer_batch_composite(request).raise_for_error()
                spent[name].append(time.perf_counter() - sent)
    frames = {"direct": [], "edge": []}
    audio = synthetic.speech_like_audio(rounds + 20, seed=1)
    chunk = contract.SAMPLES_PER_FRAME
    with LiveStream(direct_url, AVATAR) as direct, LiveStream(edge_url, AVATAR) as edge:
        for start in range(0, len(audio) - chunk + 1, chunk):
            for name, live in (("direct", direct), ("edge", edge)):
                sent = time.perf_counter()
                if live.send(audio[start : start + chunk]):  # a frame became ready with this chunk
                    frames[name].append(time.perf_counter() - sent)
    row = {}
    for name in ("direct", "edge"):
        row[f"request_1_frame_p50_ms_{name}"] = round(1000 * quantile(spent[name], 0.5), 2)
        row[f"stream_frame_p50_ms_{name}"] = round(1000 * quantile(frames[name], 0.5), 2)
    row["edge_adds_per_request_ms"] = round(
        row["request_1_frame_p50_ms_edge"] - row["request_1_frame_p50_ms_direct"], 2
    )
    row["edge_adds_per_stream_frame_ms"] = round(row["stream_frame_p50_ms_edge"] - row["stream_frame_p50_ms_direct"], 2)
    return row


def add_avatar(repository: Path) -> None:
    import cv2

    frames, boxes = synthetic.avatar_background(1, 640, 360)
    folder = paths.BUILD / "edge_flood" / "avatar"
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "0.png"), frames[0][..., ::-1])
    avatar_store.add(repository, AVATAR, folder, boxes[0].tolist(), options=avatar_store.AvatarOptions(replace=True))


def run(variant: str, clients: int, seconds: float, levels: list[float] = ()) -> dict:
    repository = render("cpu", paths.BUILD / "edge_flood" / "cpu", paths.MODELS / variant)
    add_avatar(repository)
    log = paths.BUILD / "logs" / "edge-flood-tritonserver.log"
    report = {"variant": variant, "clients": clients, "seconds": seconds, "heavy_frames": contract.MAX_BATCH_SIZE}
    with TritonServer(repository, free_port(), free_port(), free_port(), log_path=log) as server:
        with Edge(
            [Replica.of(server)],
            free_port(),
            free_port(),
            free_port(),
            log_path=paths.BUILD / "logs" / "edge-flood.log",
        ) as edge:
            with CompositeClient(server.grpc_url, timeout_s=120) as client:  # warm: the first requests
                client.infer_batch_composite(_request(2)).raise_for_error()
            report["unloaded"] = added_latency(server.grpc_url, edge.grpc_url)
            print("   ", json.dumps(report["unloaded"]), flush=True)
            paths_ = (("straight to Triton", server.grpc_url), ("through the edge", edge.grpc_url))
            if clients:
                for name, url in paths_:
                    print(f"  {name}: {clients} heavy clients and a light one for {seconds:g} s ...", flush=True)
                    report[name] = measured(edge, url, partial(flood, url, clients, seconds, server.process.pid))
                    time.sleep(3.0)  # what was admitted drains
            if levels:
                rate = unloaded_rate(server.grpc_url, max(10.0, seconds / 2))
                deadline_s = max(10.0, 3.0 / rate)  # three times a heavy request alone
                table = {"unloaded_heavy_per_s": round(rate, 3), "deadline_s": round(deadline_s, 1), "levels": {}}
                print("   ", json.dumps(table), flush=True)
                for level in levels:
                    row = table["levels"][f"{level:g}x"] = {}
                    for name, url in paths_:  # in turn at each level: the host's drift falls on both
                        print(f"  {level:g}x, {name}, {seconds:g} s ...", flush=True)
                        row[name] = measured(
                            edge,
                            url,
                            partial(offered, url, level * rate, seconds, server.process.pid, deadline_s),
                        )
                        row[name]["goodput_of_unloaded"] = round(row[name]["heavy"]["served_per_s"] / rate, 3)
                        print("   ", json.dumps(row[name]), flush=True)
                        time.sleep(3.0)
                report["offered"] = table
    return report


def measured(edge: Edge, url: str, load) -> dict:
    """``load()``'s row, with the edge's CPU per 1,000 requests where the load went through it."""
    cpu_before = cpu_seconds(edge.process.pid)
    row = load()
    if url == edge.grpc_url:
        handled = row["heavy"]["sent"] + row["light"]["sent"]
        used = cpu_seconds(edge.process.pid) - cpu_before
        row["edge_cpu_s_per_1000_requests"] = round(1000 * used / max(1, handled), 2)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="full")
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--levels", type=float, nargs="*", default=[], help="offered load, multiples of unloaded")
    parser.add_argument("--out", type=Path, default=paths.BUILD / "edge_flood" / "report.json")
    args = parser.parse_args(argv)
    report = run(args.variant, args.clients, args.seconds, args.levels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
