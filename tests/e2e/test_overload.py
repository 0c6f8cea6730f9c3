"""Overload on a live server: the generator's bounded queue (tools.render_model.queue_policy)
refuses what it cannot hold at once, as "server busy" (ServerBusyError, HTTP 503 in the
reference's terms), instead of queueing without bound; bad input is still a validation error,
no stub dies, and the server serves on."""

import threading
import time

import numpy as np
import pytest

from synctalk_client import CompositeBatchRequest, CompositeClient, contract, synthetic
from tools import avatar_store
from tools.serve import stub_counts

pytestmark = pytest.mark.e2e
AVATAR = "crowded"
CLIENTS = 12  # twice the CPU profile's queue of 6 (one generator instance), all at once


@pytest.fixture(scope="module")
def avatar(server, tmp_path_factory):
    import cv2

    folder = tmp_path_factory.mktemp("crowded")
    cv2.imwrite(str(folder / "0.png"), np.full((64, 96, 3), 90, np.uint8))
    avatar_store.add(server.repository, AVATAR, folder, [16, 0, 80, 64])
    with CompositeClient(server.grpc_url) as client:
        client.load_model(AVATAR)
        yield AVATAR
        client.unload_model(AVATAR)
    avatar_store.remove(server.repository, AVATAR)


def test_the_generators_queue_is_bounded_in_the_served_config(server, avatar):
    with CompositeClient(server.grpc_url) as client:
        for name in (contract.GENERATOR_MODEL, contract.avatar_models(AVATAR)["generator"]):
            config = client._triton.get_model_config(name, as_json=True)["config"]
            policy = config["dynamic_batching"]["default_queue_policy"]
            assert (
                policy.get("timeout_action", "REJECT") == "REJECT" and policy["allow_timeout_override"] is True
            )  # REJECT: the default
            assert int(policy["max_queue_size"]) == 6, name


def test_overload_is_refused_as_busy_and_the_server_serves_on(server, avatar):
    audio = synthetic.speech_like_audio(8, seed=5)
    outcomes, lock = [], threading.Lock()
    stop = time.monotonic() + 4.0
    start = threading.Barrier(CLIENTS)

    def offer():
        with CompositeClient(server.grpc_url, timeout_s=20, stage_timings=False, busy_retries=0) as client:
            start.wait()
            while time.monotonic() < stop:
                sent = time.perf_counter()
                response = client.infer_batch_composite(CompositeBatchRequest.audio_only(AVATAR, audio))
                with lock:
                    outcomes.append(
                        (response.success, response.error_category, response.error, time.perf_counter() - sent)
                    )

    stubs = stub_counts(server.process.pid)
    threads = [threading.Thread(target=offer) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the queues are full by now: bad input is still bad input, refused as such
    # (the door may refuse it as busy before looking at it: the client's retries get it looked at)
    with CompositeClient(server.grpc_url, timeout_s=30, busy_retries=10) as client:
        bad = np.array(audio, copy=True)
        bad[3] = np.nan
        response = client.infer_batch_composite(CompositeBatchRequest.audio_only(AVATAR, bad))
        assert (response.error_category, response.http_status) == ("validation", 400), response.error
    for thread in threads:
        thread.join()

    served = [o for o in outcomes if o[0]]
    busy = [o for o in outcomes if o[1] == contract.CATEGORY_BUSY]
    print(f"{len(outcomes)} offered: {len(served)} served, {len(busy)} refused as busy")
    assert served and busy, "both served and refused requests under twice the queue's load"
    assert [o for o in outcomes if not o[0] and o[1] != contract.CATEGORY_BUSY] == [], "only busy refusals"
    assert all(o[2].startswith(f"server busy: {AVATAR} refused the request (") for o in busy)
    assert all(o[3] < 20 for o in served)
    print(f"latency: served at most {max(o[3] for o in served):.2f} s, refused at most {max(o[3] for o in busy):.2f} s")
    after = stub_counts(server.process.pid)
    assert all(after.get(model, 0) >= count for model, count in stubs.items()), f"a stub died: {stubs} -> {after}"
    with CompositeClient(server.grpc_url) as client:  # and the server serves on
        client.infer_batch_composite(CompositeBatchRequest.audio_only(AVATAR, audio)).raise_for_error()
