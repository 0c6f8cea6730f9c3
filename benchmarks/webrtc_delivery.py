"""WebRTC delivery over a long stream and per viewer: the audio/video offset and the delay behind
the voice in a real browser for many minutes, and what the WebRTC service costs a viewer.

    python -m benchmarks.webrtc_delivery                          # 10 minutes in Chromium, then 1 and 2 viewers
    python -m benchmarks.webrtc_delivery --minutes 1 --viewers 1 --seconds 10

One CPU-profile server with the tiny models and the demo's ``presenter`` at ``--size`` (640x360 by
default: a 2-core host that also runs the browser keeps real time there, where at 1280x720 it
makes 19-22 frames a second and every delay grows; what is measured is the delivery, and every
step of it, the paste, libx264, the peer, the browser's decoding, is as served):

1. **sync**: headless Chromium (``devtools.browser``), its microphone a WAV of speech that it loops,
   plays the page's Live tab over WebRTC for ``--minutes``. Each second the page reads
   ``getStats()`` (``static/webrtc.js``): frames decoded, bitrate, audio minus video
   ``estimatedPlayoutTimestamp`` (the browser's own lip-sync clock: how far apart it plays the two
   tracks' samples of one instant) and the delay behind the voice (each frame's
   ``expectedDisplayTime`` against the moment the microphone said its audio, median of the last
   250 frames). Per minute: the medians and the 95th percentile of |offset|; over the run: the
   drift, a least-squares slope in ms a minute, of both. Also the CPU and memory of the page's
   server (which holds the peer) and of tritonserver every 30 s, and its growth after the first minute.
2. **viewers**: ``synctalk-webrtc`` in its own process; 1, 2, 4 ... aiortc viewers in this one,
   each with a microphone (the same WAV, looped), for ``--seconds`` from 5 s after all play: the service's
   CPU seconds a second (its every thread: Opus, packetizing, SRTP, pacing), per viewer, and the
   frames a second each viewer gets (which says when the server, not the service, is the limit).

Writes ``benchmarks/results/webrtc_delivery.json`` and prints the tables for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from devtools.browser import choose, chromium_driver, element, models_loaded, page_server, shown, switch_tab, wait
from synctalk_build import paths
from synctalk_build.render_repository import render
from synctalk_client import synthetic
from synctalk_client.render import write_wav
from synctalk_common import contract
from synctalk_ops.launched import free_port, http_process
from synctalk_ops.process_tree import server_cpu_seconds, server_processes
from synctalk_ops.serve import TritonServer

RESULTS = paths.ROOT / "benchmarks" / "results" / "webrtc_delivery.json"
STATS = "return document.body.dataset.liveStats || '[]'"


def rss_mb(pid: int) -> int:
    """A process's and its children's resident memory, MB."""
    return round(sum(server_processes(pid).values()) / 2**20)


def memory_reading(at_s: float, page_pid: int, server_pid: int) -> dict:
    return {"at_s": round(at_s), "page_server_mb": rss_mb(page_pid), "tritonserver_mb": rss_mb(server_pid)}


def slope_per_minute(times_s: list[float], values: list[float]) -> float | None:
    if len(values) < 3:
        return None
    return round(float(np.polyfit(np.asarray(times_s) / 60, np.asarray(values), 1)[0]), 2)


def per_minute(stats: list[dict]) -> list[dict]:
    rows = []
    for minute in range(int(max(s["atS"] for s in stats) // 60) + 1):
        inside = [s for s in stats if minute * 60 <= s["atS"] < (minute + 1) * 60]
        offsets = [s["offsetMs"] for s in inside if s["offsetMs"] is not None]
        delays = [s["delayMs"] for s in inside if s["delayMs"] is not None]
        if len(inside) < 2:
            continue
        span = inside[-1]["atS"] - inside[0]["atS"]
        rows.append(
            {
                "minute": minute + 1,
                "frames_per_s": round((inside[-1]["framesDecoded"] - inside[0]["framesDecoded"]) / span, 1),
                "kbps": round(statistics.mean(s["kbps"] for s in inside if s["kbps"] is not None)),
                "offset_ms_median": round(statistics.median(offsets)) if offsets else None,
                "offset_ms_p95_abs": round(float(np.percentile(np.abs(offsets), 95))) if offsets else None,
                "delay_ms_median": round(statistics.median(delays)) if delays else None,
                "voice_concealed_ms": round(inside[-1]["concealedMs"] - inside[0]["concealedMs"]),
            }
        )
    return rows


def sync_in_chromium(server: TritonServer, avatar: str, microphone: Path, minutes: float) -> dict:
    """The page's Live tab over WebRTC for ``minutes``: its getStats() readings, summed up."""
    started: list = []
    log = paths.BUILD / "logs" / "webrtc-delivery-page.log"
    with page_server(server.grpc_url, log, started) as url:
        browser = chromium_driver(microphone)
        try:
            browser.get(url)
            models_loaded(browser)
            switch_tab(browser, "live")
            choose(browser, "live-model", avatar)
            element(browser, "live-source-mic").click()
            element(browser, "live-start").click()
            wait(browser, lambda: len(json.loads(browser.execute_script(STATS))) >= 3 or shown(browser, "live-error"))
            if shown(browser, "live-error"):
                raise RuntimeError(f"the page reports: {shown(browser, 'live-error')}")
            page_pid = started[0].pid
            cpu0 = (server_cpu_seconds(page_pid), server_cpu_seconds(server.process.pid), time.monotonic())
            memory = [memory_reading(0.0, page_pid, server.process.pid)]
            deadline = time.monotonic() + minutes * 60
            while time.monotonic() < deadline:
                time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
                if shown(browser, "live-error"):
                    raise RuntimeError(f"the page reports: {shown(browser, 'live-error')}")
                stats = json.loads(browser.execute_script(STATS))
                last = stats[-1]
                memory.append(memory_reading(time.monotonic() - cpu0[2], page_pid, server.process.pid))
                print(
                    f"{last['atS']:.0f} s: {last['framesDecoded']} frames, offset {last['offsetMs']} ms, "
                    f"delay {last['delayMs']} ms, tritonserver {memory[-1]['tritonserver_mb']} MB",
                    flush=True,
                )
            seconds = time.monotonic() - cpu0[2]
            cpu = {
                "page_server_cpu_s_per_s": round((server_cpu_seconds(page_pid) - cpu0[0]) / seconds, 3),
                "tritonserver_cpu_s_per_s": round((server_cpu_seconds(server.process.pid) - cpu0[1]) / seconds, 2),
            }
            element(browser, "live-stop").click()
        finally:
            browser.quit()
    stats = [s for s in stats if s["atS"] is not None and s["atS"] >= 10]  # from 10 s on: playing
    offsets = [(s["atS"], s["offsetMs"]) for s in stats if s["offsetMs"] is not None]
    delays = [(s["atS"], s["delayMs"]) for s in stats if s["delayMs"] is not None]
    return {
        "minutes": minutes,
        "readings": len(stats),
        "frames_per_s": round(
            (stats[-1]["framesDecoded"] - stats[0]["framesDecoded"]) / (stats[-1]["atS"] - stats[0]["atS"]), 2
        ),
        "offset_ms_median": round(statistics.median(o for _, o in offsets)),
        "offset_ms_p95_abs": round(float(np.percentile([abs(o) for _, o in offsets], 95))),
        "offset_drift_ms_per_min": slope_per_minute(*zip(*offsets)),
        "delay_ms_median": round(statistics.median(d for _, d in delays)),
        "delay_drift_ms_per_min": slope_per_minute(*zip(*delays)),
        **cpu,
        "memory_mb": memory,
        # after the first minute (the encoder, the peer and the shared-memory pages the stream's
        # tensors touch are allocated over its first ~30 s): what a long stream adds
        "tritonserver_mb_per_min_after_1_min": slope_per_minute(
            *zip(*[(m["at_s"], m["tritonserver_mb"]) for m in memory if m["at_s"] >= 60])
        ),
        "per_minute": per_minute(stats),
    }


