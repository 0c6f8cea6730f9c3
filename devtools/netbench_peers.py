"""Viewers without a browser (aiortc), run in the network bench's viewer namespace, for counting
what the server frees when viewers vanish:

    python -m devtools.netbench_peers http://10.77.0.1:PORT/ AVATAR     # commands on stdin:

- ``open N``: N peers on the avatar (the page's ``POST /offer``, video only, no ICE server: the NAT
  alone), a video frame received on each, then ``playing <held>`` is printed;
- ``drop``: every peer closed here without waiting for the server (with the link down, nothing of
  the close reaches it: a vanished viewer), then ``dropped`` is printed;
- the end of the input ends it. Anything that fails: ``error <what>`` and exit status 1.

From the host: ``Peers(bench, page, avatar, log)`` starts it there and sends its commands (the host
takes the link down and up itself: ``NetBench.link``); ``vanishing(...)`` runs waves of viewers
that vanish, for the test and the benchmark of what a server frees.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

FIRST_FRAME_S = 20.0
GIVE_UP_S = 15.0  # a wave's peers still held this long after their viewers went: a leak


async def open_peer(http, page: str, avatar: str):
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # none: aiortc's default is a public STUN
    pc.addTransceiver("video", direction="recvonly")
    frame = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track) -> None:
        async def first() -> None:
            try:
                await track.recv()
                frame.done() or frame.set_result(None)
            except Exception as exc:  # noqa: BLE001 - the track ended before a frame: reported
                frame.done() or frame.set_exception(RuntimeError(f"no video frame: {exc!r}"))

        asyncio.ensure_future(first())

    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "avatar": avatar}
        async with http.post(page.rstrip("/") + "/offer", json=offer) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"offer refused ({response.status}): {answer.get('error')}")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await asyncio.wait_for(frame, FIRST_FRAME_S)
    except BaseException:
        await pc.close()
        raise
    return pc


async def run(page: str, avatar: str) -> None:
    import aiohttp

    loop, peers = asyncio.get_running_loop(), []
    async with aiohttp.ClientSession() as http:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command, *count = line.split()
            if command == "open":
                peers += await asyncio.gather(*(open_peer(http, page, avatar) for _ in range(int(count[0]))))
                print(f"playing {len(peers)}", flush=True)
            elif command == "drop":
                await asyncio.gather(*(pc.close() for pc in peers))
                peers.clear()
                print("dropped", flush=True)
            else:
                raise RuntimeError(f"unknown command {line.strip()!r}")
        await asyncio.gather(*(pc.close() for pc in peers))


class Peers:
    """This viewer in ``bench``'s viewer namespace (``devtools.netbench.NetBench``), its output in
    ``log``, driven from the host: ``open(n)``, ``drop()``, ``close()`` (or a ``with`` block)."""

    def __init__(self, bench, page: str, avatar: str, log: Path):
        from synctalk_build import paths

        self.log = log
        command = [sys.executable, "-m", "devtools.netbench_peers", page, avatar]
        self.process = bench.viewer(command, log, cwd=paths.ROOT, stdin=subprocess.PIPE)

    def open(self, count: int, timeout: float = 60.0) -> int:
        """``count`` more peers, each with a frame received: the peers held."""
        return int(self._command(f"open {count}", "playing", timeout).split()[1])

    def drop(self, timeout: float = 30.0) -> None:
        self._command("drop", "dropped", timeout)

    def _command(self, line: str, answer: str, timeout: float) -> str:
        seen = len(self.log.read_text().splitlines())
        self.process.stdin.write(f"{line}\n".encode())
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for said in self.log.read_text().splitlines()[seen:]:
                if said.startswith(answer):
                    return said
                if said.startswith("error"):
                    raise RuntimeError(f"the viewer's {line!r}: {said} (see {self.log})")
            if self.process.poll() is not None:
                raise RuntimeError(f"the viewer exited with {self.process.returncode}: see {self.log}")
            time.sleep(0.05)
        raise RuntimeError(f"the viewer's {line!r}: no answer in {timeout:g} s (see {self.log})")

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        finally:
            self.process.kill()

    def __enter__(self) -> Peers:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def vanishing(bench, page: str, avatar: str, pid: int, log: Path, waves: int, per_wave: int) -> dict:
    """``waves`` waves of ``per_wave`` viewers on the page's server ``page`` (loopback's URL; its
    process ``pid``), each wave's link taken down once they play and kept down until the server holds
    no peer (at most ``GIVE_UP_S``), then the viewers dropped and the link up again. Returns
    ``freed_after_s`` (each wave's), ``stuck`` (the first wave whose peers were still held, or
    None), and the server's open files, threads and resident MB after the first wave and after all
    (``first``, ``last``)."""
    import requests

    from devtools.netbench import HOST_IP

    def held() -> list:
        return requests.get(page + "webrtc/peers", timeout=5).json()["peers"]

    def resources() -> dict:
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
        files, threads = len(list(Path(f"/proc/{pid}/fd").iterdir())), len(list(Path(f"/proc/{pid}/task").iterdir()))
        return {"files": files, "threads": threads, "rss_mb": round(rss_kb / 1024)}

    def settled() -> dict:
        """``resources()`` once the peers' ends are done (no change in open files and threads over
        half a second: a peer is no longer held before its stream's end and its transports close)."""
        now, deadline = resources(), time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.5)
            before, now = now, resources()
            if (now["files"], now["threads"]) == (before["files"], before["threads"]):
                break
        return now

    report = {"freed_after_s": [], "stuck": None, "first": None, "last": None}
    bench.clear()
    with Peers(bench, page.replace("127.0.0.1", HOST_IP), avatar, log) as peers:
        for wave in range(waves):
            peers.open(per_wave)
            bench.link(up=False)
            gone = time.monotonic()
            try:
                while held() and time.monotonic() - gone < GIVE_UP_S:
                    time.sleep(0.1)
                report["freed_after_s"].append(round(time.monotonic() - gone, 1))
                if held():
                    report["stuck"] = wave
                    break
                peers.drop()  # while the link is down: nothing of the viewers' close reaches the server
            finally:
                bench.link(up=True)
            if wave in (0, waves - 1):
                report["first" if wave == 0 else "last"] = settled()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", help="the page's server, as the viewer reaches it")
    parser.add_argument("avatar")
    args = parser.parse_args()
    try:
        asyncio.run(run(args.page, args.avatar))
    except Exception as exc:  # noqa: BLE001 - the host reads this line
        print(f"error {type(exc).__name__}: {exc}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
