"""Live streams on the live server: the ``stream`` model (a Triton sequence, decoupled, BLS to the
avatar's ensemble) against ``render`` of the same clip, and each limit with its message."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
import wave

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from synctalk_build import paths
from synctalk_client import synthetic
from synctalk_client.render import render_video
from synctalk_client.stream import LiveStream, StreamClosedError, StreamLimitError
from synctalk_common import contract
from synctalk_ops.process_tree import server_cpu_seconds, server_processes
from synctalk_preprocessing import video
from tests.e2e.one_frame_avatar import loaded_avatar
from tests.synctalk2d_reference import psnr

pytestmark = pytest.mark.e2e

SPF = contract.SAMPLES_PER_FRAME
PERF_OUT = paths.BUILD / "perf" / "live-test"
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
SECONDS = 1.3  # 32 frames of 40 ms: longer than the avatar's 4 images (ping-pong) and its lookahead


@contextlib.contextmanager
def avatar_with_images(server, tmp_path_factory, avatar_id: str, audio_preset: str, silent_frames: bool = False):
    import cv2

    folder = tmp_path_factory.mktemp(avatar_id)
    for i, colour in enumerate(COLOURS):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((72, 96, 3), colour[::-1], np.uint8))
    with loaded_avatar(
        server, avatar_id, folder, [16, 4, 80, 68], audio_preset=audio_preset, silent_frames=silent_frames
    ):
        yield avatar_id


@pytest.fixture(scope="module")
def avatars(server, tmp_path_factory):
    """Two avatars of four images each, one per audio front end: {preset: avatar id}."""
    with contextlib.ExitStack() as stack:
        yield {
            preset: stack.enter_context(avatar_with_images(server, tmp_path_factory, f"live_{preset}", preset))
            for preset in contract.AUDIO_PRESETS
        }


@pytest.fixture(scope="module", params=contract.AUDIO_PRESETS)
def live_avatar(request, avatars):
    return avatars[request.param]


@pytest.fixture(scope="module")
def avatar(avatars):
    """The avatar of the tests that need one: SyncTalk_2D's front end, what trained avatars use."""
    return avatars["synctalk2d"]


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


def test_an_h264_stream_is_the_rendered_clip_encoded(server, live_avatar, clip, rendered):
    """codec="h264": each frame one access unit, encoded on the server as the frames are rendered
    (a SyncTalk_2D avatar's frames from <id>_from_features, the other's JPEGs decoded), a key frame
    first and where asked; a new bitrate mid-stream; decoded, the rendered clip."""
    import simplejpeg

    frames = []
    with LiveStream(server.grpc_url, live_avatar, codec="h264", bitrate_kbps=1500) as live:
        for k, position in enumerate(range(0, len(clip), SPF)):
            if k == 18:
                live.request_key_frame()
            if k == 24:
                live.set_bitrate(3000)
            frames += live.send(clip[position : position + SPF])
        frames += live.end()
    assert [f.index for f in frames] == list(range(len(rendered))), "every frame once, in order"
    assert not any(f.jpeg for f in frames) and all(f.h264 for f in frames)
    keys = [f.index for f in frames if f.key_frame]
    assert keys[0] == 0 and len(keys) >= 3, f"a key frame first, on request, at the new bitrate: {keys}"
    decoded = video.decode([f.h264 for f in frames])
    assert len(decoded) == len(rendered)
    expected = [simplejpeg.decode_jpeg(jpeg, colorspace="RGB") for jpeg in rendered]
    worst = min(psnr(a, b) for a, b in zip(decoded, expected))
    assert worst > 30, f"the rendered frames, encoded: PSNR {worst:.1f} dB at worst"


