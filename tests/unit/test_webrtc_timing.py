"""The WebRTC peer's clock, bitrate policy and ICE settings: pure logic, no network."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from synctalk_webrtc.peer import HEADROOM, MAX_KBPS, MIN_KBPS, RAMP_OVER, START_KBPS, BitrateFollower
from synctalk_webrtc.service import ice_servers
from synctalk_webrtc.timing import PlayoutClock
from synctalk_webrtc.tracks import SpeechBuffer


class FakeTime:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_clock_starts_with_the_first_frame_and_the_voice_slips_only_for_late_frames():
    async def run():
        now = FakeTime()
        clock = PlayoutClock(margin_s=0.08, slack_s=0.02, now=now)
        await clock.frame_arrived(0)
        assert clock.t0 == pytest.approx(100.08)
        assert clock.due(10.0) == pytest.approx(110.08), "content time 10 s: 10 s after t0"
        now.t = 100.5  # the voice at 0.4 s found its frame in time: nothing moves
        clock.slip(0.4)
        assert clock.t0 == pytest.approx(100.08)
        now.t = 100.6  # the voice at 0.4 s had to wait for its frame until 0.12 s past its time
        assert clock.slip(0.4)
        assert clock.t0 == pytest.approx(100.24) and clock.slipped_s == pytest.approx(0.16), "and half the margin"
        assert clock.due(0.44) == pytest.approx(100.68), "everything after moves with it"

    asyncio.run(run())


def test_the_voice_waits_for_the_frame_that_shows_it():
    async def run():
        clock = PlayoutClock()
        waiting = asyncio.ensure_future(clock.until_frame(3))
        for index in range(3):
            await clock.frame_arrived(index)
            await asyncio.sleep(0)
            assert not waiting.done()
        await clock.frame_arrived(3)
        await asyncio.wait_for(waiting, 1)

    asyncio.run(run())


def test_the_bitrate_follows_the_viewers_estimate_within_bounds_and_not_too_often():
    follower = BitrateFollower(1500)
    follower.ramping = False  # the estimate alone (past the ramp: see below)
    assert follower.estimate(10_000_000, now=0.0) == MAX_KBPS, "at most 3 Mbit/s"
    assert follower.estimate(100_000, now=0.5) is None, "at most one change a second"
    assert follower.estimate(100_000, now=1.0) == MIN_KBPS, "at least 300 kbit/s"
    assert follower.estimate(380_000, now=5.0) is None, "a change of under 15 % is not worth a key frame"
    assert follower.estimate(1_000_000, now=6.0) == 850, "85 % of the estimate"


def test_the_bitrate_starts_low_ramps_past_the_slow_estimate_and_stops_where_the_estimate_stalls():
    """Chrome's estimate starts under the start and grows 8 % a second; the stream ramps 25 % a
    second (at most twice the estimate) while it grows, then falls back to half its rate when it
    stops growing, and follows it down once it falls."""
    follower, changes = BitrateFollower(), []
    estimate = 200.0
    for tick in range(1, 41):  # REMB every 0.25 s: growing 8 % a second until 5 s, then stalled
        now = tick * 0.25
        estimate *= 1.08**0.25 if now <= 5 else 1.0
        if (kbps := follower.estimate(estimate * 1000, now)) is not None:
            changes.append((now, kbps, estimate))
    assert START_KBPS <= 400 and changes[0][1] > START_KBPS, changes
    ramp = [kbps for now, kbps, _ in changes if now <= 5]
    assert ramp == sorted(ramp) and len(ramp) >= 3, f"up in steps: {changes}"
    assert all(kbps <= RAMP_OVER * estimate for now, kbps, estimate in changes if now <= 5), "within the bound"
    assert ramp[-1] >= 2 * HEADROOM * estimate * 0.9, f"past what following the estimate gives: {changes}"
    (stalled_at, after, _), *rest = [change for change in changes if change[0] > 5]
    assert stalled_at <= 6.5 and after == max(MIN_KBPS, ramp[-1] // 2) and not rest, f"then half: {changes}"
    assert follower.estimate(2_000_000, now=20) == 1700, "past the ramp: the estimate's share, up"
    assert follower.estimate(1_000_000, now=22) == 850, "and down"


def test_speech_is_kept_until_the_voice_has_played_it():
    speech = SpeechBuffer()
    speech.append(np.arange(1, 1001, dtype=np.int16))  # sample n is n + 1
    assert list(speech.take(-4, 8, keep=8)) == [0, 0, 0, 0, 1, 2, 3, 4], "before the speech: silence"
    assert list(speech.take(0, 320, keep=10)) == list(range(1, 321))
    assert speech.first == 310, "what was played is forgotten, but for what is kept"
    assert list(speech.take(310, 330)) == list(range(311, 641))
    assert list(speech.take(900, 200)[:100]) == list(range(901, 1001)) and not speech.take(900, 200)[100:].any()


@pytest.mark.parametrize("rate", [48_000, 24_000, 16_000])
def test_the_voice_leaves_at_its_transports_rate_in_chunks_that_join_up(rate):
    """20 ms chunks resampled one by one with their context (Opus's 48 kHz for aiortc, a Pipecat
    pipeline's 24 kHz, or none) are the whole speech resampled."""
    import soxr

    from synctalk_webrtc.tracks import RESAMPLE_PAD, VOICE_CHUNK, resampled_chunk

    t = np.arange(16000) / 16000
    speech = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    buffer = SpeechBuffer()
    buffer.append(speech)
    chunks = []
    for start in range(0, 16000 - VOICE_CHUNK - RESAMPLE_PAD, VOICE_CHUNK):
        window = buffer.take(start - RESAMPLE_PAD, VOICE_CHUNK + 2 * RESAMPLE_PAD, keep=2 * RESAMPLE_PAD)
        chunk = resampled_chunk(window, rate)
        assert len(chunk) == VOICE_CHUNK * rate // 16000 and chunk.dtype == np.int16
        chunks.append(chunk.astype(np.float32) / 32767)
    joined = np.concatenate(chunks)
    whole = soxr.resample(speech.astype(np.float32) / 32768.0, 16000, rate)[: len(joined)]
    assert np.abs(joined - whole)[1000:].max() < 2e-3, "no clicks at the joins, no delay"


def test_ice_servers_from_flags_or_the_environment():
    assert ice_servers(None, {}) == [], "none: host candidates only, no public STUN server"
    flags = ["stun:stun.example.org:3478", "turn:turn.example.org:3478?transport=udp,avatar,secret"]
    assert ice_servers(flags, {}) == [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": "turn:turn.example.org:3478?transport=udp", "username": "avatar", "credential": "secret"},
    ]
    environ = {"SYNCTALK_ICE_SERVERS": '[{"urls": "turn:10.0.0.1:3478", "username": "u", "credential": "c"}]'}
    assert ice_servers(None, environ) == [{"urls": "turn:10.0.0.1:3478", "username": "u", "credential": "c"}]
    with pytest.raises(ValueError, match="USERNAME,CREDENTIAL"):
        ice_servers(["turn:turn.example.org:3478,avatar"], {})


def test_the_viewers_remb_and_pli_reach_the_stream():
    """The video sender's RTCP is seen before aiortc's own handler (which feeds only its own
    encoders): REMB sets the stream's bitrate, PLI asks it for a key frame, and aiortc still gets both."""
    from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_PLI, RtcpPsfbPacket, pack_remb_fci

    from synctalk_webrtc.peer import AvatarPeer

    class Stream:
        def __init__(self):
            self.bitrates, self.key_frames = [], 0

        def set_bitrate(self, kbps):
            self.bitrates.append(kbps)

        def request_key_frame(self):
            self.key_frames += 1

    class Sender:
        def __init__(self):
            self.handled = []

        async def _handle_rtcp_packet(self, packet):
            self.handled.append(packet)

    async def run():
        peer, sender = AvatarPeer("localhost:1", "anna"), Sender()
        peer.stream = Stream()
        peer.follow(sender)
        remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(600_000, [2]))
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=2)
        for packet in (remb, pli, pli):  # the second PLI within 0.5 s: one key frame
            await sender._handle_rtcp_packet(packet)
        assert peer.stream.bitrates == [510] and peer.stream.key_frames == 1
        assert len(sender.handled) == 3
        assert time.monotonic() - peer.heard_at < 1, "the viewer was heard from (the service's viewer timeout)"

    asyncio.run(run())


