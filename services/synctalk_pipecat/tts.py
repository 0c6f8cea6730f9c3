"""``SyncTalkTTSService``: a ``synctalk_client.tts`` engine as a Pipecat TTS service.

The engine (``engine("espeak:en")``, Debian's espeak-ng, by default; ``module:Class:ARG`` for the
operator's own voice) runs on a thread, a sentence at a time; its 16 kHz audio goes out as
``TTSAudioRawFrame``s of 40 ms (one avatar frame's worth), so the avatar service after it starts
mouthing the first sentence while the next is synthesised.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from synctalk_client import tts
from synctalk_common import contract


class SyncTalkTTSService(TTSService):
    """Text to speech with a ``synctalk_client.tts`` engine (see the module)."""

    def __init__(self, *, engine: str = "espeak:en", **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            sample_rate=contract.SAMPLE_RATE,
            settings=TTSSettings(model=None, voice=engine, language=None),
            **kwargs,
        )
        self._engine = tts.engine(engine)

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        # tts.chunks: each sentence's 40 ms chunks as soon as it is synthesised (on a thread)
        chunks = tts.chunks(text, self._engine, contract.SAMPLES_PER_FRAME)
        try:
            await self.start_tts_usage_metrics(text)
            while (pcm := await asyncio.to_thread(next, chunks, None)) is not None:
                await self.stop_ttfb_metrics()
                yield TTSAudioRawFrame(
                    audio=pcm.tobytes(), sample_rate=contract.SAMPLE_RATE, num_channels=1, context_id=context_id
                )
        except Exception as exc:  # noqa: BLE001 - the engine's failure is the pipeline's error frame
            yield ErrorFrame(error=f"text to speech failed: {exc}")
