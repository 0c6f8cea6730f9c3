"""Importing a trained SyncTalk_2D checkpoint: a state dict written with torch from random
tensors with the real names and shapes fills the ONNX graph, which then computes what the
PyTorch model computes (an independent functional forward pass in this file)."""

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="torch (CPU build) is in requirements.txt")
F = torch.nn.functional

from synctalk_build import build_models  # noqa: E402
from synctalk_build.import_checkpoint import (  # noqa: E402
    CheckpointMismatch,
    audio_feature_means,
    import_audio_encoder,
    import_generator,
    load_state_dict,
    main,
)
from tests import synctalk2d_reference as reference  # noqa: E402

# A few entries of a real SyncTalk_2D "ave" generator state dict (Model(6, mode="ave")), by name.
REAL_ENTRIES = {
    "inc.inconv.0.conv.0.weight": (12, 6, 1, 1),
    "down1.maxpool_conv.0.double_conv.0.conv.3.weight": (64, 1, 3, 3),
    "down5.maxpool_conv.0.double_conv.1.conv.7.running_var": (512,),
    "audio_model.conv1.conv.0.weight": (64, 32, 1, 1),
    "audio_model.conv3.weight": (256, 128, 3, 3),
    "audio_model.bn5.running_mean": (512,),
    "audio_model.conv5.weight": (512, 256, 3, 3),
    "fuse_conv.0.double_conv.0.conv.0.weight": (2048, 1024, 1, 1),
    "up1.conv.double_conv.0.conv.6.weight": (128, 1024, 1, 1),
    "up5.conv.double_conv.1.conv.7.weight": (16,),
    "outc.conv.weight": (3, 16, 1, 1),
    "outc.conv.bias": (3,),
}


def graph_entries(variant="full"):
    graph = build_models.build_generator(variant, stand_in=False)
    return [
        (t.name, tuple(t.dims))
        for t in graph.graph.initializer
        if t.name.endswith((".weight", ".bias", ".running_mean", ".running_var"))
    ]


def random_state_dict(variant="full", seed=0, audio="ave"):
    """Random tensors with the graph's names and shapes; batch-norm statistics set from inputs:
    random faces and, for ``audio`` "ave", non-negative features (the AudioEncoder's are ReLU
    outputs), for "hubert", signed ones (HuBERT hidden states)."""
    state = reference.generator_state_dict(graph_entries(variant), seed)
    rng = np.random.default_rng(seed + 1)
    visual = torch.from_numpy(rng.random((2, 6, 320, 320), dtype=np.float32))
    features = rng.normal(0, 1, (2, 32, 16, 16)).astype(np.float32)
    features = np.maximum(features, 0) if audio == "ave" else features
    with torch.no_grad():
        reference.generator_forward(state, visual, torch.from_numpy(features), calibrate=True)
    return state


def torch_forward(state, visual, audio):
    return reference.generator_forward(state, visual, audio)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    state = random_state_dict()
    saved = {"module." + k: v for k, v in state.items()}  # as DataParallel saves it
    saved.update(
        {k.replace("running_var", "num_batches_tracked"): torch.tensor(7) for k in state if k.endswith("running_var")}
    )
    path = tmp_path_factory.mktemp("ckpt") / "anna_unet.pth"
    torch.save({"state_dict": saved, "epoch": 99}, path)
    return path, state


def test_the_graph_carries_the_real_state_dict_names_and_shapes():
    graph = {t.name: tuple(t.dims) for t in build_models.build_generator("full", stand_in=False).graph.initializer}
    for name, shape in REAL_ENTRIES.items():
        assert graph.get(name) == shape, name


