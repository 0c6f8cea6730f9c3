"""The Pipecat voice agent (examples/pipecat_avatar/bot.py, in .venv-agents: ``make agents``) in
headless Chromium against the live CPU-profile server: the avatar's video and voice reach the
browser through Pipecat's SmallWebRTCTransport; text typed is said; an interrupt mid-sentence stops
the voice and the mouth; the bot's speaking state arrives (RTVI). Measured from the content at the
viewer: the voice's level through Web Audio, each displayed frame's pixels (the page's probe)."""

from __future__ import annotations

import contextlib
import re
import time

import numpy as np
import pytest

from devtools.browser import chromium_driver, element, wait
from synctalk_build import paths
from synctalk_common import contract
from synctalk_ops.launched import http_process
from tests.conftest import agents_python, free_port
from tests.e2e.one_frame_avatar import loaded_avatar
from tests.e2e.streams import streams_open
from tests.e2e.test_live_stream import COLOURS

pytestmark = pytest.mark.e2e
BOT = paths.ROOT / "examples" / "pipecat_avatar" / "bot.py"
TEXT = (
    "Good morning. I can tell you about the weather, the news, and the traffic on your way to work. "
    "Today it will be sunny with a light breeze from the west, and the roads are clear."
)
LOUD = 0.02  # the voice's peak level (of 1) above which it is heard
ONSET = 0.005  # the level of the voice's first sound: SpeakingEvent's onset is its first sample above 100 / 32768
# the test avatar: 96 x 72 frames, its face box [16, 4, 80, 68]; an idle frame's face is one of
# COLOURS; the strips left and right of the box (never pasted on) carry the image's number
W, H, BOX = 96, 72, [16, 4, 80, 68]
IMAGES = 400  # frame i is on image i + 1 until frame 398 (16 s): the test's frames, numbered
LEVELS = (40, 128, 216)
PALETTE = np.array([(r, g, b) for r in LEVELS for g in LEVELS for b in LEVELS], np.float64)
REGIONS = [
    {"x": 26, "y": 14, "w": 44, "h": 44},  # the face
    {"x": 3, "y": 12, "w": 9, "h": 48},  # the number's first digit (of 27)
    {"x": 85, "y": 12, "w": 9, "h": 48},  # its second
]
PROBE = [{**region, "frameWidth": W, "frameHeight": H} for region in REGIONS]


BOT_LOG = "test-pipecat-bot.log"
# synctalk_webrtc's line for each time the voice waited for a late frame (tracks.AvatarVoiceTrack)
WAITED = re.compile(r"the voice waited for frame \d+: everything (\d+) ms later")


def voice_waited_ms() -> int:
    """How long the bot's voice has waited for late frames, in all (its log): each wait is a gap in
    the voice, which Chromium answers by growing its audio buffer by it, the voice heard that much
    later until its A/V sync catches up (docs/live-streams-and-webrtc.md, a known limit)."""
    return sum(int(ms) for ms in WAITED.findall((paths.BUILD / "logs" / BOT_LOG).read_text(errors="replace")))


def idle(rgb) -> bool:
    """Whether a frame's face region is one of the avatar's plain images (as VP8 keeps them), not
    the tiny generator's face."""
    return any(np.abs(np.asarray(rgb) - colour).mean() < 16 for colour in COLOURS)


def image_number(first, second) -> int:
    """The image a displayed frame is drawn on, from its two strips' colours."""
    digit = [int(np.argmin(np.abs(PALETTE - np.asarray(rgb)).sum(axis=1))) for rgb in (first, second)]
    return digit[0] * len(PALETTE) + digit[1]


