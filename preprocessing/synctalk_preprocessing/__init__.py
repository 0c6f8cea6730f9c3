"""The server side's maths: what the model repository's steps compute. It builds on the client
package's contract (``synctalk_common.contract``, the face geometry, the wire layout), never the
other way round.

- ``audio``: STFT -> log-mel -> the windows of each video frame (both front ends).
- ``checks``: the input checks of ``input_validator`` (NaN/Inf, value ranges), naming the tensor.
- ``compositing``: generated face -> frame (the reference's resize, SyncTalk_2D's paste-back) -> JPEG.
- ``avatar``: an avatar's stored assets (frames, boxes, manifest).
- ``dali_pipeline``, ``nvimgcodec_encoder``: the GPU profile's DALI pipelines and JPEG encoder.
- ``model_config``: Python-backend models reading their own config.
"""
