"""Every config.pbtxt parses with Triton's ModelConfig protobuf, and the ensemble is wired as
Triton requires and as the contract says, in both profiles."""
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from synctalk_client import contract
from synctalk_preprocessing.audio import MelConfig
from tools import paths
from tools.render_repository import read_config, render

DTYPES = {"FP32": mc.TYPE_FP32, "UINT8": mc.TYPE_UINT8, "BYTES": mc.TYPE_STRING}


def load_repository(root: Path) -> dict:
    configs = {}
    for path in sorted(root.glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), mc.ModelConfig())  # strict: unknown fields fail
        assert config.name == path.parent.name, f"{path}: name {config.name!r} differs from its folder"
        configs[config.name] = config
    return configs


@pytest.fixture(scope="module")
def production():
    return load_repository(paths.MODEL_REPOSITORY)


@pytest.fixture(scope="module")
def cpu_profile(tmp_path_factory, models_dir):
    return load_repository(render("cpu", tmp_path_factory.mktemp("cpu") / "repo", models_dir / "tiny"))


@pytest.fixture(scope="module")
def gpu_profile(tmp_path_factory, models_dir):
    return load_repository(render("gpu", tmp_path_factory.mktemp("gpu") / "repo", models_dir / "tiny"))


PROFILES = ["production", "cpu_profile", "gpu_profile"]


def tensors(config, kind):
    return {t.name: (t.data_type, tuple(t.dims)) for t in getattr(config, kind)}


def spec(tensor):
    return DTYPES[tensor.dtype], tuple(tensor.dims)


def test_repository_has_the_ensemble_and_its_composing_models(production):
    assert set(production) == {contract.DEFAULT_MODEL_ID, *contract.COMPOSING_MODELS}


@pytest.mark.parametrize("profile", PROFILES)
def test_models_match_the_contract(profile, request):
    configs = request.getfixturevalue(profile)
    for name in contract.COMPOSING_MODELS:
        config = configs[name]
        assert config.max_batch_size == contract.MAX_BATCH_SIZE, name
        assert tensors(config, "input") == {t.name: spec(t) for t in contract.MODEL_INPUTS[name]}, name
        assert tensors(config, "output") == {t.name: spec(t) for t in contract.MODEL_OUTPUTS[name]}, name
    ensemble = configs[contract.DEFAULT_MODEL_ID]
    assert ensemble.platform == "ensemble"
    assert tensors(ensemble, "input") == {t.name: spec(t) for t in contract.ENSEMBLE_INPUTS}
    assert tensors(ensemble, "output") == {t.name: spec(t) for t in contract.ENSEMBLE_OUTPUTS}
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in ensemble.ensemble_scheduling.step]
    assert steps == [tuple(step) for step in contract.ENSEMBLE_STEPS]


@pytest.mark.parametrize("profile", PROFILES)
def test_ensemble_wiring_is_what_triton_accepts(profile, request):
    configs = request.getfixturevalue(profile)
    ensemble = configs[contract.DEFAULT_MODEL_ID]
    available = {name: spec_ for name, spec_ in tensors(ensemble, "input").items()}  # ensemble tensor -> (dtype, dims)
    produced_by = {}
    consumed = set()
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        # an ensemble's max_batch_size may not exceed any composing model's
        assert ensemble.max_batch_size <= model.max_batch_size, step.model_name
        model_inputs, model_outputs = tensors(model, "input"), tensors(model, "output")
        assert set(step.input_map) == set(model_inputs), f"{step.model_name}: every input mapped"
        for model_tensor, ensemble_tensor in step.input_map.items():
            assert ensemble_tensor in available, f"{step.model_name} reads {ensemble_tensor} before it is produced"
            assert available[ensemble_tensor] == model_inputs[model_tensor], f"{step.model_name}.{model_tensor}: dtype/dims"
            consumed.add(ensemble_tensor)
        for model_tensor, ensemble_tensor in step.output_map.items():
            assert model_tensor in model_outputs, f"{step.model_name} has no output {model_tensor}"
            assert ensemble_tensor not in produced_by and ensemble_tensor not in tensors(ensemble, "input"), (
                f"{ensemble_tensor} produced twice"
            )
            produced_by[ensemble_tensor] = step.model_name
            available[ensemble_tensor] = model_outputs[model_tensor]
    outputs = tensors(ensemble, "output")
    for name, spec_ in outputs.items():
        assert name in produced_by and available[name] == spec_, f"ensemble output {name}"
    assert set(tensors(ensemble, "input")) <= consumed, "every ensemble input is used"
    assert set(produced_by) - set(outputs) <= consumed, "every intermediate tensor is consumed"