def test_video_controls_are_checked_and_the_stream_lives_on(server, avatar, clip):
    with LiveStream(server.grpc_url, avatar, codec="h264") as live:
        live.send(clip[:SPF])
        live.set_bitrate(50)
        with pytest.raises(Exception, match="VIDEO_BITRATE_KBPS: bitrate 50 kbit/s: use 100 to 20000"):
            live.send(clip[SPF : 2 * SPF])
        frames = live.send(clip[2 * SPF : 20 * SPF])
        assert frames and all(f.h264 for f in frames), "the stream lives on"
    with LiveStream(server.grpc_url, avatar) as jpeg:
        jpeg.send(clip[:SPF])
        jpeg.request_key_frame()
        with pytest.raises(Exception, match="FORCE_KEY_FRAME: stream [0-9]+ sends JPEGs; its start request asks"):
            jpeg.send(clip[SPF : 2 * SPF])
        assert all(f.jpeg for f in jpeg.send(clip[2 * SPF : 20 * SPF])), "the stream lives on"
    bad = LiveStream(server.grpc_url, avatar)
    bad.codec = "vp8"  # past the client's own check
    try:
        with pytest.raises(Exception, match=r"VIDEO_CODEC: 'vp8': use one of \('jpeg', 'h264'\)"):
            bad.send(clip[:SPF])
    finally:
        bad.close()
    with pytest.raises(ValueError, match="codec"):
        LiveStream(server.grpc_url, avatar, codec="vp8")


def executions(server, model: str) -> tuple[int, int]:
    """(requests, executions) Triton counted for ``model``."""
    from synctalk_client import CompositeClient

    with CompositeClient(server.grpc_url) as client:
        stats = client.model_stats(model)[model]
    return int(stats["inference_count"]), int(stats["execution_count"])


def test_a_stream_behind_its_audio_catches_up_in_bigger_batches(server, live_avatar, clip, rendered):
    """40 ms chunks sent at once, without waiting for frames (a client whose audio comes faster
    than its frames render): the requests waiting for the stream's turn bring their audio to it,
    so the frames render in batches of several; every frame still comes once, in order, with the
    rendered clip's JPEG bytes."""
    generator = contract.avatar_models(live_avatar)["generator"]
    frames_before, runs_before = executions(server, generator)
    answers: queue.Queue = queue.Queue()
    with LiveStream(server.grpc_url, live_avatar) as live:
        chunks = [clip[i : i + SPF] for i in range(0, len(clip), SPF)]
        for chunk in chunks[:-1]:
            live.send_async(chunk, lambda frames, error: answers.put((frames, error)))
        live.send_async(chunks[-1], lambda frames, error: answers.put((frames, error)), end=True)
        got = [answers.get(timeout=60) for _ in chunks]
    assert not [error for _, error in got if error is not None]
    frames = [f for batch, _ in got for f in batch]
    assert [f.index for f in frames] == list(range(len(rendered))), "every frame once, in order"
    assert [f.jpeg for f in frames] == rendered, "the same JPEG bytes as render --no-loop-back"
    frames_after, runs_after = executions(server, generator)
    rendered_frames, runs = frames_after - frames_before, runs_after - runs_before
    assert rendered_frames == len(rendered)
    assert runs <= rendered_frames / 2, f"{rendered_frames} frames in {runs} generator runs: batches grew"
    assert sum(1 for batch, _ in got if not batch) >= len(chunks) / 3, "requests that found their frames taken"


def test_a_stream_encodes_each_audio_window_once(server, avatar, clip):
    """One 40 ms chunk a request, the frames answered one by one: a SyncTalk_2D avatar's frame
    needs 16 encoded windows, 15 of them its neighbours' too. The stream encodes each window once
    with the window encoder (the frames before the end request: frames + 15 windows; the end
    request, which moves the clip's last windows, its own frames + 15 afresh), never the
    16-neighbour encoder, and the frames are the rendered clip's."""
    from_features = contract.avatar_models(avatar, synctalk2d=True)["from_features"]
    counted = (contract.SYNCTALK2D_WINDOW_ENCODER_MODEL, contract.SYNCTALK2D_AUDIO_ENCODER_MODEL, from_features)
    before = {m: executions(server, m)[0] for m in counted}
    with LiveStream(server.grpc_url, avatar) as live:
        paced = [f for i in range(0, len(clip), SPF) for f in live.send(clip[i : i + SPF])]
        last = live.end()
    encoded, neighbours, rendered = (executions(server, m)[0] - before[m] for m in counted)
    assert [f.index for f in paced + last] == list(range(len(paced) + len(last)))
    assert paced and last
    edge = contract.AUDIO_NEIGHBOURS - 1
    assert encoded == (len(paced) + edge) + (len(last) + edge), "each window once (the end's afresh)"
    assert neighbours == 0 and rendered == len(paced) + len(last)


