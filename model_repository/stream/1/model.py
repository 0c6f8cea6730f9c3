"""stream: live avatar streams on Triton's sequence batcher.

A stream is a Triton sequence: the start request names the avatar (AVATAR) and every request
carries only the audio that arrived since the last (AUDIO_CHUNK float32, or AUDIO_CHUNK_INT16;
16 kHz; any length up to 1 s, zero included). The model keeps each stream's state by
``request.correlation_id()`` (the Python backend has no implicit state: Triton's
``qa/python_models/sequence_int32`` does the same): its audio from the last rendered frame's
context on, the number of samples so far, the next frame to render and the windows encoded, in a
plain class with its own unit tests (``synctalk_preprocessing.live_stream.StreamState``); this
model is the shell of Triton calls around it.

Frame i of a stream can be rendered once ``contract.STREAM_LOOKAHEAD`` samples follow its 40 ms
(the audio context render sends after a batch: with less, the audio step takes the clip to end
there). Each request renders the frames that became ready, through BLS, as requests of the
avatar's own stateless ensemble: the same tensors render sends for the same frames
(``CompositeBatchRequest.audio_only`` with the audio around the batch and FRAME_INDEX = the
stream's frame numbers, whose image is SyncTalk_2D's loop without loop back). The end request
flushes the rest: the frames of the whole clip by the avatar's audio front end (one per 40 ms, or
SyncTalk_2D's N + 2), with the short context that tells the audio step where the clip ends. So a
streamed clip is, frame for frame, the rendered one.

A SyncTalk_2D avatar's frame needs 16 encoded audio windows, 15 of them its neighbours' too: its
ensemble encodes a request's distinct windows once (B + 15 for B frames), so a stream at pace, one
frame a request, would encode 16 windows a frame. Such a stream instead runs the ensemble's audio
front end (``audio_features_synctalk2d``, the same request), encodes only the windows it has not
encoded yet with the one-window form of the avatar's encoder (``audio_window_encoder_synctalk2d``,
or the avatar's own ``<id>_audio_window_encoder``), keeps them by their place in the stream, stacks
each frame's 16 as the encoder step does, and sends them to the avatar's steps after the audio,
``<id>_from_features``, with a ticket from the door's gate (``synctalk_preprocessing.admission``,
input_validator's capacity). The end request, which tells the front end where the clip ends,
encodes its windows afresh.

Video encoded here: a start request may ask for H.264 (VIDEO_CODEC "h264") rather than JPEGs.
The stream then keeps its encoder (``synctalk_preprocessing.video.H264Encoder``: the
``video_encoder`` parameter, libx264 on the CPU profile, NVENC on the GPU profile; zero latency,
a key frame first, every 2 s and on request) and answers each frame as one H.264 access unit with
its key-frame flag: the frames themselves come from the steps of ``<id>_from_features`` but its
JPEG encoder (no JPEG is made), the background step for silent frames, or, for a stream through
the avatar's whole ensemble, its JPEGs decoded. Any request may set the target bitrate
(VIDEO_BITRATE_KBPS) and ask for a key frame
(FORCE_KEY_FRAME); a batch that fails makes the next frame a key frame (the viewer never got the
frames the encoder referenced). Encoding runs on a thread pool, in the stream's turn, so the
other streams go on meanwhile.

Interrupts and speech placed (``synctalk_preprocessing.live_stream.StreamState``): a request with
INTERRUPT_FROM_FRAME K turns the speech that had arrived from frame K on into silence; one with
SPEECH_AT_SAMPLE S writes its chunk at sample S instead of appending it. Either renders the frames
from its cut again in its own turn (the requests before it have had theirs), a key frame first in
an H.264 stream, and the frame numbers go on.

Decoupled with an async execute: one instance serves every stream at once, awaiting the
ensemble; each request gets one response, the frames with their indices (zero frames is an
answer), or an error naming the problem: a malformed chunk (the stream lives on), an unknown or
expired stream, the stream limit (``max_streams``), an avatar that is not loaded. A stream's state
is freed at its end, and after ``max_sequence_idle_microseconds`` without a request (Triton frees
its sequence slot then too).
"""

import asyncio
import re
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from synctalk_common import contract
from synctalk_common.messages import CompositeBatchRequest
from synctalk_preprocessing import admission, model_config, video
from synctalk_preprocessing.live_stream import StreamState

