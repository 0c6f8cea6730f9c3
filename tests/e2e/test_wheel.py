"""The wheel a user installs: its top-level packages are the project's packages by role (no
``tools``, no tests, benchmarks or developer helpers), and the SDK installed from it (not editable)
into a fresh virtual environment, run outside the checkout, renders a clip against a live server."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from synctalk_build import paths

pytestmark = pytest.mark.e2e
PYPROJECT = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of its sources (setuptools writes build/ beside the
    sources: not into the checkout's own build/), offline with this environment's setuptools."""
    source = tmp_path_factory.mktemp("source")
    shutil.copy(paths.ROOT / "pyproject.toml", source)
    for folder in {Path(d).parts[0] for d in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}:
        shutil.copytree(paths.ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("*.whl")
    return built


def test_the_wheels_top_level_packages_are_the_projects_packages_by_role(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == set(PYPROJECT["tool"]["setuptools"]["packages"]), top
    assert not top & {"tools", "tests", "benchmarks", "devtools"}
    assert "synctalk_web/static/index.html" in names, "the page's static files"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(entry_points).decode()
    assert "[synctalk_client.commands]\nweb = synctalk_web.command:register" in text


def test_the_sdk_from_the_wheel_alone_renders_against_a_server(wheel, server, tmp_path):
    """A fresh venv with the wheel installed (not editable); its third-party dependencies are this
    environment's (a path line, which does not process this environment's editable-install hooks),
    so nothing of the checkout is importable there: the render runs from the installed SDK."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    (site,) = (venv / "lib").glob("python3*/site-packages")
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "numpy").is_dir())
    (site / "dependencies.pth").write_text(ours + "\n")
    where = subprocess.run(
        [str(python), "-c", "import synctalk_client, synctalk_common; print(synctalk_client.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(site)), f"the SDK imported from {where}, not the installed wheel"
    out = tmp_path / "clip.mp4"
    done = subprocess.run(
        [str(venv / "bin" / "synctalk-client"), "--url", server.grpc_url, "render", "--seconds", "1", "--quiet"]
        + ["--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    import imageio_ffmpeg

    frames = sum(1 for _ in imageio_ffmpeg.read_frames(str(out)))
    assert frames >= 24, f"{frames} frames in the clip"
