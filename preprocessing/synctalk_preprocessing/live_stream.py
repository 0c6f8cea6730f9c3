"""A live stream's state, as the ``stream`` model keeps it per sequence: plain Python (numpy), so
the bookkeeping is tested on its own (``tests/unit/test_live_stream_state.py``) and the model is
a thin shell of Triton calls around it.

- **The audio kept**: samples from the context of the first frame not answered yet on (a batch that
  fails is rendered again from there), and the count of samples so far.
- **The frames ready**: frame i once ``contract.STREAM_LOOKAHEAD`` samples follow its 40 ms; at
  the clip's end, every frame of the avatar's audio front end (one per 40 ms, or SyncTalk_2D's
  N + 2). A stream that fell behind catches up: whoever has the stream's turn renders every frame
  ready by then, cut into batches of at most the catch-up size, each wholly silent or not; while
  more of its requests wait for the turn, at most ``contract.STREAM_STEP_FRAMES`` (the frames due
  first go out as soon as they are rendered, and the last request in line takes the rest).
- **An interrupt** (``interrupt`` on the request's arrival, ``rewind`` in its turn): the speech
  that had arrived from frame K on becomes silence, frames from K are rendered again, and the
  speech before K does not reach them (their silence test and the audio before their batch stop
  at the cut): an avatar with silent frames shows its idle frames at once. The audio is kept from
  ``contract.STREAM_MAX_REWIND`` frames before the first frame not answered, for that.
- **Speech placed** (``place`` on the request's arrival, ``rewind`` in its turn): a chunk written
  at sample S instead of appended (silence after it up to what had arrived), the frames from S's
  frame rendered again; the speech before S reaches them as usual. The frames before S's frame do
  not anticipate it in their silence test: due before it could be rendered, they stay idle frames
  (cheap) where they would have run the generator on their lookahead.
- **Nothing rendered twice for nothing**: from an interrupt's or a placement's arrival on, the
  requests ahead of it render no frame from its cut (``frames_to_render``), and a turn rendering
  stops before a batch that starts there (``superseded``): those frames would be stale at the
  client, and the interrupt's idle frames, due at the viewer at once, would wait behind them.
- **The windows encoded** (SyncTalk_2D avatars encoding per stream): each audio window's encoding
  kept by its place in upstream's padded window list, encoded once, dropped once no later frame
  needs it.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from synctalk_common import contract
from synctalk_common.messages import CompositeBatchRequest

SPF = contract.SAMPLES_PER_FRAME
HALF = contract.AUDIO_NEIGHBOURS // 2


class StreamState:
    """One stream's state: ``audio`` holds samples ``base`` .. ``total`` of the clip."""

    def __init__(self, avatar: str, synctalk2d: bool, silent_frames: bool, now: float):
        self.avatar, self.synctalk2d, self.silent_frames, self.last_seen = avatar, synctalk2d, silent_frames, now
        self.audio = np.zeros(0, np.float32)
        # next_frame: the first frame no request has taken yet; answered: the first frame no
        # request has answered yet (the audio is kept from its context on, for a failed batch)
        self.base = self.total = self.next_frame = self.answered = 0
        # one request of the stream at a time, in arrival order (asyncio.Lock is first come, first
        # served): the async execute lets the next request in while one awaits the ensemble
        self.turn = asyncio.Lock()
        self.waiting = 0  # requests waiting for the turn (``in_turn``)
        # SyncTalk_2D avatars: (<id>_from_features, the window encoder) where the stream encodes
        # its windows itself, and the encodings so far by index in upstream's padded window list
        self.by_features: tuple[str, str] | None = None
        self.windows: dict[int, np.ndarray] = {}
        # the last interrupt's cut (a sample count): the speech before it does not reach the frames
        # from it; rewind_to: an interrupt waiting for its turn renders again from this frame
        self.cut, self.rewind_to = 0, None
        # the last speech placed (a sample count): the frames before it do not anticipate it in
        # their silence test (they are due before it could be rendered; idle, they cost little)
        self.horizon: int | None = None
        self.video = None  # an H.264 stream's encoder (synctalk_preprocessing.video.H264Encoder; None: JPEGs)

    @contextlib.asynccontextmanager
    async def in_turn(self):
        """The stream's turn, with ``waiting`` counting the requests in line for it."""
        self.waiting += 1
        try:
            await self.turn.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self.turn.release()

    def append(self, chunk: np.ndarray) -> None:
        # keep only what the frames an interrupt may render again need: the context before them
        again = self.answered - contract.STREAM_MAX_REWIND
        if self.rewind_to is not None:
            again = min(again, self.rewind_to)
        keep_from = max(self.base, again * SPF - contract.AUDIO_CONTEXT_SAMPLES)
        self.audio = np.concatenate([self.audio[keep_from - self.base :], chunk])
        self.base = keep_from
        self.total += len(chunk)

    def samples(self, first: int, last: int) -> np.ndarray:
        first, last = max(first, self.base), min(last, self.total)
        return self.audio[first - self.base : max(first, last) - self.base]

    def interrupt(self, from_frame: int) -> int:
        """On an interrupt's arrival, before its own chunk joins: the speech from frame K on
        (``from_frame``; -1: the first frame not rendered yet; at most ``STREAM_MAX_REWIND`` frames
        before it) becomes silence, and K is where the interrupt's turn renders from (``rewind``).
        Returns K."""
        first = self.next_frame if from_frame < 0 else int(from_frame)
        first = max(first, self.next_frame - contract.STREAM_MAX_REWIND, 0)
        start = first * SPF
        if start < self.total:
            self.audio[max(0, start - self.base) :] = 0
        self.cut = start
        self._rewind_from(first)
        return first

    def place(self, chunk: np.ndarray, at: int) -> int:
        """On a placing request's arrival: ``chunk`` written at sample ``at`` (at most
        ``STREAM_MAX_REWIND`` frames before the first frame not rendered yet: later if asked
        earlier), silence after it up to what had arrived and before it past that; its turn renders
        from ``at``'s frame (``rewind``). Returns where it was written."""
        at = max(int(at), (self.next_frame - contract.STREAM_MAX_REWIND) * SPF, 0)
        end = max(self.total, at + len(chunk))
        audio = np.zeros(end - self.base, np.float32)
        kept = self.audio[: max(0, at - self.base)]
        audio[: len(kept)] = kept
        audio[at - self.base : at - self.base + len(chunk)] = chunk
        self.audio, self.total, self.horizon = audio, end, at
        self._rewind_from(at // SPF)
        return at

    def _rewind_from(self, first: int) -> None:
        """The next ``rewind`` renders again from ``first`` (or from an earlier cut still waiting)."""
        self.rewind_to = first if self.rewind_to is None else min(self.rewind_to, first)

    def rewind(self) -> range | None:
        """In the interrupt's turn: the frames from its cut are rendered again (the encodings of
        the windows are made afresh: the audio changed). Returns the frames rendered again."""
        if self.rewind_to is None:
            return None
        again = range(self.rewind_to, max(self.rewind_to, self.next_frame))
        self.next_frame = min(self.next_frame, self.rewind_to)
        self.rewind_to = None
        self.windows.clear()
        return again

    def frames_to_render(self, ending: bool, most: int | None = None, waiting: int = 0) -> range:
        """The frames that became ready (all the clip's remaining frames at its end), at most
        ``most`` of them (the rest stay ready for the next request). A request with ``waiting``
        requests of the stream in line behind it takes at most ``contract.STREAM_STEP_FRAMES``:
        the frames due first go out as soon as they are rendered, not after a backlog's whole
        batch; the last request in line takes the rest."""
        if ending:
            last = contract.synctalk2d_frame_count(self.total) if self.synctalk2d else self.total // SPF
        else:
            last = contract.stream_frames_ready(self.total)
        if waiting:
            most = contract.STREAM_STEP_FRAMES if most is None else min(most, contract.STREAM_STEP_FRAMES)
        if most is not None and not ending:
            last = min(last, self.next_frame + most)
        if self.rewind_to is not None:  # an interrupt or a placement waits for its turn: it renders those
            last = min(last, self.rewind_to)
        frames = range(self.next_frame, max(self.next_frame, last))
        self.next_frame = frames.stop
        return frames

    def superseded(self, frame: int) -> bool:
        """Whether an interrupt or a placement that arrived since (waiting for its turn) renders
        ``frame`` again: a turn stops before such a batch (its frames would be stale at the client,
        and the interrupt's own frames wait behind it)."""
        return self.rewind_to is not None and frame >= self.rewind_to

    def silent(self, frame: int, threshold: float) -> bool:
        """Whether every sample a frame's audio windows can see (its 40 ms and the context on each
        side) is below ``threshold``: silence, whatever the front end."""
        context = contract.AUDIO_CONTEXT_SAMPLES
        before = frame * SPF - context
        if frame * SPF >= self.cut:  # the speech cut by an interrupt does not count
            before = max(before, self.cut)
        after = (frame + 1) * SPF + context
        if self.horizon is not None and frame < self.horizon // SPF:  # speech placed after it does not count
            after = min(after, self.horizon)
        around = self.samples(before, after)
        return not len(around) or float(np.abs(around).max()) < threshold

    def runs(self, frames: range, threshold: float, most: int = contract.MAX_BATCH_SIZE):
        """``frames`` cut into batches of at most ``most``, each entirely silent or not (with the
        avatar's silent_frames; else every batch renders with the generator)."""
        first = frames.start
        while first < frames.stop:
            quiet = self.silent_frames and self.silent(first, threshold)
            last = first + 1
            while (
                last < frames.stop
                and last - first < most
                and (not self.silent_frames or self.silent(last, threshold) == quiet)
            ):
                last += 1
            yield first, last, quiet
            first = last

    def batch_request(self, first: int, last: int) -> CompositeBatchRequest:
        """Frames first .. last - 1 as render sends them: their audio and the audio around it."""
        start, stop = first * SPF, last * SPF
        audio = self.samples(start, stop)
        if len(audio) < stop - start:  # a clip ending inside its last frame: zeros, as a WAV's padding
            audio = np.pad(audio, (0, stop - start - len(audio)))
        before = self.samples(start - contract.AUDIO_CONTEXT_SAMPLES, start)
        cut = self.cut - (start - len(before))  # the samples of ``before`` ahead of an interrupt's cut
        if start >= self.cut and cut > 0:  # they are silence to the frames after it
            before = before.copy()
            before[:cut] = 0
        return CompositeBatchRequest.audio_only(
            self.avatar,
            audio,
            start_frame_idx=first,
            audio_context_before=before,
            audio_context_after=self.samples(stop, stop + contract.AUDIO_CONTEXT_SAMPLES),
        )

    def failed(self, frames: range) -> None:
        """A batch of ``frames`` failed and the stream lives on: its next request renders them again."""
        self.next_frame = frames.start

    def answered_up_to(self, frames: range, now: float) -> None:
        """``frames`` were answered: the audio before their context may go."""
        self.answered = frames.stop
        self.last_seen = now

    def ended(self) -> None:
        """The clip's end moves its last windows (the front end pads where it ends): encoded afresh."""
        self.windows.clear()

    # --- the windows encoded (SyncTalk_2D avatars encoding per stream) ---------------------------
    @staticmethod
    def window_places(first: int, distinct: int) -> np.ndarray:
        """The places in upstream's padded window list of a batch's ``distinct`` windows (B + 15
        for B frames from ``first``): row i's neighbour j is window first - 8 + i + j."""
        return first - HALF + np.arange(distinct)

    def windows_missing(self, places: np.ndarray) -> list[int]:
        """The rows of ``places`` not encoded yet."""
        return [row for row, place in enumerate(places) if int(place) not in self.windows]

    def keep_windows(self, places: np.ndarray, rows: list[int], encoded: np.ndarray) -> None:
        """The encodings of ``rows`` (of ``places``), kept by place."""
        for row, encoding in zip(rows, encoded):
            self.windows[int(places[row])] = encoding

    def features(self, places: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Each frame's 16 neighbouring encodings times its mask, stacked as the encoder step
        stacks them ([B, 32, 16, 16] float32 for B frames, ``mask`` [B, 16]); then the windows no
        later frame needs are dropped."""
        n_frames = len(mask)
        encodings = np.stack([self.windows[int(place)] for place in places])  # [B + 15, 512]
        neighbours = np.arange(n_frames)[:, None] + np.arange(contract.AUDIO_NEIGHBOURS)[None, :]
        stacked = (encodings[neighbours] * mask[:, :, None]).reshape(n_frames, *contract.AUDIO_FEATURE_SHAPE)
        first = int(places[0]) + HALF
        for place in [p for p in self.windows if p < first + n_frames - HALF]:  # no later frame needs these
            del self.windows[place]
        return stacked.astype(np.float32)
