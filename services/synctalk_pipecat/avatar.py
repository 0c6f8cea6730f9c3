"""``SyncTalkAvatarService``: the live avatar as a Pipecat frame processor, placed after the TTS.

    pipeline = Pipeline([transport.input(), ..., llm, tts,
                         SyncTalkAvatarService(triton_url="edge:8001", avatar="anna"),
                         transport.output()])

In: the TTS's ``TTSAudioRawFrame``s (any rate: resampled once, to the model's 16 kHz), placed on
the avatar's live stream just ahead of what the viewer is shown, as ``AvatarPeer.push`` places
speech (``synctalk_webrtc``: the same peer, its clock, its speech buffer, its interrupt, with
JPEG frames instead of H.264 and the voice at the pipeline's output rate).

Out, on one clock (the peer's: the voice never plays before the frame that shows it has come, so
the two stay within the clock's slack however late the server is):
- each of the avatar's frames as an ``OutputImageRawFrame`` (RGB, 25 a second), marked
  ``sync_with_audio``: the output transport queues it with the audio and shows it once the audio
  before it has been played;
- the voice in 20 ms ``OutputAudioRawFrame``s, sent when due: ``TTSAudioRawFrame`` where it is
  speech, plain output audio where the avatar is silent (its idle frames, the stream's silence
  path), so the output transport's "bot speaking" follows what is heard;
- ``TTSStartedFrame`` / ``TTSStoppedFrame`` where the speech heard starts and stops (the TTS's own
  ones come when the audio is *made*, seconds early: they are replaced), from which the output
  transport makes ``BotStartedSpeakingFrame`` / ``BotStoppedSpeakingFrame`` on the media timeline.

``InterruptionFrame`` (the user cut in) -> ``AvatarPeer.interrupt``: the speech not heard is
dropped, the frames from the first one not yet sent are rendered again as idle frames, the frame
loop going on with no jump; the frames and audio the output transport still holds it drops itself.
A user who starts speaking while interruptions are off interrupts nothing (Pipecat's rule: the
interruption frame decides). ``EndFrame`` / ``CancelFrame`` -> the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import cv2
import numpy as np
import soxr
from aiortc.mediastreams import MediaStreamError
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup

from synctalk_client.errors import CompositeError
from synctalk_client.stream import LiveStream
from synctalk_common import contract
from synctalk_webrtc.peer import AvatarPeer
from synctalk_webrtc.speaking import SpeakingEvent
from synctalk_webrtc.timing import freeze_startup_heap

log = logging.getLogger("synctalk_pipecat")


def frame_size(triton_url: str, avatar: str, timeout_s: float = 60.0) -> tuple[int, int]:
    """The avatar's frame size (width, height), from one frame of silence: what the output
    transport's ``video_out_width`` / ``video_out_height`` should be (else it resizes each image).
    Raises the stream's ``CompositeError`` (an unknown avatar: "model not found: <id>")."""
    stream = LiveStream(triton_url, avatar, timeout_s)
    try:
        frames = stream.end(np.zeros(contract.SAMPLES_PER_FRAME, np.int16))
    finally:
        stream.close()
    image = cv2.imdecode(np.frombuffer(frames[0].jpeg, np.uint8), cv2.IMREAD_COLOR)
    return image.shape[1], image.shape[0]


async def _received(track):
    """What the peer's ``track`` sends, each when its time comes, until it ends."""
    while True:
        try:
            yield await track.recv()
        except MediaStreamError:
            return


class SpeechIn:
    """TTS audio (int16 bytes at any rate, mono or stereo) to 16 kHz mono int16, resampled once,
    as a stream: a TTS's chunks join up with no clicks. ``reset`` at the end of an utterance."""

    def __init__(self):
        self._rate: int | None = None
        self._resampler: soxr.ResampleStream | None = None

    def __call__(self, audio: bytes, rate: int, channels: int) -> np.ndarray:
        pcm = np.frombuffer(audio, np.int16)
        if channels > 1:
            pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
        if rate == contract.SAMPLE_RATE:
            return pcm
        if self._resampler is None or self._rate != rate:
            self._rate, self._resampler = rate, soxr.ResampleStream(rate, contract.SAMPLE_RATE, 1, dtype="int16")
        return self._resampler.resample_chunk(pcm)

    def flush(self) -> np.ndarray:
        """What the resampler holds of the utterance's end."""
        if self._resampler is None:
            return np.zeros(0, np.int16)
        tail = self._resampler.resample_chunk(np.zeros(0, np.int16), last=True)
        self._resampler = None
        return tail

    def reset(self) -> None:
        self._resampler = None