@pytest.fixture(scope="module")
def agent_avatar(server, tmp_path_factory):
    """Plain images with silent frames (idle where the voice is silent), each frame's number on it."""
    import cv2

    folder = tmp_path_factory.mktemp("pipecat_agent")
    for number in range(IMAGES):
        image = np.zeros((H, W, 3), np.uint8)
        image[:] = COLOURS[number % len(COLOURS)]
        image[:, : BOX[0]] = PALETTE[number // len(PALETTE)]
        image[:, BOX[2] :] = PALETTE[number % len(PALETTE)]
        cv2.imwrite(str(folder / f"{number}.png"), image[:, :, ::-1])
    with loaded_avatar(server, "pipecat_agent", folder, BOX, audio_preset="synctalk2d", silent_frames=True) as avatar:
        yield avatar


@contextlib.contextmanager
def bot_process(server, avatar: str, log_name: str):
    """The example, as a user runs it, in the agents' environment: (its page's URL, its process)."""
    port = free_port()
    command = [str(agents_python()), str(BOT), "--url", server.grpc_url, "--avatar", avatar, "--port", str(port)]
    log = paths.BUILD / "logs" / log_name
    with http_process("the Pipecat bot", command, f"http://127.0.0.1:{port}/", log) as process:
        yield f"http://127.0.0.1:{port}/", process
    assert process.returncode == 0, log.read_text()


@pytest.fixture(scope="module")
def bot(server, agent_avatar):
    with bot_process(server, agent_avatar, BOT_LOG) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    driver = chromium_driver()
    yield driver
    driver.quit()


def test_the_pipecat_agent_says_typed_text_and_stops_mid_word_when_interrupted(bot, browser, server, agent_avatar):
    browser.get(bot)
    browser.execute_script("window.PROBE_REGIONS = arguments[0];", PROBE)
    element(browser, "connect").click()
    wait(browser, lambda: element(browser, "send").is_enabled() or element(browser, "error").text, timeout=60)
    assert element(browser, "error").text == "", element(browser, "error").text
    wait(browser, lambda: len(browser.execute_script("return window.probe.shown")) > 25, timeout=60)

    def probe() -> dict:
        return browser.execute_script("return window.probe")

    def say(text: str) -> float:
        element(browser, "text").send_keys(text)
        element(browser, "send").click()
        return probe()["sentAt"]

    time.sleep(1.0)  # idle first
    recent = [face for _, (face, *_) in probe()["shown"][-10:]]
    assert all(idle(face) for face in recent), ("idle frames while nothing is said", recent)
    said_at = say(TEXT)
    wait(browser, lambda: len(probe()["events"]) >= 1, timeout=20)
    time.sleep(1.5)  # mid-sentence
    element(browser, "interrupt").click()
    interrupted_at = probe()["interruptedAt"]
    wait(browser, lambda: len(probe()["events"]) >= 2, timeout=10)
    time.sleep(2.0)
    again_at = say("Yes, go on.")
    wait(browser, lambda: len(probe()["events"]) >= 4, timeout=20)
    time.sleep(0.5)
    seen, waited_ms = probe(), voice_waited_ms()
    element(browser, "disconnect").click()
    disconnected = time.monotonic()
    # the pipeline ends with the viewer (CancelFrame): the avatar's stream with it, its place free
    wait(browser, lambda: streams_open(server, agent_avatar) == [], timeout=15)
    freed_s = time.monotonic() - disconnected

    events, heard = seen["events"], seen["heard"]
    shown = [(t, face, image_number(*strips)) for t, (face, *strips) in seen["shown"]]
    assert [e["speaking"] for e in events] == [True, False, True, False], events
    assert [e["speaking"] for e in seen["content"]] == [True, False, True, False], seen["content"]
    first_word = next(t for t, peak in heard if t > said_at and peak > LOUD) - said_at
    loud = [t for t, peak in heard if interrupted_at < t < again_at and peak > LOUD]
    heard_after = (max(loud) - interrupted_at) if loud else 0.0
    after = [(t, face) for t, face, _ in shown if t > interrupted_at]
    first_idle = next(t for t, face in after if idle(face)) - interrupted_at
    idle_run = [idle(face) for t, face in after if interrupted_at + first_idle <= t < again_at]
    stopped_after = events[1]["at"] - interrupted_at
    # A/V from the content: the next text's voice onset heard, against the frame that shows that
    # place in the speech (its number on it: frame i is on image i + 1), as it is displayed
    onset_s = seen["content"][2]["t"]
    heard_onset = next(t for t, peak in heard if t > again_at and peak > ONSET)
    displayed = {}
    for t, _, number in shown:
        displayed.setdefault(number - 1, t)  # the first time each frame is displayed
    near = min(displayed, key=lambda index: abs(index - onset_s * contract.FPS))
    assert abs(near - onset_s * contract.FPS) <= 2, ("the onset's frame displayed", near, onset_s)
    shown_at = displayed[near] + (onset_s * contract.FPS - near) * 1000 / contract.FPS
    offset = heard_onset - shown_at
    print(
        f"Pipecat in Chromium: first word heard {first_word:.0f} ms after Send; speech heard {heard_after:.0f} ms "
        f"after the interrupt, first idle frame {first_idle:.0f} ms, 'stopped' {stopped_after:.0f} ms; "
        f"the next text's voice onset heard minus shown {offset:.0f} ms; "
        f"the stream's place free {freed_s:.1f} s after the page disconnected; the voice waited for late frames "
        f"{waited_ms} ms"
    )
    assert any(not idle(face) for t, face, _ in shown if said_at < t < interrupted_at), "the text is mouthed"
    # 100-124 ms in runs of this test alone (Pipecat's pipeline and output transport on the way);
    # 153 ms once in the whole suite, after the voice had waited 147 ms for a late speech frame
    # (the bot's log) and Chromium had grown its audio buffer by it
    assert heard_after <= 200, "the voice stops: at most 200 ms of speech heard after the interrupt"
    # idle frames: 90-169 ms in runs of this test alone; in the whole suite on the 2-core host the
    # server was once 270 ms late with frame K (the bot's log: "the voice waited for frame K"), the
    # bot's VP8 encoding, Chromium and the server sharing its cores
    assert first_idle <= 400, "idle frames soon after the interrupt"
    assert all(idle_run), "and idle they stay until the next text"
    assert any(not idle(face) for t, face, _ in shown if t > again_at), "the next text is mouthed"
    # and what the voice waited for late frames (voice_waited_ms; 153 ms once in the whole suite,
    # after a wait of 147 ms)
    assert abs(offset) <= 100 + waited_ms, "the voice and the mouth within 100 ms, from the content"
    assert first_word <= 1500


def test_the_bot_stopped_with_a_viewer_connected_ends_its_stream_and_exits(server, agent_avatar, browser):
    """SIGTERM (an operator's stop, a container's) while a browser is connected: the pipeline is
    cancelled, the avatar's stream ends (its gRPC threads would hold the process), the bot exits 0."""
    with bot_process(server, agent_avatar, "test-pipecat-bot-stopped.log") as (url, process):
        browser.get(url)
        element(browser, "connect").click()
        wait(browser, lambda: element(browser, "send").is_enabled(), timeout=60)
        wait(browser, lambda: len(browser.execute_script("return window.probe.heard")) > 100, timeout=30)
        assert len(streams_open(server, agent_avatar)) == 1, "its stream is open: the limit's last place is refused"
        process.terminate()
        process.wait(timeout=15)
    assert streams_open(server, agent_avatar) == [], "its stream ended with it"
