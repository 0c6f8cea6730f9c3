"""The edge's Envoy bootstrap (ops/synctalk_ops/edge/): Envoy's own validation, and what it must hold:
limits from the door's capacity, the restricted APIs never routed, streams never cut, the admin
on loopback."""

from __future__ import annotations

import pytest
import yaml

from synctalk_build.render_model import admission_frames
from synctalk_common import contract
from synctalk_ops import edge


def replicas(n: int) -> list[edge.Replica]:
    return [edge.Replica(f"replica-{i}", "127.0.0.1", 18001 + 10 * i, 18000 + 10 * i) for i in range(n)]


def listener(config: dict, name: str) -> dict:
    (found,) = [x for x in config["static_resources"]["listeners"] if x["name"] == name]
    return found["filter_chains"][0]["filters"][0]["typed_config"]


def routes(config: dict, name: str) -> list[dict]:
    return listener(config, name)["route_config"]["virtual_hosts"][0]["routes"]


def clusters(config: dict) -> dict[str, dict]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


@pytest.mark.parametrize("profile,n", [("cpu", 1), ("cpu", 3), ("gpu", 2)])
def test_envoy_validates_the_rendered_edge(tmp_path, profile, n):
    path = edge.write(edge.render(replicas(n), profile, host="0.0.0.0"), tmp_path / "edge.yaml")
    edge.validate(path)  # raises with Envoy's words


def test_envoy_refuses_a_broken_bootstrap(tmp_path):
    config = edge.render(replicas(1))
    config["static_resources"]["clusters"][0]["lb_policy"] = "NO_SUCH_POLICY"
    with pytest.raises(ValueError, match="envoy refused"):
        edge.validate(edge.write(config, tmp_path / "broken.yaml"))


