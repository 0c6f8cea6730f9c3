"""Request inputs through Triton's system shared-memory extension instead of the gRPC message.

For a client on the same host as the server: the 2.4 MB per frame of ``VISUAL`` (78 MB for a
32-frame batch) is written once, by the request laying itself out straight into a registered POSIX
shared-memory region in the ensemble's layout, and the gRPC request carries only its address.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm

from synctalk_common import contract


class SharedMemoryInputs:
    """One registered region, sized for the largest request; one request at a time uses it."""

    # VISUAL, AUDIO, and room for the small optional inputs (FRAME_INDEX, the audio context)
    extra_bytes_per_frame = 8 + (2 * contract.AUDIO_CONTEXT_SAMPLES + 2) * 4
    byte_size = contract.MAX_BATCH_SIZE * (
        contract.VISUAL_FRAME_BYTES + contract.AUDIO_FRAME_BYTES + extra_bytes_per_frame
    )

    def __init__(self, triton: grpcclient.InferenceServerClient, headers: dict[str, str] | None = None):
        self.name = f"synctalk_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._triton = triton
        self._headers = headers  # the API key: registering a region is a restricted API
        self._handle = shm.create_shared_memory_region(self.name, "/" + self.name, self.byte_size)
        try:
            triton.register_system_shared_memory(self.name, "/" + self.name, self.byte_size, headers=headers)
        except Exception:
            shm.destroy_shared_memory_region(self._handle)
            raise

    def inputs(self, request, takes, optional=()) -> list[grpcclient.InferInput]:
        """Have the request lay its tensors out straight into the region (each written once, no
        intermediate copy); return inputs that point there."""
        placed = []
        offset = 0

        def allocate(spec: contract.Tensor, shape) -> np.ndarray:
            nonlocal offset
            view = shm.get_contents_as_numpy(self._handle, np.dtype(spec.numpy_dtype), list(shape), offset)
            placed.append((spec, list(shape), view.nbytes, offset))
            offset += view.nbytes
            return view

        request.tensors(takes, allocate, optional)
        tensors = []
        for spec, shape, nbytes, at in placed:
            tensor = grpcclient.InferInput(spec.name, shape, spec.dtype)
            tensor.set_shared_memory(self.name, nbytes, at)
            tensors.append(tensor)
        return tensors

    def close(self) -> None:
        try:
            self._triton.unregister_system_shared_memory(self.name, headers=self._headers)
        finally:
            shm.destroy_shared_memory_region(self._handle)