def test_a_frame_comes_once_its_lookahead_has_arrived(server, avatar, clip):
    with LiveStream(server.grpc_url, avatar) as live:
        assert live.send(clip[: contract.STREAM_LOOKAHEAD]) == [], "no frame has its lookahead yet"
        assert [f.index for f in live.send(clip[contract.STREAM_LOOKAHEAD : contract.STREAM_LOOKAHEAD + SPF])] == [0]
        assert live.send(np.zeros(0, np.int16)) == [], "an empty chunk is an answer of no frames"
        assert [
            f.index for f in live.send(clip[contract.STREAM_LOOKAHEAD + SPF : contract.STREAM_LOOKAHEAD + 4 * SPF])
        ] == [1, 2, 3]


def test_request_bytes_per_frame_are_the_audio_itself(server, avatar, clip):
    """What a live client's requests carry: the new audio (640 int16 samples a frame) and, on the
    first request only, the avatar's name; measured on the tensors LiveStream sends."""
    with LiveStream(server.grpc_url, avatar) as live:
        first = live._inputs(clip[: 10 * SPF])
        live.send(clip[: 10 * SPF])
        later = live._inputs(clip[10 * SPF : 20 * SPF])
    assert sum(len(i._raw_content) for i in later) / 10 == 1280, "1,280 bytes a frame: the int16 audio itself"
    assert sum(len(i._raw_content) for i in first) - 10 * 1280 < 64, "the start adds the avatar's name"


def test_limits_and_errors_have_clear_answers(server, avatar, clip):
    with LiveStream(server.grpc_url, avatar) as live:
        live.send(clip[:SPF])
        with pytest.raises(Exception, match="AUDIO_CHUNK: 1 of 640 samples are NaN or Inf"):
            live.send(np.where(np.arange(SPF) == 3, np.nan, 0.0).astype(np.float32))
        with pytest.raises(Exception, match="AUDIO_CHUNK_INT16: 16001 samples in one request; at most 16000"):
            live.send(np.zeros(16001, np.int16))
        live.send(clip[SPF : 2 * SPF])  # the stream lives on
    never = LiveStream(server.grpc_url, avatar, stream_id=987654321)
    try:
        never._started = True  # a client that skips the start request
        with pytest.raises(StreamClosedError, match="987654321"):
            never.send(clip[:SPF])
    finally:
        never.close()
    with pytest.raises(Exception, match="model not found: nobody"):
        with LiveStream(server.grpc_url, "nobody") as live:
            live.send(clip[:SPF])


def test_stream_n_plus_1_is_refused_at_once_and_a_freed_place_is_taken(server, avatar, clip):
    limit = 8  # model_repository/stream: max_streams
    streams = [LiveStream(server.grpc_url, avatar) for _ in range(limit + 1)]
    try:
        for live in streams[:limit]:
            assert live.send(clip[:SPF]) == []
        started = time.perf_counter()
        with pytest.raises(StreamLimitError, match=f"stream limit {limit} reached"):
            streams[limit].send(clip[:SPF])
        assert time.perf_counter() - started < 2.0, "refused at once, not queued for a slot"
        streams[0].end()
        retry = LiveStream(server.grpc_url, avatar)
        streams.append(retry)
        assert retry.send(clip[:SPF]) == [], "the place a stream left is taken"
    finally:
        for live in streams:
            with contextlib.suppress(Exception):
                live.__exit__(None, None, None)


def test_streams_closed_with_their_answers_cancelled_leave_no_thread_behind(server, avatar, clip):
    """``close(cancel=True)`` (a viewer left: what the server still owes is nobody's) ends the
    stream's threads here too: tritonclient's cancel leaves gRPC's request thread waiting unless the
    stream ends its requests."""

    def cancelled_stream() -> None:
        live = LiveStream(server.grpc_url, avatar)
        live.send_async(clip[: 4 * SPF], lambda *_: None)
        live.close(cancel=True)

    cancelled_stream()
    before = threading.active_count()
    for _ in range(5):
        cancelled_stream()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before, [thread.name for thread in threading.enumerate()]


