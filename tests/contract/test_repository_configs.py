"""Every config.pbtxt parses with Triton's ModelConfig protobuf, and the ensemble is wired as
Triton requires and as the contract says, in both profiles."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from synctalk_build import avatar_install, avatar_store, paths
from synctalk_build.render_model import CPU_BACKENDS, read_config
from synctalk_build.render_repository import render
from synctalk_common import contract
from synctalk_preprocessing.audio import MelConfig

DTYPES = {
    "FP32": mc.TYPE_FP32,
    "UINT8": mc.TYPE_UINT8,
    "INT16": mc.TYPE_INT16,
    "INT32": mc.TYPE_INT32,
    "INT64": mc.TYPE_INT64,
    "BOOL": mc.TYPE_BOOL,
    "BYTES": mc.TYPE_STRING,
}
AVATAR = "anna"
AVATAR_2D = "bert"  # an avatar with SyncTalk_2D's audio front end
AVATAR_OWN_ENCODER = "cleo"  # SyncTalk_2D's front end with the avatar's own audio encoder


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


def render_with_avatar(profile, tmp_path_factory, models_dir) -> Path:
    """A rendered repository of ``profile`` with one avatar (64x48 backgrounds, 3 frames)."""
    root = render(profile, tmp_path_factory.mktemp(profile) / "repo", models_dir / "tiny")
    frames = tmp_path_factory.mktemp(f"{profile}-background")
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    avatar_store.add(root, AVATAR, frames, [8, 4, 40, 36], options=avatar_store.AvatarOptions(jpeg_quality=80))
    avatar_store.add(
        root, AVATAR_2D, frames, [8, 4, 40, 36], options=avatar_store.AvatarOptions(audio_preset="synctalk2d")
    )
    encoder = models_dir / "tiny" / f"{contract.SYNCTALK2D_AUDIO_ENCODER_MODEL}.onnx"
    avatar_store.add(
        root, AVATAR_OWN_ENCODER, frames, [8, 4, 40, 36], options=avatar_store.AvatarOptions(audio_encoder=encoder)
    )  # the preset follows
    return root


@pytest.fixture(scope="module")
def cpu_profile(tmp_path_factory, models_dir):
    return load_repository(render_with_avatar("cpu", tmp_path_factory, models_dir))


@pytest.fixture(scope="module")
def gpu_profile(tmp_path_factory, models_dir):
    return load_repository(render_with_avatar("gpu", tmp_path_factory, models_dir))


@pytest.fixture(scope="module")
def avatar_template():
    """The templates as written: an ensemble per audio preset, and the background step."""
    read = lambda folder: text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())  # noqa: E731
    templates = {preset: read(folder) for preset, folder in avatar_install.ENSEMBLE_TEMPLATES.items()}
    templates["avatar_background"] = read(avatar_install.BACKGROUND_TEMPLATE)
    templates["from_features"] = read(avatar_install.FROM_FEATURES_TEMPLATE)
    return templates


PROFILES = ["production", "cpu_profile", "gpu_profile"]


def tensors(config, kind):
    return {t.name: (t.data_type, tuple(t.dims)) for t in getattr(config, kind)}


def spec(tensor):
    return DTYPES[tensor.dtype], tuple(tensor.dims)


def test_repository_has_the_ensemble_and_its_composing_models(production):
    assert set(production) == {contract.DEFAULT_MODEL_ID, *contract.SHARED_MODELS, contract.STREAM_MODEL}


@pytest.mark.parametrize("profile", PROFILES)
def test_models_match_the_contract(profile, request):
    configs = request.getfixturevalue(profile)
    for name in contract.SHARED_MODELS:
        config = configs[name]
        assert {t.name for t in config.input if t.optional} == {
            t.name for t in contract.OPTIONAL_INPUTS.get(name, ())
        }, name
        assert config.max_batch_size == contract.MAX_BATCH_SIZE, name
        assert tensors(config, "input") == {t.name: spec(t) for t in contract.MODEL_INPUTS[name]}, name
        assert tensors(config, "output") == {t.name: spec(t) for t in contract.MODEL_OUTPUTS[name]}, name
    ensemble = configs[contract.DEFAULT_MODEL_ID]
    assert ensemble.platform == "ensemble"
    assert tensors(ensemble, "input") == {t.name: spec(t) for t in contract.ENSEMBLE_INPUTS}
    assert not any(t.optional for t in ensemble.input)  # the reference contract (and perf_analyzer's shm mode)
    assert tensors(ensemble, "output") == {t.name: spec(t) for t in contract.ENSEMBLE_OUTPUTS}
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in ensemble.ensemble_scheduling.step]
    assert steps == [tuple(step) for step in contract.ENSEMBLE_STEPS]


@pytest.mark.parametrize("profile", ["cpu_profile", "gpu_profile"])
def test_avatar_models_match_the_contract(profile, request):
    configs = request.getfixturevalue(profile)
    models = contract.avatar_models(AVATAR)
    ensemble = configs[AVATAR]
    assert tensors(ensemble, "input") == {t.name: spec(t) for t in contract.AVATAR_ENSEMBLE_INPUTS}
    assert {t.name for t in ensemble.input if t.optional} == {t.name for t in contract.AVATAR_OPTIONAL_INPUTS}
    assert tensors(ensemble, "output") == {t.name: spec(t) for t in contract.ENSEMBLE_OUTPUTS}
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in ensemble.ensemble_scheduling.step]
    assert steps == [tuple(step) for step in contract.avatar_ensemble_steps(AVATAR)]
    for role, shared in (("generator", contract.GENERATOR_MODEL), ("jpeg_encoder", contract.JPEG_ENCODER_MODEL)):
        own, base = configs[models[role]], configs[shared]
        assert (own.backend, own.max_batch_size, tensors(own, "output")) == (
            base.backend,
            base.max_batch_size,
            tensors(base, "output"),
        )
    assert tensors(configs[models["jpeg_encoder"]], "input") == {
        contract.FRAMES_RGB.name: (mc.TYPE_UINT8, (48, 64, 3)),
        contract.ADMISSION_TICKET.name: spec(contract.ADMISSION_TICKET),
    }
    assert configs[models["jpeg_encoder"]].parameters["quality"].string_value == "80"
    background = configs[models["background"]]
    assert tensors(background, "input") == {t.name: spec(t) for t in contract.AVATAR_BACKGROUND_INPUTS}
    assert {t.name for t in background.input if t.optional} == {
        t.name for t in contract.AVATAR_BACKGROUND_OPTIONAL_INPUTS
    }
    assert tensors(background, "output") == {t.name: spec(t) for t in contract.AVATAR_BACKGROUND_OUTPUTS}


def test_an_avatar_with_the_synctalk2d_front_end(cpu_profile):
    steps = [
        (s.model_name, dict(s.input_map), dict(s.output_map)) for s in cpu_profile[AVATAR_2D].ensemble_scheduling.step
    ]
    assert steps == [tuple(step) for step in contract.avatar_ensemble_steps(AVATAR_2D, "synctalk2d")]
    assert {contract.SYNCTALK2D_AUDIO_FEATURES_MODEL, contract.SYNCTALK2D_AUDIO_ENCODER_MODEL} <= {
        name for name, _, _ in steps
    }


@pytest.mark.parametrize("preset", contract.AUDIO_PRESETS)
def test_each_avatar_template_is_the_contracts_wiring(avatar_template, preset):
    """The contract's step list is the oracle: each template, as written, is the wiring of its
    audio preset with the placeholder id (synctalk2d: with the placeholder own encoder, which
    installing renames to the avatar's encoder or the shared one). Installing only renames."""
    template = avatar_template[preset]
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in template.ensemble_scheduling.step]
    own_encoder = preset == "synctalk2d"
    expected = contract.avatar_ensemble_steps(avatar_install.TEMPLATE_ID, preset, own_audio_encoder=own_encoder)
    assert steps == [tuple(step) for step in expected]
    assert template.name == avatar_install.TEMPLATE_ID
    assert tensors(template, "input") == {t.name: spec(t) for t in contract.AVATAR_ENSEMBLE_INPUTS}
    assert {t.name for t in template.input if t.optional} == {t.name for t in contract.AVATAR_OPTIONAL_INPUTS}
    assert tensors(template, "output") == {t.name: spec(t) for t in contract.ENSEMBLE_OUTPUTS}
    assert avatar_template["avatar_background"].name == contract.avatar_models(avatar_install.TEMPLATE_ID)["background"]


