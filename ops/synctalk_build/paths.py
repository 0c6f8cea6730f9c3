"""Where the checkout's things are: shared by the operator tools, the benchmarks and the tests."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # ops/synctalk_build/paths.py
MODEL_REPOSITORY = ROOT / "model_repository"
# Python-based backends (a folder with one model.py, selected by a config's `backend:`): the
# shared code of several models, and the CPU profile's stand-ins for ONNX Runtime and DALI.
BACKENDS = ROOT / "backends"
BUILD = ROOT / "build"
MODELS = BUILD / "models"  # ops/synctalk_build/build_models.py writes <variant>/<model>.onnx here
RENDERED = BUILD / "repository"  # ops/synctalk_build/render_repository.py writes <profile>-<variant>/ here


def avatar_store() -> Path:
    """Where avatars are kept (ops/synctalk_build/avatar_store.py): $SYNCTALK_AVATARS, else avatars/ at the root."""
    import os

    return Path(os.environ.get("SYNCTALK_AVATARS") or ROOT / "avatars")


def python_based_backends() -> list[str]:
    """The names of the Python-based backends of backends/ (folders holding a model.py)."""
    return sorted(p.parent.name for p in BACKENDS.glob("*/model.py"))


def onnx_file(repository: Path, model: str) -> Path:
    """The ONNX file of ``model`` in a rendered repository (version 1, as synctalk_build.render_model writes it)."""
    return Path(repository) / model / "1" / "model.onnx"
