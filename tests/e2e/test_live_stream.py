"""Live streams on the live server: the ``stream`` model (a Triton sequence, decoupled, BLS to the
avatar's ensemble) against ``render`` of the same clip, and each limit with its message."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from synctalk_client import CompositeClient, contract, synthetic
from synctalk_client.render import render_video
from synctalk_client.stream import LiveStream, StreamClosedError
from tools import avatar_store

pytestmark = pytest.mark.e2e

SPF = contract.SAMPLES_PER_FRAME
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
SECONDS = 1.3  # 32 frames of 40 ms: longer than the avatar's 4 images (ping-pong) and its lookahead


@contextlib.contextmanager
def avatar_with_images(server, tmp_path_factory, avatar_id: str, audio_preset: str):
    import cv2

    folder = tmp_path_factory.mktemp(avatar_id)
    for i, colour in enumerate(COLOURS):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((72, 96, 3), colour[::-1], np.uint8))
    avatar_store.add(server.repository, avatar_id, folder, [16, 4, 80, 68], audio_preset=audio_preset)
    try:
        with CompositeClient(server.grpc_url) as client:
            client.load_model(avatar_id)
            yield avatar_id
            client.unload_model(avatar_id)
    finally:
        avatar_store.remove(server.repository, avatar_id)


@pytest.fixture(scope="module", params=["synctalk2d", "reference"])
def live_avatar(request, server, tmp_path_factory):
    with avatar_with_images(server, tmp_path_factory, f"live_{request.param}", request.param) as avatar_id:
        yield avatar_id


@pytest.fixture(scope="module")
def clip():
    audio = synthetic.speech_like_audio(int(SECONDS * contract.FPS) + 1, seed=21)
    n = int(SECONDS * contract.SAMPLE_RATE) + 250  # a clip ending mid-frame
    return np.round(audio[:n] * 32767).astype(np.int16)  # int16 speech; float32 = int16 / 32768


@pytest.fixture(scope="module")
def rendered(server, live_avatar, clip, tmp_path_factory):
    """``render --no-loop-back`` of the whole clip: the JPEG bytes of each frame."""
    out = tmp_path_factory.mktemp("rendered")
    render_video(
        server.grpc_url,
        live_avatar,
        clip.astype(np.float32) / 32768.0,
        out / "clip.mp4",
        progress=False,
        frames_dir=out / "frames",
        loop_back=False,
    )
    return [p.read_bytes() for p in sorted((out / "frames").iterdir())]


def stream_clip(url: str, avatar: str, clip: np.ndarray, sizes) -> list:
    """Stream ``clip`` in chunks of ``sizes`` (cycled); every answer's frames, in order."""
    frames, position, i = [], 0, 0
    with LiveStream(url, avatar) as live:
        while position < len(clip):
            size = sizes[i % len(sizes)]
            frames += live.send(clip[position : position + size])
            position, i = position + size, i + 1
        frames += live.end()
    return frames


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(("int16", [SPF]), id="40ms-int16"),
        pytest.param(("float32", [7 * SPF]), id="7frames-float32"),
        pytest.param(("int16", [13 * SPF + 5]), id="13frames-int16"),
        pytest.param(("float32", list(np.random.default_rng(5).integers(1, 9000, 12))), id="random-float32"),
    ],
)
def test_a_streamed_clip_is_the_rendered_clip_frame_for_frame(server, live_avatar, clip, rendered, chunks):
    dtype, sizes = chunks
    audio = clip if dtype == "int16" else clip.astype(np.float32) / 32768.0
    frames = stream_clip(server.grpc_url, live_avatar, audio, [int(s) for s in sizes])
    assert [f.index for f in frames] == list(range(len(rendered))), "every frame once, in order"
    assert [f.jpeg for f in frames] == rendered, "the same JPEG bytes as render --no-loop-back"


def test_a_frame_comes_once_its_lookahead_has_arrived(server, live_avatar, clip):
    with LiveStream(server.grpc_url, live_avatar) as live:
        assert live.send(clip[: contract.STREAM_LOOKAHEAD]) == [], "no frame has its lookahead yet"
        assert [f.index for f in live.send(clip[contract.STREAM_LOOKAHEAD : contract.STREAM_LOOKAHEAD + SPF])] == [0]
        assert live.send(np.zeros(0, np.int16)) == [], "an empty chunk is an answer of no frames"
        assert [
            f.index for f in live.send(clip[contract.STREAM_LOOKAHEAD + SPF : contract.STREAM_LOOKAHEAD + 4 * SPF])
        ] == [1, 2, 3]


def test_request_bytes_per_frame_are_the_audio_itself(clip):
    # what a live client sends per frame: 640 int16 samples (the AVATAR name only at the start)
    assert clip[:SPF].nbytes == 1280


def test_limits_and_errors_have_clear_answers(server, live_avatar, clip):
    with LiveStream(server.grpc_url, live_avatar) as live:
        live.send(clip[:SPF])
        with pytest.raises(Exception, match="AUDIO_CHUNK: 1 of 640 samples are NaN or Inf"):
            live.send(np.where(np.arange(SPF) == 3, np.nan, 0.0).astype(np.float32))
        with pytest.raises(Exception, match="AUDIO_CHUNK_INT16: 16001 samples in one request; at most 16000"):
            live.send(np.zeros(16001, np.int16))
        live.send(clip[SPF : 2 * SPF])  # the stream lives on
    never = LiveStream(server.grpc_url, live_avatar, stream_id=987654321)
    try:
        never._started = True  # a client that skips the start request
        with pytest.raises(StreamClosedError, match="987654321"):
            never.send(clip[:SPF])
    finally:
        never.close()
    with pytest.raises(Exception, match="model not found: nobody"):
        with LiveStream(server.grpc_url, "nobody") as live:
            live.send(clip[:SPF])
