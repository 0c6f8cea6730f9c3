"""A trained SyncTalk_2D avatar served end to end equals SyncTalk_2D's own inference.

As a user would: a generator checkpoint and the audio encoder checkpoint (random weights under
the real names, batch-norm statistics calibrated on this avatar's faces and this clip, so the
output depends visibly on both) are imported with ``synctalk_build.import_checkpoint``, the avatar is
added from a ``full_body_img/``-style folder of JPEGs and a ``landmarks/`` folder with
``synctalk_ops.avatars add``, and the clip is rendered with ``synctalk-client render`` (audio only, batches of 4
with their audio context). The served frames are compared, inside the face boxes, with the
independent reference of ``tests/synctalk2d_reference.py``, JPEG-encoded as the server encodes
(quality 95, 4:2:0, libjpeg-turbo): the served frames are that JPEG (same pixels in, same JPEG
out), and the same comparison fails for a one-frame audio shift, the lower-half mask and the box
resized straight to 320 (the test can fail). Against the unencoded reference the served frames
sit at the JPEG's own noise floor (printed: random weights make a noisy texture, ~29 dB).
"""

import contextlib
import subprocess
import sys

import numpy as np
import pytest
import simplejpeg

from synctalk_build import avatar_store, paths
from synctalk_client import CompositeClient, synthetic
from synctalk_common import contract
from tests import synctalk2d_reference as reference
from tests.synctalk2d_loop import upstream_images

pytestmark = [pytest.mark.e2e, pytest.mark.full_model]

AVATAR = "trained"
N_BACKGROUNDS = 12  # more than half the clip's frames: loop back turns the loop at the clip's midpoint
AUDIO_SAMPLES = 14 * contract.SAMPLES_PER_FRAME + 250  # a WAV ends mid-frame
# served vs the JPEG of the reference inside the face boxes: the agreement must clear this, the
# mistakes must not
MIN_PSNR_DB = 40.0
COMPARED = slice(2, 6)  # the frames the deliberate mistakes are rendered for


@pytest.fixture(scope="module")
def fidelity_server(server):
    """The session's server; the avatar (its full-size generator) unloaded and removed after."""
    yield server
    with CompositeClient(server.grpc_url) as client, contextlib.suppress(Exception):
        client.unload_model(AVATAR)
    avatar_store.remove(server.repository, AVATAR)


