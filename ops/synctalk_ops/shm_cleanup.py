"""The shared memory a tritonserver leaves when it dies: the Python backend's regions in /dev/shm
and the door's tables (``synctalk_preprocessing.admission``), found and removed."""

from __future__ import annotations

import re
import time
from pathlib import Path

from synctalk_preprocessing import admission

# The Python backend's shared-memory regions: triton_python_backend_shm_region_<uuid>, and
# triton_<name>_backend_shm_region_<uuid> for the models of a Python-based backend <name>.
SHM_REGION_PREFIX = "triton_python_backend_shm_region_"


SHM_REGION_PATTERN = re.compile(r"triton_\w+_backend_shm_region_")


SHM_REGION_GLOB = "triton_*_backend_shm_region_*"


def shm_regions(server_pid: int) -> set:
    """The Python backend's shared-memory regions (/dev/shm) mapped by the server or its stubs."""
    import psutil

    regions = set()
    try:
        processes = [psutil.Process(server_pid), *psutil.Process(server_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return regions
    for process in processes:
        try:
            with open(f"/proc/{process.pid}/maps") as maps:
                regions.update(line.split(maxsplit=5)[-1].strip() for line in maps if SHM_REGION_PATTERN.search(line))
        except OSError:
            continue
    return {r.removesuffix(" (deleted)") for r in regions if r.startswith("/dev/shm/")}


SHM_DIR = Path("/dev/shm")


ORPHAN_AGE_S = 60.0


def remove_orphaned_gates() -> list:
    """Delete the door's tables (synctalk_preprocessing.admission) of servers no longer running."""
    removed = []
    for gate in admission.gate_directory().glob(admission.FILE_PREFIX + "*"):
        pid = gate.name.removeprefix(admission.FILE_PREFIX)
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            gate.unlink(missing_ok=True)
            removed.append(gate)
    return removed


def mapped_shm_regions() -> set:
    """Every Python-backend region (/dev/shm) some live process on this machine maps."""
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            with open(maps) as lines:
                mapped.update(
                    line.split(maxsplit=5)[-1].strip().removesuffix(" (deleted)")
                    for line in lines
                    if SHM_REGION_PATTERN.search(line)
                )
        except OSError:  # the process ended meanwhile, or is not ours to read
            continue
    return mapped


def remove_orphaned_shm_regions(min_age_s: float = ORPHAN_AGE_S) -> list:
    """Delete the Python backend's regions no live process maps (a server or stub killed with
    SIGKILL, or dead before the launcher could read its maps), older than ``min_age_s`` (a region
    a starting server has created but not mapped yet is young). Returns the removed paths."""
    mapped = mapped_shm_regions()
    removed = []
    now = time.time()
    for region in SHM_DIR.glob(SHM_REGION_GLOB):
        try:
            if str(region) in mapped or now - region.stat().st_mtime < min_age_s:
                continue
            region.unlink()
            removed.append(str(region))
        except FileNotFoundError:
            continue
    return removed