def test_the_steps_after_the_audio_are_the_contracts_wiring(avatar_template):
    """from_features/ (SyncTalk_2D avatars' steps after the audio, an ensemble of their own) as
    written: the contract's face steps on its own inputs, the placeholder names."""
    template = avatar_template["from_features"]
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in template.ensemble_scheduling.step]
    assert steps == [tuple(step) for step in contract.avatar_face_steps(avatar_install.TEMPLATE_ID)]
    assert template.name == contract.avatar_models(avatar_install.TEMPLATE_ID, synctalk2d=True)["from_features"]
    assert tensors(template, "input") == {t.name: spec(t) for t in contract.AVATAR_FROM_FEATURES_INPUTS}
    assert {t.name for t in template.input if t.optional} == {t.name for t in contract.AVATAR_FROM_FEATURES_OPTIONAL}
    assert tensors(template, "output") == {t.name: spec(t) for t in contract.ENSEMBLE_OUTPUTS}


def test_installing_an_avatar_only_renames_the_template(cpu_profile, avatar_template):
    """Every installed ensemble is its template with the model names mapped, nothing else."""
    for avatar_id, preset, own in (
        (AVATAR, "reference", False),
        (AVATAR_2D, "synctalk2d", False),
        (AVATAR_OWN_ENCODER, "synctalk2d", True),
    ):
        names = avatar_install.model_names(avatar_id, own)
        expected = mc.ModelConfig()
        expected.CopyFrom(avatar_template[preset])
        avatar_install.rename_models(expected, names)
        assert cpu_profile[avatar_id] == expected, avatar_id
        from_features = contract.avatar_models(avatar_id, synctalk2d=True)["from_features"]
        if preset == "synctalk2d":
            expected.CopyFrom(avatar_template["from_features"])
            avatar_install.rename_models(expected, names)
            assert cpu_profile[from_features] == expected, from_features
        else:
            assert from_features not in cpu_profile


