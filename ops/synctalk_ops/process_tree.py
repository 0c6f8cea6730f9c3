"""A tritonserver's process tree: its Python-backend stubs by model, their memory and CPU time,
and the stubs a dead server left behind."""

from __future__ import annotations

import os
from pathlib import Path


def _tree(server_pid: int) -> list:
    """The server's process and its descendants ([] once the server is gone)."""
    import psutil

    try:
        server = psutil.Process(server_pid)
        return [server, *server.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _stub_model(process) -> str | None:
    """The model a Python-backend stub serves (its ``model.py``'s version folder's parent), or None
    for a process that is no stub."""
    model_py = next((a for a in process.cmdline() if a.endswith("/model.py")), None)
    return Path(model_py).parent.parent.name if model_py else None


def stub_counts(server_pid: int) -> dict[str, int]:
    """{model name: live Python-backend stub processes} among the server's children."""
    import psutil

    counts: dict[str, int] = {}
    for child in _tree(server_pid)[1:]:
        try:
            if child.status() == psutil.STATUS_ZOMBIE or (model := _stub_model(child)) is None:
                continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        counts[model] = counts.get(model, 0) + 1
    return counts


def server_processes(server_pid: int, pss: bool = False) -> dict[str, int]:
    """{process name: RSS bytes} for tritonserver and its backend stubs; ``pss``: proportional set
    sizes instead (shared memory counted once across the processes that map it, so they add up)."""
    import psutil

    def size(process) -> int:
        return process.memory_full_info().pss if pss else process.memory_info().rss

    tree = _tree(server_pid)
    if not tree:
        raise psutil.NoSuchProcess(server_pid)
    server, *children = tree
    table = {"tritonserver": size(server)}
    for child in children:
        try:
            model = _stub_model(child)
            key = f"stub:{model}" if model else f"pid:{child.pid}"
            while key in table:  # several instances of one model
                key += "'"
            table[key] = size(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return table


def host_memory_bytes(server_pid: int) -> int:
    """What a tritonserver holds of the host's memory: its processes' private memory (USS) and
    the tmpfs pages of the Python backend's shared-memory regions it and its stubs map. A stub's
    region is allocated whole when the stub starts (``shm-default-byte-size``): those pages are
    the host's memory from then on, yet in no process's RSS or PSS until a process touches them."""
    import psutil

    from synctalk_ops.shm_cleanup import shm_regions

    total = 0
    for process in _tree(server_pid):
        try:
            total += process.memory_full_info().uss
        except psutil.NoSuchProcess:
            continue
    for region in shm_regions(server_pid):
        try:
            total += os.stat(region).st_blocks * 512
        except FileNotFoundError:
            continue
    return total


def server_cpu_seconds(server_pid: int) -> float:
    """CPU seconds (user + system) a process and its children have used so far: tritonserver and
    its backend stubs (or the page's server, the WebRTC service); 0 once it is gone."""
    import psutil

    total = 0.0
    for process in _tree(server_pid):
        try:
            total += sum(process.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return total


STUB_BINARY = "triton_python_backend_stub"


def orphaned_stubs(server_pid: int) -> list:
    """The Python-backend stubs of a tritonserver (``server_pid``) that died without them (a
    SIGKILL, the OOM killer): each stub's arguments name its server's pid, its 5th."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if len(cmdline) > 5 and cmdline[0].endswith(STUB_BINARY) and cmdline[5] == str(server_pid):
            found.append(process)
    return found
