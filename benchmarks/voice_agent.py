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

Each round twice, side by side: the speech **placed** just ahead of what the viewer is shown (the
peer's default) and **appended** after the audio already sent (``AvatarPeer.place_speech = False``).

- **First word**: from sending the text to the first loud voice at the viewer, split into
  - the TTS: espeak-ng's first sentence, timed on its own;
  - the render: from the speech placed to its first frame back at the peer (placed speech only:
    appended speech waits for the audio already sent instead);
  - the delivery: the rest (the clock's margin, the network, the aiortc receiver, which holds
    80 ms of voice before it gives any);
  - and the first word of a second text in the same session, 1.5 s after the interrupt (the
    peer has adapted where it places speech by then).
- **Interrupt**: from the call to the last loud voice at the viewer, and to the first idle frame.
- **A/V offset**: on arrival, each track's arrival against its timestamps (voice minus video, as
  ``tests/e2e/test_webrtc.py`` measures it), during the speech.

Headless Chromium's numbers, from the content (its page probe), are in
``tests/e2e/test_web_page.py`` (tiny model). Writes
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

from devtools.avatars import loaded_avatar
from synctalk_build import paths
from synctalk_build.render_repository import render
from synctalk_client import tts
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
    with loaded_avatar(
        server, avatar_id, folder, [16, 4, 80, 68], audio_preset="synctalk2d", silent_frames=True, replace=True
    ):
        yield avatar_id


def idle(picture: np.ndarray) -> bool:
    face = picture[10:62, 22:74].astype(int)
    return any(np.abs(face - colour).mean() < 16 for colour in COLOURS)


async def one_round(url: str, peers, avatar: str, placed: bool) -> dict:
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
        peer.place_speech = placed
        said_at = time.monotonic()
        channel.send(json.dumps({"type": "say", "text": TEXT}))
        while peer.cursor == 0:  # placed
            await asyncio.sleep(0.005)
        deadline = time.monotonic() + 2.0
        while placed and peer.placement_s is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        render_s = peer.placement_s if placed else None
        await asyncio.sleep(max(0.0, said_at + 1.5 - time.monotonic()))  # 1.5 s into the speech
        interrupted_at = time.monotonic()
        async with session.post(f"{url}/webrtc/interrupt", json={"session": answer["session"]}) as response:
            await response.json()
        await asyncio.sleep(1.5)
        again_at = time.monotonic()  # the next text, in the same session (the placement adapted)
        channel.send(json.dumps({"type": "say", "text": "Yes, go on."}))
        await asyncio.sleep(4.0)
    await pc.close()
    for task in tasks:
        task.cancel()
    first_word = next(t for t, _, _, level in voice if t > said_at and level > LOUD) - said_at
    next_word = next((t for t, _, _, level in voice if t > again_at and level > LOUD), None)
    heard = [t for t, _, _, level in voice if interrupted_at < t < again_at and level > LOUD]
    first_idle = next(t for t, _, _, picture in video if t > interrupted_at and idle(picture))
    # A/V on arrival during the speech: each track's arrival less its timestamp, from its first
    v0, a0 = video[0], voice[0]
    speaking = [(t, pts, tb) for t, pts, tb, _ in voice if said_at + first_word < t < interrupted_at]
    shown = [(t, pts, tb) for t, pts, tb, _ in video if said_at + first_word < t < interrupted_at]
    voice_at = [(t - a0[0]) - float((pts - a0[1]) * tb) for t, pts, tb in speaking]
    video_at = [(t - v0[0]) - float((pts - v0[1]) * tb) for t, pts, tb in shown]
    offset = (
        statistics.median(voice_at) - statistics.median(video_at) + (a0[0] - v0[0]) if voice_at and video_at else None
    )
    return {
        "first_word_ms": round(1000 * first_word),
        "next_first_word_ms": None if next_word is None else round(1000 * (next_word - again_at)),
        "render_ms": None if render_s is None else round(1000 * render_s),
        "interrupt_voice_ms": round(1000 * ((max(heard) - interrupted_at) if heard else 0.0)),
        "interrupt_idle_frame_ms": round(1000 * (first_idle - interrupted_at)),
        "av_offset_on_arrival_ms": None if offset is None else round(1000 * offset),
    }


async def variant_rounds(server: TritonServer, avatar: str, rounds: int) -> dict[str, list[dict]]:
    from aiohttp import web

    from synctalk_webrtc.service import Settings, add_routes

    app = web.Application()
    peers = add_routes(app, Settings(server.grpc_url))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        results = {"placed": [], "appended": []}
        for _ in range(rounds):  # the two ways side by side, alternating
            for mode in results:
                results[mode].append(await one_round(f"http://127.0.0.1:{port}", peers, avatar, mode == "placed"))
                print(mode, json.dumps(results[mode][-1]), flush=True)
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
    def median(key: str) -> int | None:
        values = [r[key] for r in rows if r[key] is not None]
        return round(statistics.median(values)) if values else None

    first = median("first_word_ms")
    renders = [r["render_ms"] for r in rows if r["render_ms"] is not None]
    render_ms = round(statistics.median(renders)) if renders else None
    return {
        "rounds": len(rows),
        "first_word_ms": first,
        "first_word_range_ms": [min(r["first_word_ms"] for r in rows), max(r["first_word_ms"] for r in rows)],
        "next_first_word_ms": round(
            statistics.median(r["next_first_word_ms"] for r in rows if r["next_first_word_ms"])
        ),
        "tts_ms": tts_ms,
        "render_ms": render_ms,
        "delivery_ms": None if render_ms is None else round(first - tts_ms - render_ms),
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
        results[variant] = {mode: summary(each, tts_ms) for mode, each in rows.items()}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(
        "\n| model | speech | first word ms (range) | of which TTS | render | delivery | the next text's first word "
        "| interrupt: voice heard after, ms | first idle frame, ms | A/V on arrival, ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for variant, mode in [(v, m) for v in ("tiny", "full") for m in ("placed", "appended")]:
        if mode in results.get(variant, {}):
            r = results[variant][mode]
            low, high = r["first_word_range_ms"]
            print(
                f"| {variant} | {mode} | {r['first_word_ms']} ({low}-{high}) | {r['tts_ms']} | {r['render_ms']} | "
                f"{r['delivery_ms']} | {r['next_first_word_ms']} | {r['interrupt_voice_ms']} | "
                f"{r['interrupt_idle_frame_ms']} | {r['av_offset_on_arrival_ms']} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
