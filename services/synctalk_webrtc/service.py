"""The WebRTC service: signalling, ICE settings, the peers (see the package).

    synctalk-webrtc --triton-url edge:8001 --port 8088 \\
        --ice-server stun:stun.example.org:3478 \\
        --ice-server 'turn:turn.example.org:3478?transport=udp,avatar,secret'

``POST /offer`` takes ``{"sdp": ..., "type": "offer", "avatar": "<id>"}`` (LiveTalking's
convention) and answers ``{"sdp": ..., "type": "answer"}``: the avatar's video (H.264) and voice
(Opus); the offer's audio track, when it sends one, is the speech. The offer must receive video
and accept H.264. ``GET /webrtc/config`` gives a page the ICE servers to use. Refusals are JSON
``{"error": ...}``: 400 for a bad offer, 404 for an avatar the server does not have, 503 at the
peer limit. A peer whose connection fails or closes ends its stream at once, and so does one whose
viewer has sent nothing for ``--viewer-timeout`` seconds (a link that dropped and did not come back:
the place and the stream are freed before ICE's consent checks fail, 30 s). ``GET /webrtc/peers``
says what this process holds.

ICE servers come from ``--ice-server URL[,USERNAME,CREDENTIAL]`` (repeatable) or the environment,
``SYNCTALK_ICE_SERVERS`` (JSON: ``[{"urls": "turn:...", "username": ..., "credential": ...}]``),
the same for this server's candidates and the page's; none: host candidates only (a LAN, or a
server with a public address), never a public STUN server the operator did not name.

A TURN service is better given with its shared secret (``--turn URL --turn-secret-file FILE``,
``turn.py``): each page and each peer then gets a credential of its own that expires
(``--turn-ttl``), and the secret never leaves this process. A static TURN password given with
``--ice-server`` goes to every visitor of the page, for as long as it lives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpsender import RTCRtpSender

from synctalk_client.errors import CompositeError
from synctalk_common import contract
from synctalk_webrtc.options import MAX_PEERS, VIEWER_TIMEOUT_S, add_peer_arguments
from synctalk_webrtc.peer import MAX_KBPS, MIN_KBPS, START_KBPS, AvatarPeer
from synctalk_webrtc.timing import freeze_startup_heap
from synctalk_webrtc.turn import TurnCredentials, add_turn_arguments, turn_credentials

log = logging.getLogger("synctalk_webrtc")
SAMPLE_RATE = contract.SAMPLE_RATE
ICE_ENVIRONMENT = "SYNCTALK_ICE_SERVERS"
MSG_PEER_LIMIT = "peer limit {limit} reached"
CONNECT_TIMEOUT_S = 30.0  # an answered viewer that never connects gives its place (and stream) back


@dataclass
class Settings:
    triton_url: str
    ice_servers: list[dict] = field(default_factory=list)  # [{"urls", "username", "credential"}]
    max_peers: int = MAX_PEERS
    bitrate_kbps: int = START_KBPS
    tts: str = "espeak:en"  # what says the text a session is given (synctalk_client.tts.engine)
    turn: TurnCredentials | None = None  # short-lived credentials for a TURN service (turn.py)
    viewer_timeout_s: float = VIEWER_TIMEOUT_S

    def __post_init__(self):
        if not self.max_peers >= 1 or not self.viewer_timeout_s > 0:
            raise ValueError("--max-peers must be at least 1 and --viewer-timeout above 0 s")
        if self.turn is not None and any("credential" in server for server in self.ice_servers):
            raise ValueError(
                "a TURN secret and a static TURN password: give one or the other (the secret's "
                "short-lived credentials are what a page should get)"
            )

    def ice_config(self) -> list[dict]:
        """The ICE servers for one page or one peer: the static ones, and the TURN service with a
        credential minted now (never the secret, never one without an expiry)."""
        return [*self.ice_servers, *([self.turn.ice_server()] if self.turn else [])]

    def rtc_configuration(self) -> RTCConfiguration:
        # an empty list, not None: aiortc's default is a public STUN server
        return RTCConfiguration(iceServers=[RTCIceServer(**server) for server in self.ice_config()])


def ice_servers(flags: list[str] | None, environ: dict | None = None) -> list[dict]:
    """``--ice-server URL[,USERNAME,CREDENTIAL]`` values, else ``SYNCTALK_ICE_SERVERS``."""
    servers = []
    for value in flags or []:
        url, *secret = value.split(",")
        if not url.startswith(("stun:", "turn:", "turns:")) or len(secret) not in (0, 2):
            raise ValueError(f"--ice-server {value!r}: use stun:HOST:PORT or turn:HOST:PORT,USERNAME,CREDENTIAL")
        servers.append({"urls": url, **(dict(zip(("username", "credential"), secret)) if secret else {})})
    if servers:
        return servers
    text = (environ if environ is not None else os.environ).get(ICE_ENVIRONMENT, "")
    return json.loads(text) if text.strip() else []


class Peers:
    """The peers this process holds, at most ``max_peers``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.peers: dict[RTCPeerConnection, AvatarPeer] = {}
        self.sessions: dict[str, AvatarPeer] = {}  # by the token the answer gives the viewer
        self.opening = 0
        self._tts = None

    async def offer(self, request: web.Request) -> web.Response:
        try:
            params = await request.json()
            offer = RTCSessionDescription(sdp=str(params["sdp"]), type=str(params["type"]))
            avatar = str(params["avatar"])
        except (ValueError, KeyError, TypeError):
            return refuse(400, 'the body is JSON {"sdp": ..., "type": "offer", "avatar": "<id>"}')
        if offer.type != "offer":
            return refuse(400, f'type must be "offer", got {offer.type!r}')
        lines = offer.sdp.splitlines()
        if not any(line.startswith("m=video") for line in lines):
            return refuse(400, "offer: it must receive video (a video transceiver)")
        if not any("H264/90000" in line for line in lines):
            return refuse(400, "offer: the viewer does not receive H.264")
        if len(self.peers) + self.opening >= self.settings.max_peers:
            return refuse(503, MSG_PEER_LIMIT.format(limit=self.settings.max_peers))
        self.opening += 1  # a place held while the avatar is looked up and its stream opens
        try:
            problem = await asyncio.get_running_loop().run_in_executor(None, self._avatar_problem, avatar)
            if problem:
                return refuse(404, problem)
            peer = AvatarPeer(self.settings.triton_url, avatar, bitrate_kbps=self.settings.bitrate_kbps)
            try:
                await peer.open()
            except CompositeError as exc:  # the stream limit, the avatar unloaded meanwhile, no server
                return refuse(exc.http_status, str(exc))
            pc = RTCPeerConnection(self.settings.rtc_configuration())
            self.peers[pc] = peer
        finally:
            self.opening -= 1

        session = secrets.token_urlsafe(16)
        self.sessions[session] = peer
        watching: list[asyncio.Task] = []  # the viewer's watch, once connected (a reference kept)

        async def end() -> None:
            self.peers.pop(pc, None)
            self.sessions.pop(session, None)
            await peer.close()
            await pc.close()

        @pc.on("datachannel")
        def on_channel(channel) -> None:
            # the page's control channel: speaking events out; interrupt and say in
            peer.on_speaking.append(
                lambda event: channel.readyState == "open" and channel.send(json.dumps(event.message()))
            )

            @channel.on("message")
            def on_message(message) -> None:
                asyncio.ensure_future(self._control(peer, message, channel))

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "audio":
                peer.listen(track)

        async def watch() -> None:
            """Ends the peer when its viewer has been silent for ``viewer_timeout_s``."""
            timeout = self.settings.viewer_timeout_s
            while not peer.closed.is_set():
                await asyncio.sleep(min(1.0, timeout / 4))
                silent = time.monotonic() - (peer.heard_at or 0.0)
                if silent > timeout and not peer.closed.is_set():
                    log.info("%s: nothing from the viewer for %.1f s: the peer ends", avatar, silent)
                    await end()

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("%s: peer %s", avatar, pc.connectionState)
            if pc.connectionState == "connected":
                peer.heard_at = peer.heard_at or time.monotonic()
                watching.append(asyncio.ensure_future(watch()))
                try:
                    await peer.start()
                except Exception as exc:  # noqa: BLE001 - the stream could not start: the peer ends
                    log.warning("%s: %s", avatar, exc)
                    await end()
            elif pc.connectionState in ("failed", "closed"):
                await end()

        try:
            # the tracks and the codec first: setRemoteDescription matches the offer's m-lines to
            # these transceivers and negotiates their codecs then (H.264 only: the packets are H.264)
            if any(line.startswith("m=audio") for line in lines):
                pc.addTrack(peer.voice)
            video = pc.addTransceiver(peer.video, direction="sendonly")
            video.setCodecPreferences(
                [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == "video/h264"]
            )
            peer.follow(video.sender)
            await pc.setRemoteDescription(offer)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # noqa: BLE001 - aiortc's refusal of an offer: the caller's
            await end()
            return refuse(400, f"offer: {exc}")

        async def connects() -> None:
            await asyncio.sleep(CONNECT_TIMEOUT_S)
            if pc.connectionState != "connected":
                log.info("%s: the viewer did not connect within %g s", avatar, CONNECT_TIMEOUT_S)
                await end()

        peer.waiting = asyncio.ensure_future(connects())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session": session})

    # -- a session's controls: HTTP (POST /webrtc/interrupt, /webrtc/say) or the data channel ---
    def tts(self):
        if self._tts is None:
            from synctalk_client.tts import engine

            self._tts = engine(self.settings.tts)
        return self._tts

    async def _control(self, peer: AvatarPeer, message, channel=None) -> dict:
        """One control message ({"type": "interrupt"} or {"type": "say", "text": ...}): its answer."""
        try:
            body = json.loads(message) if isinstance(message, str | bytes) else message
            kind = body["type"]
        except (ValueError, KeyError, TypeError):
            answer = {
                "type": "error",
                "error": 'a control message is JSON {"type": "interrupt"} or {"type": "say", "text": ...}',
            }
        else:
            if kind == "interrupt":
                first = await peer.interrupt()
                answer = {"type": "interrupted", "from_frame": first, "voice_from_s": peer.voice_cut / SAMPLE_RATE}
            elif kind == "say" and isinstance(body.get("text"), str) and body["text"].strip():
                try:
                    tts = self.tts()
                except (RuntimeError, ImportError, ValueError, AttributeError) as exc:
                    answer = {"type": "error", "error": f"text to speech: {exc}"}
                else:
                    asyncio.ensure_future(peer.say(body["text"], tts))
                    answer = {"type": "saying", "text": body["text"]}
            else:
                answer = {"type": "error", "error": f"unknown control {kind!r} or no text"}
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(answer))
        return answer

    async def control(self, request: web.Request) -> web.Response:
        """``POST /webrtc/interrupt`` and ``/webrtc/say``: ``{"session": ..., "text": ...}``."""
        try:
            body = await request.json()
            peer = self.sessions.get(str(body["session"]))
        except (ValueError, KeyError, TypeError):
            return refuse(400, 'the body is JSON {"session": "<the answer\'s session>"}')
        if peer is None:
            return refuse(404, "no such session (it ended, or never was)")
        answer = await self._control(peer, {**body, "type": request.match_info["control"]})
        return web.json_response(answer, status=400 if answer["type"] == "error" else 200)

    def _avatar_problem(self, avatar: str) -> str | None:
        from synctalk_client import CompositeClient

        try:
            with CompositeClient(self.settings.triton_url, timeout_s=10) as client:
                if client.takes_audio_only(avatar):
                    return None
        except Exception:  # noqa: BLE001 - unknown to the server, or the server away: not found
            pass
        return contract.MSG_MODEL_NOT_FOUND.format(model_id=avatar) + " (no loaded avatar)"

    async def held(self, _request: web.Request) -> web.Response:
        """``GET /webrtc/peers``: the peers held (avatar, connection state, seconds since the viewer
        was last heard from, how long its voice has waited for late frames in all), the places
        being opened, the limit."""
        now = time.monotonic()
        peers = [
            {
                "avatar": peer.avatar,
                "state": pc.connectionState,
                "heard_s_ago": None if peer.heard_at is None else round(now - peer.heard_at, 2),
                "voice_slipped_s": round(peer.clock.slipped_s, 3),
            }
            for pc, peer in self.peers.items()
        ]
        return web.json_response(
            {"peers": peers, "opening": self.opening, "max_peers": self.settings.max_peers},
            headers={"Cache-Control": "no-store"},
        )

    async def config(self, _request: web.Request) -> web.Response:
        return web.json_response({"iceServers": self.settings.ice_config()}, headers={"Cache-Control": "no-store"})

    async def close_all(self, _app=None) -> None:
        peers, self.peers, self.sessions = dict(self.peers), {}, {}
        await asyncio.gather(*(peer.close() for peer in peers.values()), return_exceptions=True)
        await asyncio.gather(*(pc.close() for pc in peers), return_exceptions=True)


def refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


PEERS = web.AppKey("webrtc_peers", Peers)


async def _freeze_heap(_app: web.Application) -> None:
    freeze_startup_heap()  # the voice's clock and Python's full collections: see timing


def add_routes(app: web.Application, settings: Settings) -> Peers:
    """``POST /offer`` and ``GET /webrtc/config`` on ``app`` (the page's server mounts them so)."""
    peers = Peers(settings)
    app[PEERS] = peers
    app.router.add_post("/offer", peers.offer)
    app.router.add_get("/webrtc/config", peers.config)
    app.router.add_get("/webrtc/peers", peers.held)
    app.router.add_post("/webrtc/{control:interrupt|say}", peers.control)
    app.on_startup.append(_freeze_heap)
    app.on_shutdown.append(peers.close_all)
    return peers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="synctalk-webrtc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--triton-url", default="localhost:8001", help="Triton's (or the edge's) gRPC address")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--ice-server", action="append", help="stun:HOST:PORT or turn:HOST:PORT,USER,CREDENTIAL")
    add_turn_arguments(parser)
    add_peer_arguments(parser)
    parser.add_argument(
        "--bitrate-kbps", type=int, default=START_KBPS, help=f"the video's start, {MIN_KBPS}..{MAX_KBPS}"
    )
    parser.add_argument(
        "--tts",
        default=Settings.tts,
        help="what says a session's text: espeak[:VOICE], piper:VOICE.onnx or module:Class[:ARG]",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = Settings(
            args.triton_url,
            ice_servers(args.ice_server),
            args.max_peers,
            args.bitrate_kbps,
            args.tts,
            turn_credentials(args.turn, args.turn_secret_file, args.turn_ttl),
            args.viewer_timeout,
        )
    except ValueError as exc:
        parser.error(str(exc))
    app = web.Application()
    add_routes(app, settings)
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