def test_the_classes_cover_every_batch_size_once():
    covered = [n for _, fewest, most in contract.EDGE_CLASSES for n in range(fewest, most + 1)]
    assert covered == list(range(0, contract.MAX_BATCH_SIZE + 1))


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_limits_per_replica_come_from_the_doors_capacity(profile):
    n = 3
    config = edge.render(replicas(n), profile)
    capacity = admission_frames(profile)
    by_name = clusters(config)
    for name, _, most in contract.EDGE_CLASSES:
        expected = max(1, capacity // most, edge.LIGHT_PER_REPLICA_FLOOR if name == "light" else 1)
        for protocol in ("grpc", "http"):
            threshold = by_name[f"{protocol}_{name}"]["circuit_breakers"]["thresholds"][0]
            assert threshold["max_requests"] == n * expected, (protocol, name)
    assert by_name["grpc_stream"]["circuit_breakers"]["thresholds"][0]["max_requests"] == n * edge.max_streams()
    # a 32-frame request fills the door: one per replica at the edge, the rest refused before their bodies
    assert edge.class_limits(profile)["bulk"] == max(1, capacity // contract.MAX_BATCH_SIZE)
    for cluster in by_name.values():  # every cluster spans every replica
        endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert [e["endpoint"]["hostname"] for e in endpoints] == [r.name for r in replicas(n)]
        assert cluster["health_checks"][0]["http_health_check"]["path"] == "/v2/health/ready"


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_bulk_requests_wait_at_the_edge_the_others_are_refused_at_once(profile):
    """Past a replica's limit a bulk request waits in Envoy's pending queue: each replica's limit
    is held by its connections (one HTTP/2 connection of that many streams, or that many HTTP/1.1
    connections), so the next finds none free and waits, up to WAITING_PER_REPLICA a replica."""
    n = 3
    by_name = clusters(edge.render(replicas(n), profile))
    limit, waiting = edge.class_limits(profile)["bulk"], edge.WAITING_PER_REPLICA["bulk"]
    for protocol in ("grpc", "http"):
        bulk = by_name[f"{protocol}_bulk"]
        breakers = bulk["circuit_breakers"]
        assert breakers["thresholds"][0]["max_pending_requests"] == n * waiting
        assert breakers["per_host_thresholds"] == [{"max_connections": 1 if protocol == "grpc" else limit}]
        options = bulk.get("typed_extension_protocol_options", {})
        if protocol == "grpc":
            http2 = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
            assert http2["http2_protocol_options"]["max_concurrent_streams"] == limit
        for name in ("light", "batch", "stream", "meta"):  # refused at once: no waiting line
            other = by_name.get(f"{protocol}_{name}")
            if other is not None:
                assert "per_host_thresholds" not in other["circuit_breakers"], other["name"]
    assert set(edge.WAITING_PER_REPLICA) == {"bulk"}


def test_restricted_apis_are_answered_by_the_edge_never_routed():
    config = edge.render(replicas(2))
    grpc_refused = {r["match"]["path"].rsplit("/", 1)[1]: r for r in routes(config, "grpc") if "direct_response" in r}
    assert set(grpc_refused) == {m for methods in edge.RESTRICTED_GRPC.values() for m in methods}
    assert set(edge.RESTRICTED_GRPC) == set(contract.RESTRICTED_APIS)
    http_refused = [r for r in routes(config, "http") if "direct_response" in r]
    assert len(http_refused) == sum(len(p) for p in edge.RESTRICTED_HTTP.values())
    for route in [*grpc_refused.values(), *http_refused]:
        assert route["direct_response"]["status"] == 403
        assert contract.EDGE_RESTRICTED_MESSAGE in route["direct_response"]["body"]["inline_string"]
    # the refusals come before any route that proxies
    for name in ("grpc", "http"):
        kinds = ["direct_response" in r for r in routes(config, name)]
        assert kinds == sorted(kinds, reverse=True)


def test_streams_are_never_timed_out_and_stay_on_one_replica():
    config = edge.render(replicas(2))
    (stream,) = [r for r in routes(config, "grpc") if r["match"].get("path", "").endswith("/ModelStreamInfer")]
    assert stream["route"]["cluster"] == "grpc_stream"
    assert stream["route"]["timeout"] == "0s"
    assert "retry_policy" not in stream["route"]  # a stream is never replayed on another replica


def test_the_edges_refusals_are_formats_with_no_operator_in_a_body():
    """Envoy fills command operators (%UPSTREAM_CLUSTER%) in a format only: a mapper's inline body
    reached clients with the placeholder unfilled."""
    config = edge.render(replicas(2))
    texts = {"grpc": lambda f: f["text_format_source"]["inline_string"], "http": lambda f: f["json_format"]["error"]}
    for name, text_of in texts.items():
        (mapper,) = listener(config, name)["local_reply_config"]["mappers"]
        assert "%" not in str(mapper.get("body", "")), mapper
        assert text_of(mapper["body_format_override"]) == f"{contract.EDGE_FULL_MESSAGE} (%UPSTREAM_CLUSTER%)"


def test_unary_requests_retry_on_another_replica_only_where_there_is_one():
    for n, retried in ((1, False), (2, True)):
        config = edge.render(replicas(n))
        infer = [r for r in routes(config, "grpc") if r["match"].get("path", "").endswith("/ModelInfer")]
        assert infer and all(("retry_policy" in r["route"]) == retried for r in infer)


def test_a_request_without_the_frames_header_is_bulk():
    config = edge.render(replicas(1))
    for name in ("grpc", "http"):
        infer = [r for r in routes(config, name) if "route" in r and "headers" in r["match"]]
        unmarked = [
            r
            for r in routes(config, name)
            if "route" in r and "headers" not in r["match"] and r["route"]["cluster"].endswith("_bulk")
        ]
        assert len(infer) == len(contract.EDGE_CLASSES) and len(unmarked) == 1


def test_the_admin_listens_on_loopback_whatever_the_listeners():
    config = edge.render(replicas(1), host="0.0.0.0")
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    addresses = [x["address"]["socket_address"] for x in config["static_resources"]["listeners"]]
    assert [(a["address"], a["port_value"]) for a in addresses] == [("0.0.0.0", 8001), ("0.0.0.0", 8000)]


def test_replicas_by_name_are_resolved_by_envoy(tmp_path):
    named = [edge.Replica("replica-0", "tritonserver", 8001, 8000)]
    config = edge.render(named, "gpu", host="0.0.0.0")
    assert {c["type"] for c in config["static_resources"]["clusters"]} == {"STRICT_DNS"}
    assert {c["type"] for c in edge.render(replicas(2))["static_resources"]["clusters"]} == {"STATIC"}
    edge.validate(edge.write(config, tmp_path / "named.yaml"))


def test_placed_replicas_are_read_from_watched_files_with_their_avatars(tmp_path):
    """A local edge's replicas come from endpoint files (one a cluster, rewritten whole by
    write_endpoints): each endpoint carries the avatars it holds as the load balancer's metadata,
    and every cluster picks its subset by the request's model id, any replica where none holds it."""
    placed = [replicas(2)[0].holding(["anna", "bob"]), replicas(2)[1].holding(["bob"])]
    files = edge.write_endpoints(placed, tmp_path / "endpoints")
    config = edge.render(placed, endpoints_dir=tmp_path / "endpoints")
    assert sorted(p.name for p in (tmp_path / "endpoints").iterdir()) == sorted(f.name for f in files)
    for name, cluster in clusters(config).items():
        assert cluster["type"] == "EDS" and "load_assignment" not in cluster
        assert cluster["eds_cluster_config"]["eds_config"]["path_config_source"]["path"].endswith(f"/{name}.yaml")
        assert cluster["lb_subset_config"] == {
            "fallback_policy": "ANY_ENDPOINT",
            "subset_selectors": [{"keys": [edge.AVATARS_KEY]}, {"keys": [edge.REPLICA_KEY]}],
            "list_as_any": True,
        }
    (assignment,) = yaml.safe_load((tmp_path / "endpoints" / "grpc_light.yaml").read_text())["resources"]
    held = [
        e["metadata"]["filter_metadata"]["envoy.lb"][edge.AVATARS_KEY]
        for e in assignment["endpoints"][0]["lb_endpoints"]
    ]
    assert held == [["anna", "bob"], ["bob"]]
    edge.validate(edge.write(config, tmp_path / "edge.yaml"))


def test_the_model_id_picks_the_subset_from_the_header_or_the_http_path():
    import re

    config = edge.render(replicas(1))
    (grpc_rule,) = listener(config, "grpc")["http_filters"][0]["typed_config"]["request_rules"]
    assert grpc_rule["header"] == contract.EDGE_MODEL_HEADER
    assert grpc_rule["on_header_present"]["metadata_namespace"] == "envoy.lb"
    (http_rule,) = listener(config, "http")["http_filters"][0]["typed_config"]["request_rules"]
    assert http_rule["header"] == ":path"
    pattern = http_rule["on_header_present"]["regex_value_rewrite"]["pattern"]["regex"]
    for path in (
        "/v2/models/anna/infer",
        "/v2/models/anna/versions/1/infer",
        "/v2/models/anna/ready",
        "/v2/models/anna",
    ):
        assert re.sub(pattern, r"\1", path) == "anna", path
    assert [f["name"] for f in listener(config, "grpc")["http_filters"]][-1] == "envoy.filters.http.router"


def test_an_avatars_own_steps_belong_to_it():
    assert contract.model_owner("anna_background") == "anna"
    assert contract.model_owner("anna_synctalk") == "anna" and contract.model_owner("anna_audio_encoder") == "anna"
    assert contract.model_owner("anna") == "anna" and contract.model_owner(contract.GENERATOR_MODEL) == "synctalk"


def test_on_demand_the_activator_is_asked_first_and_picks_the_replica_by_name(tmp_path):
    """Avatars on demand (synctalk_ops.activator): each listener asks the activator (ext_authz, the
    request's headers only) before anything else, its answer's replica header into the load
    balancer's metadata (the model id's rule off: the endpoints list no avatars), a restricted API
    never asked about, the activator's refusal turned into 503 with its words; Envoy takes it."""
    config = edge.render(replicas(2), activator=("127.0.0.1", 18090), activator_budget_s=4)
    edge.validate(edge.write(config, tmp_path / "on-demand.yaml"))
    assert clusters(config)["activator"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"] == {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 18090}}
    }
    for name in ("grpc", "http"):
        manager = listener(config, name)
        asked, to_metadata, _router = manager["http_filters"]
        authz = asked["typed_config"]
        assert asked["name"] == "envoy.filters.http.ext_authz" and not authz["failure_mode_allow"]
        assert "with_request_body" not in authz, "never the body"
        assert authz["http_service"]["server_uri"]["timeout"] == "6s"  # the budget and a margin
        (rule,) = to_metadata["typed_config"]["request_rules"]
        assert rule["header"] == contract.EDGE_REPLICA_HEADER and rule["remove"]
        assert rule["on_header_present"]["key"] == edge.REPLICA_KEY
        refused = [r for r in manager["route_config"]["virtual_hosts"][0]["routes"] if "direct_response" in r]
        assert refused and all(
            r["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] for r in refused
        )
        _full, loading = manager["local_reply_config"]["mappers"]
        assert loading["status_code"] == 503
    endpoint = clusters(config)["grpc_bulk"]["load_assignment"]["endpoints"][0]["lb_endpoints"][1]
    assert endpoint["metadata"]["filter_metadata"]["envoy.lb"] == {edge.REPLICA_KEY: "replica-1"}
    # without an activator: nothing of it
    plain = edge.render(replicas(2))
    assert "activator" not in clusters(plain)
    assert [f["name"] for f in listener(plain, "grpc")["http_filters"]][0] == "envoy.filters.http.header_to_metadata"
