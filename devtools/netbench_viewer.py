"""A viewer on the network bench (``devtools.netbench``): run in the viewer's namespace, it opens
the page in headless Chromium, starts the Live tab on an avatar (text source: no microphone) and
watches it, then prints one JSON line: time to the first frame, frames decoded, frames per second,
bitrate, freezes, A/V offset, the candidate pair ICE chose (relay over UDP or TCP, or direct) and
a timeline (every 0.25 s: the connection's state and the frames decoded so far). It prints
"playing" at the first frame: a test acting on the network (a dropout) waits for that::

    ip netns exec VIEWER python -m devtools.netbench_viewer --page http://10.77.0.1:PORT/ --avatar anna --seconds 3

``view`` runs it on a bench from the host and returns that report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from pathlib import Path

from devtools.browser import chromium_driver, element, models_loaded, switch_tab, wait

PAIR = """
const done = arguments[arguments.length - 1];
if (typeof live === "undefined" || !live || !live.pc) return done({ frames_decoded: 0, bytes: 0 });
live.pc.getStats().then((report) => {
  let pair = null, inbound = {};
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    if (s.type === "inbound-rtp") inbound[s.kind] = s;
  });
  const local = pair ? report.get(pair.localCandidateId) : null;
  const remote = pair ? report.get(pair.remoteCandidateId) : null;
  const v = inbound.video || {};
  done({
    local: local && local.candidateType, relay_protocol: local && local.relayProtocol,
    protocol: local && local.protocol, remote: remote && remote.candidateType,
    frames_decoded: v.framesDecoded || 0, freezes: v.freezeCount || 0,
    freeze_s: v.totalFreezesDuration || 0, bytes: v.bytesReceived || 0,
    packets_lost: v.packetsLost || 0, nacks: v.nackCount || 0, plis: v.pliCount || 0,
    frames_received: v.framesReceived || 0, frames_dropped: v.framesDropped || 0,
  });
});
"""


def watch(page: str, avatar: str, seconds: float, untrusted_tls: bool = False) -> dict:
    origin = urllib.parse.urlsplit(page)._replace(path="").geturl()
    browser = chromium_driver(origin=origin, untrusted_tls=untrusted_tls)
    try:
        browser.get(page)
        models_loaded(browser)
        switch_tab(browser, "live")
        browser.execute_script("document.getElementById('live-model').value = arguments[0];", avatar)
        element(browser, "live-source-text").click()
        started = time.monotonic()
        element(browser, "live-start").click()
        try:
            wait(browser, lambda: browser.execute_async_script(PAIR)["frames_decoded"] > 0, timeout=30)
        except Exception:  # noqa: BLE001 - what the page says is the result
            return {"error": element(browser, "live-error").text or "no frame in 30 s", "pair": None}
        first_frame_s = time.monotonic() - started
        print("playing", flush=True)  # what a test waits for before it acts on the network
        before = browser.execute_async_script(PAIR)
        timeline, end = [], time.monotonic() + seconds
        while time.monotonic() < end:  # every 0.25 s: the connection's state, frames so far, the status
            now = browser.execute_async_script(PAIR)
            state = browser.execute_script("return document.body.dataset.liveConnection || ''")
            timeline.append((round(time.monotonic() - started, 2), state, now["frames_decoded"]))
            time.sleep(0.25)
        after = browser.execute_async_script(PAIR)
        stats = json.loads(browser.execute_script("return document.body.dataset.liveStats || '[]'"))
        offsets = [s["offsetMs"] for s in stats if s.get("offsetMs") is not None]
        return {
            "first_frame_s": round(first_frame_s, 2),
            "fps": round((after["frames_decoded"] - before["frames_decoded"]) / seconds, 1),
            "kbps": round(8 * (after["bytes"] - before["bytes"]) / seconds / 1000),
            "freezes": after["freezes"],
            "freeze_s": round(after["freeze_s"], 2),
            "video": {k: after[k] for k in ("packets_lost", "nacks", "plis", "frames_received", "frames_dropped")},
            "av_offset_ms": offsets[-1] if offsets else None,
            "pair": {k: after[k] for k in ("local", "relay_protocol", "protocol", "remote")},
            "error": element(browser, "live-error").text,
            "status": element(browser, "live-status").text,
            "dropouts": int(browser.execute_script("return document.body.dataset.liveDropouts || '0'")),
            "timeline": timeline,
        }
    finally:
        browser.quit()


def view(bench, page: str, avatar: str, log: Path, seconds: float, playing=None, untrusted_tls: bool = False):
    """This viewer in ``bench``'s viewer namespace (``devtools.netbench.NetBench``) for ``seconds``,
    its output in ``log``: its report (RuntimeError where it gave none). ``playing()``: called once
    the avatar plays (the network acted on while the viewer watches)."""
    from synctalk_build import paths

    command = [sys.executable, "-m", "devtools.netbench_viewer", "--page", page, "--avatar", avatar]
    command += ["--seconds", str(seconds), *(["--untrusted-tls"] if untrusted_tls else [])]
    process = bench.viewer(command, log, cwd=paths.ROOT)
    try:
        if playing is not None:
            deadline = time.monotonic() + 60
            while "playing" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            playing()
        process.wait(timeout=seconds + 90)
    finally:
        process.kill()
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"the viewer failed: see {log}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", required=True)
    parser.add_argument("--avatar", required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--untrusted-tls", action="store_true", help="a TURN service's self-signed certificate taken")
    args = parser.parse_args(argv)
    print(json.dumps(watch(args.page, args.avatar, args.seconds, args.untrusted_tls)), flush=True)


if __name__ == "__main__":
    main()