def test_cpu_profile_serves_everything_with_the_python_backend(cpu_profile, production):
    for name in contract.COMPOSING_MODELS:
        config = cpu_profile[name]
        assert config.backend == "python", name
        assert all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in config.instance_group), name
        assert not config.HasField("optimization"), name
        assert "FORCE_CPU_ONLY_INPUT_TENSORS" not in config.parameters
    assert cpu_profile[contract.JPEG_ENCODER_MODEL].parameters["encoder"].string_value == "cpu"
    assert cpu_profile[contract.GENERATOR_MODEL].HasField("dynamic_batching")
    assert list(cpu_profile[contract.GENERATOR_MODEL].dynamic_batching.preferred_batch_size) == [8]


def test_gpu_profile_uses_tensorrt_dali_and_gpu_jpeg(production):
    for name in (contract.AUDIO_ENCODER_MODEL, contract.GENERATOR_MODEL):
        config = production[name]
        assert config.backend == "onnxruntime"
        assert all(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in config.instance_group)
        (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert accelerator.name == "tensorrt"
        assert accelerator.parameters["precision_mode"] == "FP16"
        assert accelerator.parameters["trt_engine_cache_enable"] == "true"
        assert accelerator.parameters["trt_engine_cache_path"].startswith("/")
        assert int(accelerator.parameters["max_workspace_size_bytes"]) > 0
    assert production[contract.GENERATOR_MODEL].HasField("dynamic_batching")
    assert production[contract.FRAME_RESIZE_MODEL].backend == "dali"
    assert (paths.MODEL_REPOSITORY / contract.FRAME_RESIZE_MODEL / "1" / "dali.py").is_file()
    jpeg = production[contract.JPEG_ENCODER_MODEL]
    assert jpeg.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"
    assert jpeg.parameters["encoder"].string_value == "nvimgcodec"


@pytest.mark.parametrize("profile", PROFILES)
def test_warmup_samples_match_the_model_inputs(profile, request):
    configs = request.getfixturevalue(profile)
    for name in contract.COMPOSING_MODELS:
        config = configs[name]
        assert config.model_warmup, f"{name}: no model_warmup, the first request would pay initialisation"
        assert max(w.batch_size for w in config.model_warmup) == config.max_batch_size, name
        for warmup in config.model_warmup:
            assert 1 <= warmup.batch_size <= config.max_batch_size
            assert {k: (v.data_type, tuple(v.dims)) for k, v in warmup.inputs.items()} == tensors(config, "input"), name
            assert all(v.zero_data for v in warmup.inputs.values()), f"{name}: zero data (random bits may be NaN)"
        assert config.model_warmup[0].batch_size == config.max_batch_size, f"{name}: largest batch first"


def test_audio_features_parameters_are_the_reference_mel(production):
    params = {k: v.string_value for k, v in production[contract.AUDIO_FEATURES_MODEL].parameters.items()}
    assert MelConfig.from_parameters(params) == MelConfig()
    assert set(params) == set(MelConfig().as_parameters())


def test_rendered_files_are_in_place(tmp_path, models_dir):
    root = render("cpu", tmp_path / "cpu", models_dir / "tiny", model_id="alice")
    assert (root / "alice" / "config.pbtxt").is_file() and not (root / contract.DEFAULT_MODEL_ID).exists()
    assert read_config(root / "alice" / "config.pbtxt").name == "alice"
    for name in (contract.AUDIO_ENCODER_MODEL, contract.GENERATOR_MODEL):
        assert (root / name / "1" / "model.onnx").is_file() and (root / name / "1" / "model.py").is_file()
    assert (root / contract.FRAME_RESIZE_MODEL / "1" / "model.py").is_file()
    gpu = render("gpu", tmp_path / "gpu", models_dir / "tiny")
    assert (gpu / contract.FRAME_RESIZE_MODEL / "1" / "dali.py").is_file()
    assert not (gpu / contract.GENERATOR_MODEL / "1" / "model.py").exists()


def test_render_refuses_a_missing_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="synctalk: ONNX model"):
        render("cpu", tmp_path / "out", tmp_path / "no-models")
