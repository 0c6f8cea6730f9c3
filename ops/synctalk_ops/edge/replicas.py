"""A replica behind the edge: a tritonserver's address, ports and the avatars placed on it."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass

AVATARS_KEY = "avatars"  # the load balancer's metadata: the avatars a replica holds, a request's model id
REPLICA_KEY = "replica"  # and a replica's name, the one the activator picked for a request (avatars on demand)


@dataclass(frozen=True)
class Replica:
    """One tritonserver behind the edge: its address and ports."""

    name: str
    host: str
    grpc_port: int
    http_port: int
    # the avatars placed on it (synctalk_ops.placement); None: it serves every model of the repository
    avatars: tuple[str, ...] | None = None
    metrics_port: int | None = None  # Triton's metrics (the activator reads its open streams there)

    @classmethod
    def parse(cls, text: str, index: int = 0) -> Replica:
        """``[name=]host:grpc_port:http_port[:metrics_port]`` (``--replica``); unnamed:
        ``replica-<index>``."""
        name, _, text = text.partition("=") if "=" in text else (f"replica-{index}", "", text)
        try:
            four = text.rsplit(":", 3)  # a host may hold colons itself (an IPv6 address)
            host, *ports = four if len(four) == 4 and all(p.isdigit() for p in four[1:]) else text.rsplit(":", 2)
            metrics = int(ports[2]) if len(ports) == 3 else None
            return cls(name, host, int(ports[0]), int(ports[1]), metrics_port=metrics)
        except (ValueError, IndexError):
            raise ValueError(f"replica {text!r}: expected [name=]host:grpc_port:http_port[:metrics_port]") from None

    @classmethod
    def of(cls, server, index: int = 0, avatars=None) -> Replica:
        """The replica a launched tritonserver (``synctalk_ops.serve.TritonServer``) is."""
        return cls(
            f"replica-{index}",
            server.host,
            server.grpc_port,
            server.http_port,
            None if avatars is None else tuple(sorted(avatars)),
            server.metrics_port,
        )

    def holding(self, avatars) -> Replica:
        return dataclasses.replace(self, avatars=None if avatars is None else tuple(sorted(avatars)))


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def address_of(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}