@pytest.mark.parametrize("profile", ["cpu_profile", "gpu_profile"])
def test_an_avatar_with_its_own_audio_encoder(profile, request):
    configs = request.getfixturevalue(profile)
    name = contract.avatar_models(AVATAR_OWN_ENCODER, own_audio_encoder=True)["audio_encoder"]
    steps = [
        (s.model_name, dict(s.input_map), dict(s.output_map))
        for s in configs[AVATAR_OWN_ENCODER].ensemble_scheduling.step
    ]
    assert steps == [
        tuple(step) for step in contract.avatar_ensemble_steps(AVATAR_OWN_ENCODER, "synctalk2d", own_audio_encoder=True)
    ]
    assert name in {s[0] for s in steps} and contract.SYNCTALK2D_AUDIO_ENCODER_MODEL not in {s[0] for s in steps}
    own, shared = configs[name], configs[contract.SYNCTALK2D_AUDIO_ENCODER_MODEL]
    assert (own.backend, tensors(own, "input"), tensors(own, "output")) == (
        shared.backend,
        tensors(shared, "input"),
        tensors(shared, "output"),
    )
    # and its one-window form, what its live streams encode windows with
    window = contract.avatar_models(AVATAR_OWN_ENCODER, own_audio_encoder=True)["window_encoder"]
    own_window, shared_window = configs[window], configs[contract.SYNCTALK2D_WINDOW_ENCODER_MODEL]
    assert (own_window.backend, tensors(own_window, "input"), tensors(own_window, "output")) == (
        shared_window.backend,
        tensors(shared_window, "input"),
        tensors(shared_window, "output"),
    )
    if profile == "gpu_profile":
        for model in (name, window):
            (accelerator,) = configs[model].optimization.execution_accelerators.gpu_execution_accelerator
            assert accelerator.parameters["trt_engine_cache_path"] == f"/trt_cache/{model}"
    else:  # the 16-neighbour encoder runs a request whole (B + 15 windows), as the shared one
        assert "run_batch" not in own.parameters
    with pytest.raises(ValueError, match="needs the synctalk2d audio preset"):
        contract.avatar_ensemble_steps(AVATAR_OWN_ENCODER, "reference", own_audio_encoder=True)


