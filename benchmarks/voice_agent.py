"""The avatar as a voice agent's face, measured at the viewer: how soon the first word of a text
is heard, how soon an interrupt stops the voice and the mouth, and the voice against the video.

    python -m benchmarks.voice_agent                       # tiny and full models, 5 rounds each
    python -m benchmarks.voice_agent --variants tiny --rounds 3

For each variant, one CPU-profile server with an avatar of four plain images and silent frames
(its idle frames are those images, so an idle frame is told from a talking one by its pixels),
the WebRTC service's peers in this process (``synctalk_webrtc.service``: espeak-ng says the text)
and an aiortc viewer with a data channel, as ``tests/e2e/test_webrtc.py`` has them. Each round,
with the avatar idle: the text is sent on the data channel, then, 1.5 s into the speech, an
interrupt (``POST /webrtc/interrupt``).

- **First word**: from sending the text to the first loud voice at the viewer, split into
  - the TTS: espeak-ng's first sentence, timed on its own;
  - the render: the stream's answer to the speech placed (the peer's moving average of request ->
    answer, read as the speech starts);
  - the delivery: the rest (the clock's margin, the network, the aiortc receiver, which holds
    80 ms of voice before it gives any).
- **Interrupt**: from the call to the last loud voice at the viewer, and to the first idle frame.
- **A/V offset**: on arrival, each track's arrival against its timestamps (voice minus video, as
  ``tests/e2e/test_webrtc.py`` measures it), during the speech.

Headless Chromium's numbers, from the content (its page probe), are in
``tests/e2e/test_voice_agent_page.py`` (tiny model). Writes
``benchmarks/results/voice_agent.json`` and prints the table for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time

import numpy as np

from synctalk_build import avatar_store, paths
from synctalk_build.render_repository import render
from synctalk_client import CompositeClient, tts
from synctalk_ops.launched import free_port
from synctalk_ops.serve import TritonServer

RESULTS = paths.ROOT / "benchmarks" / "results" / "voice_agent.json"
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
TEXT = (
    "Good morning. I can tell you about the weather, the news, and the traffic on your way to work. "
    "Today it will be sunny with a light breeze from the west, and the roads are clear."
)
LOUD = 1000  # int16 peak of a 20 ms voice frame that is heard


@contextlib.contextmanager
def plain_avatar(server: TritonServer, folder, avatar_id: str = "agent"):
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(COLOURS):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((72, 96, 3), colour[::-1], np.uint8))
    options = avatar_store.AvatarOptions(audio_preset="synctalk2d", silent_frames=True)
    avatar_store.add(server.repository, avatar_id, folder, [16, 4, 80, 68], options=options)
    try:
        with CompositeClient(server.grpc_url) as client:
            client.load_model(avatar_id)
            yield avatar_id
    finally:
        avatar_store.remove(server.repository, avatar_id)


def idle(picture: np.ndarray) -> bool:
    face = picture[10:62, 22:74].astype(int)
    return any(np.abs(face - colour).mean() < 16 for colour in COLOURS)


async def one_round(url: str, peers, avatar: str) -> dict:
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    video, voice = [], []  # (arrival, pts, time_base, picture or level)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    channel = pc.createDataChannel("control")

    async def consume(track):
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    video.append((time.monotonic(), frame.pts, frame.time_base, frame.to_ndarray(format="rgb24")))
                else:
                    level = float(np.abs(frame.to_ndarray().astype(np.int32)).max())
                    voice.append((time.monotonic(), frame.pts, frame.time_base, level))

    tasks = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as session:
        body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "avatar": avatar}
        async with session.post(f"{url}/offer", json=body) as response:
            answer = await response.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        while channel.readyState != "open":
            await asyncio.sleep(0.02)
        await asyncio.sleep(2.0)  # idle, the clock settled
        (peer,) = peers.peers.values()
        said_at = time.monotonic()
        channel.send(json.dumps({"type": "say", "text": TEXT}))
        while peer.cursor == 0:  # placed
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
        render_s = peer.answer_s
        await asyncio.sleep(1.2)  # 1.5 s into the speech
        interrupted_at = time.monotonic()
        async with session.post(f"{url}/webrtc/interrupt", json={"session": answer["session"]}) as response:
            await response.json()
        await asyncio.sleep(1.5)
    await pc.close()
    for task in tasks:
        task.cancel()
    first_word = next(t for t, _, _, level in voice if t > said_at and level > LOUD) - said_at
    heard = [t for t, _, _, level in voice if interrupted_at < t and level > LOUD]
    first_idle = next(t for t, _, _, picture in video if t > interrupted_at and idle(picture))
    # A/V on arrival during the speech: each track's arrival less its timestamp, from its first
    v0, a0 = video[0], voice[0]
    speaking = [(t, pts, tb) for t, pts, tb, _ in voice if said_at + first_word < t < interrupted_at]
    shown = [(t, pts, tb) for t, pts, tb, _ in video if said_at + first_word < t < interrupted_at]
    voice_at = [(t - a0[0]) - float((pts - a0[1]) * tb) for t, pts, tb in speaking]
    video_at = [(t - v0[0]) - float((pts - v0[1]) * tb) for t, pts, tb in shown]
    offset = statistics.median(voice_at) - statistics.median(video_at) + (a0[0] - v0[0])
    return {
        "first_word_ms": round(1000 * first_word),
        "render_ms": round(1000 * render_s),
        "interrupt_voice_ms": round(1000 * ((max(heard) - interrupted_at) if heard else 0.0)),
        "interrupt_idle_frame_ms": round(1000 * (first_idle - interrupted_at)),
        "av_offset_on_arrival_ms": round(1000 * offset),
    }


async def variant_rounds(server: TritonServer, avatar: str, rounds: int) -> list[dict]:
    from aiohttp import web

    from synctalk_webrtc.service import Settings, add_routes

    app = web.Application()
    peers = add_routes(app, Settings(server.grpc_url))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        results = []
        for _ in range(rounds):
            results.append(await one_round(f"http://127.0.0.1:{port}", peers, avatar))
            print(json.dumps(results[-1]), flush=True)
            while peers.peers:
                await asyncio.sleep(0.05)
        return results
    finally:
        await runner.cleanup()


def tts_first_sentence_ms(rounds: int = 5) -> float:
    engine = tts.engine()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        next(iter(engine.speak(TEXT)))
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 1)


def summary(rows: list[dict], tts_ms: float) -> dict:
    def median(key: str) -> int:
        return round(statistics.median(r[key] for r in rows))

    first, render_ms = median("first_word_ms"), median("render_ms")
    return {
        "rounds": len(rows),
        "first_word_ms": first,
        "first_word_range_ms": [min(r["first_word_ms"] for r in rows), max(r["first_word_ms"] for r in rows)],
        "tts_ms": tts_ms,
        "render_ms": render_ms,
        "delivery_ms": round(first - tts_ms - render_ms),
        "interrupt_voice_ms": median("interrupt_voice_ms"),
        "interrupt_idle_frame_ms": median("interrupt_idle_frame_ms"),
        "av_offset_on_arrival_ms": median("av_offset_on_arrival_ms"),
        "rows": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--port", type=int, default=18700)
    args = parser.parse_args(argv)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["measured"] = time.strftime("%Y-%m-%d %H:%M UTC")
    tts_ms = tts_first_sentence_ms()
    for variant in args.variants:
        root = paths.BUILD / "voice-agent" / variant
        repository = render("cpu", root / "repository", paths.MODELS / variant, avatar_store=root / "avatars")
        log = paths.BUILD / "logs" / f"voice-agent-{variant}.log"
        server = TritonServer(
            repository, args.port, args.port + 1, args.port + 2, log_path=log, model_control_mode="explicit"
        )
        with server, plain_avatar(server, root / "images") as avatar:
            rows = asyncio.run(variant_rounds(server, avatar, args.rounds))
        results[variant] = summary(rows, tts_ms)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(
        "\n| model | first word ms (range) | of which TTS | render | delivery | interrupt: voice heard after, ms "
        "| first idle frame, ms | A/V on arrival, ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for variant in ("tiny", "full"):
        if variant in results and "first_word_ms" in results[variant]:
            r = results[variant]
            low, high = r["first_word_range_ms"]
            print(
                f"| {variant} | {r['first_word_ms']} ({low}-{high}) | {r['tts_ms']} | {r['render_ms']} | "
                f"{r['delivery_ms']} | {r['interrupt_voice_ms']} | {r['interrupt_idle_frame_ms']} | "
                f"{r['av_offset_on_arrival_ms']} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
