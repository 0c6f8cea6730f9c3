"""Build the stand-in ONNX models: the SyncTalk_2D generator and the audio encoder.

Deterministic random weights, real architectures (see ``../shared/reference/synctalk2d.md``):

- ``synctalk.onnx``: SyncTalk_2D's U-Net generator (``Model(6, mode="ave")``), ``input``
  [B,6,320,320] + ``audio`` [B,32,16,16] -> ``output`` [B,3,320,320] (sigmoid, BGR). Inverted
  residual blocks (expansion 2) with batch-norms; stem at 320x320, five stride-2 stages with
  widths 32, 32, 64, 128, 256, 512 down to 10x10; the "ave" audio branch maps [32,16,16] to
  [512,10,10]; bottleneck fusion 1024 -> 512 -> 256; five bilinear x2 up stages with skip
  concatenation; 1x1 convolution to 3 channels and a sigmoid: 12.19 M parameters, 4.89 GMACs per
  frame. Every initializer is named after the state-dict entry of the PyTorch module it stands for
  (``down1.maxpool_conv.0.double_conv.0.conv.0.weight``, ...), so a trained checkpoint fills the
  same graph (``ops/synctalk_build/import_checkpoint.py``). Stand-in only: the output is 75 % the input face
  crop and 25 % the network's sigmoid, so that frames made with random weights show a face.
- ``audio_encoder.onnx``: ``MEL_WINDOWS`` [B,1,80,16] -> ``AUDIO_FEATURES`` [B,32,16,16]: a
  wav2lip-style convolution stack to a 512-vector, then a linear map to 8192 values reshaped to
  [32,16,16].

Two variants with the same tensors: ``full`` (SyncTalk_2D's widths) and ``tiny`` (widths divided
by 8, 0.21 M parameters) for fast tests.

    python -m synctalk_build.build_models --out build/models
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from synctalk_build.onnx_graph import GraphBuilder
from synctalk_common import contract

VARIANTS: dict[str, dict] = {
    # ch: the generator's five widths (SyncTalk_2D's ch); enc: the audio encoder's widths
    "full": dict(ch=(32, 64, 128, 256, 512), enc=(32, 64, 128, 256, 512), seed=2024),
    "tiny": dict(ch=(4, 8, 16, 32, 64), enc=(4, 8, 16, 32, 64), seed=7),
}
STAND_IN_CROP_BLEND = 0.75
GENERATOR_FILE = f"{contract.GENERATOR_MODEL}.onnx"
AUDIO_ENCODER_FILE = f"{contract.AUDIO_ENCODER_MODEL}.onnx"
SYNCTALK2D_AUDIO_ENCODER_FILE = f"{contract.SYNCTALK2D_AUDIO_ENCODER_MODEL}.onnx"


# The generator's blocks, named like the modules of SyncTalk_2D's unet (``Model(6, mode="ave")``)
# so that every initializer carries the name of the state-dict entry it stands for
# (ops/synctalk_build/import_checkpoint.py fills them from a trained checkpoint by name).
def inverted_residual(
    g: GraphBuilder, x: str, cout: int, stride: int, residual: bool, name: str, expand: int = 2
) -> str:
    """``InvertedResidual``: ``<name>.conv.{0,3,6}`` (1x1 expand, 3x3 depthwise, 1x1 project,
    no biases) each followed by a batch-norm ``<name>.conv.{1,4,7}``; ReLU after the first two."""
    cin = g.shapes[x][0]
    hidden = cin * expand
    h = g.relu(g.batch_norm(g.conv(x, hidden, 1, bias=False, name=f"{name}.conv.0"), f"{name}.conv.1"))
    h = g.conv(h, hidden, 3, stride=stride, groups=hidden, bias=False, name=f"{name}.conv.3")
    h = g.relu(g.batch_norm(h, f"{name}.conv.4"))
    h = g.conv(h, cout, 1, gain=0.5 if residual else 1.0, bias=False, name=f"{name}.conv.6")
    h = g.batch_norm(h, f"{name}.conv.7")
    return g.add(x, h) if residual else h


def double_conv_dw(g: GraphBuilder, x: str, cout: int, stride: int, name: str) -> str:
    """``DoubleConvDW``: ``<name>.double_conv.0`` (strided, no residual) and ``.1`` (residual)."""
    h = inverted_residual(g, x, cout, stride, residual=False, name=f"{name}.double_conv.0")
    return inverted_residual(g, h, cout, 1, residual=True, name=f"{name}.double_conv.1")


def conv_bn_relu(g: GraphBuilder, x: str, cout: int, stride, padding: int, conv: str, bn: str) -> str:
    return g.relu(g.batch_norm(g.conv(x, cout, 3, stride=stride, padding=padding, name=conv), bn))


def build_generator(variant: str, stand_in: bool = True) -> onnx.ModelProto:
    """The SyncTalk_2D U-Net ("ave" audio branch). ``stand_in``: blend the input crop into the
    output (random weights alone give a blob); off for a graph that takes trained weights."""
    v = VARIANTS[variant]
    ch = v["ch"]
    g = GraphBuilder(seed=v["seed"])
    visual = g.input(contract.GENERATOR_VISUAL.name, contract.GENERATOR_VISUAL.dims)
    audio = g.input(contract.GENERATOR_AUDIO.name, contract.GENERATOR_AUDIO.dims)

    x1 = inverted_residual(g, visual, ch[0], 1, residual=False, name="inc.inconv.0")  # 320x320
    x2 = double_conv_dw(g, x1, ch[0], 2, name="down1.maxpool_conv.0")  # 160
    x3 = double_conv_dw(g, x2, ch[1], 2, name="down2.maxpool_conv.0")  # 80
    x4 = double_conv_dw(g, x3, ch[2], 2, name="down3.maxpool_conv.0")  # 40
    x5 = double_conv_dw(g, x4, ch[3], 2, name="down4.maxpool_conv.0")  # 20
    x6 = double_conv_dw(g, x5, ch[4], 2, name="down5.maxpool_conv.0")  # 10

    # AudioConvAve: [32,16,16] -> [ch4,10,10]
    a = inverted_residual(g, audio, ch[1], 1, residual=False, name="audio_model.conv1")
    a = inverted_residual(g, a, ch[2], 1, residual=False, name="audio_model.conv2")
    a = conv_bn_relu(g, a, ch[3], 1, 1, "audio_model.conv3", "audio_model.bn3")  # 16x16
    a = inverted_residual(g, a, ch[3], 1, residual=True, name="audio_model.conv4")
    a = conv_bn_relu(g, a, ch[4], 2, 3, "audio_model.conv5", "audio_model.bn5")  # (16 + 6 - 3) // 2 + 1 = 10
    a = inverted_residual(g, a, ch[4], 1, residual=True, name="audio_model.conv6")
    a = inverted_residual(g, a, ch[4], 1, residual=True, name="audio_model.conv7")

    x = g.concat([x6, a])
    x = double_conv_dw(g, x, ch[4], 1, name="fuse_conv.0")
    x = double_conv_dw(g, x, ch[3], 1, name="fuse_conv.1")
    for i, (skip, width) in enumerate(
        zip((x5, x4, x3, x2, x1), (ch[3] // 2, ch[2] // 2, ch[1] // 2, ch[0], ch[0] // 2))
    ):
        x = g.resize(x, 2.0, align_corners=True)
        x = double_conv_dw(g, g.concat([x, skip]), width, 1, name=f"up{i + 1}.conv")
    x = g.sigmoid(g.conv(x, 3, 1, gain=1.0, name="outc.conv"))
    if stand_in:
        # Stand-in only: blend the reference crop into the output so demo frames show a face
        # (random weights alone give a uniform blob); a trained model reconstructs the face itself.
        x = g.blend(g.channels(visual, 0, 3), x, STAND_IN_CROP_BLEND)
    out = g.identity(x, contract.GENERATOR_OUTPUT.name)
    kind = "stand-in with deterministic random weights" if stand_in else "graph for trained weights"
    doc = f"SyncTalk_2D generator ({variant}), {kind}"
    return g.model([visual, audio], [out], "synctalk_generator", doc)


def _wav2lip_trunk(g: GraphBuilder, mel: str, widths) -> str:
    """wav2lip's audio encoder trunk: [1,80,16] -> [c5,1,1] (strided convolutions with residuals)."""
    c1, c2, c3, c4, c5 = widths

    def block(x: str, cout: int, stride, name: str) -> str:
        x = g.relu(g.conv(x, cout, 3, stride=stride, name=f"{name}.0"))
        return g.relu(g.add(x, g.conv(x, cout, 3, gain=0.5, name=f"{name}.1")))

    x = block(mel, c1, 1, "enc.0")  # 80x16
    x = block(x, c2, (3, 1), "enc.1")  # 27x16
    x = block(x, c3, 3, "enc.2")  # 9x6
    x = block(x, c4, (3, 2), "enc.3")  # 3x3
    _, h, w = g.shapes[x]
    x = g.relu(g.conv(x, c5, (h, w), padding=(0, 0), name="enc.4"))  # 1x1
    return g.relu(g.conv(x, c5, 1, name="enc.5"))


