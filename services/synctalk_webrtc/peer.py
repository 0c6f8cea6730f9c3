"""``AvatarPeer``: one viewer of a live avatar over WebRTC (see the package).

For integrators, with aiortc::

    peer = AvatarPeer("edge:8001", "anna")
    await peer.open()                              # the stream, or its refusal (CompositeError)
    pc.addTrack(peer.voice)
    peer.follow(pc.addTrack(peer.video))          # the viewer's REMB and PLI reach the stream
    ...                                            # offer/answer as usual
    await peer.start()                             # once connected
    peer.listen(remote_audio_track)                # speech from the viewer's microphone, or:
    peer.push(pcm_int16_16khz)                     # speech from a file or a TTS engine, any size
    await peer.interrupt()                         # the listener cut in: the speech not heard goes
    async for event in peer.speaking_events(): ... # started / stopped speaking, as the viewer hears it
    await peer.close()                             # the stream ends at once

A 20 ms pump keeps the stream fed on a real-time schedule, with silence where there is no speech
(the avatar keeps moving: the stream's silence path); speech from a track is sent as it arrives.
Speech pushed (a TTS engine's, a file's) is **placed**, not queued behind that silence: it starts
just ahead of what the viewer is shown (past the first frame the video has not sent by 0.25 s to
begin with, then by what makes a placement's first frame come back 0.08 s before it is due), over
the idle audio already sent, or right after the speech pushed before. The stream writes it there
and renders those frames again
(``LiveStream.place``), so the first word is heard without waiting behind the 0.5 s of lookahead
and the pipeline's delay that the audio already sent holds: a TTS engine's audio is there before
it is due, the lookahead a frame needs with it. The pump sends placed speech up to 0.2 s ahead of
its schedule.

An interrupt drops everything not yet heard or seen: the speech and the frames from the first
frame the video has not sent (K) on; the stream is told to render frames K on again from silence
(``LiveStream.interrupt``: the avatar's idle frames), shown as they come (the voice, silent now,
waits for none of them), and the next speech pushed is placed as usual. Speaking events
(``speaking.SpeakingTracker``) come as the voice sends its 20 ms: to ``on_speaking`` callbacks and
to each ``speaking_events()`` iterator.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc.rtcrtpsender import RTCRtpSender

from synctalk_client.errors import CompositeError
from synctalk_client.stream import LiveStream, StreamClosedError
from synctalk_common import contract
from synctalk_webrtc.speaking import SpeakingEvent, SpeakingTracker
from synctalk_webrtc.timing import PlayoutClock
from synctalk_webrtc.tracks import VOICE_CHUNK, VOICE_RATE, AvatarVideoTrack, AvatarVoiceTrack, SpeechBuffer

log = logging.getLogger("synctalk_webrtc")

# what a viewer's estimate may set; the start is low (as libwebrtc's, ~300 kbit/s), under a poor
# link's rate: a start above it fills the link's queue, and the losses, retransmissions and key frames
# asked for then keep it full (measured: 1.5 Mbit/s into 500 kbit/s never recovered)
MIN_KBPS, MAX_KBPS, START_KBPS = 300, 3000, 300
HEADROOM = 0.85  # of the viewer's estimate: room for audio, RTP and retransmissions
BITRATE_STEP = 0.15  # a change smaller than this is not worth the key frame it costs
BITRATE_EVERY_S = 1.0  # at most one change a second
# the viewer's estimate (Chrome's, from the packets' delays) starts under the start and grows 8 % a
# second at most: 1.5 Mbit/s would take 25 s. So the stream ramps up faster, RAMP a second (but at
# most RAMP_OVER times the estimate), while the estimate grows (by ESTIMATE_GROWS within STALL_S).
# Once it stops growing (Chrome saw the packets queue: the link's rate is passed) the ramp ends at
# half its rate then, and the estimate is followed above that; below it once the estimate falls
RAMP, RAMP_OVER = 1.25, 2.0
ESTIMATE_GROWS, STALL_S = 1.03, 1.0
KEY_FRAME_EVERY_S = 0.5  # PLI/FIR answered at most this often
END_WAIT_S = 5.0  # a closing peer waits this long for its stream's end to be answered, then goes
# speech pushed starts this far after the first frame the viewer has not been sent, so that its
# frames, rendered again, are back before they are due (else the voice waits for them, and a
# browser grows its jitter buffers): PLACE_AHEAD_S to begin with, then adapted so that the first
# frame of each placement arrives PLACE_SPARE_S before it is due
PLACE_AHEAD_S = 0.25
PLACE_SPARE_S = 0.08
PLACE_AHEAD_RANGE = (0.1, 1.0)
# speech placed is sent up to this far ahead of the pump's schedule (the lookahead of its first
# frames is within the schedule already: this is headroom), at most LEAD_STEP beyond it a tick, so
# that no request of the stream renders many frames at once (its answer would come after all)
LEAD_S = 0.2
GATHER_S = 0.01  # speech pushed over audio already sent is written there after this: see _resend_soon
LEAD_STEP = 4 * VOICE_CHUNK


class BitrateFollower:
    """The stream's target from the viewer's bandwidth estimates (REMB). Ramping up from the start
    (``RAMP`` a second, at most ``RAMP_OVER`` times the estimate) while the estimate grows; once it
    stalls, half the ramp's rate then, or ``HEADROOM`` of the estimate where higher; once the
    estimate falls, ``HEADROOM`` of it. Always within ``MIN_KBPS .. MAX_KBPS``, changed only by more
    than ``BITRATE_STEP`` and at most once every ``BITRATE_EVERY_S`` (each change costs a key frame:
    the encoder opens afresh)."""

    def __init__(self, kbps: int = START_KBPS, lowest: int = MIN_KBPS, highest: int = MAX_KBPS):
        self.kbps, self.lowest, self.highest = kbps, lowest, highest
        self.changed_at = -float("inf")
        self.ramping, self.ramped_at = True, None  # the ramp's last step (its first: the first estimate)
        self.floor = 0.0  # after the ramp: half its rate, until the estimate falls
        self.last: float | None = None  # the viewer's last estimate (kbit/s)
        self.grown, self.grown_at = 0.0, 0.0  # the estimate when it last grew by ESTIMATE_GROWS, when

    def estimate(self, bps: float, now: float) -> int | None:
        """A new target (kbit/s) for the viewer's estimate ``bps``, or None to keep the current one."""
        kbps, before, self.last = bps / 1000, self.last, bps / 1000
        if kbps >= self.grown * ESTIMATE_GROWS:
            self.grown, self.grown_at = kbps, now
        if before is not None and kbps < before:
            self.ramping, self.floor = False, 0.0  # the viewer saw the packets queue: its estimate rules
        elif self.ramping and before is not None and now - self.grown_at > STALL_S:
            self.ramping, self.floor = False, self.kbps / 2  # the link's rate passed
        target = max(HEADROOM * kbps, self.floor)
        if self.ramping:
            self.ramped_at = now if self.ramped_at is None else self.ramped_at
            ramp = self.kbps * RAMP ** min(2.0, now - self.ramped_at)
            target = max(target, min(ramp, RAMP_OVER * kbps))
        target = int(min(self.highest, max(self.lowest, target)))
        if abs(target - self.kbps) <= BITRATE_STEP * self.kbps or now - self.changed_at < BITRATE_EVERY_S:
            return None
        self.kbps, self.changed_at, self.ramped_at = target, now, now
        return target


