"""The avatar as a voice agent's face, in the page's Live tab in headless Chromium: text typed is
said (the server's espeak-ng) over WebRTC, an interrupt mid-sentence stops the voice and the mouth,
the next text is said, and the speaking events arrive in order. Measured from the content at the
viewer: the voice's level through Web Audio and each displayed frame's pixels (the page's probe)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from devtools.browser import chromium_driver, element, models_loaded, page_server, shown, switch_tab, wait
from synctalk_build import paths
from synctalk_common import contract
from tests.e2e.test_live_stream import COLOURS, avatar_with_images

pytestmark = pytest.mark.e2e

TEXT = (
    "Good morning. I can tell you about the weather, the news, and the traffic on your way to work. "
    "Today it will be sunny with a light breeze from the west, and the roads are clear."
)
LOUD = 0.02  # the voice's peak level (of 1) above which it is heard
# the test avatar's face box inside its 96 x 72 frames: an idle frame's is one of COLOURS
PROBE = {"x": 26, "y": 14, "w": 44, "h": 44}


@pytest.fixture(scope="module")
def avatar(server, tmp_path_factory):
    """Plain images (its idle frames) with silent frames: idle where the voice is silent."""
    with avatar_with_images(server, tmp_path_factory, "page_agent", "synctalk2d", silent_frames=True) as avatar_id:
        yield avatar_id


@pytest.fixture(scope="module")
def opened(server, avatar):
    driver = chromium_driver()
    try:
        with page_server(server.grpc_url, paths.BUILD / "logs" / "test-voice-agent-page.log") as url:
            driver.get(url)
            models_loaded(driver)
            yield driver
    finally:
        driver.quit()


def idle(rgb) -> bool:
    """Whether a frame's face region is one of the avatar's plain images, as H.264 keeps them (within
    12 levels measured) and not the tiny generator's face (20 or more from each)."""
    return any(np.abs(np.asarray(rgb) - colour).mean() < 16 for colour in COLOURS)


def test_typed_text_is_said_an_interrupt_stops_voice_and_mouth_and_events_follow(opened, avatar):
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
    said_at = say(TEXT)
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
        f"voice onset heard minus shown {offset:.0f} ms"
    )
    assert first_word <= 700, "the first word soon: placed just ahead of what is shown"
    assert heard_after <= 100, "at most 100 ms of speech heard after the call"
    assert idle_after <= 200, "idle frames within 200 ms"
    assert abs(first_idle[1] - cut["from_frame"]) <= 1, "the frames from the cut are the idle ones"
    idle_run = [idle(rgb) for t, _, rgb in after if first_idle[0] <= t < first_idle[0] + 1000]
    assert all(idle_run), ("and idle they stay", [(i, [round(c) for c in rgb]) for t, i, rgb in after][:30])
    assert any(not idle(rgb) for t, _, rgb in shown_frames if t > again_at), "the next text is mouthed"
    assert abs(offset) <= 100, "the voice and the mouth within 100 ms, from the content"
