"""An avatar added once is served after a re-render of the repository and a server restart."""

import json

import cv2
import pytest

from synctalk_build import avatar_store, paths
from synctalk_build.render_repository import render
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_ops.serve import TritonServer
from tests.conftest import free_port

pytestmark = pytest.mark.e2e


def test_an_avatar_survives_a_re_render_and_a_restart(tmp_path, models_dir):
    frames, boxes = synthetic.avatar_background(3, 160, 96, face=48, seed=4)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i}.png"), frame[..., ::-1])
    (tmp_path / "boxes.json").write_text(json.dumps(boxes.tolist()))
    store = tmp_path / "store"
    repository = render("cpu", tmp_path / "repository", models_dir / "tiny", avatar_store=store)
    avatar_store.add(repository, "erin", tmp_path, tmp_path / "boxes.json")
    audio = synthetic.speech_like_audio(4, seed=4)
    served = []
    for attempt in range(2):  # the second time: the repository rendered afresh, a new server
        if attempt:
            repository = render("cpu", tmp_path / "repository", models_dir / "tiny", avatar_store=store)
        log = paths.BUILD / "logs" / f"test-tritonserver-store-{attempt}.log"
        with TritonServer(repository, free_port(), free_port(), free_port(), log_path=log) as server:
            with CompositeClient(server.grpc_url) as client:
                assert "erin" in client.model_ids()
                response = client.infer_batch_composite(
                    CompositeBatchRequest.audio_only("erin", audio, start_frame_idx=1)
                )
                served.append(response.raise_for_error().composited_frames)
    assert served[0] == served[1], "the same avatar, the same frames"