def test_avatar_generator_has_its_own_engine_cache(gpu_profile):
    (accelerator,) = gpu_profile[f"{AVATAR}_synctalk"].optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["trt_engine_cache_path"] == f"/trt_cache/{AVATAR}_synctalk"
    assert gpu_profile[f"{AVATAR}_background"].instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU


@pytest.mark.parametrize(
    "profile,model_id",
    [(p, contract.DEFAULT_MODEL_ID) for p in PROFILES]
    + [
        (p, a)
        for p in ("cpu_profile", "gpu_profile")
        for a in (
            AVATAR,
            AVATAR_2D,
            AVATAR_OWN_ENCODER,
            *(f"{b}{contract.AVATAR_FROM_FEATURES_SUFFIX}" for b in (AVATAR_2D, AVATAR_OWN_ENCODER)),
        )
    ],
)
def test_ensemble_wiring_is_what_triton_accepts(profile, model_id, request):
    configs = request.getfixturevalue(profile)
    ensemble = configs[model_id]
    available = {name: spec_ for name, spec_ in tensors(ensemble, "input").items()}  # ensemble tensor -> (dtype, dims)
    produced_by = {}
    consumed = set()
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        # an ensemble's max_batch_size may not exceed any composing model's
        assert ensemble.max_batch_size <= model.max_batch_size, step.model_name
        model_inputs, model_outputs = tensors(model, "input"), tensors(model, "output")
        optional = {t.name for t in model.input if t.optional}
        assert set(model_inputs) - optional <= set(step.input_map) <= set(model_inputs), (
            f"{step.model_name}: every required input mapped"
        )
        for model_tensor, ensemble_tensor in step.input_map.items():
            assert ensemble_tensor in available, f"{step.model_name} reads {ensemble_tensor} before it is produced"
            assert compatible(available[ensemble_tensor], model_inputs[model_tensor]), (
                f"{step.model_name}.{model_tensor}: dtype/dims"
            )
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
        assert name in produced_by and compatible(available[name], spec_), f"ensemble output {name}"
    assert set(tensors(ensemble, "input")) <= consumed, "every ensemble input is used"
    assert set(produced_by) - set(outputs) <= consumed, "every intermediate tensor is consumed"


def compatible(produced, consumed) -> bool:
    """Triton's ensemble check: same dtype and rank, and each dim equal or -1 (variable) on a side."""
    (dtype_a, dims_a), (dtype_b, dims_b) = produced, consumed
    return (
        dtype_a == dtype_b
        and len(dims_a) == len(dims_b)
        and all(a == b or -1 in (a, b) for a, b in zip(dims_a, dims_b))
    )


