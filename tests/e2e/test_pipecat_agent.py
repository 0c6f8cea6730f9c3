"""The Pipecat voice agent (examples/pipecat_avatar/bot.py, in .venv-agents: ``make agents``) in
headless Chromium against the live CPU-profile server: the avatar's video and voice reach the
browser through Pipecat's SmallWebRTCTransport; text typed is said; an interrupt mid-sentence stops
the voice and the mouth; the bot's speaking state arrives (RTVI). Measured from the content at the
viewer: the voice's level through Web Audio, each displayed frame's pixels (the page's probe)."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest

from devtools.browser import chromium_driver, element, wait
from synctalk_build import paths
from synctalk_client.stream import LiveStream, StreamLimitError
from synctalk_ops.launched import http_process
from tests.conftest import free_port
from tests.e2e.test_live_stream import COLOURS, avatar_with_images

pytestmark = pytest.mark.e2e
AGENTS_PYTHON = paths.ROOT / ".venv-agents" / "bin" / "python"
BOT = paths.ROOT / "examples" / "pipecat_avatar" / "bot.py"
TEXT = (
    "Good morning. I can tell you about the weather, the news, and the traffic on your way to work. "
    "Today it will be sunny with a light breeze from the west, and the roads are clear."
)
STREAM_LIMIT = 8  # model_repository/stream: max_streams
LOUD = 0.02  # the voice's peak level (of 1) above which it is heard
# the test avatar's face box inside its 96 x 72 frames: an idle frame's is one of COLOURS
PROBE = {"x": 26, "y": 14, "w": 44, "h": 44, "frameWidth": 96, "frameHeight": 72}


def idle(rgb) -> bool:
    """Whether a frame's face region is one of the avatar's plain images (as VP8 keeps them), not
    the tiny generator's face."""
    return any(np.abs(np.asarray(rgb) - colour).mean() < 16 for colour in COLOURS)


@pytest.fixture(scope="module")
def agent_avatar(server, tmp_path_factory):
    with avatar_with_images(server, tmp_path_factory, "pipecat_agent", "synctalk2d", silent_frames=True) as avatar:
        yield avatar


@pytest.fixture(scope="module")
def bot(server, agent_avatar):
    """The example, as a user runs it, in the agents' environment."""
    if not AGENTS_PYTHON.exists():
        pytest.fail(f"{AGENTS_PYTHON} is missing: `make agents` makes it (make test does)")
    port = free_port()
    command = [str(AGENTS_PYTHON), str(BOT), "--url", server.grpc_url, "--avatar", agent_avatar, "--port", str(port)]
    log = paths.BUILD / "logs" / "test-pipecat-bot.log"
    with http_process("the Pipecat bot", command, f"http://127.0.0.1:{port}/", log) as process:
        yield f"http://127.0.0.1:{port}/"
    assert process.returncode in (0, -15), log.read_text()


@pytest.fixture(scope="module")
def browser():
    driver = chromium_driver()
    yield driver
    driver.quit()


def streams_open(server, avatar: str) -> list[int]:
    """The stream limit's places taken: [] when all of them open now (each opened and ended)."""
    refused = []
    streams = [LiveStream(server.grpc_url, avatar) for _ in range(STREAM_LIMIT)]
    try:
        for number, live in enumerate(streams):
            try:
                live.send(np.zeros(0, np.int16))
            except StreamLimitError:
                refused.append(number)
    finally:
        for live in streams:
            with contextlib.suppress(Exception):
                live.end()
            live.close()
    return refused


def test_the_pipecat_agent_says_typed_text_and_stops_mid_word_when_interrupted(bot, browser, server, agent_avatar):
    browser.get(bot)
    browser.execute_script("window.PROBE_REGION = arguments[0];", PROBE)
    element(browser, "connect").click()
    wait(browser, lambda: element(browser, "send").is_enabled() or element(browser, "error").text, timeout=60)
    assert element(browser, "error").text == ""
    wait(browser, lambda: len(browser.execute_script("return window.probe.shown")) > 25, timeout=60)

    def probe() -> dict:
        return browser.execute_script("return window.probe")

    def say(text: str) -> float:
        element(browser, "text").send_keys(text)
        element(browser, "send").click()
        return probe()["sentAt"]

    time.sleep(1.0)  # idle first
    assert all(idle(rgb) for _, rgb in probe()["shown"][-10:]), "idle frames while nothing is said"
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
    seen = probe()
    element(browser, "disconnect").click()
    disconnected = time.monotonic()
    # the pipeline ends with the viewer (CancelFrame): the avatar's stream with it, its place free
    wait(browser, lambda: streams_open(server, agent_avatar) == [], timeout=15)
    freed_s = time.monotonic() - disconnected

    events, heard, shown = seen["events"], seen["heard"], seen["shown"]
    assert [e["speaking"] for e in events] == [True, False, True, False], events
    first_word = next(t for t, peak in heard if t > said_at and peak > LOUD) - said_at
    loud = [t for t, peak in heard if interrupted_at < t < again_at and peak > LOUD]
    heard_after = (max(loud) - interrupted_at) if loud else 0.0
    after = [(t, rgb) for t, rgb in shown if t > interrupted_at]
    first_idle = next(t for t, rgb in after if idle(rgb)) - interrupted_at
    idle_run = [idle(rgb) for t, rgb in after if interrupted_at + first_idle <= t < again_at]
    stopped_after = events[1]["at"] - interrupted_at
    # the voice and the mouth: the next text's first loud sound heard against its first talking frame shown
    heard_onset = next(t for t, peak in heard if t > again_at and peak > LOUD)
    mouthed = next(t for t, rgb in shown if t > again_at and not idle(rgb))
    print(
        f"Pipecat in Chromium: first word heard {first_word:.0f} ms after Send; speech heard {heard_after:.0f} ms "
        f"after the interrupt, first idle frame {first_idle:.0f} ms, 'stopped' {stopped_after:.0f} ms; "
        f"voice onset heard minus first talking frame shown {heard_onset - mouthed:.0f} ms; "
        f"the stream's place free {freed_s:.1f} s after the page disconnected"
    )
    assert any(not idle(rgb) for t, rgb in shown if said_at < t < interrupted_at), "the text is mouthed"
    assert heard_after <= 150, "the voice stops: at most 150 ms of speech heard after the interrupt"
    assert first_idle <= 250, "idle frames soon after the interrupt"
    assert all(idle_run), "and idle they stay until the next text"
    assert abs(heard_onset - mouthed) <= 150, "the voice and the mouth together"
    assert first_word <= 1500