IDLE_S = 10  # model_repository/stream: max_sequence_idle_microseconds


@pytest.fixture(scope="module")
def idle_stream(server, avatar, clip):
    """A stream sent one frame's audio, then nothing: opened by the thousand short streams' test
    (which, with the tests after it, takes longer than the idle timeout: its wait is theirs), its
    expiry checked by the idle test. Yields the stream and when it was last sent to."""
    live = LiveStream(server.grpc_url, avatar)
    try:
        assert live.send(clip[:SPF]) == []
        yield live, time.monotonic()
    finally:
        live.close(cancel=True)  # not ended: it expires (or has) on the server


def test_a_thousand_short_streams_leave_the_servers_memory_where_it_was(server, avatars, clip, idle_stream):
    avatar = avatars["reference"]  # a clip under one 40 ms frame renders none: the streams' cost is their state

    def stream_stub_rss() -> int:
        return sum(v for k, v in server_processes(server.process.pid).items() if k.startswith("stub:stream"))

    def short_streams(n: int, first_id: int) -> None:
        """n streams one after the other on one gRPC stream (Triton's sequences need not have one
        each): start with 600 samples of audio, then end, each request answered before the next."""
        answers = queue.Queue()
        with grpcclient.InferenceServerClient(server.grpc_url) as triton:
            triton.start_stream(callback=lambda result, error: answers.put(error))
            for stream_id in range(first_id, first_id + n):
                for start, end in ((True, False), (False, True)):
                    audio = clip[:600] if start else clip[:0]  # the clip: under one 40 ms frame
                    chunk = grpcclient.InferInput(contract.STREAM_AUDIO_INT16.name, [len(audio)], "INT16")
                    chunk.set_data_from_numpy(audio)
                    name = grpcclient.InferInput(contract.STREAM_AVATAR.name, [1], "BYTES")
                    name.set_data_from_numpy(np.array([avatar.encode()], dtype=np.object_))
                    inputs = [chunk, name] if start else [chunk]
                    triton.async_stream_infer(
                        contract.STREAM_MODEL, inputs, sequence_id=stream_id, sequence_start=start, sequence_end=end
                    )
                    assert answers.get(timeout=30) is None
            triton.stop_stream()

    short_streams(50, first_id=10_000)  # the allocator settles
    before = stream_stub_rss()
    started = time.perf_counter()
    short_streams(1000, first_id=20_000)
    after = stream_stub_rss()
    print(
        f"1000 short streams in {time.perf_counter() - started:.1f} s; stream model RSS "
        f"{before / 2**20:.1f} -> {after / 2**20:.1f} MiB"
    )
    assert after - before < 8 * 2**20, "a stream's state is freed at its end"


