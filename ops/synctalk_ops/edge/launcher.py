"""The edge as a process: Envoy on a rendered bootstrap, started, waited for, drained and stopped."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from synctalk_build import paths
from synctalk_ops.edge.bootstrap import envoy_binary, render, write
from synctalk_ops.edge.endpoints import write_endpoints
from synctalk_ops.edge.limits import DRAIN_S
from synctalk_ops.edge.replicas import Replica, is_ip
from synctalk_ops.launched import END_WITH_PARENT, Launched, answers, check_ports


class Edge(Launched):
    """Envoy on a rendered bootstrap, as a context manager: ready when its admin says so and its
    HTTP listener answers Triton's readiness through it."""

    name = "envoy"
    poll_s = 0.1

    def __init__(
        self,
        replicas: list[Replica],
        grpc_port: int = 8001,
        http_port: int = 8000,
        admin_port: int = 9901,
        host: str = "127.0.0.1",
        profile: str = "cpu",
        config_path: Path | None = None,
        log_path: Path | None = None,
        concurrency: int = 1,
        clusters_dir: Path | None = None,
        activator: tuple[str, int] | None = None,
        activator_budget_s: float | None = None,
    ):
        self.replicas = list(replicas)
        self.host, self.grpc_port, self.http_port, self.admin_port = host, grpc_port, http_port, admin_port
        self.config_path = config_path or paths.BUILD / "edge" / f"edge-{grpc_port}.yaml"
        # replicas on addresses (this host's): read from files Envoy watches, so ``place`` changes
        # them while it runs; names are resolved by Envoy (compose, Kubernetes) and fixed, or read
        # with the clusters from ``clusters_dir`` (a Kubernetes ConfigMap's volume: its owner writes it)
        self.endpoints_dir = (
            self.config_path.parent / f"{self.config_path.stem}-endpoints"
            if all(is_ip(r.host) for r in self.replicas) and clusters_dir is None
            else None
        )
        self.config = render(
            self.replicas,
            profile,
            host,
            grpc_port,
            http_port,
            admin_port,
            endpoints_dir=self.endpoints_dir,
            clusters_dir=clusters_dir,
            activator=activator,
            activator_budget_s=activator_budget_s,
        )
        self.log_path = log_path
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def command(self) -> list[str]:
        return [
            str(envoy_binary()),
            "-c",
            str(self.config_path),
            "--concurrency",
            str(self.concurrency),
            "--disable-hot-restart",  # no shared memory: several edges on one host, nothing left behind
            "--log-level",
            "warning",
        ]

    def place(self, replicas: list[Replica]) -> None:
        """The replicas and the avatars each holds, changed while the edge runs (no restart, no
        stream dropped): Envoy reads the new endpoint files within a moment."""
        if self.endpoints_dir is None:
            raise ValueError("this edge resolves its replicas by name: its endpoints are fixed")
        self.replicas = list(replicas)
        write_endpoints(self.replicas, self.endpoints_dir, self.admin_url if self.process else None)

    def port_roles(self) -> dict[str, int]:
        """Its ports by what listens there (``launched.check_ports``)."""
        return {
            "the edge's HTTP port": self.http_port,
            "the edge's gRPC port": self.grpc_port,
            "the edge's admin port": self.admin_port,
        }

    def start(self) -> Edge:
        check_ports(self.port_roles(), self.host)  # Envoy would otherwise exit with a bind error in its log
        write(self.config, self.config_path)
        if self.endpoints_dir is not None:
            write_endpoints(self.replicas, self.endpoints_dir)
        # a session of its own: Ctrl-C reaches the launcher, which drains the edge before stopping
        # it; and the edge ends with its launcher, however that ends
        self._spawn([*END_WITH_PARENT, *self.command()], start_new_session=True)
        return self

    def is_ready(self) -> bool:
        return answers(f"{self.admin_url}/ready") and answers(f"{self.http_url}/v2/health/ready")

    def stats(self, prefix: str = "") -> dict[str, int]:
        """The admin's counters and gauges (those starting with ``prefix``)."""
        query = urllib.parse.quote(f"^{prefix}")
        with urllib.request.urlopen(f"{self.admin_url}/stats?filter={query}", timeout=5) as response:
            rows = response.read().decode().splitlines()
        out = {}
        for row in rows:
            name, _, value = row.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def active_requests(self) -> int:
        """Requests (and live streams) the edge holds now, on both listeners."""
        stats = self.stats("http\\.[a-z]+\\.downstream_rq_active$")
        return sum(v for k, v in stats.items() if k.endswith(".downstream_rq_active"))

    def drain(self, timeout_s: float = DRAIN_S) -> int:
        """Stop taking new work and let what it holds finish, for ``timeout_s`` at most: clients
        are told to go away (HTTP/2 GOAWAY, HTTP/1 Connection: close) and the listeners close;
        returns the requests still held at the end (cut when it stops)."""
        try:
            urllib.request.urlopen(
                urllib.request.Request(f"{self.admin_url}/drain_listeners?graceful", method="POST"), timeout=5
            ).close()
            deadline = time.monotonic() + timeout_s
            while (held := self.active_requests()) and time.monotonic() < deadline:
                time.sleep(0.1)
            return held
        except (urllib.error.URLError, ConnectionError, OSError):
            return 0  # no admin: the edge is gone already

    def stop(self, timeout: float = 15.0, drain_s: float = 0.0) -> int | None:
        """SIGTERM, after draining for ``drain_s`` (0: at once)."""
        if self.process is None:
            return None
        if drain_s and self.process.poll() is None:
            self.drain(drain_s)
        self._terminate(timeout)
        self._close_log()
        return self.process.returncode
