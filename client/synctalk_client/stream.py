"""Live streams: speech in as it is spoken, the avatar's frames out as soon as they can exist.

A ``LiveStream`` is one Triton sequence to the ``stream`` model over its own gRPC stream (one
connection: behind a load balancer every request of the stream reaches the server that holds its
state). ``send(chunk)`` sends the audio that arrived (any number of 16 kHz samples, float32 in
[-1, 1] or int16) and returns the frames that became ready, ``end()`` the rest::

    with client.stream("anna") as live:          # or LiveStream(url, "anna")
        for chunk in microphone():               # e.g. 20 ms, 320 samples
            for frame in live.send(chunk):
                show(frame.index, frame.jpeg)
        for frame in live.end():
            show(frame.index, frame.jpeg)

A stream may ask for H.264 instead of JPEGs (``codec="h264"``): each frame is then one access
unit of the stream's video (``frame.h264``, ``frame.key_frame``), encoded on the server (a key
frame first, every 2 s and on ``request_key_frame()``; ``set_bitrate(kbps)`` sets the target from
the next request on): ~10 KB a frame at 2 Mbit/s where a 720p JPEG is ~140 KB.

``interrupt(from_frame)`` cuts the speech not heard yet (the listener spoke): the speech from
frame K on becomes silence, the frames from K are rendered again as the avatar's idle frames (the
frames from K in answers still owed to earlier requests are dropped), and the frame numbers go on;
the speech sent after it is rendered as usual. K is the first frame the caller has not shown yet
(-1, the default: the first frame the server has not rendered yet).

``send_async(chunk, callback)`` is the callback form: it returns at once and ``callback(frames,
error)`` runs on the gRPC stream's thread when the server answers (answers come in order).
Frame ``i`` comes once 0.5 s of audio follows it (``contract.STREAM_LOOKAHEAD``); the end of the
stream renders the clip's last frames as ``render`` does.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from synctalk_client.errors import CompositeError, ProcessingError, ServerBusyError, error_from_exception
from synctalk_common import contract


class StreamLimitError(ServerBusyError):
    """The server holds as many streams as it allows ("stream limit N reached"): retry later."""


class StreamClosedError(ProcessingError):
    """The stream is not open on the server: it ended, expired, never started, or the server went
    away (a restart ends every stream)."""


@dataclass(frozen=True)
class StreamFrame:
    index: int  # the frame's number in the stream, from 0
    jpeg: bytes  # empty in an H.264 stream
    sent_at: float  # time.perf_counter() when the request that completed it was sent
    h264: bytes = b""  # an H.264 stream's frame: one access unit (Annex B)
    key_frame: bool = False  # whether ``h264`` is a key frame (a decoder may start there)


def stream_error(exc: InferenceServerException, avatar: str) -> CompositeError:
    message = exc.message() or str(exc)
    status = str(exc.status() or "")
    if "stream limit" in message:
        return StreamLimitError(message)
    if contract.EDGE_FULL_MESSAGE in message:  # the edge's streams per replica, before any reached Triton
        return StreamLimitError(f"stream limit reached: {message}")
    if "START flag" in message:  # Triton's sequence batcher: the sequence's slot was freed (idle timeout)
        return StreamClosedError(f"the stream is not open on the server: it expired after its idle timeout ({message})")
    if "is not open" in message or "expired after" in message or "has ended" in message:
        return StreamClosedError(message)
    if "Socket closed" in message or "failed to connect" in message.lower() or "CANCELLED" in status:
        return StreamClosedError(f"the stream ended: the server went away ({message})")
    if status.endswith("UNAVAILABLE") and "queue" not in message.lower():
        return StreamClosedError(f"the stream ended: the server went away ({message})")
    return error_from_exception(exc, avatar)


class LiveStream:
    """One live stream to an avatar (see the module). ``timeout_s``: how long ``send`` waits for
    the server's answer. ``stream_id``: the Triton sequence id (random when not given).
    ``codec``: "jpeg" or "h264"; ``bitrate_kbps``: an H.264 stream's target to start with (the
    server's ``video_bitrate_kbps`` when not given)."""

    def __init__(
        self,
        url: str,
        avatar: str,
        timeout_s: float = 60.0,
        stream_id: int | None = None,
        codec: str = "jpeg",
        bitrate_kbps: int | None = None,
    ):
        if codec not in contract.STREAM_CODECS:
            raise ValueError(f"codec must be one of {contract.STREAM_CODECS}, got {codec!r}")
        self.avatar, self.timeout_s, self.codec = avatar, timeout_s, codec
        self._bitrate_kbps, self._key_frame = bitrate_kbps, False  # sent with the next request
        self.stream_id = stream_id or random.getrandbits(62) + 1
        self._triton = grpcclient.InferenceServerClient(url)
        self._pending: queue.Queue = queue.Queue()  # (callback, sent_at, number) of each request, in order
        self._sent = 0  # requests sent
        self._cuts: list[tuple[int, int]] = []  # (request number, K) of the interrupts not answered yet
        self._lock = threading.Lock()
        self._started = self._ended = False
        self._closed_error: CompositeError | None = None
        # one HTTP/2 stream: the edge keeps it on one replica; a live frame is a light request
        self._triton.start_stream(callback=self._on_response, headers=contract.edge_headers(avatar, 1))

    # -- sending ------------------------------------------------------------------------------
    def set_bitrate(self, kbps: int) -> None:
        """An H.264 stream's target bitrate (kbit/s) from the next request on."""
        with self._lock:
            self._bitrate_kbps = int(kbps)

    def request_key_frame(self) -> None:
        """An H.264 stream's next frame is a key frame (a viewer lost packets, or joined)."""
        with self._lock:
            self._key_frame = True

    def send(self, chunk: np.ndarray) -> list[StreamFrame]:
        """Send the audio that arrived; return the frames that became ready (maybe none)."""
        return self._wait(lambda callback: self.send_async(chunk, callback))

    def end(self, chunk: np.ndarray | None = None) -> list[StreamFrame]:
        """Send the last audio (if any) and end the stream: the rest of its frames."""
        return self._wait(lambda callback: self.send_async(chunk, callback, end=True))

    def interrupt(self, from_frame: int = -1, chunk: np.ndarray | None = None) -> list[StreamFrame]:
        """Cut the speech from frame ``from_frame`` on (see the module); ``chunk``: speech after
        the cut. Returns the frames from the cut that are ready (idle frames)."""
        return self._wait(lambda callback: self.send_async(chunk, callback, interrupt=from_frame))

    def place(self, chunk: np.ndarray, at: int) -> list[StreamFrame]:
        """Write speech at sample ``at`` of the stream instead of after what was sent: over the
        silence (or speech) sent from there, silence after it up to what was sent; the frames from
        ``at``'s frame come again (those in answers still owed are dropped). A voice agent's speech
        placed just ahead of what the viewer is shown is heard without waiting behind the audio
        already sent. Returns the frames that became ready."""
        return self._wait(lambda callback: self.send_async(chunk, callback, speech_at=at))

    def send_async(
        self,
        chunk: np.ndarray | None,
        callback: Callable[[list[StreamFrame], CompositeError | None], None],
        end: bool = False,
        interrupt: int | None = None,
        speech_at: int | None = None,
    ) -> None:
        """Send without waiting: ``callback(frames, error)`` runs when the server answers.
        ``interrupt``: this request interrupts from that frame (see ``interrupt``); ``speech_at``:
        its chunk is written at that sample of the stream, not appended (see ``place``)."""
        if interrupt is not None and int(interrupt) < -1:
            raise ValueError(f"interrupt: a frame number, or -1; got {interrupt}")
        if speech_at is not None and (int(speech_at) < 0 or interrupt is not None):
            raise ValueError(f"speech_at: a sample number, and no interrupt with it; got {speech_at}")
        with self._lock:
            if self._closed_error is not None:
                raise self._closed_error
            if self._ended:
                raise StreamClosedError(f"stream {self.stream_id} has ended")
            inputs = self._inputs(chunk, interrupt, speech_at)
            start, self._started = not self._started, True
            self._ended = end
            self._sent += 1
            if interrupt is not None:
                # the frames from K in the answers still owed are stale (-1: they hold none from it)
                self._cuts.append((self._sent, int(interrupt) if interrupt >= 0 else 2**62))
            if speech_at is not None:  # and from the placed speech's frame
                self._cuts.append((self._sent, int(speech_at) // contract.SAMPLES_PER_FRAME))
            self._pending.put((callback, time.perf_counter(), self._sent))
            try:
                self._triton.async_stream_infer(
                    contract.STREAM_MODEL,
                    inputs,
                    outputs=[grpcclient.InferRequestedOutput(t.name) for t in contract.STREAM_OUTPUTS],
                    sequence_id=self.stream_id,
                    sequence_start=start,
                    sequence_end=end,
                )
            except InferenceServerException as exc:
                self._pending.get_nowait()
                self._cuts = [(sent, cut) for sent, cut in self._cuts if sent != self._sent]
                raise stream_error(exc, self.avatar) from None

    def _inputs(self, chunk, interrupt: int | None = None, speech_at: int | None = None) -> list[grpcclient.InferInput]:
        samples = np.zeros(0, np.float32) if chunk is None else np.asarray(chunk).reshape(-1)
        spec = contract.STREAM_AUDIO_INT16 if samples.dtype == np.int16 else contract.STREAM_AUDIO
        samples = samples.astype(spec.numpy_dtype, copy=False)
        tensors = [(spec, samples)]
        if not self._started:
            tensors.append((contract.STREAM_AVATAR, np.array([self.avatar.encode()], dtype=np.object_)))
            if self.codec != "jpeg":
                tensors.append((contract.STREAM_VIDEO_CODEC, np.array([self.codec.encode()], dtype=np.object_)))
        if self._bitrate_kbps is not None:
            tensors.append((contract.STREAM_BITRATE, np.array([self._bitrate_kbps], np.int32)))
        if self._key_frame:
            tensors.append((contract.STREAM_FORCE_KEY_FRAME, np.array([True])))
        if interrupt is not None:
            tensors.append((contract.STREAM_INTERRUPT, np.array([interrupt], np.int64)))
        if speech_at is not None:
            tensors.append((contract.STREAM_SPEECH_AT, np.array([speech_at], np.int64)))
        self._bitrate_kbps, self._key_frame = None, False
        inputs = []
        for tensor, array in tensors:
            item = grpcclient.InferInput(tensor.name, list(array.shape), tensor.dtype)
            item.set_data_from_numpy(array)
            inputs.append(item)
        return inputs

    # -- answers ------------------------------------------------------------------------------
    def _on_response(self, result, error) -> None:
        try:
            callback, sent_at, number = self._pending.get_nowait()
        except queue.Empty:  # the stream broke with nothing in flight
            callback, sent_at, number = None, 0.0, 0
        with self._lock:  # an interrupt sent after this request: its frames from the cut are stale
            stale_from = min((cut for sent, cut in self._cuts if sent > number), default=None)
            self._cuts = [(sent, cut) for sent, cut in self._cuts if sent > number]
        if error is not None:
            failure = stream_error(error, self.avatar)
            if isinstance(failure, StreamClosedError):
                self._closed_error = failure
            if callback:
                callback([], failure)
            return
        named = (contract.STREAM_FRAME_INDEX, contract.STREAM_JPEG, contract.STREAM_H264, contract.STREAM_KEY_FRAME)
        indices, jpegs, units, keys = (
            np.zeros(0) if array is None else array.reshape(-1) for array in (result.as_numpy(t.name) for t in named)
        )
        if self.codec == "h264":
            frames = [StreamFrame(int(i), b"", sent_at, bytes(u), bool(k)) for i, u, k in zip(indices, units, keys)]
        else:
            frames = [StreamFrame(int(i), bytes(j), sent_at) for i, j in zip(indices, jpegs)]
        if stale_from is not None:
            frames = [frame for frame in frames if frame.index < stale_from]
        if callback:
            callback(frames, None)

    def _wait(self, send: Callable) -> list[StreamFrame]:
        answer: queue.Queue = queue.Queue()
        send(lambda frames, error: answer.put((frames, error)))
        try:
            frames, error = answer.get(timeout=self.timeout_s)
        except queue.Empty:
            raise ProcessingError(f"stream {self.stream_id}: no answer within {self.timeout_s:g} s") from None
        if error is not None:
            raise error
        return frames

    # -- lifetime -----------------------------------------------------------------------------
    def close(self, cancel: bool = False) -> None:
        """Stop the gRPC stream (a stream not ended expires on the server after its idle timeout):
        after the answers to what was sent, or at once with ``cancel`` (they are nobody's: a
        viewer left, and an overloaded server may owe seconds of frames)."""
        requests = getattr(self._triton._stream, "_request_queue", None)
        self._triton.stop_stream(cancel_requests=cancel)
        if cancel and requests is not None:
            # tritonclient's cancel does not end its request iterator, so gRPC's thread that reads
            # it would wait on it for ever (a thread a stream: 45 after 50 viewers left): its end
            requests.put(None)
        self._triton.close()

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        """A stream left without ``end()`` (its last frames unwanted, or an error) is ended on the
        server, so that its state and Triton's sequence slot are freed at once."""
        try:
            if self._started and not self._ended and self._closed_error is None:
                try:
                    self.end()
                except CompositeError:
                    if exc_type is None:
                        raise
        finally:
            self.close()