@pytest.mark.parametrize("live_avatar", ["synctalk2d"], indirect=True)
def test_the_cli_streams_a_file_and_a_pipe_and_reports_the_delay(server, live_avatar, clip, rendered, tmp_path):
    with wave.open(str(tmp_path / "speech.wav"), "wb") as w:  # the int16 samples as they are
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(contract.SAMPLE_RATE)
        w.writeframes(clip.astype("<i2").tobytes())
    command = [sys.executable, "-m", "synctalk_client.cli", "--url", server.grpc_url, "stream", "--avatar", live_avatar]
    played = subprocess.run(
        [*command, "--audio", str(tmp_path / "speech.wav"), "--chunk-ms", "20", "--realtime"]
        + ["--out", str(tmp_path / "live.mp4"), "--frames-dir", str(tmp_path / "file")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert played.returncode == 0, played.stderr
    summary = json.loads(played.stdout)
    print({k: summary[k] for k in ("frames", "first_frame_ms", "delay_p50_ms", "delay_p99_ms")})
    assert summary["frames"] == len(rendered) and summary["delay_p50_ms"] > 0
    assert summary["first_frame_ms"] >= 500, "the first frame waits for its 0.5 s of lookahead, played at real time"
    assert [p.read_bytes() for p in sorted((tmp_path / "file").iterdir())] == rendered
    assert (tmp_path / "live.mp4").stat().st_size > 1000
    piped = subprocess.run(  # raw s16le PCM on stdin, as a TTS engine or arecord writes it
        [*command, "--audio", "-", "--chunk-ms", "100", "--frames-dir", str(tmp_path / "pipe")],
        input=clip.astype("<i2").tobytes(),
        capture_output=True,
        timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    assert [p.read_bytes() for p in sorted((tmp_path / "pipe").iterdir())] == rendered
    refused = subprocess.run(
        [*command[:-2], "--avatar", "demo", "--audio", str(tmp_path / "speech.wav")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "demo is not an avatar" in refused.stderr, refused.stderr


def test_text_renders_and_streams_as_the_same_frames(server, avatar, tmp_path):
    """``render --text`` and ``stream --text`` (espeak-ng, sentence by sentence in the stream): the
    speech of the text, rendered and streamed, frame for frame; the MP4 has the voice."""
    text = "Hello there. The avatar reads this text aloud!"
    engine = "espeak:en"
    command = [sys.executable, "-m", "synctalk_client.cli", "--url", server.grpc_url]
    rendered = subprocess.run(
        [*command, "render", "--avatar", avatar, "--text", text, "--tts", engine, "--no-loop-back", "--quiet"]
        + ["--out", str(tmp_path / "said.mp4"), "--frames-dir", str(tmp_path / "rendered")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert rendered.returncode == 0, rendered.stderr
    streamed = subprocess.run(
        [*command, "stream", "--avatar", avatar, "--text", text, "--tts", engine, "--chunk-ms", "200"]
        + ["--frames-dir", str(tmp_path / "streamed")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert streamed.returncode == 0, streamed.stderr
    frames = [p.read_bytes() for p in sorted((tmp_path / "rendered").iterdir())]
    assert len(frames) > 2 * contract.FPS, "two sentences: seconds of speech"
    assert [p.read_bytes() for p in sorted((tmp_path / "streamed").iterdir())] == frames
    probe = subprocess.run(
        [sys.executable, "-c", "import av, sys; c = av.open(sys.argv[1]); print(len(c.streams.audio))"]
        + [str(tmp_path / "said.mp4")],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "1", "the voice is in the MP4"
    refused = subprocess.run(
        [*command, "render", "--avatar", avatar, "--text", text, "--tts", "nothing"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "--tts nothing" in refused.stderr, refused.stderr


def test_perf_analyzer_load_tests_streams_in_sequence_mode(server, avatar):
    from benchmarks import live_streams

    row = live_streams.measure(server.grpc_url, avatar, n_streams=2, seconds=3.0, out=PERF_OUT)
    print(row)
    assert row["streams"] == 2 and row["achieved_per_s"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]


@pytest.fixture(scope="module")
def quiet(server, tmp_path_factory):
    """An avatar with silent frames: its own images where the audio is silent."""
    with avatar_with_images(server, tmp_path_factory, "live_quiet", "synctalk2d", silent_frames=True) as avatar_id:
        yield avatar_id


def plain(images) -> list[bool]:
    """Whether each frame's face is one of the avatar's own images (an idle frame), not the generator's."""
    return [any(np.abs(image[10:62, 22:74].astype(int) - colour).mean() < 4 for colour in COLOURS) for image in images]


def test_silent_frames_skip_the_generator_and_an_idle_stream_costs_less(server, avatar, clip, quiet):
    import simplejpeg

    # 1 s of silence, 0.6 s of speech, 1 s of silence: the frames whose audio (and 0.5 s each
    # side) is silent are the avatar's own images, the others the generator's
    speech = clip[: int(0.6 * contract.SAMPLE_RATE)]
    silence = np.zeros(contract.SAMPLE_RATE, np.int16)
    audio = np.concatenate([silence, speech, silence])
    frames = stream_clip(server.grpc_url, quiet, audio, [SPF])
    assert [f.index for f in frames] == list(range(contract.synctalk2d_frame_count(len(audio))))
    idle = plain(simplejpeg.decode_jpeg(f.jpeg, colorspace="RGB") for f in frames)
    assert all(idle[:8]) and all(idle[-8:]), "silent frames: the avatar's images"
    assert not any(idle[30:35]), "speech: the generator's faces"
    # the same as H.264: the avatar's images (the background step's frames, encoded) and faces
    with LiveStream(server.grpc_url, quiet, codec="h264") as live:
        units = [f.h264 for i in range(0, len(audio), SPF) for f in live.send(audio[i : i + SPF])]
        units += [f.h264 for f in live.end()]
    assert plain(video.decode(units)) == idle
    # what an idle stream costs: 3 s of silence played at real time, with and without
    costs = {}
    for name, avatar_id in (("silent_frames", quiet), ("generator", avatar)):
        before = server_cpu_seconds(server.process.pid)
        with LiveStream(server.grpc_url, avatar_id) as live:
            started = time.perf_counter()
            for k in range(75):  # 3 s in 40 ms chunks
                time.sleep(max(0.0, started + (k + 1) * 0.04 - time.perf_counter()))
                live.send(np.zeros(SPF, np.int16))
            live.end()
        costs[name] = server_cpu_seconds(server.process.pid) - before
    print(f"server CPU for 3 s of an idle stream: {costs}")
    assert costs["silent_frames"] < costs["generator"]


def test_a_stream_idle_past_the_timeout_expires_and_says_so(idle_stream, clip):
    live, sent_at = idle_stream
    time.sleep(max(0.0, sent_at + IDLE_S + 1.5 - time.monotonic()))
    with pytest.raises(StreamClosedError) as refused:
        live.send(clip[SPF : 2 * SPF])
    print(f"after {time.monotonic() - sent_at:.1f} s idle: {refused.value}")
    assert "expired" in str(refused.value) and str(live.stream_id) in str(refused.value)


@pytest.mark.parametrize("codec", ["jpeg", "h264"])
def test_an_interrupt_drops_the_speech_not_shown_and_the_avatar_idles_then_speaks_again(server, quiet, clip, codec):
    """Speech sent ahead (answers still owed), then an interrupt from frame 20, the frames the
    viewer has not shown: the owed answers' frames from 20 are dropped, frames 20 on come again as
    the avatar's idle frames, the frame numbers go on with no jump, and the next speech is mouthed.
    H.264: the whole sequence decodes."""
    import simplejpeg

    answers: queue.Queue = queue.Queue()
    collect = lambda frames, error: answers.put((frames, error))  # noqa: E731
    speech = np.concatenate([clip, clip])  # 2.6 s
    sent = 0
    with LiveStream(server.grpc_url, quiet, codec=codec) as live:
        for position in range(0, int(1.4 * contract.SAMPLE_RATE), SPF):  # 1.4 s, not waiting for answers
            live.send_async(speech[position : position + SPF], collect)
            sent += 1
        live.send_async(None, collect, interrupt=20)  # the viewer has seen frames 0 .. 19
        frames = []
        for _ in range(sent + 1):
            got, error = answers.get(timeout=60)
            assert error is None, error
            frames += got
        cut_answer = len(frames)
        assert [f.index for f in frames] == list(range(len(frames))) and len(frames) > 20
        assert frames[20].index == 20 and len(frames) <= 22 + 1, "from 20: only the interrupt's idle frames"
        # silence for 0.4 s, then the next speech, then the end
        following = np.concatenate([np.zeros(10 * SPF, np.int16), speech[int(1.4 * contract.SAMPLE_RATE) :]])
        for position in range(0, len(following), SPF):
            frames += live.send(following[position : position + SPF])
        frames += live.end()
    assert [f.index for f in frames] == list(range(len(frames))), "every frame once, in order: no jump"
    if codec == "jpeg":
        images = [simplejpeg.decode_jpeg(f.jpeg, colorspace="RGB") for f in frames]
    else:
        # frame 20 is a key frame where the stream had encoded frames from 20 before the cut (which
        # the viewer never gets); where the requests ahead of the interrupt stopped before 20, it
        # follows frame 19: either way the whole sequence decodes to what was rendered
        images = video.decode([f.h264 for f in frames])
        assert len(images) == len(frames)
    idle = plain(images)
    assert not any(idle[5:20]), "the speech before the interrupt is mouthed"
    assert all(idle[20:cut_answer]) and all(idle[20:30]), "idle frames from the cut at once"
    talking = [i for i, quiet_frame in enumerate(idle) if not quiet_frame and i > 20]
    assert talking and talking[0] < 20 + 10 + 12 + 13, "the next speech is mouthed"