class AvatarPeer:
    """A live stream of ``avatar`` (H.264) turned into a WebRTC voice and video (see the module)."""

    def __init__(
        self,
        triton_url: str,
        avatar: str,
        bitrate_kbps: int = START_KBPS,
        timeout_s: float = 60.0,
        codec: str = "h264",
        voice_rate: int = VOICE_RATE,
        voice_channels: int = 2,
    ):
        """``codec``: the video track's units, H.264 access units (aiortc sends them as they are)
        or JPEGs (for a transport that encodes images itself: ``synctalk_pipecat``); ``voice_rate``
        and ``voice_channels``: the voice track's (Opus's 48 kHz stereo by default)."""
        if codec not in contract.STREAM_CODECS:
            raise ValueError(f"codec must be one of {contract.STREAM_CODECS}, got {codec!r}")
        self.triton_url, self.avatar, self.timeout_s, self.codec = triton_url, avatar, timeout_s, codec
        self.clock = PlayoutClock()
        self.speech = SpeechBuffer()
        self.speaking = SpeakingTracker(self._speaking)
        self.video = AvatarVideoTrack(self.clock)
        self.voice = AvatarVoiceTrack(self.clock, self.speech, self.speaking, voice_rate, voice_channels)
        self.on_speaking: list[Callable[[SpeakingEvent], None]] = []
        self._listeners: list[asyncio.Queue] = []
        # cuts (interrupts and speech placed): each answer is delivered with the count of cuts sent
        # before its request; the frames from a cut's K in the answers to requests sent before it
        # are stale
        self.cuts: list[int] = []  # K of each cut, in order
        self.sent = 0  # samples sent to the stream
        self.cursor = 0  # where the next speech pushed goes (the end of the last, or earlier)
        self.place_ahead_s = PLACE_AHEAD_S  # see PLACE_AHEAD_S
        self._placed_first: int | None = None  # the first frame of the last placement, until it arrives
        self._placed_at = 0.0  # when it was sent (time.monotonic())
        self.placement_s: float | None = None  # how long the last placement's first frame took to come
        # False: speech pushed follows the audio already sent (heard some 0.5 s later than placed)
        self.place_speech = True
        self.voice_cut = -1  # the last interrupt's first sample silenced
        self._resend_from: int | None = None  # speech pushed over audio sent, waiting for GATHER_S
        self._resend_handle: asyncio.TimerHandle | None = None
        self._utterances = 0  # say() pushes while this is unchanged (an interrupt counts one)
        self.bitrate = BitrateFollower(bitrate_kbps)
        self.stream: LiveStream | None = None
        self.closed = asyncio.Event()
        self.error: CompositeError | None = None
        self._tasks: list[asyncio.Task] = []
        self._key_frame_at = -float("inf")
        self.heard_at: float | None = None  # the viewer's last RTCP (time.monotonic()): see the service
        self._loop: asyncio.AbstractEventLoop | None = None
        self.listening = False
        self.waiting: asyncio.Future | None = None  # the service's wait for the viewer to connect
        self._pump_task: asyncio.Task | None = None

    # -- lifetime -----------------------------------------------------------------------------
    async def open(self) -> None:
        """Opens the avatar's stream (a gRPC stream: through the edge, to a replica holding the
        avatar) with a start request of no audio, so that a refusal (the stream limit, an avatar not
        loaded) comes now, as the stream's error, before any viewer waits for a picture."""
        if self.stream is not None:
            return
        self._loop = asyncio.get_running_loop()
        stream = await self._loop.run_in_executor(
            None,
            lambda: LiveStream(
                self.triton_url,
                self.avatar,
                self.timeout_s,
                codec=self.codec,
                bitrate_kbps=self.bitrate.kbps if self.codec == "h264" else None,
            ),
        )
        try:
            await self._loop.run_in_executor(None, stream.send, np.zeros(0, np.int16))
        except CompositeError:
            await self._loop.run_in_executor(None, stream.close)
            raise
        self.stream = stream

    async def start(self) -> None:
        """Speech from now on (the viewer is connected): the pump of pushed speech starts."""
        if self.stream is None:
            await self.open()
        if self._pump_task is None:
            self._pump_task = asyncio.ensure_future(self._pump())
            self._tasks.append(self._pump_task)

    async def close(self) -> None:
        """Ends the stream at once (its last frames are nobody's) and stops both tracks."""
        if self.closed.is_set():
            return
        self.closed.set()
        if self.waiting is not None and self.waiting is not asyncio.current_task():
            self.waiting.cancel()
        for task in self._tasks:
            task.cancel()
        self.video.frames.put_nowait(None)
        self.voice.ended.set()
        for events in self._listeners:
            events.put_nowait(None)
        stream, self.stream = self.stream, None
        if stream is not None:
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            try:
                stream.send_async(None, lambda *_: loop.call_soon_threadsafe(done.set), end=True)
                await asyncio.wait_for(done.wait(), END_WAIT_S)
            except (CompositeError, asyncio.TimeoutError) as exc:
                log.info("%s: the stream's end: %s", self.avatar, f"{type(exc).__name__} {exc}".strip())
            finally:  # what the server still owes (the end unanswered) is cancelled, not waited for
                cancel = not done.is_set()
                await loop.run_in_executor(None, functools.partial(stream.close, cancel=cancel))

    # -- interrupts and speaking ---------------------------------------------------------------
    async def interrupt(self) -> int:
        """Stops the speech now (the listener cut in; see the module): returns K, the first frame
        rendered again as an idle frame; -1 when there is nothing to stop (no speech ahead of the
        voice: nothing is rendered again)."""
        if self.stream is None or self.closed.is_set():
            return -1
        self._utterances += 1  # a text being said stops pushing
        if not self.speech.is_spoken(self.voice.chunks * VOICE_CHUNK, max(self.speech.total, self.cursor) + 1):
            return -1
        if self._resend_handle is not None:  # speech pushed a moment ago: silenced with the rest
            self._resend_handle.cancel()
            self._resend_from = self._resend_handle = None
        first = self._first_unsent()
        self.cuts.append(first)
        self.voice_cut = self.voice.chunks * VOICE_CHUNK  # the voice's next 20 ms on: silence
        self.speech.silence_from(self.voice_cut)
        self.cursor = 0
        self.video.drop_from(first)
        # the clock does not wait for the frames from K: the voice is silent from here, and its
        # frames come when the server has rendered them (76-91 ms late, measured on the tests'
        # host): a gap in the voice meanwhile made Chromium grow its audio buffer, and the next
        # speech was heard 130-190 ms behind its mouth (speech placed next waits for its frames)
        try:
            self.stream.send_async(None, functools.partial(self._answered, len(self.cuts)), interrupt=first)
        except CompositeError as exc:
            self._failed(exc)
        log.info("%s: interrupted: frames from %d again, idle", self.avatar, first)
        return first

    def speaking_events(self):
        """An async iterator of ``SpeakingEvent``s from now on (until the peer closes)."""
        events: asyncio.Queue = asyncio.Queue()
        self._listeners.append(events)

        async def iterate():
            try:
                while (event := await events.get()) is not None:
                    yield event
            finally:
                self._listeners.remove(events)

        return iterate()

    def _speaking(self, event: SpeakingEvent) -> None:
        log.info("%s: %s speaking at %.2f s", self.avatar, "started" if event.speaking else "stopped", event.content_s)
        for events in self._listeners:
            events.put_nowait(event)
        for callback in self.on_speaking:
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - an integrator's callback does not stop the voice
                log.exception("%s: a speaking callback failed", self.avatar)

    # -- speech in ----------------------------------------------------------------------------
    def push(self, pcm: np.ndarray) -> int:
        """Speech to say (16 kHz mono, int16 or float32 in [-1, 1]): placed right after the speech
        pushed before, or just ahead of what the viewer is shown (see the module). Returns the
        sample it starts at."""
        pcm = np.asarray(pcm).reshape(-1)
        if pcm.dtype != np.int16:
            pcm = np.round(np.clip(pcm, -1, 1) * 32767).astype(np.int16)
        at = max(self.cursor, self._earliest() if self.place_speech else self.sent)
        self.speech.place(pcm, at)
        self.cursor = at + len(pcm)
        if at < self.sent and self.stream is not None and not self.closed.is_set():
            self._resend_soon(at)  # over audio the stream has: written there, its frames rendered again
        return at

    def _first_unsent(self) -> int:
        """The first frame the viewer has not been sent (of the video, and never behind the voice)."""
        return max(self.video.taken + 1, -(-self.voice.chunks * VOICE_CHUNK // contract.SAMPLES_PER_FRAME))

    def _earliest(self) -> int:
        """The first sample speech pushed now can be placed at: ``place_ahead_s`` past what the
        viewer has been sent (its frames must be rendered again by then)."""
        return self._first_unsent() * contract.SAMPLES_PER_FRAME + int(self.place_ahead_s * contract.SAMPLE_RATE)

    def _resend_soon(self, at: int) -> None:
        """``_resend`` from ``at`` once the pushes of this moment are in (``GATHER_S``): a TTS's
        burst of small chunks (Pipecat's are 40 ms) is one resend, not one each, every one of which
        would render again all the frames from its chunk to what was sent."""
        self._resend_from = at if self._resend_from is None else min(self._resend_from, at)
        if self._resend_handle is None:
            self._resend_handle = self._loop.call_later(GATHER_S, self._resend_gathered)

    def _resend_gathered(self) -> None:
        at, self._resend_from, self._resend_handle = self._resend_from, None, None
        if at is not None and at < self.sent and self.stream is not None and not self.closed.is_set():
            self._resend(at)

    def _resend(self, at: int) -> None:
        """The speech from ``at`` to what was sent, written over what the stream has there."""
        first = at // contract.SAMPLES_PER_FRAME
        self._placed_first, self._placed_at = first, time.monotonic()
        self.cuts.append(first)
        self.video.drop_from(first)
        self.clock.rewind(first)
        answered = functools.partial(self._answered, len(self.cuts))
        try:
            for start in range(at, self.sent, contract.STREAM_MAX_CHUNK):
                chunk = self.speech.peek(start, min(self.sent, start + contract.STREAM_MAX_CHUNK))
                self.stream.send_async(chunk, answered, speech_at=start)
        except CompositeError as exc:
            self._failed(exc)

    async def say(self, text: str, tts) -> int:
        """Says ``text`` with ``tts`` (``synctalk_client.tts``): each sentence pushed as soon as it is
        synthesised (the engine runs on a thread), after what was pushed before; an interrupt stops
        the rest. Returns the samples pushed."""
        loop, utterance, pushed = asyncio.get_running_loop(), self._utterances, 0
        sentences = iter(tts.speak(text))
        while not self.closed.is_set():
            pcm = await loop.run_in_executor(None, next, sentences, None)
            if pcm is None or utterance != self._utterances:
                break
            self.push(pcm)
            pushed += len(pcm)
        return pushed

    def listen(self, track) -> None:
        """Speech from a track (the viewer's microphone): resampled to 16 kHz mono and sent as it
        arrives; the pump of pushed speech stops."""
        self.listening = True
        self._tasks.append(asyncio.ensure_future(self._listen(track)))

    async def _listen(self, track) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=contract.SAMPLE_RATE)
        while not self.closed.is_set():
            try:
                frame = await track.recv()
            except Exception:  # noqa: BLE001 - aiortc's MediaStreamError: the viewer's track ended
                break
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1)
                self.speech.append(samples)  # speech by its level
                self._send(samples)
        self.listening = False  # the track ended: pushed speech, or silence, from here on

    async def _pump(self) -> None:
        """The stream fed on a real-time schedule, 20 ms a tick (no drift: each tick's time is the
        schedule's start plus its count), while no track is listened to: what the speech buffer
        holds (speech placed, silence where there is none) up to the schedule, and speech placed
        ahead of it up to ``LEAD_S`` further (``LEAD_STEP`` a tick at most)."""
        started, ticks = time.monotonic(), 0
        while not self.closed.is_set():
            ticks += 1
            await asyncio.sleep(max(0.0, started + ticks * VOICE_CHUNK / contract.SAMPLE_RATE - time.monotonic()))
            if self.listening or self._resend_handle is not None:
                # a placement over audio already sent is gathering (GATHER_S): the speech after
                # what was sent goes out behind it, else the stream renders the frames before the
                # placement through the generator on its lookahead, for nothing, ahead of it
                continue
            due = ticks * VOICE_CHUNK
            target = max(due, min(self.speech.total, due + int(LEAD_S * contract.SAMPLE_RATE), self.sent + LEAD_STEP))
            if target > self.sent:
                self.speech.extend_to(target)
                self._send(self.speech.peek(self.sent, target))

    def _send(self, samples: np.ndarray) -> None:
        """Samples after what was sent, in requests of at most 1 s."""
        if self.stream is None or self.closed.is_set():
            return
        answered = functools.partial(self._answered, len(self.cuts))
        try:
            for start in range(0, len(samples), contract.STREAM_MAX_CHUNK):
                chunk = samples[start : start + contract.STREAM_MAX_CHUNK]
                self.stream.send_async(chunk, answered)
                self.sent += len(chunk)
        except CompositeError as exc:
            self._failed(exc)

    # -- frames out ---------------------------------------------------------------------------
    def _answered(self, cuts: int, frames, error) -> None:  # on the gRPC stream's thread
        try:
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._deliver(frames, error, cuts)))
        except RuntimeError:  # the loop has closed (the service stopped): nobody to deliver to
            pass

    def _stale_from(self, cuts: int) -> int | None:
        """The first frame no longer wanted from an answer to a request sent after ``cuts`` cuts
        (None: all wanted)."""
        later = self.cuts[cuts:]
        return min(later) if later else None

    async def _deliver(self, frames, error, cuts: int = 0) -> None:
        if error is not None:
            if self.closed.is_set():  # the peer closed it (and cancelled what was owed)
                return
            if isinstance(error, StreamClosedError):
                self._failed(error)
            else:  # busy, or a refused request: the stream renders those frames with the next
                log.warning("%s: %s", self.avatar, error)
            return
        for frame in frames:
            stale_from = self._stale_from(cuts)  # a cut may come while this awaits
            if stale_from is not None and frame.index >= stale_from:
                continue
            if frame.index == self._placed_first and self.clock.t0 is not None:
                # how early the placement's first frame came back: the next placement starts closer
                # (or further) so that it comes PLACE_SPARE_S early
                now = time.monotonic()
                spare = self.clock.due(frame.index / contract.FPS) - now
                self.placement_s = now - self._placed_at
                low, high = PLACE_AHEAD_RANGE
                self.place_ahead_s = min(high, max(low, self.place_ahead_s + 0.5 * (PLACE_SPARE_S - spare)))
                log.info(
                    "%s: speech placed at frame %d: its frame back in %.0f ms, %.0f ms before it was due; "
                    "the next placed %.0f ms ahead",
                    self.avatar,
                    frame.index,
                    1000 * self.placement_s,
                    1000 * spare,
                    1000 * self.place_ahead_s,
                )
                self._placed_first = None
            self.video.frames.put_nowait((frame.index, frame.h264 if self.codec == "h264" else frame.jpeg))
            await self.clock.frame_arrived(frame.index)

    def _failed(self, error: CompositeError) -> None:
        log.warning("%s: the stream failed: %s", self.avatar, error)
        self.error = error
        asyncio.ensure_future(self.close())

    # -- the viewer's feedback ----------------------------------------------------------------
    def follow(self, sender: RTCRtpSender) -> None:
        """The viewer's RTCP to the video sender: REMB sets the stream's bitrate (``BitrateFollower``),
        PLI/FIR asks the stream for a key frame, and any of it says the viewer is there
        (``heard_at``). aiortc hands these to its own encoders only, which pre-encoded packets do not
        use, so the sender's handler is wrapped to see them first."""
        from aiortc.rtp import (
            RTCP_PSFB_APP,
            RTCP_PSFB_FIR,
            RTCP_PSFB_PLI,
            RtcpPsfbPacket,
            unpack_remb_fci,
        )

        handle = sender._handle_rtcp_packet

        async def observed(packet) -> None:
            self.heard_at = now = time.monotonic()
            if isinstance(packet, RtcpPsfbPacket) and self.stream is not None:
                if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR) and now - self._key_frame_at >= KEY_FRAME_EVERY_S:
                    self._key_frame_at = now
                    log.info("%s: a key frame (the viewer asked)", self.avatar)
                    self.stream.request_key_frame()
                elif packet.fmt == RTCP_PSFB_APP:
                    try:
                        bps, _ = unpack_remb_fci(packet.fci)
                    except ValueError:
                        bps = None
                    if bps is not None:
                        self._set_bitrate(self.bitrate.estimate(bps, now), f"the viewer's estimate: {bps // 1000}")
            await handle(packet)

        sender._handle_rtcp_packet = observed

    def _set_bitrate(self, kbps: int | None, why: str) -> None:
        if kbps is not None and self.stream is not None:
            log.info("%s: the video at %d kbit/s (%s)", self.avatar, kbps, why)
            self.stream.set_bitrate(kbps)