def test_cpu_profile_serves_everything_with_the_python_backend(cpu_profile, production):
    """The CPU build of Triton has the Python backend only: every model is a Python model or a
    model of one of the project's Python-based backends (backends/<name>/model.py); the models
    production serves with the ONNX Runtime and DALI backends differ from it only in backend:."""
    for name in contract.SHARED_MODELS:
        config = cpu_profile[name]
        assert config.backend in ("python", *paths.python_based_backends()), name
        if production[name].backend in ("onnxruntime", "dali"):
            assert config.backend == CPU_BACKENDS.get(production[name].backend, CPU_BACKENDS.get(name)), name
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
        assert int(accelerator.parameters["max_workspace_size_bytes"]) > 0
    assert production[contract.GENERATOR_MODEL].HasField("dynamic_batching")
    for name in (contract.FRAME_RESIZE_MODEL, contract.FRAME_PASTE_MODEL):
        assert production[name].backend == "dali"
        assert (paths.MODEL_REPOSITORY / name / "1" / "dali.py").is_file()
    jpeg = production[contract.JPEG_ENCODER_MODEL]
    assert jpeg.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"
    assert jpeg.parameters["encoder"].string_value == "nvimgcodec"


def test_every_tensorrt_model_has_one_shape_profile_and_its_own_caches(gpu_profile):
    """Shared models and avatars' own: one profile from batch 1 to max_batch_size over the
    config's own dims (warm-up at 32, 8 and 1 builds one engine, at session creation, under the
    EP's process-wide lock), the engine and timing caches in a folder of the model's own."""
    trt = {name: config for name, config in gpu_profile.items() if config.backend == "onnxruntime"}
    assert {
        contract.GENERATOR_MODEL,
        contract.AUDIO_ENCODER_MODEL,
        f"{AVATAR}_synctalk",
        f"{AVATAR_OWN_ENCODER}_audio_encoder",
    } <= set(trt)
    for name, config in trt.items():
        (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        params = dict(accelerator.parameters)
        shapes = {t.name: list(t.dims) for t in config.input}
        preferred = max(config.dynamic_batching.preferred_batch_size or [config.max_batch_size])
        for key, batch in (("min", 1), ("opt", preferred), ("max", config.max_batch_size)):
            profile = dict(item.split(":") for item in params[f"trt_profile_{key}_shapes"].split(","))
            assert profile == {n: "x".join(map(str, [batch, *dims])) for n, dims in shapes.items()}, (name, key)
        assert params["trt_engine_cache_enable"] == params["trt_timing_cache_enable"] == "true", name
        assert params["trt_engine_cache_path"] == params["trt_timing_cache_path"] == f"/trt_cache/{name}"
        warmups = sorted(w.batch_size for w in config.model_warmup)
        assert warmups[0] >= 1 and warmups[-1] <= config.max_batch_size, f"{name}: warm-up outside the profile"
    assert len(
        {
            c.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters["trt_engine_cache_path"]
            for c in trt.values()
        }
    ) == len(trt)


def test_jpeg_encoders_keep_up_with_the_generators(gpu_profile):
    """As many encoder instances as generator instances, shared and per avatar (the argument is
    in model_repository/jpeg_encoder/config.pbtxt), and synctalk_build.gpu_memory sizes the pool for them."""
    from synctalk_build import gpu_memory

    count = lambda c: sum(g.count for g in c.instance_group)  # noqa: E731
    assert count(gpu_profile[contract.JPEG_ENCODER_MODEL]) == count(gpu_profile[contract.GENERATOR_MODEL]) == 2
    assert count(gpu_profile[f"{AVATAR}_jpeg_encoder"]) == count(gpu_profile[f"{AVATAR}_synctalk"])
    assert gpu_memory.instance_counts()[contract.JPEG_ENCODER_MODEL] == 2


@pytest.mark.parametrize("profile", PROFILES)
def test_warmup_samples_match_the_model_inputs(profile, request):
    configs = request.getfixturevalue(profile)
    names = [n for n, c in configs.items() if c.platform != "ensemble"]
    assert set(contract.SHARED_MODELS) <= set(names)
    for name in names:
        config = configs[name]
        if name == contract.INPUT_VALIDATOR_MODEL:  # the door: warms up in initialize (its model.py)
            assert not config.model_warmup, "warm-up requests through the door would take admission tickets"
            continue
        if name == contract.STREAM_MODEL:  # its work is the avatars' ensembles (warmed up); it has none to warm
            assert not config.model_warmup, "a warm-up request of a sequence model would open a stream"
            continue
        assert config.model_warmup, f"{name}: no model_warmup, the first request would pay initialisation"
        # an avatar's own steps on the CPU profile: one warm-up of a few frames (avatar_install)
        own = profile == "cpu_profile" and name.startswith(
            tuple(f"{a}_" for a in (AVATAR, AVATAR_2D, AVATAR_OWN_ENCODER))
        )
        largest = avatar_install.CPU_WARMUP_FRAMES if own else config.max_batch_size
        assert max(w.batch_size for w in config.model_warmup) == largest, name
        assert not own or len(config.model_warmup) == 1, name
        for warmup in config.model_warmup:
            assert 1 <= warmup.batch_size <= config.max_batch_size
            shapes = {k: (v.data_type, tuple(v.dims)) for k, v in warmup.inputs.items()}
            assert all(compatible(spec_, tensors(config, "input")[k]) for k, spec_ in shapes.items()), name
            # every required input; optional ones where the warm-up exercises them (the validator's VISUAL)
            assert {t.name for t in config.input if not t.optional} <= set(shapes) <= {t.name for t in config.input}, (
                name
            )
            for key, value in warmup.inputs.items():  # zero data: random bits may be NaN
                assert value.zero_data or key in (contract.CROP_BOX.name, contract.FRAME_SIZE.name), f"{name}.{key}"
        assert config.model_warmup[0].batch_size == largest, f"{name}: largest batch first"


@pytest.mark.parametrize(
    "model,preset",
    [(contract.AUDIO_FEATURES_MODEL, "reference"), (contract.SYNCTALK2D_AUDIO_FEATURES_MODEL, "synctalk2d")],
)
def test_audio_features_parameters_are_the_presets(production, model, preset):
    from synctalk_preprocessing.audio import PRESETS

    params = {k: v.string_value for k, v in production[model].parameters.items()}
    assert MelConfig.from_parameters(params) == PRESETS[preset]
    assert set(params) <= set(MelConfig().as_parameters())


def test_rendered_files_are_in_place(tmp_path, models_dir):
    root = render("cpu", tmp_path / "cpu", models_dir / "tiny", model_id="alice")
    assert (root / "alice" / "config.pbtxt").is_file() and not (root / contract.DEFAULT_MODEL_ID).exists()
    assert read_config(root / "alice" / "config.pbtxt").name == "alice"
    for name in (contract.AUDIO_ENCODER_MODEL, contract.GENERATOR_MODEL):
        assert (root / name / "1" / "model.onnx").is_file() and not (root / name / "1" / "model.py").exists()
        assert (paths.BACKENDS / read_config(root / name / "config.pbtxt").backend / "model.py").is_file()
    for name in (contract.FRAME_RESIZE_MODEL, contract.AUDIO_FEATURES_MODEL, contract.SYNCTALK2D_AUDIO_FEATURES_MODEL):
        assert (paths.BACKENDS / read_config(root / name / "config.pbtxt").backend / "model.py").is_file(), name
    assert (root / contract.INPUT_VALIDATOR_MODEL / "1" / "model.py").is_file()
    warmup_box = root / contract.FRAME_PASTE_MODEL / "warmup" / contract.CROP_BOX.name
    assert np.frombuffer(warmup_box.read_bytes(), np.int32).tolist() == [800, 300, 1120, 620]
    gpu = render("gpu", tmp_path / "gpu", models_dir / "tiny")
    assert (gpu / contract.FRAME_RESIZE_MODEL / "1" / "dali.py").is_file()
    assert (gpu / contract.FRAME_PASTE_MODEL / "1" / "dali.py").is_file()
    assert not (gpu / contract.GENERATOR_MODEL / "1" / "model.py").exists()


def test_render_refuses_a_missing_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="synctalk: ONNX model"):
        render("cpu", tmp_path / "out", tmp_path / "no-models")


