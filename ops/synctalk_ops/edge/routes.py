"""The edge's listeners and routes: restricted APIs answered by the edge itself, inference by class
from the frames header, live streams never cut, the request's model id into the load balancer's
metadata, the edge's own replies."""

from __future__ import annotations

from synctalk_common import contract
from synctalk_ops.edge.limits import (
    CONNECTION_BUFFER_BYTES,
    CONNECTION_WINDOW_BYTES,
    MAX_REQUEST_HEADERS_KB,
    STREAM_IDLE_TIMEOUT_S,
    STREAM_WINDOW_BYTES,
)
from synctalk_ops.edge.replicas import AVATARS_KEY, REPLICA_KEY, Replica, address_of

GRPC_SERVICE = "/inference.GRPCInferenceService/"

# the gRPC methods of Triton's restricted APIs (contract.RESTRICTED_APIS), by API, that the edge
# never routes. The repository index is read-only: it goes through (to the meta class), and Triton
# still asks for the API key, so the page and the SDK list model ids through the edge.
RESTRICTED_GRPC = {
    "model-repository": ("RepositoryModelLoad", "RepositoryModelUnload"),
    "shared-memory": (
        "SystemSharedMemoryStatus",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus",
        "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister",
    ),
    "logging": ("LogSettings",),
    "trace": ("TraceSetting",),
}

# and their KServe HTTP paths (regular expressions over the path)
RESTRICTED_HTTP = {
    "model-repository": (r"/v2/repository/models/.*",),  # load and unload (the index goes through)
    "shared-memory": (r"/v2/systemsharedmemory(/.*)?", r"/v2/cudasharedmemory(/.*)?"),
    "logging": (r"/v2/logging(/.*)?",),
    "trace": (r"/v2/trace(/.*)?", r"/v2/models/[^/]+(/versions/[^/]+)?/trace/.*"),
}

HTTP_INFER = r"/v2/models/[^/]+(/versions/[^/]+)?/(infer|generate|generate_stream)"

HTTP_MODEL_PATH = r"^/v2/models/([^/]+)(/.*)?$"  # the model id of a KServe path

STREAM_METHOD = "ModelStreamInfer"

INFER_METHOD = "ModelInfer"


def _retry_policy(replicas: list[Replica], grpc: bool) -> dict | None:
    """Once more on another replica, for a refusal for load or a failure before any answer."""
    if len(replicas) < 2:
        return None
    return {
        "retry_on": ("unavailable,resource-exhausted," if grpc else "retriable-status-codes,")
        + "reset-before-request,connect-failure,refused-stream",
        **({} if grpc else {"retriable_status_codes": [503]}),
        "num_retries": 1,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


def _route(match: dict, cluster: str, timeout: str = "0s", retry: dict | None = None) -> dict:
    route = {"cluster": cluster, "timeout": timeout}
    if retry:
        route["retry_policy"] = retry
    return {"match": match, "route": route}


EXT_AUTHZ = "envoy.filters.http.ext_authz"
ACTIVATOR_CLUSTER = "activator"
CHECK_PREFIX = "/check"  # the activator's path prefix: /check/inference.GRPCInferenceService/ModelInfer
# The activator's refusals: Envoy takes an authorization server's 5xx for its own failure (and drops
# the body), so it refuses with 429, which the local replies below turn into 503 (gRPC UNAVAILABLE),
# its words kept
REFUSAL_STATUS = 429


def _refused(match: dict, api: str) -> dict:
    message = f"This API is restricted: {api} is {contract.EDGE_RESTRICTED_MESSAGE}"
    return {
        "match": match,
        "direct_response": {"status": 403, "body": {"inline_string": message}},
        # never a question to the activator (which would load the avatar a refused call names)
        "typed_per_filter_config": {
            EXT_AUTHZ: {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                "disabled": True,
            }
        },
    }


def _class_routes(path_match: dict, protocol: str, retry: dict | None) -> list[dict]:
    """The inference routes of one listener: each class by its frames header; none: bulk."""
    routes = []
    for name, fewest, most in contract.EDGE_CLASSES:
        header = {"name": contract.EDGE_FRAMES_HEADER, "range_match": {"start": fewest, "end": most + 1}}
        routes.append(_route({**path_match, "headers": [header]}, f"{protocol}_{name}", retry=retry))
    routes.append(_route(path_match, f"{protocol}_bulk", retry=retry))
    return routes


def grpc_routes(replicas: list[Replica]) -> list[dict]:
    routes = [
        _refused({"path": GRPC_SERVICE + method}, api) for api, methods in RESTRICTED_GRPC.items() for method in methods
    ]
    routes.append(_route({"path": GRPC_SERVICE + STREAM_METHOD}, "grpc_stream"))  # never cut
    routes += _class_routes({"path": GRPC_SERVICE + INFER_METHOD}, "grpc", _retry_policy(replicas, grpc=True))
    routes.append(_route({"prefix": "/"}, "grpc_meta", timeout="30s", retry=_retry_policy(replicas, grpc=True)))
    return routes


def http_routes(replicas: list[Replica]) -> list[dict]:
    routes = [
        _refused({"safe_regex": {"regex": pattern}}, api)
        for api, patterns in RESTRICTED_HTTP.items()
        for pattern in patterns
    ]
    routes += _class_routes({"safe_regex": {"regex": HTTP_INFER}}, "http", _retry_policy(replicas, grpc=False))
    routes.append(_route({"prefix": "/"}, "http_meta", timeout="30s", retry=_retry_policy(replicas, grpc=False)))
    return routes


def _model_rule(grpc: bool) -> dict:
    """The request's model id into the load balancer's metadata: the SDK's header on gRPC, the
    KServe path's ``/v2/models/<id>/`` on HTTP."""
    to = {"metadata_namespace": "envoy.lb", "key": AVATARS_KEY, "type": "STRING"}
    if grpc:
        return {"header": contract.EDGE_MODEL_HEADER, "on_header_present": to, "remove": False}
    rewrite = {"pattern": {"regex": HTTP_MODEL_PATH}, "substitution": "\\1"}
    return {"header": ":path", "on_header_present": {**to, "regex_value_rewrite": rewrite}, "remove": False}


def _replica_rule() -> dict:
    """The activator's answer (the replica holding the request's avatar) into the load balancer's
    metadata; empty: any replica."""
    to = {"metadata_namespace": "envoy.lb", "key": REPLICA_KEY, "type": "STRING"}
    return {"header": contract.EDGE_REPLICA_HEADER, "on_header_present": to, "remove": True}


def activator_filter(budget_s: float) -> dict:
    """Envoy's external authorization over HTTP, asking the activator (``synctalk_ops.activator``)
    about each request from its headers alone (never its body); its answer's replica header is set
    on the request, overwriting one a client sent; a refusal (503 "the avatar is loading") goes to
    the client as it is; no answer within the budget, or none at all: 503."""
    return {
        "name": EXT_AUTHZ,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "status_on_error": {"code": 503},
            "allowed_headers": {"patterns": [{"exact": contract.EDGE_MODEL_HEADER}]},
            "http_service": {
                "server_uri": {
                    "uri": "http://activator",
                    "cluster": ACTIVATOR_CLUSTER,
                    "timeout": f"{budget_s + 2:g}s",
                },
                "path_prefix": CHECK_PREFIX,
                "authorization_response": {
                    "allowed_upstream_headers": {"patterns": [{"exact": contract.EDGE_REPLICA_HEADER}]}
                },
            },
        },
    }


