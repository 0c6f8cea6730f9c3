"""The web page (``synctalk-client web``) in a real browser: headless Chromium, driven through
chromedriver by Selenium, against the page's server (the real CLI, in its own process) and the
live CPU-profile server. Screenshots of both tabs go to build/web/ (the README's come from there)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from devtools.browser import (
    WAIT_S,
    choose,
    chromium_driver,
    element,
    models_loaded,
    page_server,
    shown,
    switch_tab,
    wait,
)
from synctalk_build import paths
from synctalk_client import CompositeClient, synthetic
from synctalk_client.render import write_wav
from synctalk_common import contract
from tests.conftest import free_port
from tests.e2e.one_frame_avatar import one_frame_avatar
from tests.e2e.test_live_stream import COLOURS as PLAIN_COLOURS
from tests.e2e.test_live_stream import avatar_with_images

pytestmark = pytest.mark.e2e
AVATAR = "webpage"
SCREENSHOTS = paths.BUILD / "web"
FRAME_S = 1 / contract.FPS


@pytest.fixture(scope="module")
def avatar(server, tmp_path_factory):
    with one_frame_avatar(server, tmp_path_factory, AVATAR) as avatar_id:
        yield avatar_id


@pytest.fixture(scope="module")
def page(server, avatar):
    with page_server(server.grpc_url, paths.BUILD / "logs" / "test-web-page.log") as url:
        yield url


@pytest.fixture(scope="module")
def microphone(tmp_path_factory) -> Path:
    """What Chromium's microphone says: 4 s of speech-like audio (48 kHz WAV), looped."""
    import soxr

    audio = synthetic.speech_like_audio(4 * contract.FPS, seed=17)
    path = tmp_path_factory.mktemp("microphone") / "microphone.wav"
    write_wav(path, soxr.resample(audio, contract.SAMPLE_RATE, 48_000).astype(np.float32), 48_000)
    return path


@pytest.fixture(scope="module")
def browser(microphone):
    driver = chromium_driver(microphone)
    yield driver
    driver.quit()


@pytest.fixture()
def opened(browser, page):
    """The page freshly opened, its model list loaded."""
    browser.get(page)
    models_loaded(browser)
    return browser


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """1.6 s of speech-like audio as a 16 kHz WAV: 40 frames of 40 ms."""
    audio = synthetic.speech_like_audio(40, seed=13)[: 40 * contract.SAMPLES_PER_FRAME]
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    write_wav(path, audio)
    return path, audio


def voice_slipped_s(page: str) -> float:
    """How long the voices of the page server's peers have waited for late frames, in all (the
    server behind: each wait is a gap in the voice, which Chromium answers by growing its audio
    buffer by it, the voice heard that much later until its A/V sync catches up)."""
    with urllib.request.urlopen(f"{page}webrtc/peers", timeout=10) as response:
        return sum(peer["voice_slipped_s"] for peer in json.load(response)["peers"])


def options(browser, select_id: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, f"#{select_id} option")]


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.int16)


def test_the_page_lists_the_servers_avatars(opened, server, avatar):
    with CompositeClient(server.grpc_url) as client:
        ids = client.model_ids()
        avatars = [m for m in ids if client.takes_audio_only(m)]
    assert avatar in avatars and contract.DEFAULT_MODEL_ID in ids
    assert sorted(options(opened, "render-model")) == sorted(ids)
    assert sorted(options(opened, "live-model")) == sorted(avatars)  # a stream needs an avatar
    assert shown(opened, "models-error") == ""


def test_an_uploaded_wav_renders_and_plays_for_as_long_as_the_audio(opened, avatar, speech):
    path, audio = speech
    choose(opened, "render-model", avatar)
    element(opened, "render-audio").send_keys(str(path))
    element(opened, "render-go").click()
    wait(opened, lambda: not element(opened, "render-result").get_attribute("hidden") or shown(opened, "render-error"))
    assert shown(opened, "render-error") == ""
    video = element(opened, "render-video")
    wait(opened, lambda: opened.execute_script("return arguments[0].readyState", video) >= 1)  # metadata
    duration = opened.execute_script("return arguments[0].duration", video)
    assert abs(duration - len(audio) / contract.SAMPLE_RATE) <= FRAME_S + 1e-3, duration
    opened.execute_script("arguments[0].muted = true; arguments[0].play()", video)
    wait(opened, lambda: opened.execute_script("return arguments[0].currentTime", video) > 0.2, timeout=20)
    timings = element(opened, "render-timings").text
    assert "generator" in timings and "paste-back and JPEG" in timings, timings
    assert element(opened, "render-download").get_attribute("href").endswith(f"download={avatar}.mp4")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    opened.save_screenshot(str(SCREENSHOTS / "render.png"))


def test_the_live_tab_plays_a_file_as_a_live_source(opened, server, avatar, speech):
    path, audio = speech
    switch_tab(opened, "live")
    choose(opened, "live-model", avatar)
    choose(opened, "live-transport", "websocket")
    element(opened, "live-source-file").click()
    element(opened, "live-file").send_keys(str(path))
    element(opened, "live-start").click()
    frame = element(opened, "live-frame")
    wait(opened, lambda: int(frame.get_attribute("data-index")) >= 2 or shown(opened, "live-error"))
    assert shown(opened, "live-error") == ""
    wait(opened, lambda: opened.execute_script("return arguments[0].complete && arguments[0].naturalWidth", frame))
    early = pixels(frame.screenshot_as_png)
    wait(opened, lambda: element(opened, "live-status").text.startswith(("ended", "stopped")))
    assert shown(opened, "live-error") == ""
    wait(opened, lambda: opened.execute_script("return arguments[0].complete && arguments[0].naturalWidth", frame))
    late = pixels(frame.screenshot_as_png)
    assert early.shape == late.shape and np.abs(early - late).max() > 0, "the frames change as the avatar speaks"
    with CompositeClient(server.grpc_url) as client:
        expected = client.frames_for_audio(avatar, len(audio))
    assert int(element(opened, "live-frames").text) == expected
    assert element(opened, "live-status").text == f"ended: {expected} frames"
    assert int(frame.get_attribute("data-index")) == expected - 1  # every frame up to the last was due
    delay = int(re.match(r"(\d+) ms", element(opened, "live-delay").text).group(1))
    lookahead_ms = contract.STREAM_LOOKAHEAD * 1000 // contract.SAMPLE_RATE
    assert delay >= lookahead_ms, "no frame before the half second of audio after it"
    print(f"the page's measured delay behind the voice: {delay} ms; serving {element(opened, 'live-serving').text}")
    opened.save_screenshot(str(SCREENSHOTS / "live.png"))


def test_the_microphone_records_for_a_render_and_streams_live(opened, server, avatar):
    """Chromium's fake microphone (a beep) through the page's AudioWorklet: a recording rendered,
    then a live stream started and stopped by hand."""
    element(opened, "render-record").click()
    wait(opened, lambda: element(opened, "render-record").text == "Stop recording" or shown(opened, "render-error"))
    assert shown(opened, "render-error") == ""
    time.sleep(1.0)  # speak for a second
    element(opened, "render-record").click()
    seconds = float(re.match(r"recorded ([\d.]+) s", element(opened, "render-recorded").text).group(1))
    assert seconds >= 0.8
    choose(opened, "render-model", avatar)
    element(opened, "render-go").click()
    wait(opened, lambda: not element(opened, "render-result").get_attribute("hidden") or shown(opened, "render-error"))
    assert shown(opened, "render-error") == ""
    assert re.match(r"\d+ frames", element(opened, "render-status").text)
    switch_tab(opened, "live")
    choose(opened, "live-model", avatar)
    choose(opened, "live-transport", "websocket")
    element(opened, "live-source-mic").click()
    element(opened, "live-start").click()
    frame = element(opened, "live-frame")
    wait(opened, lambda: int(frame.get_attribute("data-index")) >= 2 or shown(opened, "live-error"))
    assert shown(opened, "live-error") == ""
    opened.execute_script(SENDS_AFTER_THE_END)
    element(opened, "live-stop").click()
    wait(opened, lambda: element(opened, "live-status").text.startswith(("ended", "stopped")))
    assert shown(opened, "live-error") == ""
    received = int(element(opened, "live-frames").text)
    assert element(opened, "live-status").text == f"ended: {received} frames" and received >= 3
    time.sleep(0.2)  # blocks the worklet had posted: none of them is sent
    assert opened.execute_script("return window.sentAfterEnd") == []


# the Live tab's <video>: a checksum of its picture now (drawn on a canvas)
PICTURE_MEAN = """
const video = document.getElementById("live-video"), canvas = document.createElement("canvas");
canvas.width = video.videoWidth; canvas.height = video.videoHeight;
const context = canvas.getContext("2d");
context.drawImage(video, 0, 0);
const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
let sum = 0;
for (let i = 0; i < data.length; i += 4) sum += (i % 997) * (data[i] + 3 * data[i + 1] + 7 * data[i + 2]);
return sum;
"""


def test_the_live_tab_plays_webrtc_from_the_microphone_in_sync(opened, page, avatar):
    """The microphone (a WAV of speech) over WebRTC: the avatar's H.264 video and its voice in a
    <video>, ~25 frames a second that change, under 3 Mbit/s, audio and video played within 80 ms
    of each other (audio minus video estimatedPlayoutTimestamp from getStats())."""
    switch_tab(opened, "live")
    choose(opened, "live-model", avatar)
    element(opened, "live-source-mic").click()
    assert element(opened, "live-transport").get_attribute("value") == "webrtc", "WebRTC unless asked otherwise"
    element(opened, "live-start").click()

    def stats() -> list:
        return json.loads(opened.execute_script("return document.body.dataset.liveStats || '[]'"))

    wait(opened, lambda: len(stats()) >= 3 or shown(opened, "live-error"), timeout=60)
    assert shown(opened, "live-error") == ""
    pictures = []
    for _ in range(8):
        time.sleep(0.5)
        pictures.append(opened.execute_script(PICTURE_MEAN))
    wait(opened, lambda: len(stats()) >= 10, timeout=30)
    steady, slipped = stats()[3:], voice_slipped_s(page)
    rate = (steady[-1]["framesDecoded"] - steady[0]["framesDecoded"]) / (len(steady) - 1)
    offsets = [s["offsetMs"] for s in steady if s["offsetMs"] is not None]
    print(
        f"WebRTC in Chromium: {rate:.1f} frames/s decoded, {max(s['kbps'] for s in steady):.0f} kbit/s at most, "
        f"audio minus video {offsets} ms, the page's delay {element(opened, 'live-delay').text}, "
        f"voice concealed by the browser {steady[-1]['concealedMs']:.0f} ms, the voice waited for late frames "
        f"{1000 * slipped:.0f} ms"
    )
    assert 21 <= rate <= 29, "about 25 frames a second"
    assert max(s["kbps"] for s in steady) < 3000
    assert len(set(pictures)) >= 4, f"the frames change with the speech: {pictures}"
    # a voice that waited for late frames is played that much later for a while (see voice_slipped_s:
    # measured 90-200 ms after a 140 ms wait; a known limit of timestamps that do not carry the wait)
    assert offsets and abs(float(np.median(offsets))) <= 80 + 1000 * slipped, f"audio and video in sync: {offsets}"
    opened.save_screenshot(str(SCREENSHOTS / "live-webrtc.png"))
    element(opened, "live-stop").click()
    assert element(opened, "live-status").text == "stopped" and shown(opened, "live-error") == ""


# the page's live socket watched: what it sends after the end message
SENDS_AFTER_THE_END = """
const socket = live.socket, send = socket.send.bind(socket);
let ended = false;
window.sentAfterEnd = [];
socket.send = (data) => {
  if (ended) window.sentAfterEnd.push(typeof data === "string" ? data : `${data.byteLength} bytes`);
  if (typeof data === "string" && JSON.parse(data).end) ended = true;
  send(data);
};
"""


def live_socket(page: str, avatar: str, messages: list) -> list:
    """The page's live WebSocket driven as a page would, without one: the avatar, then each of
    ``messages`` (a dict as JSON, an array as float32 audio) sent back to back once the stream has
    started; what the page's server sends until it closes the socket, frames as their indices."""
    import aiohttp

    async def run() -> list:
        received = []
        async with aiohttp.ClientSession() as session, session.ws_connect(page + "api/live") as ws:
            await ws.send_json({"avatar": avatar})
            received.append(await ws.receive_json())
            assert received[0]["type"] == "started", received
            for message in messages:
                if isinstance(message, dict):
                    await ws.send_json(message)
                else:
                    await ws.send_bytes(np.asarray(message, "<f4").tobytes())
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    received.append(int.from_bytes(message.data[:4], "little"))
                elif message.type == aiohttp.WSMsgType.TEXT:
                    received.append(message.json())
        return received

    return asyncio.run(asyncio.wait_for(run(), WAIT_S))