def test_imported_model_computes_what_the_checkpoint_computes(checkpoint):
    path, state = checkpoint
    model = import_generator(load_state_dict(path), "full", path.name)
    weights = {t.name: t for t in model.graph.initializer}
    for name, value in state.items():  # every weight is the checkpoint's
        assert np.array_equal(np.frombuffer(weights[name].raw_data, np.float32).reshape(value.shape), value.numpy())
    rng = np.random.default_rng(1)
    visual = rng.random((2, 6, 320, 320), dtype=np.float32)
    audio = rng.normal(0, 1, (2, 32, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (ours,) = session.run(None, {"input": visual, "audio": audio})
    with torch.no_grad():
        expected = torch_forward(state, torch.from_numpy(visual), torch.from_numpy(audio)).numpy()
    assert ours.shape == (2, 3, 320, 320)
    assert np.abs(ours - expected).max() < 1e-4
    assert expected.std() > 1e-2 and 0.01 < expected.mean() < 0.99  # not saturated: a real comparison


def test_a_checkpoint_of_another_shape_is_refused_by_name(tmp_path):
    state = random_state_dict("tiny")
    state["outc.conv.weight"] = torch.zeros(3, 99, 1, 1)
    del state["up2.conv.double_conv.0.conv.0.weight"]
    state["audio_model.conv1.conv.0.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatch) as error:
        import_generator({k: v.numpy() for k, v in state.items()}, "tiny")
    message = str(error.value)
    assert "1 missing: up2.conv.double_conv.0.conv.0.weight" in message
    assert "1 unexpected: audio_model.conv1.conv.0.extra" in message
    assert "outc.conv.weight: checkpoint [3, 99, 1, 1], graph [3, 2, 1, 1]" in message
    assert "'hubert' or 'wenet'" in message


def test_cli_writes_the_onnx_or_exits_with_the_mismatch(tmp_path, capsys):
    path = tmp_path / "tiny.pth"
    torch.save(random_state_dict("tiny"), path)
    assert main(["--checkpoint", str(path), "--out", str(tmp_path / "out" / "synctalk.onnx"), "--variant", "tiny"]) == 0
    assert (tmp_path / "out" / "synctalk.onnx").is_file()
    with pytest.raises(SystemExit) as exit_:
        main(["--checkpoint", str(path), "--out", str(tmp_path / "x.onnx"), "--variant", "full"])
    assert exit_.value.code == 2
    assert "does not fit the SyncTalk_2D generator (full" in capsys.readouterr().err


def test_a_hubert_generator_is_refused_though_its_shapes_are_ave(tmp_path, capsys):
    """A hubert checkpoint has the shapes of an ave one; its batch-norms were fed signed features."""
    state = random_state_dict("tiny", audio="hubert")
    numpy_state = {k: v.numpy() for k, v in state.items()}
    with pytest.raises(CheckpointMismatch, match=r"not trained on SyncTalk_2D's 'ave' audio features: \d+ of 32"):
        import_generator(numpy_state, "tiny", "hubert.pth")
    import_generator(numpy_state, "tiny", "hubert.pth", check_audio=False)  # the user's call, stated
    path = tmp_path / "hubert.pth"
    torch.save(state, path)
    with pytest.raises(SystemExit) as exit_:
        main(["--checkpoint", str(path), "--out", str(tmp_path / "h.onnx"), "--variant", "tiny"])
    assert exit_.value.code == 2 and "'hubert' checkpoint" in capsys.readouterr().err
    assert (
        main(["--checkpoint", str(path), "--out", str(tmp_path / "h.onnx"), "--variant", "tiny", "--skip-audio-check"])
        == 0
    )


def test_the_feature_means_are_solved_from_the_first_audio_batch_norm():
    rng = np.random.default_rng(5)
    state = reference.generator_state_dict(graph_entries("tiny"), 3)
    features = np.abs(rng.normal(0, 1, (3, 32, 16, 16))).astype(np.float32) * rng.uniform(0.1, 2, (1, 32, 1, 1)).astype(
        np.float32
    )
    with torch.no_grad():
        reference.generator_forward(
            state,
            torch.from_numpy(rng.random((3, 6, 320, 320), dtype=np.float32)),
            torch.from_numpy(features),
            calibrate=True,
        )
    means = audio_feature_means({k: v.numpy() for k, v in state.items()})
    assert np.abs(means - features.mean(axis=(0, 2, 3))).max() < 1e-3


# --- the audio encoder (utils.AudioEncoder, audio_visual_encoder.pth) --------------------------
def test_the_encoder_graph_has_every_upstream_name_and_shape():
    graph = {
        t.name: tuple(t.dims)
        for t in build_models.build_synctalk2d_audio_encoder("full").graph.initializer
        if t.name.startswith("audio_encoder.")
    }
    upstream = {k: tuple(v.shape) for k, v in reference.audio_encoder_state_dict().items()}
    assert graph == upstream
    assert (
        len(upstream) == 13 * 6
        and sum(np.prod(s) for k, s in upstream.items() if not k.endswith(("running_mean", "running_var"))) == 2_812_672
    )


@pytest.mark.parametrize("prefix", ["", "audio_encoder."])
def test_an_encoder_checkpoint_imports_by_name_with_or_without_its_prefix(tmp_path, prefix):
    state = reference.audio_encoder_state_dict(seed=4, prefix=prefix)
    rng = np.random.default_rng(2)
    mel = torch.from_numpy(rng.uniform(-4, 4, (20, 1, 80, 16)).astype(np.float32))
    with torch.no_grad():
        reference.audio_encoder_forward(state, mel, calibrate=True, prefix=prefix)
        expected = reference.audio_encoder_forward(state, mel, prefix=prefix).numpy()  # [20, 512]
    path = tmp_path / "audio_visual_encoder.pth"
    torch.save(state, path)
    assert main(["--audio-encoder", str(path), "--out", str(tmp_path / "enc.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    # 5 consecutive frames: row i's neighbour j is window i + j, all 16 kept
    rows = np.stack([mel.numpy()[i : i + 16] for i in range(5)])  # [5, 16, 1, 80, 16]
    (features,) = session.run(None, {"MEL_NEIGHBOURS": rows, "NEIGHBOUR_MASK": np.ones((5, 16), np.float32)})
    for i in range(5):
        assert np.abs(features[i].reshape(16, 512) - expected[i : i + 16]).max() < 1e-4
    assert expected.std() > 0.1


def test_an_encoder_checkpoint_that_does_not_fit_is_refused_by_name():
    state = {k: v.numpy() for k, v in reference.audio_encoder_state_dict(prefix="").items()}
    del state["12.conv_block.1.running_var"]
    state["3.conv_block.0.weight"] = np.zeros((64, 32, 5, 5), np.float32)
    state["13.conv_block.0.weight"] = np.zeros(1, np.float32)
    with pytest.raises(CheckpointMismatch) as error:
        import_audio_encoder(state, "full", "enc.pth")
    message = str(error.value)
    assert "enc.pth does not fit SyncTalk_2D's AudioEncoder (full)" in message
    assert "1 missing: audio_encoder.12.conv_block.1.running_var" in message
    assert "1 unexpected: audio_encoder.13.conv_block.0.weight" in message
    assert "audio_encoder.3.conv_block.0.weight: checkpoint [64, 32, 5, 5], graph [64, 32, 3, 3]" in message
    generator = {k: v.numpy() for k, v in random_state_dict("tiny").items()}
    with pytest.raises(CheckpointMismatch, match="not the AudioEncoder's state dict"):
        import_audio_encoder(generator, "full", "unet.pth")