def _reply_format(grpc: bool, text: str = "%LOCAL_REPLY_BODY%") -> dict:
    """The edge's own replies: a line of text a gRPC client gets as its message, or the KServe
    API's {"error": ...}. Envoy fills command operators (``%UPSTREAM_CLUSTER%``) here, in a
    format, never in a mapper's body."""
    return {"text_format_source": {"inline_string": text}} if grpc else {"json_format": {"error": text}}


def _activator_refusal() -> dict:
    """The activator's refusal (an avatar still loading): 503 (gRPC UNAVAILABLE), its words kept."""
    return {
        "filter": {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ",
                    "value": {"default_value": REFUSAL_STATUS, "runtime_key": "synctalk_activator_refusal"},
                }
            }
        },
        "status_code": 503,
    }


def listener_of(
    name: str, host: str, port: int, routes: list[dict], grpc: bool, activator_budget_s: float | None = None
) -> dict:
    """One listener. ``activator_budget_s``: each request is first put to the activator (avatars on
    demand), which may hold it that long while its avatar loads."""
    body_format = _reply_format(grpc)
    asked = [activator_filter(activator_budget_s)] if activator_budget_s is not None else []
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "HTTP2" if grpc else "AUTO",
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        "stream_idle_timeout": f"{STREAM_IDLE_TIMEOUT_S}s",
        "request_timeout": "0s",
        "http2_protocol_options": {
            "initial_stream_window_size": STREAM_WINDOW_BYTES,
            "initial_connection_window_size": CONNECTION_WINDOW_BYTES,
            "max_concurrent_streams": 1024,
        },
        "route_config": {
            "name": name,
            "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}],
        },
        "local_reply_config": {
            "mappers": [
                {
                    # a class's circuit breaker: refused at once, from the headers
                    "filter": {"response_flag_filter": {"flags": ["UO"]}},
                    "status_code": 503,
                    # naming the class's cluster (grpc_bulk, http_light, grpc_stream, ...)
                    "body_format_override": _reply_format(grpc, f"{contract.EDGE_FULL_MESSAGE} (%UPSTREAM_CLUSTER%)"),
                },
            ]
            + ([_activator_refusal()] if asked else []),
            "body_format": body_format,
        },
        "http_filters": [
            *asked,
            {
                "name": "envoy.filters.http.header_to_metadata",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
                    # on demand, the activator's pick alone (the endpoints list no avatars)
                    "request_rules": [_replica_rule() if asked else _model_rule(grpc)],
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "name": name,
        "address": address_of(host, port),
        "per_connection_buffer_limit_bytes": CONNECTION_BUFFER_BYTES,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }
