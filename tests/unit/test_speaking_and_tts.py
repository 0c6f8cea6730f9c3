"""A voice agent's pieces without a network: where the speech is (SpeechBuffer), the speaking
events on the voice's timeline, an interrupt's cut of the speech and the frames queued, the clock
waiting for frames rendered again, and text to speech (espeak-ng, sentence by sentence)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from synctalk_client import tts
from synctalk_common import contract
from synctalk_webrtc.speaking import HANGOVER_S, SpeakingTracker
from synctalk_webrtc.timing import PlayoutClock
from synctalk_webrtc.tracks import VOICE_CHUNK, AvatarVideoTrack, SpeechBuffer

HANGOVER = int(HANGOVER_S * contract.SAMPLE_RATE)


def voice_events(buffer: SpeechBuffer, until: int) -> list[tuple[bool, float]]:
    """What the voice track's tracker says, chunk by chunk, as it plays ``buffer`` to ``until``."""
    events = []
    tracker = SpeakingTracker(lambda event: events.append((event.speaking, event.content_s)), now=lambda: 0.0)
    for start in range(0, until, VOICE_CHUNK):
        ahead = start + VOICE_CHUNK
        tracker.chunk(start, buffer.is_spoken(start, ahead), buffer.is_spoken(ahead, ahead + HANGOVER))
    return events


def test_speech_pushed_is_marked_and_pauses_shorter_than_the_hangover_do_not_flap():
    buffer = SpeechBuffer()
    tone = np.full(VOICE_CHUNK, 3000, np.int16)
    # 0.2 s silence, 1 s speech, 0.1 s pump silence (the TTS behind), 0.5 s speech, 1 s silence
    layout = [(10, 0), (50, VOICE_CHUNK), (5, 0), (25, VOICE_CHUNK), (50, 0)]
    for chunks, spoken in layout:
        for _ in range(chunks):  # speech pushed is placed after the rest; the pump's silence extends it
            if spoken:
                buffer.place(tone, buffer.total)
            else:
                buffer.extend_to(buffer.total + VOICE_CHUNK)
    assert buffer.spoken == [[10 * VOICE_CHUNK, 60 * VOICE_CHUNK], [65 * VOICE_CHUNK, 90 * VOICE_CHUNK]]
    events = voice_events(buffer, buffer.total)
    assert events == [(True, 10 * VOICE_CHUNK / 16000), (False, 90 * VOICE_CHUNK / 16000)], (
        "one utterance: started at its first sample, stopped as its end is heard"
    )


def test_a_microphone_is_speech_by_its_level_and_a_pushed_zero_is_speech():
    buffer = SpeechBuffer()
    buffer.append(np.full(VOICE_CHUNK, 50, np.int16))  # below -50 dBFS: not speech
    buffer.append(np.full(VOICE_CHUNK, 5000, np.int16))
    buffer.place(np.zeros(VOICE_CHUNK, np.int16), buffer.total)  # a pause the TTS made: speech
    assert buffer.spoken == [[VOICE_CHUNK, 3 * VOICE_CHUNK]]


def test_an_interrupt_silences_the_speech_not_heard_and_stopped_comes_with_the_next_20_ms():
    buffer = SpeechBuffer()
    speech = np.random.default_rng(0).integers(-8000, 8000, 100 * VOICE_CHUNK).astype(np.int16)
    buffer.place(speech, 0)
    heard = buffer.take(0, 30 * VOICE_CHUNK)
    assert np.array_equal(heard, speech[: 30 * VOICE_CHUNK])
    buffer.silence_from(30 * VOICE_CHUNK)
    assert not buffer.take(30 * VOICE_CHUNK, 70 * VOICE_CHUNK).any(), "the rest is silence"
    assert buffer.spoken == [], "and not speech: what was heard is forgotten, the rest cut"
    fresh = SpeechBuffer()
    fresh.place(speech, 0)
    fresh.silence_from(30 * VOICE_CHUNK)
    assert voice_events(fresh, 40 * VOICE_CHUNK) == [(True, 0.0), (False, 30 * VOICE_CHUNK / 16000)]


def test_the_frames_queued_from_the_cut_go_and_the_voice_waits_for_them_again():
    async def run():
        clock = PlayoutClock()
        track = AvatarVideoTrack(clock)
        for index in range(10):
            track.frames.put_nowait((index, b"unit"))
            await clock.frame_arrived(index)
        assert track.drop_from(6) == 4
        assert [track.frames.get_nowait()[0] for _ in range(track.frames.qsize())] == [0, 1, 2, 3, 4, 5]
        clock.rewind(6)
        assert clock.frames_in == 6, "frame 6 is to come again: the voice after it waits"
        await clock.frame_arrived(6)
        assert clock.frames_in == 7

    asyncio.run(run())


def test_text_is_cut_into_sentences():
    assert tts.sentences("Hello there. How are you?\nFine!  Thanks; bye") == [
        "Hello there.",
        "How are you?",
        "Fine!",
        "Thanks;",
        "bye",
    ]
    assert tts.sentences("  \n ") == []


def test_espeak_says_each_sentence_as_16_khz_pcm_as_soon_as_it_is_made():
    engine = tts.engine("espeak:en")
    chunks = engine.speak("One sentence. And a second, longer sentence than the first one!")
    first = next(chunks)  # the first sentence before the second is made
    second = next(chunks)
    assert next(chunks, None) is None
    for pcm in (first, second):
        assert pcm.dtype == np.int16 and pcm.ndim == 1
        assert 0.3 < len(pcm) / contract.SAMPLE_RATE < 6 and np.abs(pcm).max() > 3000, "speech, at 16 kHz"
    assert len(second) > len(first)


def test_a_piper_voice_from_the_operators_files_says_each_sentence_as_16_khz_pcm(tmp_path):
    """piper-tts with a stand-in voice (synctalk_build.stand_in_voice: a real voice's ONNX
    signature and config): its espeak-ng phonemes, one chunk a sentence, each phoneme id's samples
    at 22,050 Hz, resampled to 16 kHz."""
    from synctalk_build import stand_in_voice

    model = stand_in_voice.build(tmp_path / "voice.onnx")
    engine = tts.engine(f"piper:{model}")
    assert isinstance(engine, tts.PiperTTS)
    chunks = engine.speak("One sentence. And a second, longer sentence than the first one!")
    first, second = next(chunks), next(chunks)
    assert next(chunks, None) is None
    for pcm, text in ((first, "One sentence."), (second, "And a second, longer sentence than the first one!")):
        (phonemes,) = engine.voice.phonemize(text)
        ids = engine.voice.phonemes_to_ids(phonemes)
        assert pcm.dtype == np.int16 and pcm.ndim == 1
        expected = len(ids) * stand_in_voice.PHONEME_SAMPLES * contract.SAMPLE_RATE / stand_in_voice.SAMPLE_RATE
        assert abs(len(pcm) - expected) <= 2, "every phoneme id said, resampled to 16 kHz"
    assert len(second) > len(first)
    assert not np.array_equal(next(engine.speak("Hello.")), next(engine.speak("Goodbye."))), "the text decides"
    (tmp_path / "voice.onnx.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"voice.onnx.json is missing"):
        tts.engine(f"piper:{model}")
    with pytest.raises(ValueError, match="piper:VOICE.onnx"):
        tts.engine("piper")


def test_a_tts_engine_is_named_or_refused_by_name():
    assert isinstance(tts.engine("espeak"), tts.EspeakTTS)
    with pytest.raises(ValueError, match="espeak"):
        tts.engine("nothing")
    with pytest.raises(ModuleNotFoundError):
        tts.engine("no_such_module:Voice:/models/voice.onnx")


def test_speech_placed_ahead_is_written_over_silence_and_read_without_being_forgotten():
    buffer = SpeechBuffer()
    buffer.extend_to(10 * VOICE_CHUNK)  # the pump's silence sent so far
    words = np.full(3 * VOICE_CHUNK, 4000, np.int16)
    buffer.place(words, 4 * VOICE_CHUNK)  # placed inside what was sent
    assert buffer.total == 10 * VOICE_CHUNK and buffer.spoken == [[4 * VOICE_CHUNK, 7 * VOICE_CHUNK]]
    assert np.array_equal(buffer.peek(4 * VOICE_CHUNK, 7 * VOICE_CHUNK), words)
    buffer.place(words, 7 * VOICE_CHUNK)  # the next sentence, right after: one utterance
    buffer.place(words, 14 * VOICE_CHUNK)  # past the end: silence in between
    assert buffer.total == 17 * VOICE_CHUNK
    assert buffer.spoken == [[4 * VOICE_CHUNK, 10 * VOICE_CHUNK], [14 * VOICE_CHUNK, 17 * VOICE_CHUNK]]
    assert not buffer.peek(10 * VOICE_CHUNK, 14 * VOICE_CHUNK).any()
    assert np.array_equal(buffer.peek(4 * VOICE_CHUNK, 5 * VOICE_CHUNK), words[:VOICE_CHUNK]), "peek forgets nothing"
    assert len(buffer.peek(16 * VOICE_CHUNK, 20 * VOICE_CHUNK)) == 4 * VOICE_CHUNK, "zeros past the end"
