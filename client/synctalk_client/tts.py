"""Text to speech for the avatar: text in, 16 kHz int16 PCM out, sentence by sentence.

The interface is one method, ``speak(text)``: an iterator of PCM chunks, one a sentence, each
yielded as soon as it is synthesised, so a live avatar starts speaking before the whole text is
(a TTS engine is faster than real time: the first sentence's audio is there in milliseconds, and
its 0.5 s of look-ahead costs no waiting). Any engine fits: a class with ``speak``.

- ``EspeakTTS`` (the default, ``espeak:<voice>``): Debian's ``espeak-ng``, a formant synthesiser
  that installs from the package registries (``make install`` adds it), needs no model file, speaks
  ~100 languages and takes ~20 ms a sentence on a CPU: the engine that always works, robotic but
  clear, and mouths well (its consonants are crisp).
- ``PiperTTS`` (``piper:<VOICE.onnx>``): a Piper voice, neural (VITS, ONNX), from the operator's
  own files (``VOICE.onnx`` and its ``VOICE.onnx.json``; nothing is downloaded at run time), run
  by ``piper-tts`` with its own espeak-ng phonemes, a sentence at a time; a "medium" voice runs
  many times faster than real time on a CPU core, and the voice is the operator's choice (and
  licence). Why Piper and not Kokoro: Piper's runtime is one small wheel (onnxruntime) with its
  phonemiser inside; Kokoro needs a phonemiser of its own per language and an 82M-parameter model.
- Any other engine is a class with ``speak``; ``engine("module:Class:arg")`` loads one.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from synctalk_common import contract

SENTENCE = re.compile(r"(?<=[.!?;:])\s+|\n+")


class TextToSpeech(Protocol):
    def speak(self, text: str) -> Iterator[np.ndarray]:
        """16 kHz mono int16 chunks of ``text`` spoken, one a sentence, in order."""


def sentences(text: str) -> list[str]:
    """``text`` cut after each sentence's end (. ! ? ; :) and at line breaks, blanks dropped."""
    return [part.strip() for part in SENTENCE.split(text) if part and part.strip()]


class EspeakTTS:
    """Debian's espeak-ng (see the module): ``voice`` (``espeak-ng --voices``), ``words_per_minute``."""

    def __init__(self, voice: str = "en", words_per_minute: int = 165):
        self.binary = shutil.which("espeak-ng")
        if self.binary is None:
            raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (make install adds it)")
        self.voice, self.words_per_minute = voice, int(words_per_minute)

    def speak(self, text: str) -> Iterator[np.ndarray]:
        for sentence in sentences(text):
            yield self._synthesise(sentence)

    def _synthesise(self, sentence: str) -> np.ndarray:
        import soxr

        done = subprocess.run(
            [self.binary, "--stdout", "-v", self.voice, "-s", str(self.words_per_minute), "--", sentence],
            capture_output=True,
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"espeak-ng: {done.stderr.decode(errors='replace').strip() or done.returncode}")
        rate, pcm = _wav_pcm(done.stdout)
        audio = soxr.resample(pcm.astype(np.float32) / 32768.0, rate, contract.SAMPLE_RATE)
        return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


class PiperTTS:
    """A Piper voice from the operator's files (see the module): ``model``, the voice's ONNX file;
    its config is ``model + ".json"`` beside it, as Piper's voices ship."""

    def __init__(self, model: str):
        try:
            from piper import PiperVoice
        except ImportError:
            raise RuntimeError("a Piper voice needs piper-tts: pip install piper-tts") from None
        path, config = Path(model), Path(f"{model}.json")
        for needed in (path, config):
            if not needed.is_file():
                raise FileNotFoundError(
                    f"Piper voice {model}: {needed} is missing (a voice is VOICE.onnx and VOICE.onnx.json)"
                )
        self.voice = PiperVoice.load(path, config)

    def speak(self, text: str) -> Iterator[np.ndarray]:
        import soxr

        for chunk in self.voice.synthesize(text):  # one a sentence, as it is synthesised
            audio = soxr.resample(chunk.audio_float_array.astype(np.float32), chunk.sample_rate, contract.SAMPLE_RATE)
            yield np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


def _wav_pcm(data: bytes) -> tuple[int, np.ndarray]:
    """A streamed WAV's rate and samples (espeak-ng writes its sizes as unknown: read to the end)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng: no WAV on its output")
    rate = int.from_bytes(data[24:28], "little")
    at = data.find(b"data", 12)
    return rate, np.frombuffer(data[at + 8 : at + 8 + (len(data) - at - 8) // 2 * 2], np.int16)


def speech(text: str, tts: TextToSpeech) -> np.ndarray:
    """The whole of ``text`` spoken (int16, 16 kHz): what ``render --text`` renders."""
    spoken = list(tts.speak(text))
    if not spoken:
        raise ValueError("the text has nothing to say")
    return np.concatenate(spoken)


def chunks(text: str, tts: TextToSpeech, chunk_samples: int) -> Iterator[np.ndarray]:
    """``text`` spoken, in chunks of ``chunk_samples`` as a live stream sends them, each sentence's
    as soon as it is synthesised (``stream --text``; ``LiveStream.send(chunk)`` for each)."""
    for pcm in tts.speak(text):
        for start in range(0, len(pcm), chunk_samples):
            yield pcm[start : start + chunk_samples]


def engine(spec: str = "espeak:en") -> TextToSpeech:
    """A TTS engine by name: ``espeak[:VOICE]``, ``piper:VOICE.onnx``, or ``module:Class[:ARG]``
    for any class with ``speak`` (ARG, e.g. a voice model's path, is its one argument)."""
    name, _, rest = spec.partition(":")
    if name in ("espeak", "espeak-ng"):
        return EspeakTTS(rest or "en")
    if name == "piper":
        if not rest:
            raise ValueError("TTS engine 'piper': name the voice, piper:VOICE.onnx")
        return PiperTTS(rest)
    module, _, rest = spec.partition(":")
    cls, _, argument = rest.partition(":")
    if not module or not cls:
        raise ValueError(f"TTS engine {spec!r}: use espeak[:VOICE], piper:VOICE.onnx or module:Class[:ARG]")
    factory = getattr(importlib.import_module(module), cls)
    return factory(argument) if argument else factory()