def build_audio_encoder(variant: str) -> onnx.ModelProto:
    """The request-flow reference's encoder: one window [1,80,16] -> [32,16,16] per frame."""
    v = VARIANTS[variant]
    g = GraphBuilder(seed=v["seed"] + 1)
    mel = g.input(contract.MEL_WINDOWS.name, contract.MEL_WINDOWS.dims)  # [1,80,16]
    x = _wav2lip_trunk(g, mel, v["enc"])
    features = g.flatten_linear_reshape(
        x, math.prod(contract.AUDIO_FEATURE_SHAPE), contract.AUDIO_FEATURE_SHAPE, "to_features"
    )
    out = g.identity(features, contract.AUDIO_FEATURES.name)
    doc = f"wav2lip-style audio encoder stand-in ({variant}), deterministic random weights"
    return g.model([mel], [out], "audio_encoder", doc)


# SyncTalk_2D's ``utils.AudioEncoder``: 13 blocks ``audio_encoder.N`` of Conv2d (with bias,
# ``conv_block.0``) + BatchNorm2d (``conv_block.1``) + ReLU, the residual ones adding their input
# before the ReLU. (index of the width in ``widths``, kernel, stride, padding, residual) per block.
SYNCTALK2D_ENCODER_BLOCKS = (
    (0, 3, 1, 1, False),
    (0, 3, 1, 1, True),
    (0, 3, 1, 1, True),
    (1, 3, (3, 1), 1, False),
    (1, 3, 1, 1, True),
    (1, 3, 1, 1, True),
    (2, 3, 3, 1, False),
    (2, 3, 1, 1, True),
    (2, 3, 1, 1, True),
    (3, 3, (3, 2), 1, False),
    (3, 3, 1, 1, True),
    (4, 3, 1, 0, False),
    (4, 1, 1, 0, False),
)
SYNCTALK2D_ENCODER_PREFIX = "audio_encoder."


