"""No client reaches into the server: without the API key, model control (a client's own model
code included), shared memory (the server's own regions included), logging and trace are refused
and nothing is loaded, written or registered; inference, health and metadata stay open. With the
key the project's tools work as before (the avatar, churn and shared-memory tests use it)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from synctalk_build import paths
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_client.credentials import api_key_headers
from synctalk_client.errors import PermissionDeniedError
from synctalk_common import contract
from synctalk_ops import api_key

pytestmark = pytest.mark.e2e

RESTRICTED = contract.MSG_RESTRICTED
WRONG_KEY = "not-the-servers-key-0123456789"


def no_key_environment() -> dict:
    env = dict(os.environ)
    env.pop(contract.API_KEY_ENV, None)
    env.pop(contract.API_KEY_FILE_ENV, None)
    return env


def http(server, method: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers[contract.API_KEY_HEADER] = key
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{server.http_url}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def repository_names(server) -> set:
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        index = triton.get_model_repository_index(as_json=True, headers=api_key_headers(api_key.read_key()))
    return {m["name"] for m in index.get("models", [])}


def test_a_clients_own_model_code_is_not_loaded_without_the_key(server, tmp_path):
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('code of a client ran on the server')\n"
    code += "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
    config = {"name": "intruder", "backend": "python", "max_batch_size": 0, "input": [], "output": []}
    body = {"parameters": {"config": json.dumps(config), "file:1/model.py": base64.b64encode(code.encode()).decode()}}
    status, text = http(server, "POST", "/v2/repository/models/intruder/load", body)
    assert status == 403 and f"expecting header '{contract.API_KEY_HEADER}'" in text
    status, _ = http(server, "POST", "/v2/repository/models/intruder/load", body, key=WRONG_KEY)
    assert status == 403
    assert not marker.exists() and "intruder" not in repository_names(server)


def test_load_and_unload_need_the_key_and_change_nothing_without_it(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        for call in (lambda: triton.load_model("demo"), lambda: triton.unload_model(contract.DEFAULT_MODEL_ID)):
            with pytest.raises(InferenceServerException, match="This protocol is restricted"):
                call()
    assert http(server, "POST", f"/v2/repository/models/{contract.DEFAULT_MODEL_ID}/unload", {})[0] == 403
    with CompositeClient(server.grpc_url, api_key="") as client:
        with pytest.raises(PermissionDeniedError) as refused:
            client.unload_model(contract.DEFAULT_MODEL_ID)
        assert refused.value.message == RESTRICTED.format(api="model control")
        assert refused.value.http_status == 403
    with CompositeClient(server.grpc_url, api_key=WRONG_KEY) as client:
        with pytest.raises(PermissionDeniedError, match="refused the API key for model control"):
            client.load_model(contract.DEFAULT_MODEL_ID)
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        assert triton.is_model_ready(contract.DEFAULT_MODEL_ID)


def test_shared_memory_cannot_be_registered_without_the_key_not_even_a_servers_region(server):
    regions = sorted(Path("/dev/shm").glob("triton_python_backend_shm_region_*"))
    assert regions, "the Python backend's regions are the server's own IPC"
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        for key in (f"/{regions[0].name}", "/synctalk_visitor"):
            with pytest.raises(InferenceServerException, match="This protocol is restricted"):
                triton.register_system_shared_memory("visitor", key, 4096)
        status = triton.get_system_shared_memory_status(headers=api_key_headers(api_key.read_key()))
    assert "visitor" not in json.dumps(str(status))
    with pytest.raises(PermissionDeniedError, match="this server restricts shared memory"):
        CompositeClient(server.grpc_url, api_key="", shared_memory=True)


def test_logging_and_trace_settings_need_the_key(server):
    assert http(server, "POST", "/v2/logging", {"log_verbose_level": 1})[0] == 403
    assert http(server, "POST", "/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]})[0] == 403
    assert http(server, "GET", "/v2/logging", key=api_key.read_key())[0] == 200


def test_inference_health_and_metadata_stay_open(server):
    with CompositeClient(server.grpc_url, api_key="", stage_timings=False) as client:
        crops = synthetic.face_crops(2)
        masked, audio = synthetic.masked(crops), synthetic.speech_like_audio(2)
        response = client.infer_batch_composite(
            CompositeBatchRequest.from_arrays(contract.DEFAULT_MODEL_ID, crops, masked, audio)
        )
        assert response.success, response.error
        assert len(response.composited_frames) == 2
        health = client.health()
        assert (
            health["ready"]
            and health["models"] is None
            and RESTRICTED.format(api="model control") in health["models_error"]
        )
        with pytest.raises(Exception, match=contract.MSG_MODEL_NOT_FOUND.format(model_id="nobody")):
            client.infer_batch_composite(
                CompositeBatchRequest.from_arrays("nobody", crops, masked, audio)
            ).raise_for_error()
    assert http(server, "GET", f"/v2/models/{contract.DEFAULT_MODEL_ID}")[0] == 200
    assert http(server, "GET", f"/v2/models/{contract.DEFAULT_MODEL_ID}/config")[0] == 200


def test_the_cli_says_what_to_set_in_one_line(server):
    command = [sys.executable, "-m", "synctalk_client.cli", "--url", server.grpc_url, "load", "demo"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=no_key_environment())
    assert done.returncode == 1
    assert done.stderr.strip() == "synctalk-client: permission error: " + RESTRICTED.format(api="model control")
    command[-2:] = ["unload", "nobody"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=no_key_environment())
    assert done.returncode == 1 and "model not found: nobody" in done.stderr


def test_the_install_key_is_private_and_the_server_command_carries_it_as_a_restriction():
    key = api_key.install_key()
    assert api_key.KEY_FILE.stat().st_mode & 0o077 == 0 and api_key.KEY_FILE.parent.stat().st_mode & 0o077 == 0
    http_flag, grpc_flag = api_key.server_args(key)
    apis = ",".join(contract.RESTRICTED_APIS)
    assert http_flag == f"--http-restricted-api={apis}:{contract.API_KEY_HEADER}={key}"
    assert grpc_flag == f"--grpc-restricted-protocol={apis}:{contract.API_KEY_HEADER}={key}"
    with pytest.raises(ValueError, match="at least 16 characters"):
        api_key.server_args("short:key=1")
    assert paths.BUILD in api_key.KEY_FILE.parents