def test_speech_from_a_track_then_silence_once_it_ends():
    """The viewer's microphone is sent as it arrives (16 kHz mono); when its track ends the peer
    goes on with silence in real time, so the avatar keeps moving; closing ends the stream."""
    from fractions import Fraction

    import av
    from aiortc.mediastreams import MediaStreamError

    from synctalk_webrtc.peer import AvatarPeer

    class Stream:
        def __init__(self):
            self.sent, self.ended = [], False

        def send_async(self, samples, callback, end=False):
            if end:
                self.ended = True
            else:
                self.sent.append(np.asarray(samples).copy())
            callback([], None)

        def close(self, cancel=False):
            self.cancelled = cancel

    class Microphone:  # two 20 ms frames at 48 kHz, then the end
        def __init__(self):
            self.frames = 2

        async def recv(self):
            if not self.frames:
                raise MediaStreamError
            self.frames -= 1
            frame = av.AudioFrame.from_ndarray(np.full((1, 960), 8000, np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, (1 - self.frames) * 960, Fraction(1, 48000)
            return frame

    async def run():
        peer, stream = AvatarPeer("localhost:1", "anna"), Stream()
        peer.stream, peer._loop = stream, asyncio.get_running_loop()
        peer.listen(Microphone())
        await peer.start()
        await asyncio.sleep(0.3)
        assert not peer.listening, "the track ended"
        speech = np.concatenate(stream.sent)
        assert 500 <= np.count_nonzero(speech) <= 640, "the microphone's 40 ms at 16 kHz"
        silence = [chunk for chunk in stream.sent if len(chunk) == 320 and not chunk.any()]
        assert len(silence) >= 5, "then 20 ms of silence at a time"
        await peer.close()
        assert stream.ended and peer.stream is None

    asyncio.run(run())


def test_a_slip_is_won_back_at_five_percent_and_no_further_than_the_margin():
    """A stall of the server: the voice waits once, then the clock runs 5 % fast until the frames
    are the margin ahead again; it never makes a frame late."""

    async def run():
        now = FakeTime()
        clock = PlayoutClock(margin_s=0.2, slack_s=0.02, now=now)
        lateness = []

        async def arrive(index: int, at: float):
            now.t = at
            await clock.frame_arrived(index)
            lateness.append(now.t - clock.due(index / 25))

        await arrive(0, 100.0)
        for i in range(1, 50):  # on time: each frame 0.2 s ahead of its time, nothing moves
            await arrive(i, 100.0 + i * 0.04)
        assert clock.t0 == pytest.approx(100.2) and clock.recovered_s < 1e-9
        # the server stalls: frames 50-69 come together, frame 50 0.8 s late; the voice slips
        for i in range(50, 70):
            await arrive(i, 102.8)
        assert clock.slip(50 / 25)
        slipped = clock.slipped_s
        assert slipped == pytest.approx(0.8 - 0.2 + 0.1)
        times = []
        for i in range(70, 2000):  # then on time again
            await arrive(i, 100.0 + i * 0.04)
            times.append(now.t)
        assert clock.recovered_s == pytest.approx(slipped, abs=1e-6), "all of it won back"
        assert clock.t0 == pytest.approx(100.2), "the frames the margin ahead again"
        assert max(lateness[70:]) <= -0.2 + 1e-9, "no frame made late by catching up"
        # at 5 %: 0.7 s in 14 s
        back = next(t for t, late in zip(times, lateness[70:]) if late >= -0.2 - 1e-9)
        assert back - 102.8 == pytest.approx(0.7 / 0.05, rel=0.03)

    asyncio.run(run())


def test_frames_early_without_a_slip_move_nothing():
    """Frames rendered ahead of their time (speech placed ahead of the schedule) leave the clock
    where it is: only what slips added is won back."""

    async def run():
        now = FakeTime()
        clock = PlayoutClock(margin_s=0.2, slack_s=0.02, now=now)
        now.t = 100.0
        await clock.frame_arrived(0)
        for i in range(1, 200):  # each frame 0.5 s ahead of its time
            now.t = 100.0 + i * 0.04 - 0.3
            await clock.frame_arrived(i)
        assert clock.t0 == pytest.approx(100.2) and clock.recovered_s == 0.0

    asyncio.run(run())


def test_the_service_leaves_its_startup_heap_out_of_full_collections():
    """A full collection walking the process's objects paused the event loop 0.1 s in the tests'
    process, and the voice slipped with it (timing.freeze_startup_heap)."""
    import gc

    from aiohttp import web

    from synctalk_webrtc.service import Settings, add_routes

    async def run():
        app = web.Application()
        add_routes(app, Settings("localhost:1"))
        runner = web.AppRunner(app)
        gc.unfreeze()
        await runner.setup()  # the service's start-up
        try:
            return gc.get_freeze_count()
        finally:
            await runner.cleanup()

    try:
        assert asyncio.run(run()) > 10_000
    finally:
        gc.unfreeze()
