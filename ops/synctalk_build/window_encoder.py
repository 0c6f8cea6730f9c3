"""SyncTalk_2D's audio encoder one window at a time, cut from its 16-neighbour graph.

``audio_encoder_synctalk2d`` (``synctalk_build.build_models.build_synctalk2d_audio_encoder``, or the same
graph with a trained ``audio_visual_encoder.pth`` from ``synctalk_build.import_checkpoint``) gathers a
request's distinct windows (``distinct_windows``), runs ``AudioEncoder`` on them (``embeddings``,
512 values a window) and stacks each frame's 16. This cuts the part between: ``MEL_WINDOWS``
[W,1,80,16] -> ``WINDOW_FEATURES`` [W,512], the same nodes and weights, so a window encoded here
is the window the ensemble encodes. A live stream encodes each window of its audio once with it
and stacks each frame's 16 itself (``model_repository/stream``).

    python -m synctalk_build.window_encoder build/models/full/audio_encoder_synctalk2d.onnx out.onnx
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx
import onnx.utils

from synctalk_common import contract

WINDOWS = "distinct_windows"  # tensor names of build_synctalk2d_audio_encoder's graph
EMBEDDINGS = "embeddings"


def derive(neighbour_encoder: Path, out: Path) -> Path:
    """Write the one-window encoder of the 16-neighbour encoder ``neighbour_encoder`` to ``out``."""
    model = onnx.load(str(neighbour_encoder))
    names = {o for n in model.graph.node for o in n.output}
    missing = [n for n in (WINDOWS, EMBEDDINGS) if n not in names]
    if missing:
        raise ValueError(
            f"{neighbour_encoder}: not a SyncTalk_2D audio encoder graph of synctalk_build.build_models "
            f"(no tensor {', '.join(missing)}); import the checkpoint with "
            "synctalk_build.import_checkpoint --audio-encoder"
        )
    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / "cut.onnx"
        onnx.utils.extract_model(str(neighbour_encoder), str(cut), [WINDOWS], [EMBEDDINGS], check_model=False)
        model = onnx.load(str(cut))
    renames = {WINDOWS: contract.MEL_WINDOWS.name, EMBEDDINGS: contract.WINDOW_FEATURES.name}
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value, tensor in (
        (model.graph.input[0], contract.MEL_WINDOWS),
        (model.graph.output[0], contract.WINDOW_FEATURES),
    ):
        value.CopyFrom(onnx.helper.make_tensor_value_info(tensor.name, onnx.TensorProto.FLOAT, ["batch", *tensor.dims]))
    model.graph.name = contract.SYNCTALK2D_WINDOW_ENCODER_MODEL
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("neighbour_encoder", type=Path, help="an audio_encoder_synctalk2d .onnx")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    print(f"wrote {derive(args.neighbour_encoder, args.out)}")


if __name__ == "__main__":
    main()
