"""Project paths shared by the tools and the tests."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = ROOT / "model_repository"
CPU_PROFILE = ROOT / "cpu_profile"
BUILD = ROOT / "build"
MODELS = BUILD / "models"  # tools/build_models.py writes <variant>/<model>.onnx here
RENDERED = BUILD / "repository"  # tools/render_repository.py writes <profile>-<variant>/ here


def avatar_store() -> Path:
    """Where avatars are kept (tools/avatars.py): $SYNCTALK_AVATARS, else avatars/ at the root."""
    import os

    return Path(os.environ.get("SYNCTALK_AVATARS") or ROOT / "avatars")
