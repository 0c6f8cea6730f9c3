"""What an avatar costs, measured on a live server: three avatars added and loaded keep the
server's host memory (its processes' private memory and their shared-memory regions on /dev/shm:
``process_tree.host_memory_bytes``) within the documented budget, and an avatar that would not fit
is refused with the numbers."""

import json

import cv2
import pytest

from synctalk_build import avatar_store
from synctalk_client import CompositeBatchRequest, synthetic
from synctalk_common import contract
from synctalk_ops import avatar_memory
from synctalk_ops.process_tree import host_memory_bytes


def test_three_avatars_stay_within_the_documented_budget(server, client, tmp_path):
    frames, boxes = synthetic.avatar_background(25, 320, 180, face=96, seed=9)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i}.png"), frame[..., ::-1])
    (tmp_path / "boxes.json").write_text(json.dumps(boxes.tolist()))
    ids = ["mem_a", "mem_b", "mem_c"]
    audio = synthetic.speech_like_audio(8, seed=9)
    largest = synthetic.speech_like_audio(contract.MAX_BATCH_SIZE, seed=9)
    client.infer_batch_composite(CompositeBatchRequest.audio_only("missing", audio))  # the client's own setup first
    before = host_memory_bytes(server.process.pid)
    budget = 0
    try:
        for avatar_id in ids:
            avatar_store.add(server.repository, avatar_id, tmp_path, tmp_path / "boxes.json")
            budget += avatar_memory.check_fits(server.repository, avatar_id)["total"]
            client.load_model(avatar_id)
            for start, frames in ((0, audio), (8, largest)):  # the budget holds at the largest batch
                client.infer_batch_composite(
                    CompositeBatchRequest.audio_only(avatar_id, frames, start_frame_idx=start)
                ).raise_for_error()
        added = host_memory_bytes(server.process.pid) - before
        print(f"3 avatars: +{added / 2**20:.0f} MB measured, budget {budget / 2**20:.0f} MB")
        assert added < budget
    finally:
        for avatar_id in ids:
            if avatar_id in client.model_ids():
                client.unload_model(avatar_id)
            if (server.repository / avatar_id).exists():
                avatar_store.remove(server.repository, avatar_id)


def test_an_avatar_that_would_not_fit_is_refused_with_the_numbers(server, tmp_path):
    frames, boxes = synthetic.avatar_background(2, 160, 96, face=48)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i}.png"), frame[..., ::-1])
    avatar_store.add(server.repository, "too_big", tmp_path, boxes[0].tolist())
    try:
        with pytest.raises(
            MemoryError, match=r"avatar 'too_big' needs 0\.\d\d GB resident .* this host has 1\.00 GB available"
        ):
            avatar_memory.check_fits(server.repository, "too_big", available=2**30)
        assert (
            avatar_memory.check_fits(server.repository, "too_big", available=64 * 2**30)["total"]
            > avatar_memory.AVATAR_OVERHEAD_BYTES
        )
    finally:
        avatar_store.remove(server.repository, "too_big")
