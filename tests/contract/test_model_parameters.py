"""Every `parameters` key of every config (as written, and as rendered for both profiles with
avatars) is documented in model_repository/README.md, in the table of its model."""

import re

import pytest

from synctalk_build import avatar_install, paths
from synctalk_build.render_model import read_config
from synctalk_common import contract
from tests.contract.test_repository_configs import render_with_avatar

README = paths.MODEL_REPOSITORY / "README.md"


def documented() -> dict:
    """{model name: the parameter keys of its table} from the README's `### ` sections."""
    tables, models = {}, []
    for line in README.read_text().splitlines():
        if line.startswith("### "):
            models = re.findall(r"`([^`]+)`", line.split("(")[0])
            for model in models:
                tables.setdefault(model, set())
        elif models and (row := re.match(r"\| `([^`]+)` \|", line)):
            for model in models:
                tables[model].add(row[1])
    return tables


def role(name: str) -> str:
    """A rendered model's name -> the model whose table documents it (avatars' by suffix)."""
    if name in contract.SHARED_MODELS or name == contract.DEFAULT_MODEL_ID:
        return name
    for suffix, source in (
        (contract.AVATAR_GENERATOR_SUFFIX, contract.GENERATOR_MODEL),
        (contract.AVATAR_JPEG_SUFFIX, contract.JPEG_ENCODER_MODEL),
        (contract.AVATAR_AUDIO_ENCODER_SUFFIX, contract.SYNCTALK2D_AUDIO_ENCODER_MODEL),
        (contract.AVATAR_WINDOW_ENCODER_SUFFIX, contract.SYNCTALK2D_WINDOW_ENCODER_MODEL),
        (contract.AVATAR_BACKGROUND_SUFFIX, "avatar_background"),
    ):
        if name.endswith(suffix):
            return source
    return name  # an avatar's ensemble or a template: documented by its own name or not at all


def configs_as_written():
    folders = [*paths.MODEL_REPOSITORY.glob("*/config.pbtxt"), *avatar_install.TEMPLATE.glob("*/config.pbtxt")]
    return {read_config(path).name: read_config(path) for path in folders}


def test_the_readme_has_a_table_for_every_model():
    tables = documented()
    for name in contract.SHARED_MODELS:
        assert name in tables, name


@pytest.mark.parametrize("profile", ["written", "cpu", "gpu"])
def test_every_parameter_is_documented(profile, tmp_path_factory, models_dir):
    if profile == "written":
        configs = configs_as_written()
    else:
        root = render_with_avatar(profile, tmp_path_factory, models_dir)
        configs = {p.parent.name: read_config(p) for p in root.glob("*/config.pbtxt")}
    tables = documented()
    missing = [
        f"{name}: {key}"
        for name, config in configs.items()
        for key in config.parameters
        if key not in tables.get(role(name), set())
    ]
    assert not missing, f"parameters missing from {README.relative_to(paths.ROOT)}: {missing}"
    assert any(config.parameters for config in configs.values())
