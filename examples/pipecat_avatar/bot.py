"""A voice agent with a face: Pipecat's SmallWebRTCTransport to a browser, the user's turns typed
in the page, a stand-in LLM (an echo bot), the offline TTS, and the avatar.

    make agents                      # .venv-agents: pipecat-ai and this project
    make serve                       # in another shell: the server (or the edge of make cluster)
    .venv-agents/bin/python examples/pipecat_avatar/bot.py --url 127.0.0.1:8001 --avatar demo
    # http://127.0.0.1:7861/ : Connect, type, Send; Interrupt (or send while it speaks)

The pipeline, one per browser that connects (Pipecat puts its RTVI processor in front: the page
speaks RTVI, the client protocol of Pipecat's own browser clients)::

    transport.input() -> EchoLLM -> SyncTalkTTSService -> SyncTalkAvatarService -> transport.output()

The page's RTVI ``send-text`` is the user's turn: RTVI interrupts the bot if it is speaking and
appends the text to the conversation (``LLMMessagesAppendFrame``); ``EchoLLM`` answers as an LLM
service does (``LLMFullResponseStartFrame``, ``LLMTextFrame``, ``LLMFullResponseEndFrame``), with
the text said back. A real agent puts Pipecat's ``LLMContextAggregatorPair`` and an LLM service
there (and an STT after the input for a microphone; docs/voice-agents.md): the TTS and the avatar
stay as they are. The page's Interrupt is an RTVI client message ``interrupt``. RTVI tells the page
when the bot starts and stops speaking: on the media timeline, as the avatar's voice is played.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from aiohttp import web
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

from synctalk_pipecat.avatar import SyncTalkAvatarService, frame_size
from synctalk_pipecat.tts import SyncTalkTTSService

PAGE = Path(__file__).with_name("index.html")
log = logging.getLogger("pipecat_avatar")


class EchoLLM(FrameProcessor):
    """A stand-in for an LLM service: each user message appended to the conversation with
    ``run_llm`` is answered with ``reply(text)`` (the text itself), streamed as an LLM's is."""

    def __init__(self, reply=lambda text: text):
        super().__init__()
        self.reply = reply

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMMessagesAppendFrame) and direction == FrameDirection.DOWNSTREAM:
            said = [m.get("content", "") for m in frame.messages if isinstance(m, dict) and m.get("role") == "user"]
            if frame.run_llm and said and str(said[-1]).strip():
                await self.push_frame(LLMFullResponseStartFrame())
                await self.push_frame(LLMTextFrame(self.reply(str(said[-1]).strip())))
                await self.push_frame(LLMFullResponseEndFrame())
            return
        await self.push_frame(frame, direction)


class Bot:
    """The page, and a pipeline for each browser that posts an offer."""

    def __init__(self, url: str, avatar: str, tts: str, size: tuple[int, int]):
        self.url, self.avatar, self.tts, self.size = url, avatar, tts, size
        self.tasks: set[asyncio.Task] = set()
        self.runs: list[PipelineWorker] = []

    async def page(self, request: web.Request) -> web.Response:
        return web.FileResponse(PAGE)

    async def offer(self, request: web.Request) -> web.Response:
        body = await request.json()
        connection = SmallWebRTCConnection()
        await connection.initialize(sdp=body["sdp"], type=body["type"])
        task = asyncio.ensure_future(self.run(connection))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.json_response(connection.get_answer())

    async def run(self, connection: SmallWebRTCConnection) -> None:
        width, height = self.size
        transport = SmallWebRTCTransport(
            webrtc_connection=connection,
            params=TransportParams(
                audio_in_enabled=False,
                audio_out_enabled=True,
                # the voice comes in 20 ms, when due: written in 20 ms (the default, 40, holds it longer)
                audio_out_10ms_chunks=2,
                video_out_enabled=True,
                # images come marked sync_with_audio: shown once the audio before them has played
                video_out_is_live=False,
                # aiortc's video track stamps its frames at 30 a second: the avatar's 25 are drawn
                # at that rate (each fifth twice) so that the timestamps keep real time
                video_out_framerate=30,
                video_out_width=width,
                video_out_height=height,
            ),
        )
        avatar = SyncTalkAvatarService(triton_url=self.url, avatar=self.avatar)
        pipeline = Pipeline(
            [transport.input(), EchoLLM(), SyncTalkTTSService(engine=self.tts), avatar, transport.output()]
        )
        worker = PipelineWorker(pipeline, params=PipelineParams(audio_out_sample_rate=24000), idle_timeout_secs=None)

        # RTVI says when the bot starts and stops speaking; this says where in the speech, too
        # ({"type": "speaking", "speaking": ..., "t": seconds}, an RTVI server message)
        avatar.on_speaking.append(
            lambda event: worker.rtvi.create_task(worker.rtvi.send_server_message(event.message()))
        )

        @worker.rtvi.event_handler("on_client_message")
        async def on_client_message(rtvi, message):
            if message.type == "interrupt":
                await rtvi.interrupt_bot()

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport, client):
            await worker.cancel()

        self.runs.append(worker)
        try:
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
        finally:
            self.runs.remove(worker)

    async def close(self, app) -> None:
        """On SIGTERM: each pipeline cancelled and waited for (10 s at most), so that every
        avatar's stream ends (a stream left open holds the process: its gRPC threads)."""
        for run in list(self.runs):
            await run.cancel()
        if self.tasks:
            _, late = await asyncio.wait(set(self.tasks), timeout=10)
            if late:
                log.warning("%d pipelines did not end within 10 s", len(late))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8001", help="the server's (or the edge's) gRPC address")
    parser.add_argument("--avatar", required=True, help="the avatar's id")
    parser.add_argument(
        "--tts", default="espeak:en", help="synctalk_client.tts engine (espeak:VOICE, module:Class:ARG)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7861)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logger.remove()  # Pipecat's own log (loguru): its INFO and above
    logger.add(sys.stderr, level="INFO")
    bot = Bot(args.url, args.avatar, args.tts, frame_size(args.url, args.avatar))
    app = web.Application()
    app.router.add_get("/", bot.page)
    app.router.add_post("/api/offer", bot.offer)
    app.on_shutdown.append(bot.close)
    print(f"the voice agent's page: http://{args.host}:{args.port}/", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
