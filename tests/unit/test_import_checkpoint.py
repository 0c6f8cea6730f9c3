"""Importing a trained SyncTalk_2D checkpoint: a state dict written with torch from random
tensors with the real names and shapes fills the ONNX graph, which then computes what the
PyTorch model computes (an independent functional forward pass in this file)."""
import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="torch (CPU build) is in requirements.txt")
F = torch.nn.functional

from tools import build_models  # noqa: E402
from tools.import_checkpoint import CheckpointMismatch, import_generator, load_state_dict, main  # noqa: E402

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


def random_state_dict(variant="full", seed=0):
    """Random tensors with the graph's names and shapes, batch-norm statistics included."""
    rng = np.random.default_rng(seed)
    graph = build_models.build_generator(variant, stand_in=False)
    state = {}
    for t in graph.graph.initializer:
        if not t.name.endswith((".weight", ".bias", ".running_mean", ".running_var")):
            continue
        shape = tuple(t.dims)
        if t.name.endswith(".running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif t.name.endswith(".weight") and len(shape) == 4:
            value = rng.normal(0, np.sqrt(1.0 / np.prod(shape[1:])), shape)
        elif t.name.endswith(".conv.7.weight"):  # a block's last batch-norm: small, as trained
            value = rng.uniform(0.1, 0.3, shape)
        elif t.name.endswith(".weight"):
            value = rng.uniform(0.8, 1.2, shape)
        else:
            value = rng.normal(0, 0.05, shape)
        state[t.name] = torch.from_numpy(value.astype(np.float32))
    return state


# --- an independent forward pass of SyncTalk_2D's generator, from the state dict alone ----------
def _bn(x, s, p):
    return F.batch_norm(x, s[p + ".running_mean"], s[p + ".running_var"], s[p + ".weight"], s[p + ".bias"], eps=1e-5)


def _inverted_residual(x, s, p, stride, residual):
    h = F.relu(_bn(F.conv2d(x, s[p + ".conv.0.weight"]), s, p + ".conv.1"))
    w = s[p + ".conv.3.weight"]
    h = F.relu(_bn(F.conv2d(h, w, stride=stride, padding=1, groups=w.shape[0]), s, p + ".conv.4"))
    h = _bn(F.conv2d(h, s[p + ".conv.6.weight"]), s, p + ".conv.7")
    return x + h if residual else h


def _double(x, s, p, stride):
    return _inverted_residual(_inverted_residual(x, s, p + ".double_conv.0", stride, False), s, p + ".double_conv.1", 1, True)


def torch_forward(s, visual, audio):
    x1 = _inverted_residual(visual, s, "inc.inconv.0", 1, False)
    skips = [x1]
    for k in range(1, 6):
        skips.append(_double(skips[-1], s, f"down{k}.maxpool_conv.0", 2))
    a = _inverted_residual(audio, s, "audio_model.conv1", 1, False)
    a = _inverted_residual(a, s, "audio_model.conv2", 1, False)
    a = F.relu(_bn(F.conv2d(a, s["audio_model.conv3.weight"], s["audio_model.conv3.bias"], padding=1), s, "audio_model.bn3"))
    a = _inverted_residual(a, s, "audio_model.conv4", 1, True)
    a = F.relu(_bn(F.conv2d(a, s["audio_model.conv5.weight"], s["audio_model.conv5.bias"], stride=2, padding=3), s, "audio_model.bn5"))
    a = _inverted_residual(_inverted_residual(a, s, "audio_model.conv6", 1, True), s, "audio_model.conv7", 1, True)
    x = _double(_double(torch.cat([skips.pop(), a], 1), s, "fuse_conv.0", 1), s, "fuse_conv.1", 1)
    for k in range(1, 6):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x = _double(torch.cat([x, skips.pop()], 1), s, f"up{k}.conv", 1)
    return torch.sigmoid(F.conv2d(x, s["outc.conv.weight"], s["outc.conv.bias"]))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    state = random_state_dict()
    saved = {"module." + k: v for k, v in state.items()}  # as DataParallel saves it
    saved.update({k.replace("running_var", "num_batches_tracked"): torch.tensor(7) for k in state if k.endswith("running_var")})
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
        reference = torch_forward(state, torch.from_numpy(visual), torch.from_numpy(audio)).numpy()
    assert ours.shape == (2, 3, 320, 320)
    assert np.abs(ours - reference).max() < 1e-4
    assert reference.std() > 1e-2 and 0.01 < reference.mean() < 0.99  # not saturated: a real comparison


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
