"""Run by the agents' Python (.venv-agents, where pipecat-ai is; tests/unit/test_pipecat_order.py):
whether ``SyncTalkAvatarService`` lets an interruption overtake the voice it pushed just before it.

The real service and Pipecat's own frame queues. The voice's last 20 ms of speech is pushed in the
turn of the event loop in which the service goes on with the ``InterruptionFrame`` (the voice task
pushes whenever its 20 ms is due: in the bot, while the service's input task cancelled its process
task, a turn or two, and the voice task's turn came last). The processor after the service records
the order it processes frames in. Prints that order as JSON, one line."""

from __future__ import annotations

import asyncio
import json

from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import InterruptionFrame, StartFrame, TTSAudioRawFrame
from pipecat.processors.frame_processor import FrameProcessor, FrameProcessorSetup
from pipecat.utils.asyncio.task_manager import TaskManager

from synctalk_pipecat.avatar import SyncTalkAvatarService


class WithoutStream(SyncTalkAvatarService):
    """The service with no stream to the server (its frame handling is what is under test); its
    voice pushes 20 ms of speech just as the interruption goes on."""

    async def _start(self, voice_rate: int) -> None:
        pass

    async def _interrupt(self) -> None:
        await self.push_frame(TTSAudioRawFrame(bytes(640), 16_000, 1))


class Recorder(FrameProcessor):
    """What the output transport is to the service: the next processor, its frames in its order."""

    def __init__(self):
        super().__init__()
        self.order: list[str] = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        self.order.append(type(frame).__name__)


async def processed_order() -> list[str]:
    service, recorder = WithoutStream(triton_url="unused:8001", avatar="unused"), Recorder()
    service.link(recorder)
    manager = TaskManager()
    for processor in (service, recorder):
        await processor.setup(FrameProcessorSetup(clock=SystemClock(), task_manager=manager, pipeline_worker=None))
    await service.queue_frame(StartFrame())
    while "StartFrame" not in recorder.order:
        await asyncio.sleep(0.01)
    await service.queue_frame(InterruptionFrame())  # the user cut in
    while "InterruptionFrame" not in recorder.order:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # anything left in the recorder's queues processed
    for processor in (service, recorder):
        await processor.cleanup()
    return recorder.order


if __name__ == "__main__":
    print(json.dumps(asyncio.run(processed_order())))
