"""Helpers for Python-backend models reading their own Triton model configuration."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any


def load(model_config: str | Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(model_config) if isinstance(model_config, str) else dict(model_config)


def string_parameters(config: Mapping[str, Any]) -> dict[str, str]:
    """``parameters { key: ... value: { string_value: ... } }`` -> {key: value}."""
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


def apply_nice(params: Mapping[str, str]) -> None:
    """The ``nice`` parameter (CPU profile: ops/synctalk_build/render_model.py, CPU_PARAMETERS): this stub's
    scheduling niceness, raised before its threads start (they inherit it: niceness is per thread
    on Linux)."""
    nice = int(params.get("nice", "0"))
    if nice:
        os.nice(nice)


def tensor_names(config: Mapping[str, Any], kind: str) -> list:
    """Names of the model's ``input`` or ``output`` tensors, in config order."""
    return [t["name"] for t in config.get(kind, [])]
