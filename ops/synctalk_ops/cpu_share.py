"""The server's share of its host's cores, against the other processes on the host.

Linux shares the cores between runnable threads: on one host, a dozen clients that each burn a
core on their own work (copying a 78 MB request into their gRPC buffers, again after each
refusal) outweigh a server's compute threads six to one, and the server serves next to nothing
(``benchmarks.edge_flood``: 1 request of 1,596 in 45 s). Two parts:

- **A scheduling group of its own.** The server starts in a session of its own
  (``start_new_session``), which is a group of its own where the kernel groups by session
  (autogroup scheduling, on by default: ``/proc/sys/kernel/sched_autogroup_enabled``): the cores
  are shared between groups first, then between a group's threads, so however many processes
  the host runs beside it, the server has an equal share.
- **A larger share** (``SERVER_NICE``): the group's nice value. Nice -4 weighs 2.4 times nice 0,
  so under contention the server has about 70 % of the cores and the rest of the host 30 %,
  and an idle server takes nothing from anyone. A negative value needs CAP_SYS_NICE (root has
  it); where it is refused the server keeps its equal share and the launcher says so.

``synctalk-serve`` (``make serve``) and ``make cluster`` run their servers so; the tests and the
demo do not (they share the host with their own clients on purpose). In Kubernetes the
container's CPU request does this job (``deploy/kubernetes/statefulset.yaml``).
"""

from __future__ import annotations

import os
from pathlib import Path

SERVER_NICE = -4
AUTOGROUP_SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroup_enabled() -> bool:
    try:
        return AUTOGROUP_SWITCH.read_text().strip() == "1"
    except OSError:
        return False


def set_group_nice(pid: int, nice: int) -> str | None:
    """Gives the session that ``pid`` leads (started with ``start_new_session``) the nice value
    ``nice``: its autogroup's where the kernel groups by session, else that of every process of
    its process group (its children inherit it). None when done, else why not."""
    try:
        if autogroup_enabled():
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
        else:
            os.setpriority(os.PRIO_PGRP, pid, nice)
    except OSError as exc:
        return f"its CPU share stays equal to the other sessions' (nice {nice} refused: {exc.strerror})"
    return None
