"""A network bench on this host, for the tests and the benchmarks: a viewer behind a NAT.

Two network namespaces beside the host's own: a router and a viewer behind it::

    host (server, page's server, coturn)  10.77.0.1 --veth-- 10.77.0.2  router  10.77.1.1 --veth-- 10.77.1.2  viewer
                                                                 (iptables MASQUERADE)

The router forwards the viewer's traffic to the host with its own address (a NAT, as a home
router's), and the bench's controls act there: ``block_udp`` (all UDP, or all but a TURN port),
``cap`` (``tc tbf``), ``loss`` (iptables ``statistic``), ``link`` (the viewer's link down and up:
a dropout). ``viewer(command)`` runs a command in the viewer's namespace (headless Chromium, see
``devtools.netbench_viewer``). The host's addresses are the bench's own: nothing is sent anywhere
else. Root and iproute2/iptables are needed (``NetBench.unavailable`` says why not); one bench a
host (its addresses are fixed: a bench starting removes what a killed one left).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

HOST_IP, ROUTER_UP_IP, ROUTER_DOWN_IP, VIEWER_IP = "10.77.0.1", "10.77.0.2", "10.77.1.1", "10.77.1.2"


def coturn_command(
    address: str, port: int, secret: str, realm: str = "synctalk.test", tls: tuple[int, Path, Path] | None = None
) -> list[str]:
    """coturn (``turnserver``) in the foreground on ``address``:``port`` (UDP and TCP), relaying from
    the same address, with the TURN REST convention (``use-auth-secret``): what
    docs/live-streams-and-webrtc.md sets up. ``tls``: (port, certificate, key) for TURN over TLS
    too (``turns:``), else none."""
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("coturn's turnserver is missing: `make turn` installs it (make test does)")
    if tls is None:
        secure = ["--no-tls", "--no-dtls"]
    else:
        secure = ["--no-dtls", f"--tls-listening-port={tls[0]}", f"--cert={tls[1]}", f"--pkey={tls[2]}"]
    return [
        binary, "-n", "--no-cli", *secure, "--simple-log", "--log-file=stdout",
        f"--listening-ip={address}", f"--relay-ip={address}", f"--listening-port={port}",
        "--min-port=49160", "--max-port=49200", f"--realm={realm}",
        "--use-auth-secret", f"--static-auth-secret={secret}", "--allow-loopback-peers", "--fingerprint",
    ]  # fmt: skip


@contextlib.contextmanager
def coturn(address: str, port: int, secret: str, log: Path, tls: tuple[int, Path, Path] | None = None):
    """coturn (``coturn_command``) until the block ends, its output in ``log``; ready (its TCP
    listener answers) when the block starts."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = coturn_command(address, port, secret, tls=tls)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex((address, port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coturn did not start: {log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")


