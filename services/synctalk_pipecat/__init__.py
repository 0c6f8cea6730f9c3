"""The avatar as a Pipecat service (the ``agents`` extra: ``pipecat-ai`` 1.x, ``make agents``).

- ``SyncTalkAvatarService`` (``avatar``): a frame processor placed after the TTS, as Pipecat's own
  avatar services are: the TTS's audio in, the avatar's images and its voice out, on the live
  stream's clock; an interruption stops it mid-word.
- ``SyncTalkTTSService`` (``tts``): any ``synctalk_client.tts`` engine (espeak-ng by default, or
  the operator's own neural voice) as a Pipecat TTS service.

A runnable voice agent with both: ``examples/pipecat_avatar/``; the guide: docs/voice-agents.md.
"""
