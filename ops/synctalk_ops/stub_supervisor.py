"""The stub supervisor: this Triton's Python backend does not restart a backend stub process that
died (killed, out of memory); its model then answers every request with "Stub process ... is not
healthy" until reloaded. The supervisor watches the stub processes and reloads a model whose stub
is gone, through the repository API on loopback (``--model-control-mode=explicit``)."""

from __future__ import annotations

import json
import sys
import threading
import time

from synctalk_common import contract
from synctalk_ops.launched import Launched
from synctalk_ops.process_tree import stub_counts


class StubSupervisor(threading.Thread):
    """Reloads a Python-backend model whose stub process died (see the module docstring)."""

    def __init__(self, server: Launched, interval_s: float = 0.5):
        super().__init__(name="stub-supervisor", daemon=True)
        self.server = server
        self.interval_s = interval_s
        self.expected = stub_counts(server.process.pid)
        self.reloads: list[dict[str, float]] = []
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def reload(self, model: str) -> float:
        """Force a reload (an unchanged config would be a no-op) and return its duration."""
        import tritonclient.grpc as grpcclient

        started = time.monotonic()
        headers = {contract.GRPC_API_KEY_HEADER: self.server.api_key} if self.server.api_key else None
        with grpcclient.InferenceServerClient(self.server.grpc_url) as triton:
            config = triton.get_model_config(model, as_json=True)["config"]
            config.setdefault("parameters", {})["supervisor_reload"] = {"string_value": str(len(self.reloads) + 1)}
            triton.load_model(model, config=json.dumps(config), headers=headers)
        seconds = time.monotonic() - started
        self.reloads.append({"model": model, "seconds": seconds, "at": time.time()})
        print(f"stub supervisor: reloaded '{model}' after its stub died ({seconds:.1f} s)", file=sys.stderr, flush=True)
        return seconds

    def run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            if self.server.process is None or self.server.process.poll() is not None:
                return
            current = stub_counts(self.server.process.pid)
            for model, count in self.expected.items():
                if current.get(model, 0) < count and not self._stopping.is_set():
                    try:
                        self.reload(model)
                    except Exception as exc:  # the server may be stopping; try again next round
                        print(f"stub supervisor: reload of '{model}' failed: {exc}", file=sys.stderr, flush=True)