# error codes by name (pb_utils.TritonError exists once the stub runs, not at import)
INVALID, UNAVAILABLE, NOT_FOUND, INTERNAL = "INVALID_ARG", "UNAVAILABLE", "NOT_FOUND", "INTERNAL"
START = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
END = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
AVATAR_INPUTS = frozenset(t.name for t in contract.AVATAR_ENSEMBLE_INPUTS)
AVATAR_OPTIONAL = frozenset(t.name for t in contract.AVATAR_OPTIONAL_INPUTS)
FRONT_END_INPUTS = tuple(t.name for t in contract.MODEL_INPUTS[contract.SYNCTALK2D_AUDIO_FEATURES_MODEL])


class StreamError(Exception):
    def __init__(self, message: str, code=INVALID):
        super().__init__(message)
        self.code = code

    def response(self):
        code = self.code if not isinstance(self.code, str) else getattr(pb_utils.TritonError, self.code)
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(self), code))


class TritonPythonModel:
    def initialize(self, args):
        config = model_config.load(args["model_config"])
        params = model_config.string_parameters(config)
        self.max_streams = int(params.get("max_streams", "8"))
        self.busy_wait_s = float(params.get("busy_wait_s", "5"))
        self.catch_up_batch = int(params.get("catch_up_batch", str(contract.MAX_BATCH_SIZE)))
        self.silence_threshold = float(params.get("silence_threshold", "0.001"))
        self.encode_windows = params.get("encode_windows", "1") != "0"
        self.video_encoder = params.get("video_encoder", "libx264")
        self.video_kbps = int(params.get("video_bitrate_kbps", str(video.DEFAULT_KBPS)))
        if self.video_encoder not in video.ENCODERS or video.check_bitrate(self.video_kbps):
            raise pb_utils.TritonModelException(
                f"stream: video_encoder {self.video_encoder!r} / video_bitrate_kbps {self.video_kbps}: "
                f"use one of {video.ENCODERS} and {video.MIN_KBPS}..{video.MAX_KBPS}"
            )
        # NVENC where the GPU has one (not H100/H200/A100): found out now, not at a viewer's first frame
        self.video_encoder, why = video.usable_encoder(self.video_encoder)
        if why:
            pb_utils.Logger.log_warn(f"stream: {why}")
        # H.264 streams' encoding (PyAV releases the GIL while FFmpeg encodes): one thread a core
        self.encoding = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stream-video")
        self.idle_s = int(config["sequence_batching"].get("max_sequence_idle_microseconds", 1_000_000)) / 1e6
        self.repository = Path(args["model_repository"]).parent
        # the door's gate (input_validator's capacity): a stream's frames sent past the door, to
        # an avatar's <id>_from_features, take their ticket here
        frames = int(self._parameter(contract.INPUT_VALIDATOR_MODEL, "admission_frames") or 0)
        lease_s = float(self._parameter(contract.INPUT_VALIDATOR_MODEL, "admission_lease_s") or 0)
        self.gate = admission.AdmissionGate(frames, lease_s) if frames > 0 and lease_s > 0 else None
        self.streams: dict[int, StreamState] = {}
        self.ended: OrderedDict[int, str] = OrderedDict()  # recently ended or expired ids: why
        # the streams open on each avatar, on Triton's metrics port: an avatar with one open is
        # never unloaded to make room (synctalk_ops.activator, avatars on demand)
        self.open_family = pb_utils.MetricFamily(
            name=contract.OPEN_STREAMS_METRIC,
            description="live streams open on this replica, by avatar",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.open_gauges: dict[str, object] = {}

    async def execute(self, requests):
        await asyncio.gather(*(self._answer(request) for request in requests))
        return None

    async def _answer(self, request) -> None:
        sender = request.get_response_sender()
        try:
            jpegs, indices, units = await self._serve(request)
            response = pb_utils.InferenceResponse(
                [
                    pb_utils.Tensor(contract.STREAM_JPEG.name, np.array(jpegs, dtype=np.object_)),
                    pb_utils.Tensor(contract.STREAM_FRAME_INDEX.name, np.array(indices, np.int64)),
                    pb_utils.Tensor(contract.STREAM_H264.name, np.array([u for u, _ in units], dtype=np.object_)),
                    pb_utils.Tensor(contract.STREAM_KEY_FRAME.name, np.array([k for _, k in units], dtype=bool)),
                ]
            )
        except StreamError as exc:
            response = exc.response()
        except Exception as exc:  # noqa: BLE001 - a request fails by name, the model serves on
            response = StreamError(f"stream: {type(exc).__name__}: {exc}", INTERNAL).response()
        sender.send(response, flags=FINAL)

    async def _serve(self, request):
        stream_id, flags, now = request.correlation_id(), request.flags(), time.monotonic()
        if not stream_id:
            raise StreamError("a stream request needs a sequence id (correlation id) other than 0")
        self._expire(now)
        # a malformed chunk or video control is refused before the state changes
        chunk, (codec, kbps, key_frame) = self._chunk(request), self._video_controls(request, bool(flags & START))
        interrupt, speech_at = self._interrupt(request), self._speech_at(request)
        if interrupt is not None and speech_at is not None:
            raise StreamError(
                f"{contract.STREAM_INTERRUPT.name} and {contract.STREAM_SPEECH_AT.name}: one of them a request"
            )
        if flags & START:
            stream = self._open(stream_id, request, now)
            if codec == "h264":
                stream.video = video.H264Encoder(contract.FPS, kbps or self.video_kbps, self.video_encoder)
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                raise StreamError(self._not_open(stream_id), NOT_FOUND)
            if (kbps or key_frame) and stream.video is None:
                raise _no_encoder(
                    kbps,
                    f"stream {stream_id} sends JPEGs; its start request asks for "
                    f'{contract.STREAM_VIDEO_CODEC.name} "h264"',
                )
        if interrupt is not None:  # the speech that had arrived, from frame K on, is cut
            stream.interrupt(interrupt)
        if stream.video is not None:
            if kbps:
                stream.video.set_bitrate(kbps)
            if key_frame:
                stream.video.request_key_frame()
        stream.last_seen = now
        # the audio joins the stream on arrival, before the stream's turn: a request that waits
        # behind a slow one brings its audio to it, so a stream that falls behind catches up in
        # bigger batches (the last request in line renders every frame ready by then, those ahead
        # of it contract.STREAM_STEP_FRAMES each; the requests after it may find none left, an
        # answer of zero frames)
        if speech_at is None:
            stream.append(chunk)
        else:  # speech placed: written over what had arrived from there
            stream.place(chunk, speech_at)
        async with stream.in_turn():
            # an interrupt's or a placing request's turn: the frames from its cut again (earlier
            # requests' turns came first)
            again = stream.rewind() if interrupt is not None or speech_at is not None else None
            if again and stream.video is not None:
                stream.video.request_key_frame()  # the viewer never gets the frames it referenced
            # the first of them at once (frame K is due at the viewer now); the next requests
            # bring the rest (contract.STREAM_STEP_FRAMES)
            most = contract.STREAM_STEP_FRAMES if again else None
            frames = stream.frames_to_render(ending=bool(flags & END), most=most, waiting=stream.waiting)
            if flags & END:
                self._close(stream_id, "ended")
                stream.ended()
            # every batch's tensors taken now: audio arriving while they render moves nothing
            batches = [
                (first, last, None if quiet else stream.batch_request(first, last))
                for first, last, quiet in stream.runs(frames, self.silence_threshold, self.catch_up_batch)
            ]
            jpegs, units, rgb = [], [], stream.video is not None
            rendered_to = frames.start
            try:
                for first, last, batch in batches:
                    if stream.superseded(first):  # an interrupt or a placement came: it renders these
                        break
                    if batch is None:
                        rendered = await self._avatar_frames(stream.avatar, first, last, rgb)
                    elif stream.by_features:
                        rendered = await self._render_by_features(stream, batch, rgb)
                    else:
                        rendered = await self._render(batch)
                    if rgb:
                        units += await self._encode(stream.video, rendered)
                    else:
                        jpegs += rendered
                    rendered_to = last
            except StreamError:
                if not flags & END:  # the stream lives on: its next request renders these frames again
                    stream.failed(frames)
                    if stream.video is not None:  # and the frames encoded but not sent are nobody's reference
                        stream.video.request_key_frame()
                raise
            finally:
                if flags & END and stream.video is not None:
                    stream.video.close()
            frames = range(frames.start, rendered_to)
            stream.answered_up_to(frames, time.monotonic())
        return jpegs, list(frames), units

    async def _encode(self, encoder: video.H264Encoder, frames) -> list[tuple[bytes, bool]]:
        """A batch's frames (RGB [B, H, W, 3], or JPEGs from a whole ensemble) as H.264 access
        units with their key-frame flags, encoded on the pool (the event loop serves on)."""

        def encode():
            import simplejpeg

            return [
                encoder.encode(simplejpeg.decode_jpeg(frame) if isinstance(frame, bytes) else frame) for frame in frames
            ]

        return await asyncio.get_running_loop().run_in_executor(self.encoding, encode)

    def _video_controls(self, request, start: bool) -> tuple[str, int | None, bool]:
        """The request's codec (a start request's; "jpeg" unless it asks for "h264"), target
        bitrate (None: unchanged) and key-frame request, each checked."""
        codec, kbps, key_frame = "jpeg", None, False
        if (tensor := pb_utils.get_input_tensor_by_name(request, contract.STREAM_VIDEO_CODEC.name)) is not None:
            name = _text(tensor)
            if not start:
                raise StreamError(
                    f"{contract.STREAM_VIDEO_CODEC.name}: a stream's codec is chosen by its start request"
                )
            if name not in contract.STREAM_CODECS:
                raise StreamError(f"{contract.STREAM_VIDEO_CODEC.name}: {name!r}: use one of {contract.STREAM_CODECS}")
            codec = name
        if (tensor := pb_utils.get_input_tensor_by_name(request, contract.STREAM_BITRATE.name)) is not None:
            values = tensor.as_numpy().reshape(-1)
            if len(values) != 1:
                raise StreamError(f"{contract.STREAM_BITRATE.name}: one value, got {len(values)}")
            problem = video.check_bitrate(int(values[0]))
            if problem:
                raise StreamError(f"{contract.STREAM_BITRATE.name}: {problem}")
            kbps = int(values[0])
        if (tensor := pb_utils.get_input_tensor_by_name(request, contract.STREAM_FORCE_KEY_FRAME.name)) is not None:
            key_frame = bool(tensor.as_numpy().reshape(-1).any())
        if start and codec == "jpeg" and (kbps or key_frame):
            raise _no_encoder(
                kbps, f'a JPEG stream; ask for {contract.STREAM_VIDEO_CODEC.name} "h264" in the start request'
            )
        return codec, kbps, key_frame

    def _interrupt(self, request) -> int | None:
        """The frame an interrupt cuts from (-1: the first not rendered yet), or None."""
        return _position(
            request, contract.STREAM_INTERRUPT, -1, "one frame number (or -1: from the first frame not rendered yet)"
        )

    def _speech_at(self, request) -> int | None:
        """The sample a placing request writes its chunk at, or None (the chunk is appended)."""
        return _position(request, contract.STREAM_SPEECH_AT, 0, "one sample number (0 or more)")

    def _chunk(self, request) -> np.ndarray:
        given = [
            (spec, tensor.as_numpy())
            for spec in (contract.STREAM_AUDIO, contract.STREAM_AUDIO_INT16)
            if (tensor := pb_utils.get_input_tensor_by_name(request, spec.name)) is not None
        ]
        if len(given) > 1:
            raise StreamError(
                f"{contract.STREAM_AUDIO.name} and {contract.STREAM_AUDIO_INT16.name}: send one of them, not both"
            )
        if not given:
            return np.zeros(0, np.float32)
        spec, samples = given[0]
        samples = samples.reshape(-1)
        if len(samples) > contract.STREAM_MAX_CHUNK:
            raise StreamError(
                f"{spec.name}: {len(samples)} samples in one request; at most {contract.STREAM_MAX_CHUNK} "
                f"(1 s at {contract.SAMPLE_RATE} Hz)"
            )
        if spec is contract.STREAM_AUDIO_INT16:
            return samples.astype(np.float32) / 32768.0
        if not np.isfinite(samples).all():
            bad = int(np.count_nonzero(~np.isfinite(samples)))
            raise StreamError(f"{spec.name}: {bad} of {len(samples)} samples are NaN or Inf")
        return samples.astype(np.float32, copy=False)

    def _count_open(self, avatar: str) -> None:
        gauge = self.open_gauges.get(avatar)
        if gauge is None:
            gauge = self.open_gauges[avatar] = self.open_family.Metric(labels={"avatar": avatar})
        gauge.set(sum(1 for s in self.streams.values() if s.avatar == avatar))

    def _open(self, stream_id: int, request, now: float) -> StreamState:
        # a start for an open id starts a new stream, as Triton's sequence batcher takes it
        before = self.streams.pop(stream_id, None)
        if before is not None:
            self._count_open(before.avatar)
        avatar = pb_utils.get_input_tensor_by_name(request, contract.STREAM_AVATAR.name)
        if avatar is None:
            raise StreamError(f"{contract.STREAM_AVATAR.name}: the start request of a stream names its avatar")
        name = _text(avatar)
        steps = self._steps(name)
        if len(self.streams) >= self.max_streams:
            raise StreamError(contract.MSG_STREAM_LIMIT.format(limit=self.max_streams), UNAVAILABLE)
        silent_frames = self._parameter(contract.avatar_models(name)["background"], contract.AVATAR_SILENCE_PARAMETER)
        stream = StreamState(
            name, contract.SYNCTALK2D_AUDIO_FEATURES_MODEL in steps, silent_frames == "avatar_frames", now
        )
        own = contract.avatar_models(name, own_audio_encoder=True)
        if self.encode_windows and own["from_features"] in steps:
            encoder = (
                own["window_encoder"] if own["audio_encoder"] in steps else contract.SYNCTALK2D_WINDOW_ENCODER_MODEL
            )
            if pb_utils.is_model_ready(encoder) and pb_utils.is_model_ready(own["from_features"]):
                stream.by_features = (own["from_features"], encoder)
        self.streams[stream_id] = stream
        self._count_open(name)
        self.ended.pop(stream_id, None)
        return stream

    def _steps(self, avatar: str) -> list[str]:
        """The steps of an avatar's ensemble (from its config in this repository), or a
        'model not found' error for anything that is not a loaded avatar."""
        config = self.repository / avatar / "config.pbtxt"
        text = config.read_text() if re.fullmatch(contract.AVATAR_ID_PATTERN, avatar) and config.is_file() else ""
        steps = re.findall(r'model_name:\s*"([^"]+)"', text)
        if not steps or not pb_utils.is_model_ready(avatar):
            raise StreamError(contract.MSG_MODEL_NOT_FOUND.format(model_id=avatar) + " (no loaded avatar)", NOT_FOUND)
        return steps

    def _parameter(self, model: str, key: str) -> str | None:
        """A string parameter of a model's config in this repository (as synctalk_build.render_model writes it)."""
        config = self.repository / model / "config.pbtxt"
        text = config.read_text() if config.is_file() else ""
        found = re.search(r'key:\s*"' + re.escape(key) + r'"\s*value\s*\{\s*string_value:\s*"([^"]*)"', text)
        return found[1] if found else None

    async def _avatar_frames(self, avatar: str, first: int, last: int, rgb: bool = False):
        """Silent frames as the avatar's own images (ping-ponged as FRAME_INDEX picks them), JPEG
        encoded by the avatar's encoder: its background step and encoder, no generator run (with
        ``rgb``, the images themselves, [B, H, W, 3])."""
        models = contract.avatar_models(avatar)
        index = np.arange(first, last, dtype=np.int64)[:, None]
        background = await self._call(
            models["background"], [pb_utils.Tensor(contract.FRAME_INDEX.name, index)], contract.BACKGROUND.name
        )
        if rgb:
            return _host(background)
        frames = pb_utils.Tensor.from_dlpack(contract.PASTED_FRAMES.name, background.to_dlpack())
        jpegs = await self._call(models["jpeg_encoder"], [frames], contract.JPEG.name)
        return [bytes(j) for j in jpegs.as_numpy().reshape(-1)]

    async def _call(self, model: str, inputs: list, output: str | tuple[str, ...]):
        """One BLS request, its ``output`` tensor (a tuple of names: those tensors). A refusal for
        load (the door's, or a full queue) is asked again after a pause, up to ``busy_wait_s``: a
        live frame waits its turn rather than being lost; past that the request fails as busy
        (UNAVAILABLE)."""
        names = list(output) if isinstance(output, tuple) else [output]
        async for _ in self._tries():
            response = await pb_utils.InferenceRequest(
                model_name=model, inputs=inputs, requested_output_names=names
            ).async_exec()
            if not response.has_error():
                tensors = [pb_utils.get_output_tensor_by_name(response, name) for name in names]
                return tensors if isinstance(output, tuple) else tensors[0]
            message = response.error().message()
            busy = contract.QUEUE_FULL_MESSAGE in message or contract.QUEUE_TIMEOUT_MESSAGE in message
            if not busy:
                raise StreamError(message, INVALID if "INVALID_ARG" in message else INTERNAL)
        raise StreamError(message, UNAVAILABLE)

    async def _tries(self):
        """Yields before each try of something refused while the pipeline is full: at once, then
        after pauses doubling from 20 to 200 ms, while the next try starts within ``busy_wait_s``."""
        deadline, pause = time.monotonic() + self.busy_wait_s, 0.02
        while True:
            yield
            if time.monotonic() + pause > deadline:
                return
            await asyncio.sleep(pause)
            pause = min(2 * pause, 0.2)

    async def _render(self, batch: CompositeBatchRequest) -> list[bytes]:
        """The batch's frames from the avatar's ensemble, as render's request of them."""
        tensors = batch.tensors(AVATAR_INPUTS, optional=AVATAR_OPTIONAL)
        inputs = [pb_utils.Tensor(name, array) for name, array in tensors.items()]
        jpegs = await self._call(batch.model_id, inputs, contract.JPEG.name)
        return [bytes(j) for j in jpegs.as_numpy().reshape(-1)]

    async def _render_by_features(self, stream: StreamState, batch: CompositeBatchRequest, rgb: bool = False):
        """The batch's frames as the avatar's ensemble renders them, each audio window encoded once
        per stream: the front end's 16 neighbouring windows of each frame (row i's neighbour j is
        the request's distinct window i + j, at index first - 8 + i + j of upstream's padded list),
        the windows not encoded yet through the window encoder, each frame's 16 encodings times its
        mask stacked as the encoder step stacks them, then <id>_from_features (its JPEGs; with
        ``rgb``, its steps but the JPEG encoder: the frames, [B, H, W, 3])."""
        from_features, window_encoder = stream.by_features
        tensors = batch.tensors(AVATAR_INPUTS, optional=AVATAR_OPTIONAL)
        n_frames, first = len(tensors[contract.AUDIO.name]), batch.start_frame_idx
        ticket = await self._admit(n_frames)
        try:
            mel, mask = (
                t.as_numpy()
                for t in await self._call(
                    contract.SYNCTALK2D_AUDIO_FEATURES_MODEL,
                    [pb_utils.Tensor(name, tensors[name]) for name in FRONT_END_INPUTS if name in tensors],
                    (contract.MEL_NEIGHBOURS.name, contract.NEIGHBOUR_MASK.name),
                )
            )
            distinct = np.concatenate([mel[:, 0], mel[-1, 1:]])  # [B + 15, 1, 80, 16]
            places = stream.window_places(first, len(distinct))
            todo = stream.windows_missing(places)
            for start in range(0, len(todo), contract.MAX_BATCH_SIZE):
                rows = todo[start : start + contract.MAX_BATCH_SIZE]
                encoded = await self._call(
                    window_encoder,
                    [pb_utils.Tensor(contract.MEL_WINDOWS.name, np.ascontiguousarray(distinct[rows]))],
                    contract.WINDOW_FEATURES.name,
                )
                stream.keep_windows(places, rows, encoded.as_numpy())
            features = stream.features(places, mask)
            inputs = [
                pb_utils.Tensor(contract.AUDIO_FEATURES.name, features),
                pb_utils.Tensor(contract.ADMISSION_TICKET.name, np.full((n_frames, 1), ticket, np.int64)),
                *(
                    pb_utils.Tensor(t.name, tensors[t.name])
                    for t in (contract.FRAME_INDEX, contract.IMAGE_INDEX)
                    if t.name in tensors
                ),
            ]
            if rgb:
                frames = await self._frames_rgb(stream.avatar, inputs)
            else:
                jpegs = await self._call(from_features, inputs, contract.JPEG.name)
        except BaseException:
            if ticket != admission.NO_TICKET:  # its last step did not give it back
                self.gate.release(ticket)
            raise
        if rgb:
            if ticket != admission.NO_TICKET:  # the JPEG encoder's step, which gives it back, did not run
                self.gate.release(ticket)
            return frames
        return [bytes(j) for j in jpegs.as_numpy().reshape(-1)]

    async def _frames_rgb(self, avatar: str, inputs: list) -> np.ndarray:
        """The steps of <id>_from_features (``contract.avatar_face_steps``) but its JPEG encoder,
        one BLS request each, its tensors passed on as they are (DLPack): the frames themselves,
        [B, H, W, 3], for a stream's video encoder."""
        tensors = {tensor.name(): tensor for tensor in inputs}
        *steps, _jpeg_encoder = contract.avatar_face_steps(avatar)
        for model, input_map, output_map in steps:
            sent = [
                pb_utils.Tensor.from_dlpack(name, tensors[tensor].to_dlpack())
                for name, tensor in input_map.items()
                if tensor in tensors
            ]
            got = await self._call(model, sent, tuple(output_map))
            tensors.update({output_map[name]: tensor for name, tensor in zip(output_map, got)})
        return _host(tensors[contract.FRAMES_RGB.name])

    async def _admit(self, frames: int) -> int:
        """A ticket of the door's gate for ``frames`` frames (admission.NO_TICKET with no gate);
        while the pipeline is full, asked again after a pause, up to ``busy_wait_s`` (as _call)."""
        if self.gate is None:
            return admission.NO_TICKET
        async for _ in self._tries():
            ticket, in_flight = self.gate.admit(frames)
            if ticket is not None:
                return ticket
        message = contract.MSG_PIPELINE_FULL.format(in_flight=in_flight, capacity=self.gate.capacity_frames)
        raise StreamError(message, UNAVAILABLE)

    def _close(self, stream_id: int, why: str) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._count_open(stream.avatar)
        if stream is not None and stream.video is not None and why == "expired":
            stream.video.close()
        self.ended[stream_id] = why
        while len(self.ended) > 4 * self.max_streams:
            self.ended.popitem(last=False)

    def _expire(self, now: float) -> None:
        for stream_id in [i for i, s in self.streams.items() if now - s.last_seen > self.idle_s]:
            self._close(stream_id, "expired")

    def _not_open(self, stream_id: int) -> str:
        why = self.ended.get(stream_id)
        if why == "expired":
            return f"stream {stream_id} expired after {self.idle_s:g} s without a request"
        if why == "ended":
            return f"stream {stream_id} has ended"
        return contract.MSG_STREAM_NOT_OPEN.format(stream_id=stream_id, idle_s=self.idle_s)

    def finalize(self):
        self.encoding.shutdown(wait=True)
        for stream in self.streams.values():
            if stream.video is not None:
                stream.video.close()
        if self.gate is not None:
            self.gate.close()
        self.open_gauges.clear()  # each metric before its family (the backend's rule)


def _text(tensor) -> str:
    """A BYTES tensor's first value as text ("" when it has none)."""
    values = tensor.as_numpy().reshape(-1)
    value = values[0] if len(values) else b""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _position(request, spec, lowest: int, what: str) -> int | None:
    """A request's one-number input ``spec`` (a frame or a sample of the stream), at least
    ``lowest``; None where the request has none."""
    tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    if len(values) != 1 or values[0] < lowest:
        raise StreamError(f"{spec.name}: {what}, got {values.tolist()}")
    return int(values[0])


def _no_encoder(kbps: int | None, why: str) -> StreamError:
    """The refusal of a bitrate (or, without one, a key frame) asked of a stream with no encoder."""
    return StreamError(f"{(contract.STREAM_BITRATE if kbps else contract.STREAM_FORCE_KEY_FRAME).name}: {why}")


def _host(tensor) -> np.ndarray:
    """A BLS output's array in host memory (a GPU step's output comes back in GPU memory)."""
    if tensor.is_cpu():
        return tensor.as_numpy()
    import cupy  # deploy/requirements-server.txt; a 720p frame is 2.7 MB over PCIe (~0.2 ms)

    return cupy.from_dlpack(tensor).get()
