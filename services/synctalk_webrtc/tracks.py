"""A peer's two outgoing tracks: the avatar's video (the server's H.264 access units, sent as
they are) and its voice (the speech the stream was given), both paced by one ``PlayoutClock``."""

from __future__ import annotations

import asyncio
import logging
from fractions import Fraction

import av
import numpy as np
import soxr
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from synctalk_common import contract
from synctalk_webrtc.speaking import HANGOVER_S, SpeakingTracker
from synctalk_webrtc.timing import VIDEO_CLOCK, VIDEO_TICKS_PER_FRAME, PlayoutClock

log = logging.getLogger("synctalk_webrtc")
VOICE_CHUNK = contract.SAMPLE_RATE // 50  # 20 ms: Opus's frame
# The voice leaves at Opus's own rate and layout (48 kHz stereo), so aiortc's resampler passes it
# through: resampling there would hold the first 20 ms back and put every voice packet one frame
# after its timestamp (measured in Chromium: the voice ~45 ms behind the lips). Each 20 ms is
# resampled here with 4 ms of the speech on each side (it is all there: the frames are later).
VOICE_RATE = 48_000
RESAMPLE_PAD = 64


def resampled_chunk(window: np.ndarray, rate: int) -> np.ndarray:
    """A 20 ms chunk at ``rate`` (int16): the middle of ``window``, 16 kHz speech with
    ``RESAMPLE_PAD`` samples of context on each side, so that chunks resampled one by one join up
    as the whole speech resampled would (no clicks, no delay)."""
    if rate == contract.SAMPLE_RATE:
        return window[RESAMPLE_PAD : RESAMPLE_PAD + VOICE_CHUNK]
    pad, count = RESAMPLE_PAD * rate // contract.SAMPLE_RATE, VOICE_CHUNK * rate // contract.SAMPLE_RATE
    voice = soxr.resample(window.astype(np.float32) / 32768.0, contract.SAMPLE_RATE, rate)[pad : pad + count]
    return np.round(np.clip(voice, -1, 1) * 32767).astype(np.int16)


SPEECH_LEVEL = 100  # int16 peak (-50 dBFS): a microphone's 20 ms above it is speech


class SpeechBuffer:
    """The speech a stream has been given (int16, 16 kHz), from what the voice has not played,
    with where it is speech (``spoken``: [start, end) sample ranges, merged, in order)."""

    def __init__(self):
        self.samples = np.zeros(0, np.int16)
        self.first = 0  # the sample number of samples[0]
        self.total = 0
        self.spoken: list[list[int]] = []

    def append(self, chunk: np.ndarray) -> None:
        """A microphone's samples after the rest: speech where its level says so."""
        chunk = chunk.astype(np.int16, copy=False)
        if len(chunk) and int(np.abs(chunk.astype(np.int32)).max()) > SPEECH_LEVEL:
            self._mark(self.total, self.total + len(chunk))
        self.samples = np.concatenate([self.samples, chunk])
        self.total += len(chunk)

    def place(self, pcm: np.ndarray, at: int) -> None:
        """Speech written at sample ``at`` (over silence not played yet; silence fills any gap),
        all of it speech (a TTS engine's pauses inside it included)."""
        self.extend_to(at + len(pcm))
        self.samples[at - self.first : at - self.first + len(pcm)] = pcm
        self._mark(at, at + len(pcm))

    def _mark(self, start: int, stop: int) -> None:
        """Samples start .. stop are speech: ``spoken`` kept merged and in order."""
        spans = sorted([*self.spoken, [start, stop]])
        self.spoken = []
        for a, b in spans:
            if self.spoken and self.spoken[-1][1] >= a:
                self.spoken[-1][1] = max(self.spoken[-1][1], b)
            else:
                self.spoken.append([a, b])

    def extend_to(self, total: int) -> None:
        """Silence up to sample ``total`` (nothing where the buffer reaches it)."""
        if total > self.total:
            self.samples = np.concatenate([self.samples, np.zeros(total - self.total, np.int16)])
            self.total = total

    def peek(self, start: int, stop: int) -> np.ndarray:
        """Samples start .. stop as they are (zeros where there are none), forgetting nothing."""
        out = np.zeros(max(0, stop - start), np.int16)
        first = max(start, self.first)
        have = self.samples[first - self.first : max(first, stop) - self.first]
        out[first - start : first - start + len(have)] = have
        return out

    def is_spoken(self, start: int, stop: int) -> bool:
        """Whether any sample in start .. stop is speech."""
        return any(a < stop and start < b for a, b in self.spoken)

    def onset(self, start: int, stop: int) -> int:
        """The first sample in start .. stop above the speech level (``start`` if none is)."""
        have = self.samples[max(0, start - self.first) : max(0, stop - self.first)]
        loud = np.flatnonzero(np.abs(have.astype(np.int32)) > SPEECH_LEVEL)
        return max(start, self.first) + int(loud[0]) if len(loud) else start

    def silence_from(self, sample: int) -> None:
        """The speech from ``sample`` on is silence (an interrupt: it is not to be heard)."""
        self.samples[max(0, sample - self.first) :] = 0
        self.spoken = [[a, min(b, sample)] for a, b in self.spoken if a < sample]

    def take(self, start: int, count: int, keep: int = 0) -> np.ndarray:
        """Samples start .. start + count (zeros where the speech has none: before its start, or
        not given yet), and forgets those before ``start + count - keep``."""
        out = self.peek(start, start + count)
        drop = max(0, start + count - keep - self.first)
        self.samples, self.first = self.samples[drop:], self.first + drop
        self.spoken = [span for span in self.spoken if span[1] > self.first]
        return out