@pytest.mark.parametrize("profile", ["cpu_profile", "gpu_profile"])
def test_the_generators_and_the_door_have_bounded_queues(profile, request):
    """Admission: every generator (shared and avatars') and input_validator, the first step of
    every ensemble, refuse what their bounded queue cannot hold (docs/operations.md)."""
    from synctalk_build.render_model import admission_frames, queue_policy

    configs = request.getfixturevalue(profile)
    name = profile.removesuffix("_profile")
    expected = queue_policy(name)
    # as many requests as the door admits (8 frames each): an admitted request is never refused
    assert expected.max_queue_size == {"cpu": 5, "gpu": 9}[name] == admission_frames(name) // 8
    door = configs[contract.INPUT_VALIDATOR_MODEL].parameters
    assert door["admission_frames"].string_value == str(admission_frames(name))
    assert door["admission_lease_s"].string_value == {"cpu": "8", "gpu": "2"}[name]
    bounded = [contract.GENERATOR_MODEL, contract.INPUT_VALIDATOR_MODEL]
    bounded += [contract.avatar_models(a)["generator"] for a in (AVATAR, AVATAR_2D, AVATAR_OWN_ENCODER)]
    for model in bounded:
        policy = configs[model].dynamic_batching.default_queue_policy
        assert policy == expected, model
        assert policy.timeout_action == mc.ModelQueuePolicy.REJECT and policy.allow_timeout_override
        # live before offline: requests without a priority (live streams' frames) at level 1, render's at 2
        batching = configs[model].dynamic_batching
        assert (batching.priority_levels, batching.default_priority_level) == (
            contract.PRIORITY_LEVELS,
            contract.PRIORITY_LIVE,
        ), model
        assert contract.PRIORITY_LIVE < contract.PRIORITY_OFFLINE <= contract.PRIORITY_LEVELS


