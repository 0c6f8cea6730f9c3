"""Avatars on a live server: added with one command, loaded, served with paste-back, unloaded."""

import json
import subprocess
import sys

import numpy as np
import pytest
import simplejpeg
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from synctalk_build import avatar_store, paths
from synctalk_client import CompositeBatchRequest, synthetic
from synctalk_client.credentials import api_key_headers
from synctalk_common import contract
from synctalk_ops import api_key
from tests.synctalk2d_loop import upstream_images

AVATAR = "anna"
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]  # one plain background colour per frame
BOXES = [[10, 8, 74, 72], [40, 16, 120, 96], [96, 0, 160, 64]]  # one crop rectangle per frame
WIDTH, HEIGHT = 160, 96


@pytest.fixture(scope="module")
def avatar(server, tmp_path_factory):
    """The avatar added with the CLI (and loaded through --load), removed afterwards."""
    import cv2

    folder = tmp_path_factory.mktemp("anna-frames")
    for i, colour in enumerate(COLOURS):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((HEIGHT, WIDTH, 3), colour[::-1], np.uint8))
    (folder.parent / "boxes.json").write_text(json.dumps(BOXES))
    command = [
        sys.executable,
        "-m",
        "synctalk_ops.avatars",
        "--repository",
        str(server.repository),
        "add",
        "--id",
        AVATAR,
        "--background",
        str(folder),
        "--boxes",
        str(folder.parent / "boxes.json"),
        "--jpeg-quality",
        "90",
        "--load",
        server.grpc_url,
    ]
    result = subprocess.run(command, cwd=paths.ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert f"loaded {AVATAR}" in result.stdout
    yield AVATAR
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        for name in contract.avatar_models(AVATAR).values():
            try:
                triton.unload_model(name, headers=api_key_headers(api_key.read_key()))
            except InferenceServerException:
                pass
    if (server.repository / AVATAR).exists():
        avatar_store.remove(server.repository, AVATAR)


def request(n, start, model_id=AVATAR):
    crops = synthetic.face_crops(n, seed=3)
    return CompositeBatchRequest.from_arrays(
        model_id, crops, synthetic.masked(crops), synthetic.speech_like_audio(n), start_frame_idx=start
    )


def assert_drawn_on(jpeg: bytes, slot: int, what: str, face: bool = True) -> None:
    """The frame is image ``slot`` of the avatar (its colour outside the box), with a face in its box
    (``face``: where the request sent crops; an audio-only face is cut from the plain image)."""
    frame = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    assert frame.shape == (HEIGHT, WIDTH, 3), "the avatar's resolution"
    x0, y0, x1, y1 = BOXES[slot]
    outside = np.ones((HEIGHT, WIDTH), bool)
    outside[max(0, y0 - 4) : y1 + 4, max(0, x0 - 4) : x1 + 4] = False  # JPEG ringing at the edges
    assert np.abs(frame[outside].astype(int) - COLOURS[slot]).mean() < 6, f"{what}: background {slot}"
    inside = frame[y0 + 4 : y1 - 4, x0 + 4 : x1 - 4].astype(int)
    assert not face or np.abs(inside - COLOURS[slot]).mean() > 40, f"{what}: a face in box {slot}"


def test_faces_are_pasted_into_the_image_upstreams_loop_picks(avatar, client):
    assert client.model_ids() == sorted([contract.DEFAULT_MODEL_ID, AVATAR])
    response = client.infer_batch_composite(request(5, start=4)).raise_for_error()
    assert len(response.composited_frames) == 5
    # FRAME_INDEX alone: the ping-pong of a clip of unknown length (upstream's loop without loop back)
    images = upstream_images(len(COLOURS), 4 + 5)[4:]
    assert images == [1, 2, 1, 0, 1]
    for i, jpeg in enumerate(response.composited_frames):
        assert_drawn_on(jpeg, images[i], f"frame {i}")
    # IMAGE_INDEX: the request names each frame's image (render sends its clip's loop)
    crops = synthetic.face_crops(4, seed=3)
    chosen = CompositeBatchRequest.from_arrays(
        AVATAR,
        crops,
        synthetic.masked(crops),
        synthetic.speech_like_audio(4),
        start_frame_idx=4,
        image_indices=[2, 2, 0, 1],
    )
    for i, jpeg in enumerate(client.infer_batch_composite(chosen).raise_for_error().composited_frames):
        assert_drawn_on(jpeg, [2, 2, 0, 1][i], f"frame {i} with IMAGE_INDEX")
    stages = (response.audio_processing_ms, response.inference_time_ms, response.composite_time_ms)
    assert all(s is not None and s > 0 for s in stages), response.timings()


def test_render_loops_as_upstream_from_a_start_frame_with_and_without_loop_back(avatar, server, tmp_path):
    from synctalk_client.cli import main as cli_main

    # 15 frames on 3 images, bouncing at both ends (loop back turns only a clip shorter than
    # twice the video: tests/unit/test_frame_loop.py and the fidelity test)
    seconds = 0.6
    for name, options, expected in (
        ("default", [], upstream_images(3, 15, loop_back=True)),
        # start 1: images 1..2 (upstream would read a missing image 3)
        ("start-1", ["--start-frame", "1", "--no-loop-back"], [2, 1] * 7 + [2]),
    ):
        frames = tmp_path / name
        assert (
            cli_main(
                ["--url", server.grpc_url, "render", "--avatar", AVATAR, "--seconds", str(seconds), "--quiet"]
                + ["--out", str(tmp_path / f"{name}.mp4"), "--frames-dir", str(frames), *options]
            )
            == 0
        )
        jpegs = sorted(frames.iterdir())
        assert len(jpegs) == 15
        for i, path in enumerate(jpegs):
            assert_drawn_on(path.read_bytes(), expected[i], f"{name}: frame {i}", face=False)


def test_avatar_listing_and_stats(avatar, client, server):
    rows = {row["name"]: row for row in client.list_models()}
    assert rows[AVATAR]["kind"] == "model_id"
    assert all(rows[name]["state"] == "READY" for name in contract.avatar_models(AVATAR).values())
    (listed,) = [a for a in avatar_store.list_avatars(server.repository) if a["id"] == AVATAR]
    assert (listed["n_frames"], listed["width"], listed["height"], listed["jpeg_quality"]) == (3, WIDTH, HEIGHT, 90)
    client.infer_batch_composite(request(1, start=0)).raise_for_error()
    stats = client.model_stats(AVATAR)[AVATAR]
    assert int(stats["inference_stats"]["success"]["count"]) >= 1


def test_negative_frame_index_is_refused_by_name(avatar, client, server):
    response = client.infer_batch_composite(request(2, start=-3))
    assert not response.success and response.error_category == "validation"
    assert "start_frame_idx" in response.error
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        inputs = []
        for spec, array in (
            (contract.VISUAL, np.zeros((1, 6, 320, 320), np.float32)),
            (contract.AUDIO, np.zeros((1, 640), np.float32)),
            (contract.FRAME_INDEX, np.array([[-1]], np.int64)),
        ):
            tensor = grpcclient.InferInput(spec.name, list(array.shape), spec.dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        with pytest.raises(InferenceServerException, match="FRAME_INDEX: frame indices must be >= 0, got -1"):
            triton.infer(AVATAR, inputs)
        inputs[2].set_data_from_numpy(np.array([[0]], np.int64))
        image = grpcclient.InferInput(contract.IMAGE_INDEX.name, [1, 1], contract.IMAGE_INDEX.dtype)
        image.set_data_from_numpy(np.array([[-2]], np.int64))
        with pytest.raises(InferenceServerException, match="IMAGE_INDEX: image indices must be >= 0, got -2"):
            triton.infer(AVATAR, [*inputs, image])
    bad = CompositeBatchRequest.audio_only(AVATAR, synthetic.speech_like_audio(2), image_indices=[0])
    response = client.infer_batch_composite(bad)
    assert response.error_category == "validation" and "image_indices must be 2 whole numbers" in response.error
    client.infer_batch_composite(request(1, start=7)).raise_for_error()  # and the avatar serves on


def test_a_bad_visual_to_an_avatar_is_refused_before_any_step_and_the_avatar_unloads(avatar, client, server):
    """An avatar's VISUAL is checked by input_validator, before the background step reads it:
    the same message and status as the reference ensemble's. Checked in the background step,
    beside the audio steps, the refusal left the ensemble stuck: its next unload never ended
    (and the server could not stop). The avatar serves on, and unloads and loads again."""
    crops = synthetic.face_crops(2, seed=3)
    visual = np.concatenate([crops, synthetic.masked(crops)], axis=1).astype(np.float32)
    visual[1, 4, 10, 20] = np.nan
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        inputs = []
        for spec, array in (
            (contract.VISUAL, visual),
            (contract.AUDIO, np.zeros((2, 640), np.float32)),
            (contract.FRAME_INDEX, np.array([[0], [1]], np.int64)),
        ):
            tensor = grpcclient.InferInput(spec.name, list(array.shape), spec.dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        with pytest.raises(
            InferenceServerException,
            match=r"VISUAL: 1 of \d+ values are NaN or Inf \(first at frame 1, index \(4, 10, 20\)\)",
        ) as info:
            triton.infer(AVATAR, inputs)
        assert str(info.value.status()) == "StatusCode.INVALID_ARGUMENT"
    client.infer_batch_composite(request(1, start=2)).raise_for_error()
    client.unload_model(AVATAR)  # raises if the unload does not complete
    client.load_model(AVATAR)
    client.infer_batch_composite(request(1, start=2)).raise_for_error()


def test_unload_then_remove(avatar, client, server):
    client.unload_model(AVATAR)
    assert client.model_ids() == [contract.DEFAULT_MODEL_ID]
    states = {row["name"]: row["state"] for row in client.list_models()}
    assert all(states.get(name) != "READY" for name in contract.avatar_models(AVATAR).values())
    assert all(states[name] == "READY" for name in contract.SHARED_MODELS), "shared steps stay loaded"
    assert client.infer_batch_composite(request(1, start=0)).error == f"model not found: {AVATAR}"
    assert client.infer_batch_composite(request(1, start=0, model_id=contract.DEFAULT_MODEL_ID)).success
    removed = avatar_store.remove(server.repository, AVATAR)
    assert sorted(removed) == sorted(contract.avatar_models(AVATAR).values())
    assert not any(a["id"] == AVATAR for a in avatar_store.list_avatars(server.repository))


def test_an_avatar_with_the_synctalk2d_front_end_streams_a_clip(server, client, tmp_path):
    """Added with --audio-preset synctalk2d, loaded, a clip rendered batch by batch, removed."""
    import cv2

    from synctalk_client.render import render_video

    for i, colour in enumerate(COLOURS):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((HEIGHT, WIDTH, 3), colour[::-1], np.uint8))
    options = avatar_store.AvatarOptions(audio_preset="synctalk2d")
    avatar_store.add(server.repository, "bert", tmp_path, [10, 8, 74, 72], options)
    try:
        client.load_model("bert")
        assert "bert" in client.model_ids()
        video = render_video(
            server.grpc_url,
            "bert",
            synthetic.speech_like_audio(20, seed=8),
            tmp_path / "bert.mp4",
            batch_size=8,
            progress=False,
        )
        # SyncTalk_2D's frame count: N + 2 for N windows, one fewer than the clip's 40 ms frames
        assert video["frames"] == contract.synctalk2d_frame_count(20 * contract.SAMPLES_PER_FRAME) == 19
        assert (tmp_path / "bert.mp4").stat().st_size > 1000
        stats = client.model_stats(contract.SYNCTALK2D_AUDIO_ENCODER_MODEL)[contract.SYNCTALK2D_AUDIO_ENCODER_MODEL]
        assert int(stats["inference_stats"]["success"]["count"]) >= 3  # the preset's encoder served the 3 batches
        client.unload_model("bert")
        # its steps after the audio (bert_from_features, an ensemble its own runs) unloaded with it
        states = {row["name"]: row["state"] for row in client.list_models()}
        assert all(states.get(name) != "READY" for name in contract.avatar_models("bert", synctalk2d=True).values())
        assert states[contract.SYNCTALK2D_WINDOW_ENCODER_MODEL] == "READY", "shared steps stay loaded"
    finally:
        avatar_store.remove(server.repository, "bert")


def test_cli_load_unload_stats_and_render_from_the_avatars_frames(server, tmp_path, capsys):
    """synctalk-client load / stats / render --frames --boxes / unload on an added avatar."""
    import cv2
    import imageio_ffmpeg

    from synctalk_client.cli import main as cli

    frames, boxes = synthetic.avatar_background(6, 160, 96, face=48)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), frame[..., ::-1])
    (tmp_path / "boxes.json").write_text(json.dumps(boxes.tolist()))
    avatar_store.add(server.repository, "cleo", tmp_path, tmp_path / "boxes.json")
    url = ["--url", server.grpc_url]
    try:
        assert cli(url + ["load", "cleo"]) == 0
        assert "loaded cleo" in capsys.readouterr().out
        out = tmp_path / "cleo.mp4"
        assert (
            cli(
                url
                + [
                    "render",
                    "--avatar",
                    "cleo",
                    "--seconds",
                    "0.4",
                    "--frames",
                    str(tmp_path),
                    "--boxes",
                    str(tmp_path / "boxes.json"),
                    "--quiet",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)["frames"] == 10
        reader = imageio_ffmpeg.read_frames(str(out))
        assert next(reader)["size"] == (160, 96)  # the avatar's own resolution
        assert cli(url + ["stats", "cleo"]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert int(stats["cleo"]["inference_stats"]["success"]["count"]) == 2  # 10 frames in 2 batches of 8
        assert cli(url + ["unload", "cleo"]) == 0
        assert "cleo" not in capsys.readouterr().out.split("model ids:")[1]
    finally:
        avatar_store.remove(server.repository, "cleo")


def test_cli_mistakes_on_a_live_server_are_one_line(server, capsys):
    """Unknown model ids to stats / load / unload, and a model that failed to load shown readably."""
    import shutil

    from synctalk_client.cli import main as cli

    url = ["--url", server.grpc_url]
    for argv in (["stats", "nobody"], ["unload", "nobody"]):
        assert cli(url + argv) == 1
        err = capsys.readouterr().err
        assert err.strip() == "synctalk-client: model error: model not found: nobody", err
    assert cli(url + ["load", "nobody"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nobody" in err and "Traceback" not in err, err
    broken = server.repository / "broken_avatar"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('name: "broken_avatar"\nbackend: "onnxruntime"\nmax_batch_size: 8\n')
    try:
        assert cli(url + ["load", "broken_avatar"]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "broken_avatar" in err, err
        assert cli(url + ["models"]) == 0
        lines = capsys.readouterr().out.splitlines()
        header, rows = lines[0], {line.split()[0]: line for line in lines[1:]}
        state_column = header.index("STATE")
        assert all(line[state_column - 2 : state_column] == "  " for line in lines[1:]), "columns aligned"
        assert rows["broken_avatar"][state_column:].split()[0] == "UNAVAILABLE"
        assert rows[contract.DEFAULT_MODEL_ID][state_column:].split()[0] == "READY"
    finally:
        shutil.rmtree(broken)
    assert grpcclient.InferenceServerClient(server.grpc_url).is_server_ready()


def test_audio_only_requests_give_the_frames_of_the_crop_upload_path(server, client, tmp_path):
    """An avatar's request carries audio only; the server cuts each frame's face input from the
    avatar's own frames, exactly as a client cutting them (compositing.visual_inputs) would."""
    import cv2

    from synctalk_common.face_geometry import visual_inputs

    frames, boxes = synthetic.avatar_background(5, 160, 96, face=48, seed=6)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i}.png"), frame[..., ::-1])
    (tmp_path / "boxes.json").write_text(json.dumps(boxes.tolist()))
    avatar_store.add(server.repository, "dina", tmp_path, tmp_path / "boxes.json")
    try:
        client.load_model("dina")
        assert client.takes_audio_only("dina") and not client.takes_audio_only(contract.DEFAULT_MODEL_ID)
        audio = synthetic.speech_like_audio(7, seed=6)
        audio_only = CompositeBatchRequest.audio_only("dina", audio, start_frame_idx=3)
        assert audio_only.visual_frames == b"" and audio_only.batch_size == 7
        assert set(client.input_tensors(audio_only)) == {contract.AUDIO.name, contract.FRAME_INDEX.name}
        served = client.infer_batch_composite(audio_only).raise_for_error().composited_frames
        visual = visual_inputs(frames, boxes)[upstream_images(5, 10)[3:]]  # frames 3..9 ping-pong over the 5
        uploaded = client.infer_batch_composite(
            CompositeBatchRequest.from_visual("dina", visual, audio, start_frame_idx=3)
        )
        assert uploaded.raise_for_error().composited_frames == served, "the same JPEG bytes"
        bytes_per_frame = (len(audio_only.raw_audio) + 8) / 7  # AUDIO + FRAME_INDEX
        assert bytes_per_frame < 3000 < contract.VISUAL_FRAME_BYTES
        # the reference ensemble keeps its VISUAL + AUDIO contract
        refused = client.infer_batch_composite(CompositeBatchRequest.audio_only(contract.DEFAULT_MODEL_ID, audio))
        assert refused.error_category == "validation" and "visual frames size mismatch: got 0" in refused.error
        client.unload_model("dina")
    finally:
        avatar_store.remove(server.repository, "dina")