class AvatarVideoTrack(MediaStreamTrack):
    """Frame i's access unit as an ``av.Packet`` (pts ``i * 3600`` at 90 kHz), sent when its time
    comes: aiortc only packetizes it (RFC 6184)."""

    kind = "video"

    def __init__(self, clock: PlayoutClock):
        super().__init__()
        self.clock = clock
        self.frames: asyncio.Queue = asyncio.Queue()  # (index, access unit), in order; None: the end
        self.sent = self.bytes_sent = 0
        self.taken = -1  # the last frame taken from the queue (sent, or waiting for its time)

    def drop_from(self, index: int) -> int:
        """The frames from ``index`` on are not to be sent (an interrupt): out of the queue.
        Returns how many went."""
        kept, dropped = [], 0
        while not self.frames.empty():
            item = self.frames.get_nowait()
            if item is not None and item[0] >= index:
                dropped += 1
            else:
                kept.append(item)
        for item in kept:
            self.frames.put_nowait(item)
        return dropped

    async def recv(self) -> av.Packet:
        item = await self.frames.get()
        if item is None or self.readyState != "live":
            self.stop()
            raise MediaStreamError
        index, unit = item
        self.taken = index
        await self.clock.sleep_until(index / contract.FPS)
        packet = av.Packet(unit)
        packet.pts = packet.dts = index * VIDEO_TICKS_PER_FRAME
        packet.time_base = Fraction(1, VIDEO_CLOCK)
        self.sent, self.bytes_sent = self.sent + 1, self.bytes_sent + len(unit)
        return packet


class AvatarVoiceTrack(MediaStreamTrack):
    """The speech in 20 ms frames (pts: the sample count, at ``rate``), each sent when its time comes
    and never before the frame that shows its last sample has arrived (else the clock slips).
    ``rate`` and ``channels``: Opus's 48 kHz stereo for aiortc (the default), or what another
    transport plays (a Pipecat pipeline's output rate, mono): resampled here, once."""

    kind = "audio"

    def __init__(
        self,
        clock: PlayoutClock,
        speech: SpeechBuffer,
        speaking: SpeakingTracker | None = None,
        rate: int = VOICE_RATE,
        channels: int = 2,
    ):
        super().__init__()
        self.clock, self.speech, self.speaking = clock, speech, speaking
        self.rate, self.channels = rate, channels
        self.chunks = 0
        self.ended = asyncio.Event()

    async def recv(self) -> av.AudioFrame:
        start = self.chunks * VOICE_CHUNK
        shown_by = (start + VOICE_CHUNK - 1) // contract.SAMPLES_PER_FRAME
        waiting = asyncio.ensure_future(self.clock.until_frame(shown_by))
        ended = asyncio.ensure_future(self.ended.wait())
        await asyncio.wait({waiting, ended}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel(), ended.cancel()
        if self.ended.is_set() or self.readyState != "live":
            self.stop()
            raise MediaStreamError
        content_s = start / contract.SAMPLE_RATE
        if self.clock.slip(content_s, headroom=self.speech.is_spoken(start - VOICE_CHUNK, start + VOICE_CHUNK)):
            log.info(
                "the voice waited for frame %d: everything %.0f ms later from here",
                shown_by,
                1000 * self.clock.last_slip_s,
            )
        await self.clock.sleep_until(content_s)
        if self.speaking is not None:  # on the media timeline: as the viewer hears it
            ahead = start + VOICE_CHUNK
            spoken = self.speech.is_spoken(start, ahead)
            self.speaking.chunk(
                start,
                spoken,
                self.speech.is_spoken(ahead, ahead + int(HANGOVER_S * contract.SAMPLE_RATE)),
                self.speech.onset(start, ahead) if spoken and not self.speaking.speaking else start,
            )
        window = self.speech.take(start - RESAMPLE_PAD, VOICE_CHUNK + 2 * RESAMPLE_PAD, keep=2 * RESAMPLE_PAD)
        pcm = resampled_chunk(window, self.rate)
        layout = "stereo" if self.channels == 2 else "mono"
        frame = av.AudioFrame.from_ndarray(np.repeat(pcm, self.channels)[None, :], format="s16", layout=layout)
        frame.sample_rate, frame.pts = self.rate, start * self.rate // contract.SAMPLE_RATE
        frame.time_base = Fraction(1, self.rate)
        self.chunks += 1
        return frame