class NetBench:
    """The namespaces (named after this process: benches of two processes do not meet) while the
    ``with`` block runs; everything made is removed after it."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.router, self.viewer_ns = f"stbr{tag}", f"stbv{tag}"
        self.host_if, self.router_up = f"stbh{tag}", f"stbu{tag}"  # the host's veth pair to the router
        self.router_down, self.viewer_if = f"stbd{tag}", f"stbw{tag}"  # the router's pair to the viewer

    @staticmethod
    def unavailable() -> str | None:
        """Why a bench cannot be made here (None: it can)."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        for tool in ("ip", "iptables", "tc"):
            if shutil.which(tool) is None:
                return f"{tool} is missing (iproute2, iptables: `make netbench` installs them)"
        probe = f"stbp{os.getpid() % 100000}"
        done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if done.returncode != 0:
            return f"ip netns add: {done.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return None

    def __enter__(self) -> NetBench:
        try:
            self._make()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _make(self) -> None:
        self._remove_stale()
        r, v = self.router, self.viewer_ns
        _run("ip", "netns", "add", r)
        _run("ip", "netns", "add", v)
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.router_up)
        _run("ip", "link", "set", self.router_up, "netns", r)
        _run("ip", "link", "add", self.router_down, "type", "veth", "peer", "name", self.viewer_if)
        _run("ip", "link", "set", self.router_down, "netns", r)
        _run("ip", "link", "set", self.viewer_if, "netns", v)
        _run("ip", "addr", "add", f"{HOST_IP}/24", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        self.in_router("ip", "addr", "add", f"{ROUTER_UP_IP}/24", "dev", self.router_up)
        self.in_router("ip", "addr", "add", f"{ROUTER_DOWN_IP}/24", "dev", self.router_down)
        for link in ("lo", self.router_up, self.router_down):
            self.in_router("ip", "link", "set", link, "up")
        self.in_router("sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.in_router("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", self.router_up, "-j", "MASQUERADE")
        self.in_viewer("ip", "addr", "add", f"{VIEWER_IP}/24", "dev", self.viewer_if)
        for link in ("lo", self.viewer_if):
            self.in_viewer("ip", "link", "set", link, "up")
        self.in_viewer("ip", "route", "add", "default", "via", ROUTER_DOWN_IP)
        self.in_router("ip", "route", "add", "default", "via", HOST_IP)
        # the host reaches the viewer's addresses through the router only (nothing to the host's
        # own default route), and the router lets nothing new in from the host's side: a NAT
        _run("ip", "route", "replace", "10.77.1.0/24", "via", ROUTER_UP_IP)
        self.clear()

    @staticmethod
    def _remove_stale() -> None:
        """What a bench killed before its end left (one bench a host: its addresses are fixed)."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        for namespace in [n for n in listed if n.startswith(("stbr", "stbv"))]:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()
        for line in links:
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith("stbh"):
                subprocess.run(["ip", "link", "del", name], capture_output=True)

    def _remove(self) -> None:
        subprocess.run(["ip", "route", "del", "10.77.1.0/24"], capture_output=True)
        for namespace in (self.viewer_ns, self.router):  # their veth ends go with them
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)

    def in_router(self, *command: str) -> None:
        _run("ip", "netns", "exec", self.router, *command)

    def in_viewer(self, *command: str) -> None:
        _run("ip", "netns", "exec", self.viewer_ns, *command)

    def viewer(self, command: list[str], log: Path, **popen) -> subprocess.Popen:
        """``command`` in the viewer's namespace, its output to ``log``."""
        out = open(log, "wb")  # noqa: SIM115 - the process's, closed with it
        return subprocess.Popen(["ip", "netns", "exec", self.viewer_ns, *command], stdout=out, stderr=out, **popen)

    # -- the router's controls ------------------------------------------------------------------
    def clear(self) -> None:
        """No blocking, no cap, no loss: the NAT alone (what the viewer began, answered; nothing else in)."""
        self.in_router("iptables", "-F", "FORWARD")
        self.in_router("iptables", "-A", "FORWARD", "-i", self.router_up, "-m", "conntrack", "--ctstate", "NEW",
                       "-j", "DROP")  # fmt: skip
        subprocess.run(["ip", "netns", "exec", self.router, "tc", "qdisc", "del", "dev", self.router_down, "root"],
                       capture_output=True)  # fmt: skip

    def block_udp(self, except_port: int | None = None) -> None:
        """UDP from the viewer blocked (the answers to what it sent included), but to the host's
        ``except_port`` (a TURN service's)."""
        if except_port is not None:
            self.in_router("iptables", "-A", "FORWARD", "-p", "udp", "-d", HOST_IP, "--dport", str(except_port),
                           "-j", "ACCEPT")  # fmt: skip
            self.in_router("iptables", "-A", "FORWARD", "-p", "udp", "-s", HOST_IP, "--sport", str(except_port),
                           "-j", "ACCEPT")  # fmt: skip
        self.in_router("iptables", "-A", "FORWARD", "-p", "udp", "-j", "DROP")

    def cap(self, kbps: int) -> None:
        """The viewer's downlink capped at ``kbps`` (a token bucket on the router's viewer side)."""
        self.in_router("tc", "qdisc", "add", "dev", self.router_down, "root", "tbf", "rate", f"{kbps}kbit",
                       "burst", "32kb", "latency", "400ms")  # fmt: skip

    def loss(self, fraction: float) -> None:
        """That fraction of the packets to the viewer dropped at random."""
        self.in_router("iptables", "-A", "FORWARD", "-o", self.router_down, "-m", "statistic", "--mode", "random",
                       "--probability", str(fraction), "-j", "DROP")  # fmt: skip

    def link(self, up: bool) -> None:
        """The viewer's link down (a dropout: nothing passes either way) or up again."""
        self.in_router("ip", "link", "set", self.router_down, "up" if up else "down")
