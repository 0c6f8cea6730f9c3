"""One clock for a peer's voice and video.

Content time is the speech's sample count: sample ``n`` is at ``n / 16000`` s, frame ``i`` at
``i * 0.04`` s (frame i is the avatar saying samples ``640 i .. 640 i + 639``). Both tracks are
timestamped from it (voice: its sample count; video: ``i * 3600`` at 90 kHz) and paced by it: what
is at content time ``c`` is sent at ``t0 + c``. ``t0`` is set ``margin_s`` (0.2 s) after the first
frame is there (the voice waits for its frames: the lookahead a frame needs, 0.5 s, and the
server's time; the margin absorbs the server's jitter, so that a frame a little later than the
first makes no gap in the voice, which a browser answers by growing its audio buffer), and moves
later (``slip``) whenever the voice would get ahead of the frames that show it: a frame late from
the server delays the voice with it, so the two never part by more than the ``slack``, however
long the stream. Nothing depends on the sender's wall clock rate but the pacing: no drift.

A slip is not kept for the rest of the stream: while frames arrive more than the margin ahead of
their time, the clock runs ``catch_up`` (5 %) fast, ``t0`` moving earlier until they are the margin
ahead again, by no more than the slips added. Frames early for another reason (speech placed ahead
of the schedule, its frames rendered before they are due) move nothing: a clock that ran fast there
sent the voice 5 % fast for seconds, which a browser buffers (measured in Chromium: the voice
150 ms behind the lips after a few seconds of it). A stall of the server costs the viewer one gap
in the voice and some seconds of
slightly faster playback (the browser's audio buffer takes 5 % more and plays it off unheard),
not a second of delay added for good (measured without it: 1.1 s behind the voice at the start of
a 10-minute stream in Chromium, 2.75 s after five minutes, on a loaded 2-core host).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

from synctalk_common import contract

VIDEO_CLOCK = 90_000  # RTP's video clock
VIDEO_TICKS_PER_FRAME = VIDEO_CLOCK // contract.FPS  # 3600
CATCH_UP = 0.05  # how much faster than real time the clock runs to win back a slip


def freeze_startup_heap() -> None:
    """Leaves the objects alive now (a started process's modules, its settings) out of Python's
    full collections from here on. A full collection pauses the event loop for as long as it walks
    them, and a pause longer than the clock's slack (20 ms) makes the voice wait and slip: 11 ms in
    the WebRTC service on an idle host; 95-120 ms in a process the size of the tests' (250,000
    objects), which slipped the voice 0.12-0.20 s in every run. What is made later is collected as
    before."""
    gc.collect()
    gc.freeze()


class PlayoutClock:
    """``t0`` and the frames that have arrived, shared by a peer's tracks (see the module)."""

    def __init__(
        self,
        margin_s: float = 0.2,
        slack_s: float = 0.02,
        now: Callable[[], float] = time.monotonic,
        catch_up: float = CATCH_UP,
    ):
        self.margin_s, self.slack_s, self._now, self.catch_up = margin_s, slack_s, now, catch_up
        self.t0: float | None = None
        self.frames_in = 0  # frames 0 .. frames_in - 1 have arrived from the server
        self.slipped_s = 0.0  # how long the voice has waited for late frames, in all
        self.last_slip_s = 0.0
        self.recovered_s = 0.0  # how much of that the clock has caught up since
        self._last_arrival: float | None = None
        self._changed = asyncio.Condition()

    async def frame_arrived(self, index: int) -> None:
        """Frame ``index`` (and every one before it) is here; the first one starts the clock, and
        one that is more than the margin early moves it a little earlier (see the module)."""
        async with self._changed:
            now = self._now()
            if index >= self.frames_in:
                if self.t0 is None:
                    self.t0 = now + self.margin_s
                elif self._last_arrival is not None:
                    excess = self.due(index / contract.FPS) - now - self.margin_s
                    owed = self.slipped_s - self.recovered_s  # what slips added, not won back yet
                    if excess > 0 and owed > 0:
                        step = min(excess, owed, self.catch_up * max(0.0, now - self._last_arrival))
                        self.t0 -= step
                        self.recovered_s += step
                self._last_arrival = now
            self.frames_in = max(self.frames_in, index + 1)
            self._changed.notify_all()

    def rewind(self, index: int) -> None:
        """The frames from ``index`` on are coming again (an interrupt, or speech placed, renders
        them afresh): the voice waits for them anew (lowering the count wakes no waiter)."""
        self.frames_in = min(self.frames_in, index)

    async def until_frame(self, index: int) -> None:
        """Waits until frame ``index`` has arrived (the voice for it must not play before it)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.frames_in > index)

    def due(self, content_s: float) -> float:
        """When what is at ``content_s`` is to be sent (``time.monotonic`` time)."""
        return self.t0 + content_s

    def slip(self, content_s: float, headroom: bool = True) -> bool:
        """Something at ``content_s`` is ready only now: if that is past its time by more than the
        slack, everything from here on is sent that much later (True). ``headroom``: half the
        margin more (inside speech; not in silence, where a late frame costs what it is late, and
        no more)."""
        late = self._now() - self.due(content_s)
        if late <= self.slack_s:
            return False
        # with headroom: a server falling behind costs one gap now and then, not a gap every few
        # frames (each gap grows a browser's audio buffer, and its A/V offset)
        step = late + (self.margin_s / 2 if headroom else 0.0)
        self.t0 += step
        self.slipped_s += step
        self.last_slip_s = step
        return True

    async def sleep_until(self, content_s: float) -> None:
        delay = self.due(content_s) - self._now()
        if delay > 0:
            await asyncio.sleep(delay)
