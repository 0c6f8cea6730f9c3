"""A live stream's state on its own (synctalk_preprocessing.live_stream, which the ``stream``
model keeps per sequence): the audio kept, the frames ready, catch-up batches and silence, a
failed batch rendered again, and each audio window encoded once."""

from __future__ import annotations

import numpy as np

from synctalk_common import contract
from synctalk_preprocessing.live_stream import HALF, StreamState

SPF = contract.SAMPLES_PER_FRAME
CONTEXT = contract.AUDIO_CONTEXT_SAMPLES


def speech(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, n).astype(np.float32)


def floats(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.float32)


def test_the_audio_kept_starts_at_the_context_of_the_first_frame_not_answered():
    clip, state = speech(140 * SPF), StreamState("anna", synctalk2d=False, silent_frames=False, now=0.0)
    for chunk in np.array_split(clip, 13):  # chunks of any size
        state.append(chunk)
    assert state.total == len(clip) and state.base == 0
    state.answered_up_to(range(0, 130), now=1.0)
    state.append(np.zeros(0, np.float32))  # an empty chunk is an answer's occasion to trim
    # kept: what an interrupt may render again (STREAM_MAX_REWIND frames) and their context
    assert state.base == (130 - contract.STREAM_MAX_REWIND) * SPF - CONTEXT
    assert len(state.audio) == len(clip) - state.base
    assert np.array_equal(state.samples(31 * SPF, 33 * SPF), clip[31 * SPF : 33 * SPF])
    assert np.array_equal(state.samples(0, 10), np.zeros(0)), "what went is gone, not zeros"