@pytest.fixture(scope="module")
def avatar_inputs(tmp_path_factory):
    """The avatar's frames as SyncTalk_2D's data folder holds them, its checkpoints and a clip."""
    import cv2

    from tests.unit.test_import_checkpoint import graph_entries

    root = tmp_path_factory.mktemp("trained-avatar")
    frames_rgb, boxes = synthetic.avatar_background(N_BACKGROUNDS, 480, 360, face=200, seed=3)
    (root / "full_body_img").mkdir()
    (root / "landmarks").mkdir()
    rng = np.random.default_rng(0)
    for i, (frame, (x0, y0, x1, _)) in enumerate(zip(frames_rgb, boxes)):
        cv2.imwrite(str(root / "full_body_img" / f"{i}.jpg"), frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        lms = rng.uniform(0, 300, (110, 2)).astype(np.float32)
        lms[1, 0], lms[31, 0], lms[52, 1] = x0 + 0.4, x1 + 0.4, y0 + 0.4  # xmin, xmax, ymin; ymax = ymin + width
        np.savetxt(root / "landmarks" / f"{i}.lms", lms, fmt="%.2f")
    # what SyncTalk_2D's inference reads: cv2.imread of the JPEGs (BGR)
    frames_bgr = np.stack([cv2.imread(str(root / "full_body_img" / f"{i}.jpg")) for i in range(N_BACKGROUNDS)])
    boxes = [tuple(int(v) for v in b) for b in boxes]
    wav = synthetic.speech_like_audio(15, seed=21)[:AUDIO_SAMPLES]

    generator = reference.generator_state_dict(graph_entries("full"), seed=11)
    encoder = reference.audio_encoder_state_dict(seed=12)
    reference.calibrate(frames_bgr, boxes, wav, generator, encoder)
    saved = dict(generator)
    saved.update(
        {
            k.replace("running_var", "num_batches_tracked"): reference.torch.tensor(1000)
            for k in generator
            if k.endswith("running_var")
        }
    )
    reference.torch.save(saved, root / "200.pth")  # checkpoint/<name>/<epoch>.pth: a plain state dict
    reference.torch.save(
        {k.removeprefix("audio_encoder."): v for k, v in encoder.items()}, root / "audio_visual_encoder.pth"
    )
    return dict(root=root, frames_bgr=frames_bgr, boxes=boxes, wav=wav, generator=generator, encoder=encoder)


def run(*args):
    result = subprocess.run([sys.executable, "-m", *args], cwd=paths.ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def served(fidelity_server, avatar_inputs, tmp_path_factory):
    """Two imports, one ``avatars add``, one ``render``: the JPEGs the server returned, decoded."""
    from synctalk_client.render import render_video

    root = avatar_inputs["root"]
    out = tmp_path_factory.mktemp("served")
    run("synctalk_build.import_checkpoint", "--checkpoint", str(root / "200.pth"), "--out", str(out / "synctalk.onnx"))
    run(
        "synctalk_build.import_checkpoint",
        "--audio-encoder",
        str(root / "audio_visual_encoder.pth"),
        "--out",
        str(out / "audio_encoder.onnx"),
    )
    added = run(
        "synctalk_ops.avatars",
        "--repository",
        str(fidelity_server.repository),
        "add",
        "--id",
        AVATAR,
        "--background",
        str(root / "full_body_img"),
        "--boxes",
        str(root / "landmarks"),
        "--generator",
        str(out / "synctalk.onnx"),
        "--audio-encoder",
        str(out / "audio_encoder.onnx"),
        "--load",
        fidelity_server.grpc_url,
    )
    assert f"loaded {AVATAR}" in added
    # audio only: the server cuts each frame's face input from the avatar's frames and landmarks
    summary = render_video(
        fidelity_server.grpc_url,
        AVATAR,
        avatar_inputs["wav"],
        out / "trained.mp4",
        batch_size=4,
        in_flight=2,
        progress=False,
        frames_dir=out / "frames",
    )
    jpegs = sorted((out / "frames").iterdir())
    assert summary["frames"] == len(jpegs) == contract.synctalk2d_frame_count(AUDIO_SAMPLES)
    return np.stack([simplejpeg.decode_jpeg(p.read_bytes(), colorspace="BGR") for p in jpegs])


def as_served_jpeg(frames_bgr: np.ndarray) -> np.ndarray:
    """Frames through the JPEG the avatar's encoder writes (quality 95, 4:2:0), decoded."""
    return np.stack(
        [
            simplejpeg.decode_jpeg(
                simplejpeg.encode_jpeg(
                    np.ascontiguousarray(f[..., ::-1]),
                    quality=contract.JPEG_QUALITY,
                    colorspace="RGB",
                    colorsubsampling=contract.JPEG_SUBSAMPLING,
                ),
                colorspace="BGR",
            )
            for f in frames_bgr
        ]
    )


def box_psnr(a: np.ndarray, b: np.ndarray, boxes, frames=range(10**6)) -> float:
    """PSNR over the face boxes of frames ``frames`` of two renders (frame i's box: that of the
    image upstream's loop picks, with loop back, as render's default)."""
    images = upstream_images(len(boxes), len(a), loop_back=True)
    pairs = [(a[i], b[i], boxes[images[i]]) for i in frames if i < len(a)]
    diff = np.concatenate(
        [(x[y0:y1, x0:x1].astype(np.float64) - y[y0:y1, x0:x1]).ravel() for x, y, (x0, y0, x1, y1) in pairs]
    )
    return float(10 * np.log10(255.0**2 / np.mean(diff**2)))


def test_the_served_avatar_equals_synctalk2d_inference_within_jpeg_noise(served, avatar_inputs):
    inputs = avatar_inputs
    expected = reference.inference(
        inputs["frames_bgr"], inputs["boxes"], inputs["wav"], inputs["generator"], inputs["encoder"]
    )
    assert served.shape == expected.shape, "N + 2 frames at the avatar's resolution"
    agreement = box_psnr(served, as_served_jpeg(expected), inputs["boxes"])
    jpeg_floor = box_psnr(served, expected, inputs["boxes"])
    # outside the boxes the frames are the background's (up to the JPEG)
    outside = np.ones(served.shape[1:3], bool)
    x0, y0, x1, y1 = inputs["boxes"][1]  # frame 0 is drawn on image 1
    outside[y0:y1, x0:x1] = False
    assert np.abs(served[0][outside].astype(int) - expected[0][outside]).mean() < 2.0

    # the deliberate mistakes, rendered for frames 2-5 (the reference is per frame: same frames)
    frames = range(COMPARED.start, COMPARED.stop)
    mistakes = {
        "audio one frame late": dict(audio_shift=1),
        "lower-half mask": dict(mask="lower_half"),
        "box straight to 320": dict(crop_328=False),
    }
    scores = {}
    for name, mistake in mistakes.items():
        wrong = reference.inference(
            inputs["frames_bgr"],
            inputs["boxes"],
            inputs["wav"],
            inputs["generator"],
            inputs["encoder"],
            only=frames,
            **mistake,
        )
        scores[name] = box_psnr(served, as_served_jpeg(wrong), inputs["boxes"], frames)
    print(
        f"face-box PSNR vs SyncTalk_2D's inference (JPEG-encoded): {agreement:.1f} dB (unencoded: "
        f"{jpeg_floor:.1f} dB); " + ", ".join(f"{name}: {value:.1f} dB" for name, value in scores.items())
    )
    assert agreement > MIN_PSNR_DB
    for name, value in scores.items():
        assert value < MIN_PSNR_DB, f"the comparison cannot tell '{name}' ({value:.1f} dB)"


def test_inspect_writes_every_stage_and_the_stages_are_synctalk2d(served, fidelity_server, avatar_inputs, tmp_path):
    """The debug mode, step by step: each stage as SyncTalk_2D computes it, the frames as served."""
    import torch

    from synctalk_client import CompositeBatchRequest, CompositeClient
    from synctalk_client.cli import main as cli_main
    from synctalk_client.inspect import inspect_request
    from synctalk_client.render import write_wav
    from synctalk_common.face_geometry import visual_inputs

    inputs = avatar_inputs
    wav, start, size = inputs["wav"], 4, 4
    frames_rgb = inputs["frames_bgr"][..., ::-1]
    # the images the server picks for FRAME_INDEX alone: upstream's loop without loop back
    slots = upstream_images(N_BACKGROUNDS, start + size)[start:]
    visual = visual_inputs(frames_rgb[slots], np.array(inputs["boxes"])[slots])
    first, last = start * contract.SAMPLES_PER_FRAME, (start + size) * contract.SAMPLES_PER_FRAME
    request = CompositeBatchRequest.from_visual(
        AVATAR,
        visual,
        wav[first:last],
        start_frame_idx=start,
        audio_context_before=wav[:first],
        audio_context_after=wav[last:],
    )
    with CompositeClient(fidelity_server.grpc_url) as client:
        summary = inspect_request(client, request, tmp_path / "inspect")
        served_batch = client.infer_batch_composite(request).raise_for_error().composited_frames
    out = tmp_path / "inspect"
    assert [s["model"] for s in summary["steps"]][:3] == [
        contract.INPUT_VALIDATOR_MODEL,
        contract.SYNCTALK2D_AUDIO_FEATURES_MODEL,
        "trained_audio_encoder",
    ]
    assert [(out / f"frame_{start + i:05d}.jpg").read_bytes() for i in range(size)] == served_batch, (
        "the frames the ensemble returns"
    )
    assert np.load(out / "mel_spec.npy").shape == (size, 16, 1, 80, 16)
    assert np.array_equal(np.load(out / "visual_input.npy"), visual)
    padded = reference.encode_clip(wav, inputs["encoder"])
    expected_features = np.stack(
        [reference.get_audio_features(padded, i).reshape(32, 16, 16) for i in range(start, start + size)]
    )
    assert np.abs(np.load(out / "audio_features.npy") - expected_features).max() < 1e-3
    with torch.no_grad():
        expected_faces = reference.generator_forward(
            inputs["generator"], torch.from_numpy(visual), torch.from_numpy(expected_features)
        ).numpy()
    assert np.abs(np.load(out / "inference_output.npy") - expected_faces).max() < 1e-3
    # the command line: a WAV (audio only: the face inputs are cut on the server, the same as above)
    write_wav(tmp_path / "speech.wav", wav)
    assert (
        cli_main(
            [
                "--url",
                fidelity_server.grpc_url,
                "inspect",
                "--avatar",
                AVATAR,
                "--audio",
                str(tmp_path / "speech.wav"),
                "--start-frame",
                str(start),
                "--batch-size",
                "4",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    names = {"mel_spec.npy", "audio_features.npy", "visual_input.npy", "inference_output.npy", "steps.json"} | {
        f"frame_{start + i:05d}.jpg" for i in range(4)
    }
    assert names <= {p.name for p in (tmp_path / "cli").iterdir()}
    assert np.array_equal(np.load(tmp_path / "cli" / "visual_input.npy"), visual), "the server's face inputs"
