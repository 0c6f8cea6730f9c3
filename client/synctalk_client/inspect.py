"""The reference's debug mode, the Triton way: run a model id's ensemble step by step.

``inspect_request`` reads the model id's ensemble from the server, sends the request's tensors to
its composing models one by one (each step's inputs are the ensemble tensors its ``input_map``
names, produced by the steps before it) and writes every tensor it sees, so a user whose avatar
does not lip-sync can compare each stage with their own training pipeline::

    mel_spec.npy          MEL_WINDOWS [B,1,80,16] (reference) or MEL_NEIGHBOURS [B,16,1,80,16] (SyncTalk_2D)
    audio_features.npy    AUDIO_FEATURES [B,32,16,16]: the generator's audio input
    visual_input.npy      VISUAL [B,6,320,320]: face and masked face, BGR in [0,1]
    inference_output.npy  GENERATED_FACE [B,3,320,320]: the generator's output, BGR in [0,1]
    frame_00000.jpg ...   the composited frames (JPEG), named by stream frame index
    tensors/<NAME>.npy    every ensemble tensor, inputs and intermediates
    steps.json            each step: model, its inputs and outputs (shapes, dtypes), milliseconds

The frames equal what the ensemble returns for the same request (the tests check it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from synctalk_client.client import CompositeClient
from synctalk_common import contract
from synctalk_common.messages import CompositeBatchRequest

# The reference debug mode's file names, by ensemble tensor.
DEBUG_FILES = {
    contract.MEL_WINDOWS.name: "mel_spec.npy",
    contract.MEL_NEIGHBOURS.name: "mel_spec.npy",
    contract.AUDIO_FEATURES.name: "audio_features.npy",
    contract.VISUAL.name: "visual_input.npy",
    contract.FACE_INPUT.name: "visual_input.npy",  # an avatar's: cut on the server from its frames
    contract.GENERATED_FACE.name: "inference_output.npy",
}


def inspect_request(client: CompositeClient, request: CompositeBatchRequest, out: Path) -> dict[str, object]:
    """Run ``request`` through its model id's ensemble step by step; write every stage to ``out``.
    Returns the summary written to ``steps.json``."""
    tensors: dict[str, np.ndarray] = client.input_tensors(request)
    out = Path(out)
    (out / "tensors").mkdir(parents=True, exist_ok=True)
    steps = []
    for step in client.ensemble_steps(request.model_id):
        model = step["model_name"]
        inputs = {
            model_input: tensors[ensemble]
            for model_input, ensemble in step.get("input_map", {}).items()
            if ensemble in tensors
        }
        started = time.perf_counter()
        results = client.infer_model(model, inputs, list(step.get("output_map", {})))
        elapsed = (time.perf_counter() - started) * 1000.0
        produced = {}  # an optional output of an input the request left out is not produced
        for model_output, ensemble in step["output_map"].items():
            if results[model_output] is not None:
                tensors[ensemble] = produced[ensemble] = results[model_output]
        steps.append(
            {
                "model": model,
                "inputs": {name: [list(a.shape), str(a.dtype)] for name, a in inputs.items()},
                "outputs": {name: [list(a.shape), str(a.dtype)] for name, a in produced.items()},
                "ms": round(elapsed, 2),
            }
        )
    for name, array in tensors.items():
        if array.dtype != np.object_:
            np.save(out / "tensors" / f"{name}.npy", array)
            if name in DEBUG_FILES:
                np.save(out / DEBUG_FILES[name], array)
    jpegs = [bytes(x) for x in tensors[contract.JPEG.name].reshape(-1)]
    for i, jpeg in enumerate(jpegs):
        (out / f"frame_{request.start_frame_idx + i:05d}.jpg").write_bytes(jpeg)
    summary = {
        "model_id": request.model_id,
        "frames": len(jpegs),
        "start_frame_idx": request.start_frame_idx,
        "steps": steps,
    }
    (out / "steps.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