def synctalk2d_encoder_trunk(g: GraphBuilder, mel: str, widths) -> str:
    """``AudioEncoder.audio_encoder``: one window [1,80,16] -> [512,1,1] (80x16 -> 27x16 -> 9x6
    -> 3x3 -> 1x1), initializers named ``audio_encoder.N.conv_block.{0,1}.*`` as its state dict."""
    x = mel
    for n, (width, kernel, stride, padding, residual) in enumerate(SYNCTALK2D_ENCODER_BLOCKS):
        name = f"{SYNCTALK2D_ENCODER_PREFIX}{n}.conv_block"
        h = g.conv(
            x,
            widths[width],
            kernel,
            stride=stride,
            padding=padding,
            gain=0.5 if residual else math.sqrt(2.0),
            name=f"{name}.0",
        )
        h = g.batch_norm(h, f"{name}.1")
        x = g.relu(g.add(h, x) if residual else h)
    return x


def build_synctalk2d_audio_encoder(variant: str) -> onnx.ModelProto:
    """SyncTalk_2D's audio path: each frame's 16 neighbouring windows [16,1,80,16] through
    ``AudioEncoder`` (the real module tree and state-dict names: a trained
    ``audio_visual_encoder.pth`` fills this graph by name, ``ops/synctalk_build/import_checkpoint.py``) to
    512-vectors, zeroed where NEIGHBOUR_MASK is 0 (upstream's zero rows), stacked to 8192 values and
    reshaped, row-major, to [32,16,16].

    One request's rows are consecutive frames, so row i's neighbour j is row i+1's neighbour j-1:
    the graph encodes each distinct window once (row 0..B-1's first neighbour and row B-1's other
    15: B + 15 windows instead of 16 B) and gathers each row's 16 from them. Hence the model
    takes one request per execution (no dynamic batching across requests)."""
    v = VARIANTS[variant]
    n = contract.MEL_NEIGHBOURS.dims[0]
    g = GraphBuilder(seed=v["seed"] + 2)
    mel = g.input(contract.MEL_NEIGHBOURS.name, contract.MEL_NEIGHBOURS.dims)
    mask = g.input(contract.NEIGHBOUR_MASK.name, contract.NEIGHBOUR_MASK.dims)

    def const(name, value):
        return g.const(name, np.array(value, np.int64), count=False)

    def node(op, inputs, name, **attrs):
        g.nodes.append(helper.make_node(op, inputs, [name], **attrs))
        return name

    first = node("Gather", [mel, const("first.index", 0)], "first_neighbours", axis=1)  # [B,1,80,16]
    last_row = node(
        "Slice",
        [mel, const("last.starts", [-1, 1]), const("last.ends", [2**62, n]), const("last.axes", [0, 1])],
        "last_row",
    )
    rest = node(
        "Reshape", [last_row, const("rest.shape", [n - 1, *contract.MEL_WINDOWS.dims])], "last_neighbours"
    )  # [15,1,80,16]
    windows = node("Concat", [first, rest], "distinct_windows", axis=0)  # [B+15,1,80,16]
    g.shapes[windows] = contract.MEL_WINDOWS.dims
    features = math.prod(contract.AUDIO_FEATURE_SHAPE) // n  # 512 per window
    x = synctalk2d_encoder_trunk(g, windows, (*v["enc"][:4], features))  # [B+15,512,1,1]
    embeddings = node("Reshape", [x, const("embeddings.shape", [-1, features])], "embeddings")
    batch = node("Gather", [node("Shape", [mel], "mel_shape"), const("batch.index", 0)], "batch")
    rows = node("Range", [const("rows.start", 0), batch, const("rows.step", 1)], "rows")
    offsets = const("neighbour.offsets", np.arange(n)[None, :])
    index = node(
        "Add", [node("Unsqueeze", [rows, const("rows.axes", [1])], "rows_column"), offsets], "neighbour_index"
    )  # [B,16]
    stacked = node("Gather", [embeddings, index], "stacked", axis=0)  # [B,16,512]
    g.shapes[stacked] = (n, features)
    x = g.mul(stacked, g.reshape(mask, (n, 1), "mask"))
    out = g.identity(g.reshape(x, contract.AUDIO_FEATURE_SHAPE, "to_features"), contract.AUDIO_FEATURES.name)
    # macs_per_sample: one window's trunk, what a frame costs at large batches (B + 15 windows for B frames)
    doc = (
        f"SyncTalk_2D AudioEncoder ({variant}): 16 neighbouring windows -> [32,16,16], "
        "each distinct window encoded once"
    )
    return g.model([mel, mask], [out], "audio_encoder_synctalk2d", doc)


