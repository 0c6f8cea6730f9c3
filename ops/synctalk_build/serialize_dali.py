"""Serialize every DALI model of a rendered GPU repository with the DALI at hand, as the DALI
backend's autoserialization would at load: ``<model>/1/dali.py`` -> ``<model>/1/model.dali``.

    python3 -m synctalk_build.serialize_dali /models      # the Dockerfile's RUN step, with the container's DALI

The DALI backend loads ``model.dali`` first and autoserializes ``dali.py`` only when it is
missing. Serializing at image build, with the DALI the backend ships, turns an API mismatch
between the DALI the project is tested with and the container's into a failed ``docker build``
instead of a model that fails to load at the first start.

Serializing needs no GPU: the pipeline is serialized with ``device_id=None`` (DALI refuses to
create a pipeline bound to a GPU where CUDA is absent, as in ``docker build``), and the DALI
backend creates it from the file on each instance's own GPU (``daliCreatePipeline(...,
device_id)``), whatever device the file names.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from synctalk_build.render_model import read_config

PIPELINE_FILE = "dali.py"
SERIALIZED_FILE = "model.dali"  # the DALI backend's default model file name


def dali_models(repository: Path) -> list[Path]:
    """Version folders of the DALI-backend models of ``repository`` that hold a pipeline file."""
    found = []
    for config_file in sorted(repository.glob("*/config.pbtxt")):
        if read_config(config_file).backend == "dali":
            version = config_file.parent / "1"
            if not (version / PIPELINE_FILE).is_file():
                raise FileNotFoundError(f"{config_file.parent.name}: DALI model without {version / PIPELINE_FILE}")
            found.append(version)
    return found


def serialize(version: Path) -> Path:
    """``version/dali.py`` (an ``@autoserialize`` pipeline) -> ``version/model.dali``."""
    from nvidia.dali._utils.autoserialize import _discover_autoserialize

    spec = importlib.util.spec_from_file_location(f"dali_{version.parent.name}", version / PIPELINE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    pipelines = _discover_autoserialize(module, visited=[])  # what the backend's autoserialization finds
    if len(pipelines) != 1:
        raise RuntimeError(f"{version / PIPELINE_FILE}: expected one @autoserialize pipeline, found {len(pipelines)}")
    target = version / SERIALIZED_FILE
    pipelines[0](device_id=None).serialize(filename=str(target))
    if not target.is_file() or target.stat().st_size == 0:
        raise RuntimeError(f"{version.parent.name}: DALI wrote no pipeline to {target}")
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path, help="a repository rendered with --profile gpu")
    args = parser.parse_args(argv)
    import nvidia.dali

    versions = dali_models(args.repository)
    if not versions:
        raise SystemExit(f"{args.repository}: no DALI model found (render it with --profile gpu)")
    for version in versions:
        target = serialize(version)
        print(
            f"{version.parent.name}: serialized with DALI {nvidia.dali.__version__} -> {target} "
            f"({target.stat().st_size} bytes)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
