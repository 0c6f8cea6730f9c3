"""The Pipecat service's frame order, in the agents' environment (pipecat-ai is not in the
project's: tests/agents/interrupt_order.py runs there, with Pipecat's own frame queues)."""

from __future__ import annotations

import json
import subprocess

from synctalk_build import paths
from tests.conftest import agents_python


def test_an_interruption_never_overtakes_the_voice_pushed_before_it():
    """Pushed after it, the 20 ms of speech would be played after the interruption, the output
    transport saying the bot started and stopped speaking again."""
    script = paths.ROOT / "tests" / "agents" / "interrupt_order.py"
    done = subprocess.run([str(agents_python()), str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    order = json.loads(done.stdout.strip().splitlines()[-1])
    assert order == ["StartFrame", "TTSAudioRawFrame", "InterruptionFrame"]