def test_the_cpu_profiles_generators_take_turns(cpu_profile):
    """One generator runs at a time on the CPU profile (the memory budget counts one batch's
    activations): every generator instance needs the server's one cpu_generator resource, and the
    launcher turns Triton's rate limiter on."""
    from synctalk_build.render_model import CPU_GENERATOR_RESOURCE
    from synctalk_ops.serve import TritonServer

    generators = [contract.GENERATOR_MODEL] + [
        contract.avatar_models(a)["generator"] for a in (AVATAR, AVATAR_2D, AVATAR_OWN_ENCODER)
    ]
    for name in generators:
        (group,) = cpu_profile[name].instance_group
        (resource,) = group.rate_limiter.resources
        assert (resource.name, resource.count, getattr(resource, "global")) == (CPU_GENERATOR_RESOURCE, 1, True)
    others = [n for n in cpu_profile if n not in generators]
    assert not any(g.HasField("rate_limiter") for n in others for g in cpu_profile[n].instance_group)
    assert "--rate-limit=execution_count" in TritonServer("/tmp/repository").command()


@pytest.mark.parametrize("profile", PROFILES)
def test_the_stream_model_is_a_decoupled_sequence_model_of_the_contract(profile, request):
    config = request.getfixturevalue(profile)[contract.STREAM_MODEL]
    assert tensors(config, "input") == {t.name: spec(t) for t in contract.STREAM_INPUTS}
    assert all(t.optional for t in config.input), "the avatar on the start request, one audio input or none"
    assert tensors(config, "output") == {t.name: spec(t) for t in contract.STREAM_OUTPUTS}
    assert config.max_batch_size == 0, "a request's frames vary in number: no batch dimension"
    assert config.model_transaction_policy.decoupled, "async execute: one instance serves every stream"
    batching = config.sequence_batching
    assert batching.HasField("oldest") and batching.max_sequence_idle_microseconds >= 5_000_000
    max_streams = int(config.parameters["max_streams"].string_value)
    assert batching.oldest.max_candidate_sequences > max_streams, "stream N+1 reaches the model and is refused"
