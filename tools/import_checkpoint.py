"""Import a trained SyncTalk_2D generator checkpoint (``.pth``) into the served ONNX graph.

The graph of ``tools/build_models.py`` names every initializer after the state-dict entry of the
SyncTalk_2D module it stands for (``Model(6, mode="ave")``). Importing fills those initializers
from the checkpoint by name (torch only reads the file) and checks the result against the
checkpoint: every entry of the graph present with the same shape, nothing of the checkpoint left
over (``num_batches_tracked`` counters aside). The stand-in's crop blend is not in this graph: the
output is the network's own sigmoid.

    python -m tools.import_checkpoint --checkpoint anna_unet.pth --out build/models/anna/synctalk.onnx
    python -m tools.avatars add --id anna --generator build/models/anna/synctalk.onnx ...
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, Union

import numpy as np
import onnx
from onnx import numpy_helper

from tools.build_models import build_generator, model_stats

PARAMETER_SUFFIXES = (".weight", ".bias", ".running_mean", ".running_var")
IGNORED_SUFFIXES = (".num_batches_tracked",)
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")


class CheckpointMismatch(ValueError):
    """The checkpoint is not a SyncTalk_2D "ave" generator of the graph's shapes."""


def load_state_dict(path: Union[str, Path]) -> Dict[str, np.ndarray]:
    """A ``.pth`` file -> {name: float32 array}: unwraps ``{"state_dict": ...}``-style wrappers
    and DataParallel's ``module.`` prefix; loads tensors only (``weights_only``)."""
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    while isinstance(state, dict) and not any(torch.is_tensor(v) for v in state.values()):
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            raise CheckpointMismatch(f"{path}: no state dict found (keys: {', '.join(list(state)[:8])})")
        state = inner
    if not isinstance(state, dict):
        raise CheckpointMismatch(f"{path}: expected a state dict, got {type(state).__name__}")
    arrays = {}
    for name, value in state.items():
        if not torch.is_tensor(value) or name.endswith(IGNORED_SUFFIXES):
            continue
        arrays[name.removeprefix("module.")] = value.detach().to(torch.float32).cpu().numpy()
    return arrays


def _parameters(model: onnx.ModelProto) -> Dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer if t.name.endswith(PARAMETER_SUFFIXES)}


def import_generator(state: Dict[str, np.ndarray], variant: str = "full", source: str = "checkpoint") -> onnx.ModelProto:
    """The generator graph with ``state``'s weights, or CheckpointMismatch naming what differs."""
    model = build_generator(variant, stand_in=False)
    params = _parameters(model)
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    wrong = [
        f"{name}: checkpoint {list(state[name].shape)}, graph {list(params[name].dims)}"
        for name in sorted(set(params) & set(state))
        if tuple(state[name].shape) != tuple(params[name].dims)
    ]
    if missing or unexpected or wrong:
        lines = [f"{source} does not fit the SyncTalk_2D generator ({variant}, audio branch 'ave'):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape differs", wrong)):
            if items:
                lines.append(f"  {len(items)} {title}: " + "; ".join(items[:6]) + (" ..." if len(items) > 6 else ""))
        if any(n.startswith("audio_model.") for n in missing + unexpected):
            lines.append("  (the audio_model entries differ: a 'hubert' or 'wenet' checkpoint? only 'ave' is served)")
        raise CheckpointMismatch("\n".join(lines))
    for name, tensor in params.items():
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(state[name], dtype=np.float32), name))
    model.doc_string = f"SyncTalk_2D generator ({variant}) with the weights of {source}"
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="SyncTalk_2D generator state dict (.pth)")
    parser.add_argument("--out", type=Path, required=True, help="the ONNX file to write")
    parser.add_argument("--variant", default="full", help="graph widths: full (SyncTalk_2D) or tiny")
    args = parser.parse_args(argv)
    try:
        model = import_generator(load_state_dict(args.checkpoint), args.variant, args.checkpoint.name)
    except CheckpointMismatch as exc:
        parser.exit(2, f"error: {exc}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, args.out)
    stats = model_stats(model)
    print(f"wrote {args.out}: {len(_parameters(model))} tensors from {args.checkpoint.name}, "
          f"{stats['parameters'] / 1e6:.2f} M parameters, {stats['macs_per_sample'] / 1e9:.2f} GMACs per frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