def model_stats(model: onnx.ModelProto) -> dict[str, int]:
    props = {p.key: p.value for p in model.metadata_props}
    return {"parameters": int(props["parameters"]), "macs_per_sample": int(props["macs_per_sample"])}


def build(out_dir: Path, variants: Sequence[str] = ("full", "tiny")) -> dict[str, dict]:
    summary = {}
    for variant in variants:
        target = out_dir / variant
        target.mkdir(parents=True, exist_ok=True)
        for file_name, builder in (
            (GENERATOR_FILE, build_generator),
            (AUDIO_ENCODER_FILE, build_audio_encoder),
            (SYNCTALK2D_AUDIO_ENCODER_FILE, build_synctalk2d_audio_encoder),
        ):
            model = builder(variant)
            onnx.save(model, target / file_name)
            summary[f"{variant}/{file_name}"] = model_stats(model)
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/models"))
    parser.add_argument("--variant", choices=sorted(VARIANTS), action="append", help="default: all")
    args = parser.parse_args(argv)
    summary = build(args.out, args.variant or sorted(VARIANTS))
    for name, stats in summary.items():
        print(
            f"{name}: {stats['parameters'] / 1e6:.2f} M parameters, {stats['macs_per_sample'] / 1e9:.3f} GMACs "
            "per frame"
        )
    (args.out / "models.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
