"""The avatar across a NAT, on the network bench (``devtools.netbench``), measured at the viewer:
headless Chromium in a namespace behind an iptables NAT router, the page's server and coturn on the
host, each row a condition of the viewer's network:

    python -m benchmarks.network_matrix                 # every row, 20 s each
    python -m benchmarks.network_matrix --seconds 10 --rows turn-udp cap-500

- **direct**: the NAT alone (ICE finds the host through it: the viewer began the exchange);
- **turn-udp**: UDP blocked but to the TURN port: a relay over UDP;
- **turn-tcp**: all UDP blocked: TURN over TCP;
- **turn-tls**: all UDP blocked and the page given only ``turns:`` (TURN over TLS, a certificate
  made for the run);
- **cap-1000**, **cap-500**: the viewer's downlink capped at 1 Mbit/s, 500 kbit/s (``tc tbf``);
- **loss-2**, **loss-5**: 2 %, 5 % of the packets to the viewer dropped at random.

The avatar: 16 frames of the synthetic studio, a head swaying, at 640 x 360 with fresh grain on
each (a costly video that still compresses, as a camera's does), with silent frames (the stream
renders them without the generator: the network is measured, not this CPU).
Each row: time to the first frame from Start, frames decoded per second, the bitrate received,
freezes (Chromium's ``freezeCount``, ``totalFreezesDuration``), the A/V offset (audio minus video
``estimatedPlayoutTimestamp``, the last second's), and the ICE pair. Writes
``benchmarks/results/network_matrix.json`` and prints the table for ``benchmarks/README.md``.
Needs root (network namespaces), iproute2, iptables, coturn and Chromium (``make netbench turn
browser``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from devtools import netbench_viewer
from devtools.avatars import loaded_avatar
from devtools.browser import page_server
from devtools.netbench import HOST_IP, NetBench, coturn
from synctalk_build import paths
from synctalk_build.render_repository import render
from synctalk_ops.launched import free_port
from synctalk_ops.serve import TritonServer

RESULTS = paths.ROOT / "benchmarks" / "results" / "network_matrix.json"
LOGS = paths.BUILD / "logs" / "network-matrix"
SECRET = "the-network-matrix-turn-secret"
ROWS = ("direct", "turn-udp", "turn-tcp", "turn-tls", "cap-1000", "cap-500", "loss-2", "loss-5")


@contextlib.contextmanager
def costly_avatar(server: TritonServer, folder: Path, avatar_id: str = "costly"):
    """16 frames of the synthetic studio (a head swaying) at 640 x 360 with fresh grain on each
    (sigma 8): a costly video that still compresses, as a camera's does."""
    import cv2

    from synctalk_client import synthetic

    folder.mkdir(parents=True, exist_ok=True)
    frames, _ = synthetic.avatar_background(16, 640, 360, face=160, seed=5)
    rng = np.random.default_rng(7)
    for i, frame in enumerate(frames):
        grain = np.clip(frame.astype(np.float32) + rng.normal(0, 8, frame.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i}.png"), grain[..., ::-1])
    box = [240, 60, 400, 220]
    with loaded_avatar(server, avatar_id, folder, box, audio_preset="synctalk2d", silent_frames=True, replace=True):
        yield avatar_id


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the bench's host address (coturn's TLS listener)."""
    cert, key = folder / "turn.crt", folder / "turn.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST_IP}",
         "-addext", f"subjectAltName=IP:{HOST_IP}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def page(triton_url: str, turn_urls: list[str], secret_file: Path, log: Path):
    args = ["--turn-secret-file", str(secret_file)]
    for url in turn_urls:
        args += ["--turn", url]
    with page_server(triton_url, log, host="0.0.0.0", args=args) as url:
        yield url.replace("127.0.0.1", HOST_IP)


def view(bench: NetBench, url: str, avatar: str, row: str, seconds: float) -> dict:
    try:  # turn-tls: the run's own certificate
        report = netbench_viewer.view(
            bench, url, avatar, LOGS / f"viewer-{row}.log", seconds, untrusted_tls=row == "turn-tls"
        )
    except RuntimeError as exc:
        return {"error": str(exc)}
    report.pop("timeline", None)
    return report


def bitrates(log: Path) -> list[str]:
    """The video's bitrate changes the page's server logged (``synctalk_webrtc.peer``), each as
    "<seconds after the first> s: <kbit/s> (<why>)"."""
    import datetime
    import re

    changes, first = [], None
    for line in log.read_text().splitlines():
        if match := re.match(r"(\S+ \S+) synctalk_webrtc INFO \S+: the video at (\d+) kbit/s \((.*)\)", line):
            at = datetime.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            first = at if first is None else first
            changes.append(f"{at - first:.1f} s: {match[2]} ({match[3]})")
    return changes


def measure(rows: list[str], seconds: float) -> dict:
    LOGS.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as scratch, NetBench() as bench:
        scratch = Path(scratch)
        secret = scratch / "turn-secret"
        secret.write_text(SECRET + "\n")
        repository = render("cpu", scratch / "repository" / "cpu", paths.MODELS / "tiny")
        ports = [free_port() for _ in range(5)]
        turn_port, tls_port = ports[3], ports[4]
        cert, key = certificate(scratch)
        tls = (tls_port, cert, key)
        server = TritonServer(repository, *ports[:3], log_path=LOGS / "tritonserver.log", model_control_mode="explicit")
        with server, costly_avatar(server, scratch / "costly") as avatar:
            with coturn(HOST_IP, turn_port, SECRET, LOGS / "coturn.log", tls=tls):
                plain = [f"turn:{HOST_IP}:{turn_port}?transport={t}" for t in ("udp", "tcp")]
                for row in rows:
                    urls = [f"turns:{HOST_IP}:{tls_port}?transport=tcp"] if row == "turn-tls" else plain
                    bench.clear()
                    if row == "turn-udp":
                        bench.block_udp(except_port=turn_port)
                    elif row in ("turn-tcp", "turn-tls"):
                        bench.block_udp()
                    elif row.startswith("cap-"):
                        bench.cap(int(row.split("-")[1]))
                    elif row.startswith("loss-"):
                        bench.loss(int(row.split("-")[1]) / 100)
                    log = LOGS / f"page-{row}.log"
                    with page(server.grpc_url, urls, secret, log) as url:
                        results[row] = view(bench, url, avatar, row, seconds)
                    results[row]["bitrates"] = bitrates(log)
                    bench.clear()
                    print(row, results[row], flush=True)
    return results


def steps(changes: list[str]) -> str:
    """The bitrate steps in short: the first, the highest and when, the last if lower."""
    if not changes:
        return ""
    kbps = [(int(c.split(": ")[1].split()[0]), float(c.split(" s:")[0])) for c in changes]
    first, top, last = kbps[0], max(kbps), kbps[-1]
    text = f"{first[0]} → up to {top[0]} at {top[1]:.0f} s"
    return text + (f", then {last[0]}" if last[0] < top[0] else "")


def table(results: dict, seconds: float) -> str:
    lines = [
        f"| network ({seconds:g} s each) | first frame | frames/s | kbit/s | freezes (s) | A/V offset | ICE pair "
        "| the bitrate set |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, r in results.items():
        if r.get("error") and "fps" not in r:
            lines.append(f"| {row} | {r['error']} | | | | | | |")
            continue
        pair = r.get("pair") or {}
        kind = pair.get("local") or "?"
        if kind == "relay":
            kind += f" ({pair.get('relay_protocol')})"
        offset = "" if r.get("av_offset_ms") is None else f"{r['av_offset_ms']:.0f} ms"
        lines.append(
            f"| {row} | {r['first_frame_s']:.1f} s | {r['fps']:.1f} | {r['kbps']} | {r['freezes']} "
            f"({r['freeze_s']:.1f}) | {offset} | {kind} | {steps(r.get('bitrates') or [])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    why = NetBench.unavailable()
    if why is not None:
        raise SystemExit(f"no network bench here: {why}")
    results = measure(args.rows, args.seconds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"seconds": args.seconds, "rows": results}, indent=2) + "\n")
    print(table(results, args.seconds))


if __name__ == "__main__":
    main()
