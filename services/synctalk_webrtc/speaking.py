"""Whether the avatar is speaking, on the media timeline: when the viewer hears it, not when the
speech was given.

The voice track reports each 20 ms it sends (at its time on the peer's clock) with whether that
20 ms holds speech (``SpeechBuffer.spoken``: speech pushed, a TTS engine's pauses inside it
included, or a microphone's sound above -50 dBFS). ``SpeakingTracker`` turns that into events:
*started* at the first 20 ms of speech, *stopped* at the first 20 ms after the speech when the
speech buffer (the voice plays some 0.7 s behind what has been given) holds no more speech for
``HANGOVER_S`` after it: so a TTS engine's stream that pauses between two sentences for less than
that does not flap, and the end of the speech is said when it is heard, not a hangover later.
An interrupt silences the speech not heard: *stopped* comes with the next 20 ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from synctalk_common import contract

HANGOVER_S = 0.25  # speech again within this is the same utterance


@dataclass(frozen=True)
class SpeakingEvent:
    speaking: bool  # True: started speaking; False: stopped
    content_s: float  # where on the speech's timeline (the voice's sample count / 16 kHz)
    at: float  # time.monotonic() when the voice sent it (about when the viewer hears it)

    def message(self) -> dict:
        """The data channel's message (JSON)."""
        return {"type": "speaking", "speaking": self.speaking, "t": round(self.content_s, 3)}


class SpeakingTracker:
    """Events from the voice's 20 ms chunks (see the module); ``emit(event)`` gets each."""

    def __init__(self, emit: Callable[[SpeakingEvent], None], now: Callable[[], float] = time.monotonic):
        self.emit, self._now = emit, now
        self.speaking = False

    def chunk(self, start: int, spoken: bool, speech_ahead: bool, onset: int | None = None) -> SpeakingEvent | None:
        """The voice sends samples from ``start`` now: ``spoken``, whether they hold speech;
        ``speech_ahead``, whether speech follows within the hangover (what has been given);
        ``onset``, where in them the speech is first heard (its first loud sample)."""
        if spoken and not self.speaking:
            event = SpeakingEvent(True, (start if onset is None else onset) / contract.SAMPLE_RATE, self._now())
        elif self.speaking and not spoken and not speech_ahead:
            event = SpeakingEvent(False, start / contract.SAMPLE_RATE, self._now())
        else:
            return None
        self.speaking = event.speaking
        self.emit(event)
        return event
