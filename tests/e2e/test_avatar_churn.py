"""Avatars added, loaded, unloaded and removed on a live server while another client streams:
the server stays ready at every sample and no request of the other model fails."""

import threading
import time

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from synctalk_build import avatar_store
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_common import contract

pytestmark = pytest.mark.e2e


def test_avatar_churn_keeps_the_server_ready_and_other_requests_served(server, tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((96, 160, 3), 60 + 80 * i, np.uint8))
    crops = synthetic.face_crops(4, seed=2)
    demo = CompositeBatchRequest.from_arrays(
        contract.DEFAULT_MODEL_ID, crops, synthetic.masked(crops), synthetic.speech_like_audio(4, seed=2)
    )
    stop = threading.Event()
    readiness, served, failures = [], [], []

    def sample():
        with grpcclient.InferenceServerClient(server.grpc_url) as triton:
            while not stop.is_set():
                readiness.append(triton.is_server_ready())
                time.sleep(0.05)

    def stream():
        with CompositeClient(server.grpc_url, stage_timings=False) as client:
            while not stop.is_set():
                response = client.infer_batch_composite(demo)
                (served if response.success else failures).append(response.error)

    threads = [threading.Thread(target=sample), threading.Thread(target=stream)]
    for thread in threads:
        thread.start()
    try:
        with CompositeClient(server.grpc_url) as client:
            for _ in range(2):
                avatar_store.add(server.repository, "dora", tmp_path, [40, 16, 120, 96])
                client.load_model("dora")
                assert "dora" in client.model_ids()
                assert client.infer_batch_composite(
                    CompositeBatchRequest.from_arrays(
                        "dora", crops, synthetic.masked(crops), synthetic.speech_like_audio(4)
                    )
                ).success
                client.unload_model("dora")  # returns once the unload is complete
                states = {row["name"]: row["state"] for row in client.list_models()}
                assert all(
                    states.get(name) not in ("READY", "UNLOADING") for name in contract.avatar_models("dora").values()
                )
                avatar_store.remove(server.repository, "dora")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print(
        f"churn: {len(readiness)} readiness samples, {readiness.count(True)} ready; {len(served)} demo requests "
        f"served, {len(failures)} failed"
    )
    assert failures == [], failures[:3]
    assert len(served) >= 2 and len(readiness) >= 20
    assert all(readiness), f"server not ready at {readiness.count(False)} of {len(readiness)} samples"
