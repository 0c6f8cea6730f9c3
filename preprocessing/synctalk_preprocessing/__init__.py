"""Audio and image maths of the SyncTalk serving pipeline, importable on its own.

- ``audio``: STFT -> 80-bin log-mel -> one 16-column window per video frame.
- ``layout``: the reference request's byte layout <-> the ensemble's tensors.
- ``compositing``: generated BGR face -> RGB 1080p frame -> JPEG.
"""