@contextlib.contextmanager
def webrtc_service(triton_url: str, log: Path):
    """``synctalk-webrtc`` in its own process on a free port: (its URL, its process)."""
    port = free_port()
    command = [sys.executable, "-m", "synctalk_webrtc.service", "--triton-url", triton_url, "--port", str(port)]
    command += ["--host", "127.0.0.1", "--max-peers", "16"]
    url = f"http://127.0.0.1:{port}"
    with http_process("synctalk-webrtc", command, f"{url}/webrtc/config", log) as process:
        yield url, process


async def viewers_at_once(url: str, avatar: str, microphone: Path, count: int, seconds: float, pids: dict) -> dict:
    """``count`` aiortc viewers, each with a microphone: the service's CPU a second while all play."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    frames = [0] * count
    connections, tasks = [], []

    async def consume(track, n: int) -> None:
        with contextlib.suppress(Exception):
            while True:
                await track.recv()
                if track.kind == "video":
                    frames[n] += 1

    async with aiohttp.ClientSession() as session:
        for n in range(count):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTrack(MediaPlayer(str(microphone), loop=True).audio)
            pc.addTransceiver("video", direction="recvonly")
            pc.on("track", lambda track, n=n: tasks.append(asyncio.ensure_future(consume(track, n))))
            await pc.setLocalDescription(await pc.createOffer())
            body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "avatar": avatar}
            async with session.post(f"{url}/offer", json=body) as response:
                answer = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"viewer {n}: {response.status} {answer}")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
            connections.append(pc)
        started = time.monotonic()
        while min(frames) < 1:  # all play (a server that cannot keep up with them all: slowly)
            if time.monotonic() - started > 120:
                raise RuntimeError(f"the viewers did not all play within 120 s: {frames} frames")
            await asyncio.sleep(0.1)
        await asyncio.sleep(5)
        cpu0 = {name: server_cpu_seconds(pid) for name, pid in pids.items()}
        frames0, t0 = list(frames), time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu = {name: (server_cpu_seconds(pid) - cpu0[name]) / elapsed for name, pid in pids.items()}
        rates = [(b - a) / elapsed for a, b in zip(frames0, frames)]
        for pc in connections:
            await pc.close()
        for task in tasks:
            task.cancel()
    return {
        "viewers": count,
        "service_cpu_s_per_s": round(cpu["service"], 3),
        "service_cpu_s_per_s_per_viewer": round(cpu["service"] / count, 3),
        "tritonserver_cpu_s_per_s": round(cpu["tritonserver"], 2),
        "frames_per_s_per_viewer": [round(r, 1) for r in rates],
    }


def save(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def main(argv=None) -> int:
    import soxr

    from devtools.demo import AVATAR_ID, add_demo_avatar

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="the browser's stream (0: none)")
    parser.add_argument("--viewers", type=int, nargs="*", default=[1, 2], help="aiortc viewers at once, each run")
    parser.add_argument("--seconds", type=float, default=20.0, help="each viewers run, once all play")
    parser.add_argument("--size", default="640x360", help="the avatar's WxH")
    parser.add_argument("--port", type=int, default=18600)
    args = parser.parse_args(argv)
    root = paths.BUILD / "webrtc-delivery"
    repository = render("cpu", root / "repository", paths.MODELS / "tiny", avatar_store=root / "avatars")
    (root / "source").mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.size.split("x"))
    add_demo_avatar(repository, root / "source", size)
    speech = synthetic.speech_like_audio(20 * contract.FPS, seed=23)  # 20 s, looped by its players
    microphone = root / "microphone.wav"
    write_wav(microphone, soxr.resample(speech, contract.SAMPLE_RATE, 48_000).astype(np.float32), 48_000)
    # a run of one part keeps the other's last results
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results |= {"variant": "tiny", "avatar": f"presenter {args.size}", "measured": time.strftime("%Y-%m-%d %H:%M UTC")}
    log = paths.BUILD / "logs" / "webrtc-delivery.log"
    with TritonServer(repository, args.port, args.port + 1, args.port + 2, log_path=log) as server:
        if args.minutes > 0:
            results["sync"] = sync_in_chromium(server, AVATAR_ID, microphone, args.minutes)
            save(results)
            print("sync", json.dumps({k: v for k, v in results["sync"].items() if k != "per_minute"}), flush=True)
        if args.viewers:
            with webrtc_service(server.grpc_url, paths.BUILD / "logs" / "webrtc-delivery-service.log") as (url, rtc):
                pids = {"service": rtc.pid, "tritonserver": server.process.pid}
                results["viewers"] = []
                for count in args.viewers:
                    row = asyncio.run(viewers_at_once(url, AVATAR_ID, microphone, count, args.seconds, pids))
                    print("viewers", json.dumps(row), flush=True)
                    results["viewers"].append(row)
                    save(results)
    if "sync" in results:
        print(
            "\n| minute | frames/s | kbit/s | audio - video ms (median) | abs p95 | delay behind the voice ms "
            "| voice concealed ms |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in results["sync"]["per_minute"]:
            print(
                f"| {r['minute']} | {r['frames_per_s']} | {r['kbps']} | {r['offset_ms_median']} | "
                f"{r['offset_ms_p95_abs']} | {r['delay_ms_median']} | {r['voice_concealed_ms']} |"
            )
    if "viewers" in results:
        print("\n| viewers | service CPU s/s | per viewer | tritonserver CPU s/s | frames/s each |")
        print("|---|---|---|---|---|")
        for r in results["viewers"]:
            print(
                f"| {r['viewers']} | {r['service_cpu_s_per_s']} | {r['service_cpu_s_per_s_per_viewer']} | "
                f"{r['tritonserver_cpu_s_per_s']} | {r['frames_per_s_per_viewer']} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