def test_audio_after_the_end_is_not_an_error(page, server, avatar, speech):
    """Stop mid-word: the page asked for the end while its microphone still posted blocks. Audio
    and a second end after the end reach the page's server and are nothing to send: the stream
    ends well, with the frames of the audio before the end."""
    _, audio = speech
    late = audio[: 4 * contract.SAMPLES_PER_FRAME]
    received = live_socket(page, avatar, [audio, {"end": True}, late, late, {"end": True}])
    with CompositeClient(server.grpc_url) as client:
        expected = client.frames_for_audio(avatar, len(audio))
    messages = [m for m in received if isinstance(m, dict)]
    assert [m["type"] for m in messages] == ["started", "ended"], messages
    assert messages[-1]["frames"] == expected and messages[-1]["samples"] == len(audio)
    assert [m for m in received if isinstance(m, int)] == list(range(expected))


def test_errors_are_messages_on_the_page(opened, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    element(opened, "render-audio").send_keys(str(bad))
    element(opened, "render-go").click()
    wait(opened, lambda: shown(opened, "render-error"))
    assert shown(opened, "render-error").startswith("notes.wav: not a readable audio file")
    # an avatar unloaded after the page listed it
    element(opened, "render-audio").send_keys(str(write_tone(tmp_path)))
    choose(opened, "render-model", "unloaded_meanwhile")
    element(opened, "render-go").click()
    wait(opened, lambda: "model not found" in shown(opened, "render-error"))
    assert shown(opened, "render-error") == contract.MSG_MODEL_NOT_FOUND.format(model_id="unloaded_meanwhile")
    switch_tab(opened, "live")
    choose(opened, "live-model", "unloaded_meanwhile")
    element(opened, "live-source-file").click()
    element(opened, "live-file").send_keys(str(write_tone(tmp_path)))
    element(opened, "live-start").click()
    wait(opened, lambda: shown(opened, "live-error"))
    assert contract.MSG_MODEL_NOT_FOUND.format(model_id="unloaded_meanwhile") in shown(opened, "live-error")
    assert options(opened, "render-model"), "the page lives on"


def test_the_stream_limit_is_a_message_on_the_page(opened, server, avatar, tmp_path):
    """Every place taken by streams the SDK holds open: the page's stream is refused with the
    server's words, and the page lives on."""
    from synctalk_client.stream import LiveStream

    limit = 8  # model_repository/stream: max_streams
    with contextlib.ExitStack() as held:
        for _ in range(limit):
            live = held.enter_context(LiveStream(server.grpc_url, avatar))
            assert live.send(np.zeros(contract.SAMPLES_PER_FRAME, np.float32)) == []
        switch_tab(opened, "live")
        choose(opened, "live-model", avatar)
        element(opened, "live-source-file").click()
        element(opened, "live-file").send_keys(str(write_tone(tmp_path)))
        element(opened, "live-start").click()
        wait(opened, lambda: shown(opened, "live-error"))
        assert f"stream limit {limit} reached" in shown(opened, "live-error")
        assert element(opened, "live-status").text == "stopped"
    assert not element(opened, "live-start").get_attribute("disabled"), "a new stream can be started"


def test_no_server_is_a_message_on_the_page(browser, tmp_path):
    with page_server(f"127.0.0.1:{free_port()}", tmp_path / "web.log") as url:
        browser.get(url)
        wait(browser, lambda: shown(browser, "models-error"))
        assert "server not reachable at 127.0.0.1:" in shown(browser, "models-error")


def write_tone(folder: Path) -> Path:
    path = folder / "tone.wav"
    if not path.exists():
        write_wav(path, 0.3 * np.sin(np.arange(contract.SAMPLE_RATE) * 2 * np.pi * 220 / contract.SAMPLE_RATE))
    return path


# --- plain HTTP: the README's curl call (KServe v2), made with the standard library ------------
def kserve_body(frames: int, binary_data: bool) -> bytes:
    """The README's request: an avatar's audio-only batch, ``frames`` frames of silence."""
    output = {"name": contract.JPEG.name}
    if binary_data:
        output["parameters"] = {"binary_data": True}
    body = {
        "inputs": [
            {"name": contract.AUDIO.name, "datatype": "FP32", "shape": [frames, 640], "data": [0.0] * (frames * 640)},
            {"name": contract.FRAME_INDEX.name, "datatype": "INT64", "shape": [frames, 1], "data": list(range(frames))},
        ],
        "outputs": [output],
    }
    return json.dumps(body).encode()


def kserve_call(server, avatar: str, body: bytes):
    request = urllib.request.Request(
        f"{server.http_url}/v2/models/{avatar}/infer", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.headers, response.read()


def test_a_plain_http_client_gets_the_jpegs_from_the_binary_tail(server, avatar):
    from PIL import Image

    headers, data = kserve_call(server, avatar, kserve_body(2, binary_data=True))
    length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(data[:length])
    (output,) = header["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("JPEG", "BYTES", [2, 1])
    tail = data[length:]
    assert len(tail) == output["parameters"]["binary_data_size"]
    jpegs, at = [], 0
    while at < len(tail):  # each BYTES element: a 4-byte little-endian length, then its bytes
        size = int.from_bytes(tail[at : at + 4], "little")
        jpegs.append(tail[at + 4 : at + 4 + size])
        at += 4 + size
    assert len(jpegs) == 2
    for jpeg in jpegs:
        assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
        assert Image.open(io.BytesIO(jpeg)).size == (96, 64)  # the avatar's frame


def test_without_binary_data_the_http_answer_is_not_json(server, avatar):
    """Why the README asks for binary_data: Triton's JSON writes the JPEG's bytes as they are."""
    _, data = kserve_call(server, avatar, kserve_body(1, binary_data=False))
    with pytest.raises(ValueError):  # UnicodeDecodeError or JSONDecodeError
        json.loads(data)


@pytest.fixture(scope="module")
def agent_avatar(server, tmp_path_factory):
    """Plain images (its idle frames) with silent frames, SyncTalk_2D's front end: idle where the
    voice is silent, and told from a talking frame by its pixels."""
    with avatar_with_images(server, tmp_path_factory, "page_agent", "synctalk2d", silent_frames=True) as avatar_id:
        yield avatar_id


AGENT_TEXT = (
    "Good morning. I can tell you about the weather, the news, and the traffic on your way to work. "
    "Today it will be sunny with a light breeze from the west, and the roads are clear."
)
LOUD = 0.02  # the voice's peak level (of 1) above which it is heard
# the test avatar's face box inside its 96 x 72 frames: an idle frame's is one of PLAIN_COLOURS
PROBE = {"x": 26, "y": 14, "w": 44, "h": 44}


def idle(rgb) -> bool:
    """Whether a frame's face region is one of the avatar's plain images, as H.264 keeps them (within
    12 levels measured) and not the tiny generator's face (20 or more from each)."""
    return any(np.abs(np.asarray(rgb) - colour).mean() < 16 for colour in PLAIN_COLOURS)


def test_typed_text_is_said_an_interrupt_stops_voice_and_mouth_and_events_follow(agent_avatar, opened, page):
    """The Live tab's Text source: text typed is said (the server's espeak-ng) over WebRTC, an
    interrupt mid-sentence stops the voice and the mouth, the next text is said, the speaking events
    arrive in order. Measured from the content at the viewer: the voice's level through Web Audio
    and each displayed frame's pixels (the page's probe, window.SYNCTALK_PROBE)."""
    avatar = agent_avatar
    switch_tab(opened, "live")
    listed = opened.execute_script("return [...document.getElementById('live-model').options].map((o) => o.value)")
    assert avatar in listed and f"{avatar}_from_features" not in listed, "a SyncTalk_2D avatar, not its steps"
    opened.execute_script(
        "document.getElementById('live-model').value = arguments[0]; window.SYNCTALK_PROBE = arguments[1];",
        avatar,
        PROBE,
    )
    element(opened, "live-source-text").click()
    element(opened, "live-start").click()
    wait(opened, lambda: element(opened, "live-say").is_enabled() or shown(opened, "live-error"), timeout=60)
    assert shown(opened, "live-error") == ""

    def events() -> list:
        return json.loads(opened.execute_script("return document.body.dataset.speaking || '[]'"))

    def say(text: str) -> float:
        element(opened, "live-text").send_keys(text)
        return opened.execute_script("document.getElementById('live-say').click(); return performance.now();")

    time.sleep(1.0)  # idle first
    said_at = say(AGENT_TEXT)
    wait(opened, lambda: len(events()) >= 1, timeout=20)
    time.sleep(1.5)  # mid-sentence
    interrupted_at = opened.execute_script(
        "const at = performance.now(); document.getElementById('live-interrupt').click(); return at;"
    )
    wait(opened, lambda: opened.execute_script("return live.interrupted || null"), timeout=10)
    time.sleep(2.0)
    again_at = say("Yes, go on.")
    wait(opened, lambda: len(events()) >= 4, timeout=20)
    time.sleep(0.5)
    heard, shown_frames, cut = opened.execute_script("return [live.heard, live.shown, live.interrupted]")
    slipped = voice_slipped_s(page)
    element(opened, "live-stop").click()

    speaking = events()
    assert [e["speaking"] for e in speaking] == [True, False, True, False], speaking
    assert element(opened, "live-speaking").text == "listening"
    # the interrupt, from the content: the last loud voice after the click, the first idle frame
    loud = [t for t, peak in heard if interrupted_at < t < again_at and peak > LOUD]
    heard_after = (max(loud) - interrupted_at) if loud else 0.0
    after = [(t, index, rgb) for t, index, rgb in shown_frames if t > interrupted_at]
    first_idle = next((t, index) for t, index, rgb in after if idle(rgb))
    idle_after = first_idle[0] - interrupted_at
    stopped_after = speaking[1]["at"] - interrupted_at
    # A/V sync, from the content: the next text's voice heard (its first loud sound) against the
    # frame shown then: the one whose RTP timestamp is the onset's place in the speech
    onset_s = speaking[2]["t"]
    heard_at = next(t for t, peak in heard if t > again_at and peak > LOUD)
    displayed = {index: t for t, index, _ in shown_frames}
    near = min(displayed, key=lambda index: abs(index - onset_s * contract.FPS))
    shown_at = displayed[near] + (onset_s * contract.FPS - near) * 1000 / contract.FPS
    offset = heard_at - shown_at
    first_word = next(t for t, peak in heard if t > said_at and peak > LOUD) - said_at
    print(
        f"Chromium: first word heard {first_word:.0f} ms after Say; speech heard {heard_after:.0f} ms after the "
        f"interrupt, first idle frame {idle_after:.0f} ms "
        f"(frame {first_idle[1]}, the cut from {cut['from_frame']}), 'stopped' {stopped_after:.0f} ms; "
        f"voice onset heard minus shown {offset:.0f} ms; the voice waited for late frames {1000 * slipped:.0f} ms"
    )
    assert first_word <= 700, "the first word soon: placed just ahead of what is shown"
    # (a voice that waited for a late frame is heard that much later: voice_slipped_s)
    assert heard_after <= 100 + 1000 * slipped, "at most 100 ms of speech heard after the call"
    assert idle_after <= 200, "idle frames within 200 ms"
    # the cut's first idle frames come late (rendered after the interrupt; the voice, silent, does
    # not wait for them) and together: Chromium may show the newest of them only
    assert first_idle[1] >= cut["from_frame"] - 1, "no idle frame before the cut"
    cut_on = [idle(rgb) for t, index, rgb in after if index >= cut["from_frame"] and t < again_at]
    assert cut_on and all(cut_on), "the frames from the cut are the idle ones"
    idle_run = [idle(rgb) for t, _, rgb in after if first_idle[0] <= t < first_idle[0] + 1000]
    assert all(idle_run), ("and idle they stay", [(i, [round(c) for c in rgb]) for t, i, rgb in after][:30])
    assert any(not idle(rgb) for t, _, rgb in shown_frames if t > again_at), "the next text is mouthed"
    # and what the voice waited for late frames (voice_slipped_s: measured 130-156 ms behind after
    # waits of 132-278 ms; a known limit of timestamps that do not carry the wait)
    assert abs(offset) <= 100 + 1000 * slipped, "the voice and the mouth within 100 ms, from the content"
