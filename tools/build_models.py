"""Build the stand-in ONNX models: the SyncTalk_2D generator and the audio encoder.

Deterministic random weights, real architectures (see ``../shared/reference/synctalk2d.md``):

- ``synctalk.onnx``: U-Net generator, ``input`` [B,6,320,320] + ``audio`` [B,32,16,16] ->
  ``output`` [B,3,320,320] (sigmoid, BGR). Stem at 320x320, five stride-2 stages of
  MobileNetV2-style inverted residual blocks (expansion 2) with widths 32, 64, 128, 256, 512 down
  to 10x10; the "ave" audio branch maps [32,16,16] to [512,10,10]; bottleneck fusion
  1024 -> 512 -> 256 with depthwise-separable blocks; five bilinear x2 up stages with skip
  concatenation; 1x1 convolution to 3 channels and a sigmoid. Batch-norms are folded into the
  convolutions, as in an exported inference graph. Stand-in only: the output is 75 % the input
  face crop and 25 % the network's sigmoid, so that frames made with random weights show a face.
- ``audio_encoder.onnx``: ``MEL_WINDOWS`` [B,1,80,16] -> ``AUDIO_FEATURES`` [B,32,16,16]: a
  wav2lip-style convolution stack to a 512-vector, then a linear map to 8192 values reshaped to
  [32,16,16].

Two variants with the same tensors: ``full`` (about 12 M generator parameters) and ``tiny``
(widths divided by 8) for fast tests.

    python -m tools.build_models --out build/models
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, Sequence

import onnx

from synctalk_client import contract
from tools.onnx_graph import GraphBuilder

VARIANTS: Dict[str, Dict] = {
    # stem width, five down-stage widths, audio-branch widths, up-stage widths
    "full": dict(stem=16, down=(32, 64, 128, 256, 512), audio=(32, 64, 128, 256, 512), up=(256, 128, 64, 32, 16),
                 enc=(32, 64, 128, 256, 512), seed=2024),
    "tiny": dict(stem=4, down=(4, 8, 16, 32, 64), audio=(8, 8, 16, 32, 64), up=(32, 16, 8, 4, 4),
                 enc=(4, 8, 16, 32, 64), seed=7),
}
STAND_IN_CROP_BLEND = 0.75
GENERATOR_FILE = f"{contract.GENERATOR_MODEL}.onnx"
AUDIO_ENCODER_FILE = f"{contract.AUDIO_ENCODER_MODEL}.onnx"


def inverted_residual(g: GraphBuilder, x: str, cout: int, stride: int, residual: bool, name: str, expand: int = 2) -> str:
    cin = g.shapes[x][0]
    hidden = cin * expand
    h = g.relu(g.conv(x, hidden, 1, name=f"{name}.expand"))
    h = g.relu(g.conv(h, hidden, 3, stride=stride, groups=hidden, name=f"{name}.depthwise"))
    h = g.conv(h, cout, 1, gain=0.5 if residual else 1.0, name=f"{name}.project")
    return g.add(x, h) if residual else h


def double_conv_dw(g: GraphBuilder, x: str, cout: int, stride: int, name: str) -> str:
    h = inverted_residual(g, x, cout, stride, residual=False, name=f"{name}.0")
    return inverted_residual(g, h, cout, 1, residual=True, name=f"{name}.1")


def build_generator(variant: str) -> onnx.ModelProto:
    v = VARIANTS[variant]
    g = GraphBuilder(seed=v["seed"])
    visual = g.input(contract.GENERATOR_VISUAL.name, contract.GENERATOR_VISUAL.dims)
    audio = g.input(contract.GENERATOR_AUDIO.name, contract.GENERATOR_AUDIO.dims)

    skips = [inverted_residual(g, visual, v["stem"], 1, residual=False, name="inc")]  # 320x320
    for i, width in enumerate(v["down"]):  # 160, 80, 40, 20, 10
        skips.append(double_conv_dw(g, skips[-1], width, 2, name=f"down{i + 1}"))

    # "ave" audio branch: [32,16,16] -> [512,10,10]
    a1, a2, a3, a4, a5 = v["audio"]
    a = inverted_residual(g, audio, a1, 1, residual=a1 == contract.GENERATOR_AUDIO.dims[0], name="audio.conv1")
    a = inverted_residual(g, a, a2, 2, residual=False, name="audio.conv2")  # 8x8
    a = inverted_residual(g, a, a3, 1, residual=False, name="audio.conv3")
    a = g.resize(a, 10 / 8, align_corners=False)  # 10x10, the visual bottleneck's size
    a = double_conv_dw(g, a, a4, 1, name="audio.conv4")
    a = double_conv_dw(g, a, a5, 1, name="audio.conv5")

    bottleneck = skips.pop()
    x = g.concat([bottleneck, a])  # 1024 channels at full size
    x = double_conv_dw(g, x, v["down"][-1], 1, name="fuse.0")
    x = double_conv_dw(g, x, v["up"][0], 1, name="fuse.1")
    for i, width in enumerate(v["up"]):
        x = g.resize(x, 2.0, align_corners=True)
        x = g.concat([x, skips.pop()])
        x = double_conv_dw(g, x, width, 1, name=f"up{i + 1}")
    x = g.sigmoid(g.conv(x, 3, 1, gain=1.0, name="outc"))
    # Stand-in only: blend the reference crop into the output so demo frames show a face (random
    # weights alone give a uniform blob); a trained model reconstructs the face by itself.
    x = g.blend(g.channels(visual, 0, 3), x, STAND_IN_CROP_BLEND)
    out = g.identity(x, contract.GENERATOR_OUTPUT.name)
    doc = f"SyncTalk_2D-architecture stand-in generator ({variant}), deterministic random weights"
    return g.model([visual, audio], [out], "synctalk_generator", doc)


def build_audio_encoder(variant: str) -> onnx.ModelProto:
    v = VARIANTS[variant]
    g = GraphBuilder(seed=v["seed"] + 1)
    mel = g.input(contract.MEL_WINDOWS.name, contract.MEL_WINDOWS.dims)  # [1,80,16]
    c1, c2, c3, c4, c5 = v["enc"]

    def block(x: str, cout: int, stride, name: str) -> str:
        x = g.relu(g.conv(x, cout, 3, stride=stride, name=f"{name}.0"))
        return g.relu(g.add(x, g.conv(x, cout, 3, gain=0.5, name=f"{name}.1")))

    x = block(mel, c1, 1, "enc.0")  # 80x16
    x = block(x, c2, (3, 1), "enc.1")  # 27x16
    x = block(x, c3, 3, "enc.2")  # 9x6
    x = block(x, c4, (3, 2), "enc.3")  # 3x3
    _, h, w = g.shapes[x]
    x = g.relu(g.conv(x, c5, (h, w), padding=(0, 0), name="enc.4"))  # 1x1
    x = g.relu(g.conv(x, c5, 1, name="enc.5"))
    features = g.flatten_linear_reshape(x, math.prod(contract.AUDIO_FEATURE_SHAPE), contract.AUDIO_FEATURE_SHAPE, "to_features")
    out = g.identity(features, contract.AUDIO_FEATURES.name)
    doc = f"wav2lip-style audio encoder stand-in ({variant}), deterministic random weights"
    return g.model([mel], [out], "audio_encoder", doc)


def model_stats(model: onnx.ModelProto) -> Dict[str, int]:
    props = {p.key: p.value for p in model.metadata_props}
    return {"parameters": int(props["parameters"]), "macs_per_sample": int(props["macs_per_sample"])}


def build(out_dir: Path, variants: Sequence[str] = ("full", "tiny")) -> Dict[str, Dict]:
    summary = {}
    for variant in variants:
        target = out_dir / variant
        target.mkdir(parents=True, exist_ok=True)
        for file_name, builder in ((GENERATOR_FILE, build_generator), (AUDIO_ENCODER_FILE, build_audio_encoder)):
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
        print(f"{name}: {stats['parameters'] / 1e6:.2f} M parameters, {stats['macs_per_sample'] / 1e9:.3f} GMACs per frame")
    (args.out / "models.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