def test_a_frame_is_ready_once_its_lookahead_has_arrived_and_the_end_renders_the_rest():
    state = StreamState("anna", synctalk2d=False, silent_frames=False, now=0.0)
    state.append(speech(CONTEXT + 3 * SPF - 1))
    assert state.frames_to_render(ending=False) == range(0, 2)
    state.append(speech(1))
    assert state.frames_to_render(ending=False) == range(2, 3), "each frame once"
    assert state.frames_to_render(ending=False) == range(3, 3), "none became ready: zero frames is an answer"
    assert state.frames_to_render(ending=True) == range(3, (CONTEXT + 3 * SPF) // SPF)
    synctalk2d = StreamState("anna", synctalk2d=True, silent_frames=False, now=0.0)
    synctalk2d.append(speech(50 * SPF))
    assert synctalk2d.frames_to_render(ending=True).stop == contract.synctalk2d_frame_count(50 * SPF)


def test_a_failed_batch_is_rendered_again_by_the_next_request_with_its_audio():
    clip, state = speech(60 * SPF), StreamState("anna", synctalk2d=False, silent_frames=False, now=0.0)
    state.append(clip[: 40 * SPF])
    state.answered_up_to(state.frames_to_render(ending=False), now=1.0)
    frames = state.frames_to_render(ending=False)  # none: 40 * SPF - lookahead
    state.append(clip[40 * SPF :])
    frames = state.frames_to_render(ending=False)
    assert len(frames) > 0
    state.failed(frames)
    again = state.frames_to_render(ending=False)
    assert again == frames
    batch = state.batch_request(again.start, again.stop)
    start, stop = again.start * SPF, again.stop * SPF
    assert np.array_equal(floats(batch.raw_audio), clip[start:stop]), "the audio was kept for it"
    assert np.array_equal(floats(batch.audio_context_before), clip[start - CONTEXT : start])
    assert np.array_equal(floats(batch.audio_context_after), clip[stop : stop + CONTEXT])
    assert batch.start_frame_idx == again.start and batch.model_id == "anna"


def test_a_clip_ending_inside_its_last_frame_is_padded_with_zeros():
    state = StreamState("anna", synctalk2d=False, silent_frames=False, now=0.0)
    state.append(speech(2 * SPF + 100))
    audio = floats(state.batch_request(0, 3).raw_audio)
    assert len(audio) == 3 * SPF and not audio[2 * SPF + 100 :].any()


def test_catch_up_batches_are_at_most_their_size_and_wholly_silent_or_not():
    clip = np.concatenate([speech(10 * SPF), np.zeros(30 * SPF, np.float32), speech(30 * SPF)])
    state = StreamState("anna", synctalk2d=False, silent_frames=True, now=0.0)
    state.append(clip)
    runs = list(state.runs(range(0, 70), threshold=1e-3, most=8))
    assert [first for first, _, _ in runs] == sorted(first for first, _, _ in runs)
    assert runs[0][0] == 0 and runs[-1][1] == 70 and all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
    assert all(last - first <= 8 for first, last, _ in runs)
    quiet = [f for first, last, q in runs if q for f in range(first, last)]
    # silent: every sample a frame's windows see (its 40 ms and the context each side) is quiet
    assert quiet == [
        f for f in range(70) if not np.abs(clip[max(0, f * SPF - CONTEXT) : (f + 1) * SPF + CONTEXT]).max()
    ]
    assert quiet, "the pause has silent frames"
    talking = StreamState("anna", synctalk2d=False, silent_frames=False, now=0.0)  # no silent frames: all rendered
    talking.append(clip)
    assert [(f, la, q) for f, la, q in talking.runs(range(0, 20), 1e-3, most=8)] == [
        (0, 8, False),
        (8, 16, False),
        (16, 20, False),
    ]


def test_each_audio_window_is_encoded_once_and_dropped_once_no_frame_needs_it():
    rng = np.random.default_rng(3)
    encodings = {place: rng.standard_normal(512).astype(np.float32) for place in range(-HALF, 200)}
    state = StreamState("anna", synctalk2d=True, silent_frames=False, now=0.0)
    encoded = 0
    for first, frames in ((0, 1), (1, 1), (2, 4), (6, 9)):  # at pace, then a catch-up batch
        places = state.window_places(first, frames + contract.AUDIO_NEIGHBOURS - 1)
        assert list(places) == list(range(first - HALF, first + frames + HALF - 1))
        missing = state.windows_missing(places)
        state.keep_windows(places, missing, np.stack([encodings[int(places[r])] for r in missing]))
        encoded += len(missing)
        mask = rng.uniform(size=(frames, contract.AUDIO_NEIGHBOURS)).astype(np.float32)
        features = state.features(places, mask)
        for i in range(frames):  # frame first + i: windows first + i - 8 .. first + i + 7, times its mask
            expected = np.stack([encodings[first + i - HALF + j] for j in range(contract.AUDIO_NEIGHBOURS)])
            expected = (expected * mask[i, :, None]).reshape(contract.AUDIO_FEATURE_SHAPE)
            assert np.array_equal(features[i], expected)
        assert features.dtype == np.float32 and features.shape == (frames, *contract.AUDIO_FEATURE_SHAPE)
        assert min(state.windows) == first + frames - HALF, "what the next frame needs, no more"
    assert encoded == 16 + 1 + 4 + 9, "the first frame's 16 windows, then one a frame"
    state.ended()
    assert not state.windows, "the clip's end moves its last windows: encoded afresh"


def at_pace(state: StreamState, clip: np.ndarray, chunk: int = 320) -> list[int]:
    """``clip`` sent 20 ms at a time, every frame ready rendered and answered: the frames, in order."""
    shown = []
    for start in range(0, len(clip), chunk):
        state.append(clip[start : start + chunk])
        frames = state.frames_to_render(ending=False)
        state.answered_up_to(frames, now=0.0)
        shown += list(frames)
    return shown


def test_an_interrupt_cuts_the_speech_not_shown_and_renders_those_frames_again_as_idle_frames():
    state = StreamState("anna", synctalk2d=False, silent_frames=True, now=0.0)
    said = speech(60 * SPF)
    shown = at_pace(state, said)
    assert shown == list(range(0, 47)), "frames until 0.5 s before the speech's end"
    # the viewer has seen frames up to 39: the interrupt cuts from 40 (on its arrival) ...
    assert state.interrupt(40) == 40
    assert not state.samples(40 * SPF, 60 * SPF).any(), "the speech from the cut is silence"
    assert np.array_equal(state.samples(30 * SPF, 40 * SPF), said[30 * SPF : 40 * SPF]), "what was shown stays"
    state.append(np.zeros(320, np.float32))  # the interrupt's own chunk: what comes after it
    # ... and in its turn frames 40 on are rendered again: the frame numbers go on with no jump
    assert state.rewind() == range(40, 47)
    again = state.frames_to_render(ending=False)
    assert again.start == 40 and again.stop == state.frames_to_render(ending=False).start
    # the speech before the cut does not reach the frames after it: idle frames at once
    assert all(quiet for _, _, quiet in state.runs(again, threshold=1e-3))
    assert not floats(state.batch_request(40, 41).audio_context_before).any()
    assert len(floats(state.batch_request(40, 41).audio_context_before)) == CONTEXT, "kept, as silence"
    assert not state.silent(39, threshold=1e-3), "the frames before the cut are as they were"
    assert state.rewind() is None, "one rewind an interrupt"


def test_a_rewinds_answer_holds_its_first_frames_and_the_next_request_the_rest():
    """Frame K is due at the viewer at once: the interrupt's answer renders the first
    STREAM_STEP_FRAMES frames again, the request after it the rest, none twice and none skipped."""
    state = StreamState("anna", synctalk2d=False, silent_frames=True, now=0.0)
    at_pace(state, speech(60 * SPF))
    state.interrupt(40)
    again = state.rewind()
    first = state.frames_to_render(ending=False, most=contract.STREAM_STEP_FRAMES)
    assert first == range(40, 40 + contract.STREAM_STEP_FRAMES)
    state.append(np.zeros(320, np.float32))
    rest = state.frames_to_render(ending=False)
    assert rest.start == first.stop and rest.stop >= again.stop, "the rest with the next request"
    assert state.frames_to_render(ending=True, most=1).stop == state.total // SPF, "the end: every frame left"


def test_a_backlog_is_answered_a_few_frames_a_request_while_requests_wait_and_the_last_takes_the_rest():
    """A stream behind (a placement's speech made a backlog ready): while more of its requests wait
    for the turn, each answers STREAM_STEP_FRAMES, so the frames due first go out as soon as they
    are rendered; the last request in line takes every frame ready, none twice, none skipped."""
    import asyncio

    state = StreamState("anna", synctalk2d=False, silent_frames=True, now=0.0)
    at_pace(state, speech(40 * SPF))
    state.append(speech(10 * SPF, seed=2))  # ten more frames ready at once
    backlog = range(state.next_frame, contract.stream_frames_ready(state.total))
    assert len(backlog) == 10
    taken = [state.frames_to_render(ending=False, waiting=2), state.frames_to_render(ending=False, waiting=1)]
    assert [len(frames) for frames in taken] == [contract.STREAM_STEP_FRAMES] * 2
    taken.append(state.frames_to_render(ending=False, waiting=0))
    assert [f for frames in taken for f in frames] == list(backlog), "in order, the last in line the rest"

    async def in_line() -> list[int]:  # in_turn counts the requests waiting behind the one served
        seen = []

        async def request():
            async with state.in_turn():
                seen.append(state.waiting)
                await asyncio.sleep(0)

        async with state.in_turn():  # a request rendering; three arrive behind it
            behind = [asyncio.ensure_future(request()) for _ in range(3)]
            await asyncio.sleep(0)
            seen.append(state.waiting)
        await asyncio.gather(*behind)
        return seen

    assert asyncio.run(in_line()) == [3, 2, 1, 0] and state.waiting == 0


def test_requests_ahead_of_an_interrupt_render_nothing_it_renders_again():
    """An interrupt arrives while requests ahead of it wait for the stream's turn (the server fell
    behind): they render no frame from its cut, a turn rendering stops before a batch from there,
    and the interrupt's own turn renders from the cut: no frame rendered for nothing, none skipped."""
    state = StreamState("anna", synctalk2d=False, silent_frames=True, now=0.0)
    at_pace(state, speech(40 * SPF))
    state.append(speech(10 * SPF, seed=2))  # a backlog: frames ready, their requests waiting
    backlog_from = state.next_frame
    state.interrupt(backlog_from + 4)
    ahead = state.frames_to_render(ending=False)
    assert ahead == range(backlog_from, backlog_from + 4), "the frames before the cut only"
    assert not state.superseded(backlog_from + 3) and state.superseded(backlog_from + 4)
    assert state.rewind() == range(backlog_from + 4, backlog_from + 4)
    assert not state.superseded(backlog_from + 4), "the interrupt's turn renders them"
    again = state.frames_to_render(ending=False, most=contract.STREAM_STEP_FRAMES)
    assert again.start == backlog_from + 4, "from the cut, after the frames ahead of it"


def test_the_speech_after_an_interrupt_is_rendered_and_frames_go_on_from_the_idle_ones():
    state = StreamState("anna", synctalk2d=False, silent_frames=True, now=0.0)
    at_pace(state, speech(40 * SPF))
    state.interrupt(-1)  # from the first frame not rendered: nothing rendered again
    assert state.rewind() == range(state.next_frame, state.next_frame)
    idle_from = state.next_frame
    next_speech = speech(40 * SPF, seed=1)
    shown = at_pace(state, np.concatenate([np.zeros(10 * SPF, np.float32), next_speech]))
    assert shown == list(range(idle_from, shown[-1] + 1)), "no jump"
    talking = [f for f in shown if not state.silent(f, threshold=1e-3)]
    assert talking and min(talking) * SPF + SPF + CONTEXT > 40 * SPF + 10 * SPF, "the next speech is heard"
    assert np.array_equal(state.samples(50 * SPF, 52 * SPF), next_speech[: 2 * SPF]), "after the cut: untouched"


def test_an_interrupt_reaches_back_at_most_its_bound_and_keeps_speech_that_arrives_after_it():
    state = StreamState("anna", synctalk2d=False, silent_frames=False, now=0.0)
    at_pace(state, speech(200 * SPF))
    assert state.next_frame == 187
    assert state.interrupt(0) == 187 - contract.STREAM_MAX_REWIND, "at most STREAM_MAX_REWIND frames back"
    after = speech(5 * SPF, seed=2)
    state.append(after)  # a request after the interrupt, before its turn: new speech, not cut
    assert np.array_equal(state.samples(200 * SPF, 205 * SPF), after)
    assert state.rewind() == range(87, 187)
    batch = state.batch_request(87, 95)
    assert len(floats(batch.audio_context_before)) == CONTEXT and not floats(batch.raw_audio).any()


def test_speech_placed_over_the_idle_audio_already_sent_is_rendered_from_its_frame():
    state = StreamState("anna", synctalk2d=False, silent_frames=True, now=0.0)
    at_pace(state, np.zeros(60 * SPF, np.float32))  # an idle stream: 47 frames rendered
    said = speech(30 * SPF, seed=4)
    start = 40 * SPF + 100  # just ahead of what the viewer is shown, inside the idle audio sent
    assert state.place(said, start) == start
    assert state.total == start + len(said), "past what had arrived: the stream is longer"
    assert np.array_equal(state.samples(start, start + len(said)), said)
    assert not state.samples(30 * SPF, start).any(), "before it: as it was"
    assert state.rewind() == range(40, 47), "the frames from its frame, rendered again"
    again = state.frames_to_render(ending=False)
    assert again.start == 40 and again.stop == (state.total - CONTEXT) // SPF, "its lookahead came with it"
    assert not any(quiet for _, _, quiet in state.runs(range(41, 45), threshold=1e-3)), "mouthed at once"
    assert state.silent(39, threshold=1e-3), "the frame before it does not anticipate it: idle"
    short = speech(2 * SPF, seed=5)  # inside what arrived: written over it, silence after it
    state.place(short, 50 * SPF)
    assert state.total == start + len(said)
    assert np.array_equal(state.samples(50 * SPF, 52 * SPF), short) and not state.samples(52 * SPF, state.total).any()
    far = StreamState("anna", synctalk2d=False, silent_frames=True, now=0.0)
    at_pace(far, np.zeros(200 * SPF, np.float32))
    assert far.place(short, 0) == (far.next_frame - contract.STREAM_MAX_REWIND) * SPF, "at most its bound back"