class SyncTalkAvatarService(FrameProcessor):
    """A live avatar after the TTS (see the module). ``triton_url``: the server or the edge
    (gRPC); ``avatar``: the avatar's id; ``timeout_s``: how long a request of the stream waits."""

    def __init__(self, *, triton_url: str, avatar: str, timeout_s: float = 60.0, **kwargs):
        super().__init__(**kwargs)
        self.triton_url, self.avatar, self.timeout_s = triton_url, avatar, timeout_s
        self.peer: AvatarPeer | None = None
        self._speech_in = SpeechIn()
        self._events: list[SpeakingEvent] = []
        self._tasks: list[asyncio.Task] = []
        self._voice_rate = 24_000  # the pipeline's output rate (its setup says)
        # called with each SpeakingEvent (synctalk_webrtc.speaking: started or stopped, the place in
        # the speech, when), as the voice is sent: what the bot's speaking frames say, with the place
        self.on_speaking: list[Callable[[SpeakingEvent], None]] = []

    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        self._voice_rate = setup.audio_out_sample_rate or self._voice_rate

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._start(self._voice_rate)
        elif isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            if self.peer is not None:
                self.peer.push(self._speech_in(frame.audio, frame.sample_rate, frame.num_channels))
        elif isinstance(frame, TTSStoppedFrame) and direction == FrameDirection.DOWNSTREAM:
            if self.peer is not None and len(tail := self._speech_in.flush()):
                self.peer.push(tail)
        elif isinstance(frame, TTSStartedFrame) and direction == FrameDirection.DOWNSTREAM:
            pass  # sent again where the speech is heard
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
            await self._let_pushed_frames_in()
            await self.push_frame(frame, direction)
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _start(self, voice_rate: int) -> None:
        freeze_startup_heap()  # the pipeline is built: its objects out of full collections (timing)
        self.peer = AvatarPeer(
            self.triton_url,
            self.avatar,
            timeout_s=self.timeout_s,
            codec="jpeg",
            voice_rate=voice_rate,
            voice_channels=1,
        )
        self.peer.on_speaking.append(self._events.append)
        self.peer.on_speaking.extend(self.on_speaking)
        try:
            await self.peer.open()
        except CompositeError as exc:  # the avatar unknown, the stream limit: the pipeline's error
            self.peer = None
            await self.push_error(f"{self.avatar}: {exc}", exception=exc, fatal=True)
            return
        await self.peer.start()
        self._tasks = [self.create_task(self._video_out()), self.create_task(self._voice_out())]

    async def _interrupt(self) -> None:
        if self.peer is not None:
            self._speech_in.reset()
            await self.peer.interrupt()

    async def _let_pushed_frames_in(self) -> None:
        """One turn of the event loop before the interruption goes on: the next processor (the output
        transport) takes the voice and frames pushed in this turn into its queue first. A processor
        dequeues ``SystemFrame``s ahead of data frames: an ``InterruptionFrame`` put beside a 20 ms of
        speech would overtake it, the speech played after the interruption, and the transport say the
        bot started and stopped speaking again (seen in the Pipecat agent's test). Taken in first, the
        interruption drops it with the rest (the processor's queue, the transport's audio queue)."""
        await asyncio.sleep(0)

    async def _stop(self) -> None:
        peer, self.peer = self.peer, None
        if peer is not None:
            await peer.close()
            log.info("%s: the stream ended with the pipeline", self.avatar)
            if peer.error is not None:
                log.warning("%s: %s", self.avatar, peer.error)
        for task in self._tasks:
            await self.cancel_task(task)
        self._tasks = []

    async def cleanup(self):
        await super().cleanup()
        await self._stop()

    async def _video_out(self) -> None:
        """Each frame, decoded when its time comes (the peer's video track paces it)."""
        peer = self.peer
        async for packet in _received(peer.video):
            rgb = cv2.cvtColor(
                cv2.imdecode(np.frombuffer(bytes(packet), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
            )
            image = OutputImageRawFrame(image=rgb.tobytes(), size=(rgb.shape[1], rgb.shape[0]), format="RGB")
            image.sync_with_audio = True
            await self.push_frame(image)
        if peer.error is not None:  # the stream failed (not ended by us): the pipeline's error
            await self.push_error(f"{self.avatar}: {peer.error}", exception=peer.error, fatal=True)

    async def _voice_out(self) -> None:
        """Each 20 ms of the voice when due, with the speaking events it brings before it."""
        peer = self.peer
        async for chunk in _received(peer.voice):
            events, self._events[:] = list(self._events), []
            for event in events:
                await self.push_frame(TTSStartedFrame() if event.speaking else TTSStoppedFrame())
            kind = TTSAudioRawFrame if peer.speaking.speaking else OutputAudioRawFrame
            await self.push_frame(
                kind(audio=chunk.to_ndarray().tobytes(), sample_rate=chunk.sample_rate, num_channels=1)
            )
