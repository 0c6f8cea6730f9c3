"""synctalk_ops.cpu_share: a server started in a session of its own gets its group's nice value."""

import os
import subprocess
import sys
from pathlib import Path

from synctalk_ops import cpu_share


def test_a_session_of_its_own_gets_the_groups_nice_value():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        assert cpu_share.set_group_nice(child.pid, 7) is None  # a smaller share needs no privilege
        if cpu_share.autogroup_enabled():
            assert Path(f"/proc/{child.pid}/autogroup").read_text().split()[-1] == "7"
        else:
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == 7
        assert os.getsid(child.pid) == child.pid != os.getsid(0)
    finally:
        child.kill()
        child.wait()


def test_a_refused_share_says_why(monkeypatch):
    monkeypatch.setattr(cpu_share, "autogroup_enabled", lambda: True)
    refused = cpu_share.set_group_nice(2**22 + 12345, -4)  # no such process
    assert refused is not None and "nice -4 refused" in refused
