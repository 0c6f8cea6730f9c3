"""CPU-profile stand-in for Triton's ONNX Runtime backend: runs 1/model.onnx with onnxruntime.

Input and output names are those of the model's config, which are the ONNX graph's own names
(as with the ONNX Runtime backend). All requests of one ``execute`` call (what Triton's dynamic
batcher gathered) run as one session call and are split back per request.
Parameters: ``intra_op_threads`` (0 = onnxruntime's default); ``enable_mem_arena`` and
``enable_mem_pattern`` ("0": no memory held between requests, as the ONNX Runtime backend's
parameters of the same names; avatars' own models); ``allow_spinning`` ("0", the default: idle
intra-op threads sleep at once; "1": they spin for more work); ``run_batch`` (N > 0: a batch of
more frames runs as several runs of at most N, see below). Warm-up at load comes from the
config's ``model_warmup`` (largest batch first, so the memory arena is sized once at load: a first
call at a new, larger batch costs several times a steady one).

Without the arena, a model frees its activations after each run and pays for them again as fresh
pages on the next (glibc maps allocations above 32 MB afresh each time): the full generator at
130-170 ms a frame instead of the arena's 60-75. The arena instead keeps the activations of the
largest run it has seen (6.7 GB for the full generator at batch 32). With ``run_batch``, no run is
larger than ``run_batch`` frames, so the arena holds one such run's activations (the full
generator at 1 frame: about 340 MB) at the arena's speed. On a CPU the generator's time per frame
does not fall with the batch (measured: 62 ms a frame at 32, 8, 4 and 1 frames a run), so the
slices cost nothing; the CPU profile runs every generator so, the shared ``synctalk`` and each
avatar's (``synctalk_build.render_model.CPU_PARAMETERS``).
Without the arena, freed memory is handed back after every run (malloc_trim).
"""

import ctypes
import ctypes.util
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from synctalk_preprocessing import model_config


class TritonPythonModel:
    def initialize(self, args):
        config = model_config.load(args["model_config"])
        params = model_config.string_parameters(config)
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = params.get("enable_mem_arena", "1") != "0"
        options.enable_mem_pattern = params.get("enable_mem_pattern", "1") != "0"
        # "0" (the default here): the intra-op threads sleep when a run ends instead of spinning for
        # more work (the ONNX Runtime backend's session.intra_op.allow_spinning). Live streams run
        # a frame every 40 ms, and spinning filled the gaps: a real-time stream (tiny models,
        # 640x360, 2 cores) cost the server 1.7-1.8 CPU-s a second with spinning, 1.06 without,
        # its frames as soon; back to back, a run is as fast within noise (full) or ~2 ms slower (tiny)
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        self.run_batch = int(params.get("run_batch", "0"))
        # without the arena, give what a run freed back to the system (glibc keeps it otherwise)
        self.trim = None if options.enable_cpu_mem_arena else ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = config["input"]
        self.output_names = model_config.tensor_names(config, "output")
        session_inputs = {i.name for i in self.session.get_inputs()}
        missing = [i["name"] for i in self.inputs if i["name"] not in session_inputs]
        if missing:
            raise ValueError(
                f"{args['model_name']}: model.onnx has no input(s) {missing}; it has {sorted(session_inputs)}"
            )

    def execute(self, requests):
        # A request whose client gave up (gRPC deadline or cancel: Triton marks it cancelled, and
        # an ensemble's later steps inherit the mark) is answered CANCELLED and not computed.
        gone = [r.is_cancelled() for r in requests]
        computed = iter(self._run([r for r, g in zip(requests, gone) if not g]) if not all(gone) else ())
        cancelled = pb_utils.TritonError("cancelled by the client before it ran", pb_utils.TritonError.CANCELLED)
        return [pb_utils.InferenceResponse(error=cancelled) if g else next(computed) for g in gone]

    def _run(self, requests):
        feeds, sizes = {}, []
        for name in (i["name"] for i in self.inputs):
            arrays = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            feeds[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            sizes = [a.shape[0] for a in arrays]
        outputs = self._session_run(feeds)
        responses, start = [], 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(n, np.ascontiguousarray(o[start : start + size]))
                for n, o in zip(self.output_names, outputs)
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
            start += size
        if self.trim is not None:
            del outputs, feeds
            self.trim(0)
        return responses

    def _session_run(self, feeds):
        """One session run, or runs of at most ``run_batch`` frames, their outputs joined."""
        frames = next(iter(feeds.values())).shape[0]
        if self.run_batch <= 0 or frames <= self.run_batch:
            return self.session.run(self.output_names, feeds)
        outputs = None
        for i in range(0, frames, self.run_batch):
            run = self.session.run(self.output_names, {k: v[i : i + self.run_batch] for k, v in feeds.items()})
            if outputs is None:  # the batch's outputs, filled run by run (no list of runs to join)
                outputs = [np.empty((frames,) + o.shape[1:], o.dtype) for o in run]
            for whole, part in zip(outputs, run):
                whole[i : i + len(part)] = part
            del run
        return outputs
