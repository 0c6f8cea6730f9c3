"""Import trained SyncTalk_2D checkpoints (``.pth``) into the served ONNX graphs.

Two checkpoints make a SyncTalk_2D avatar: the generator (``checkpoint/<name>/<epoch>.pth``, the
state dict of ``unet_328.Model(6, "ave")``) and the audio encoder every generator was trained on
(``audio_visual_encoder.pth``, the state dict of ``utils.AudioEncoder`` stored without its
``audio_encoder.`` prefix; both forms are accepted). The graphs of ``ops/synctalk_build/build_models.py`` name
every initializer after the state-dict entry of the module it stands for; importing fills them
from the checkpoint by name (torch only reads the file) and checks the result against the
checkpoint: every entry of the graph present with the same shape, nothing of the checkpoint left
over (``num_batches_tracked`` counters aside). The stand-in's crop blend is not in the generator
graph: the output is the network's own sigmoid.

    python -m synctalk_build.import_checkpoint --checkpoint checkpoint/anna/200.pth \\
        --out build/models/anna/synctalk.onnx
    python -m synctalk_build.import_checkpoint --audio-encoder model/checkpoints/audio_visual_encoder.pth \\
        --out build/models/anna/audio_encoder.onnx
    python -m synctalk_ops.avatars add --id anna --generator build/models/anna/synctalk.onnx \
        --audio-encoder build/models/anna/audio_encoder.onnx --audio-preset synctalk2d ...

A "hubert" generator has the very weight shapes of an "ave" one (only a stride differs), so shapes
cannot tell them apart. The import reads the audio branch's first batch-norm instead: its running
mean is the mean of the training features through the first 1x1 convolution, so a least-squares
solve gives the mean of each of the 32 feature channels the generator was trained on. The "ave"
encoder's features end in a ReLU: every channel mean is >= 0. Clearly negative ones mean signed
features (HuBERT's hidden states): the import refuses, naming them (``--skip-audio-check`` for a
checkpoint you know is "ave").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from synctalk_build.build_models import (
    SYNCTALK2D_ENCODER_PREFIX,
    build_generator,
    build_synctalk2d_audio_encoder,
    model_stats,
)

PARAMETER_SUFFIXES = (".weight", ".bias", ".running_mean", ".running_var")
IGNORED_SUFFIXES = (".num_batches_tracked",)
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")


class CheckpointMismatch(ValueError):
    """The checkpoint is not a SyncTalk_2D "ave" generator of the graph's shapes."""


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
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


def _parameters(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer if t.name.endswith(PARAMETER_SUFFIXES)}


def _fill(model: onnx.ModelProto, state: dict[str, np.ndarray], what: str, source: str, hint=None) -> onnx.ModelProto:
    """``model`` with ``state``'s weights by name, or CheckpointMismatch naming the missing,
    unexpected and differently shaped entries (``hint(missing, unexpected)``: an extra line)."""
    params = _parameters(model)
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    wrong = [
        f"{name}: checkpoint {list(state[name].shape)}, graph {list(params[name].dims)}"
        for name in sorted(set(params) & set(state))
        if tuple(state[name].shape) != tuple(params[name].dims)
    ]
    if missing or unexpected or wrong:
        lines = [f"{source} does not fit {what}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape differs", wrong)):
            if items:
                lines.append(f"  {len(items)} {title}: " + "; ".join(items[:6]) + (" ..." if len(items) > 6 else ""))
        extra = hint(missing, unexpected) if hint else None
        if extra:
            lines.append(f"  ({extra})")
        raise CheckpointMismatch("\n".join(lines))
    for name, tensor in params.items():
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(state[name], dtype=np.float32), name))
    onnx.checker.check_model(model, full_check=True)
    return model


# The audio branch's first block: a 1x1 convolution of the 32 feature channels and its batch-norm.
AUDIO_INPUT_CONV = "audio_model.conv1.conv.0.weight"
AUDIO_INPUT_BN_MEAN = "audio_model.conv1.conv.1.running_mean"


def audio_feature_means(state: dict[str, np.ndarray]) -> np.ndarray:
    """The per-channel mean of the audio features the generator was trained on, solved from its
    first audio batch-norm's running mean (= conv1x1 weight @ feature means) by least squares."""
    weight = state[AUDIO_INPUT_CONV].reshape(state[AUDIO_INPUT_CONV].shape[0], -1)  # [64, 32]
    means, *_ = np.linalg.lstsq(weight.astype(np.float64), state[AUDIO_INPUT_BN_MEAN].astype(np.float64), rcond=None)
    return means


def check_ave_features(state: dict[str, np.ndarray], source: str) -> None:
    """CheckpointMismatch if the generator was trained on signed audio features (not the "ave"
    encoder's, which are ReLU outputs): 4 or more of the 32 channel means clearly below 0."""
    means = audio_feature_means(state)
    scale = float(np.abs(means).max()) or 1.0
    negative = np.flatnonzero(means < -0.05 * scale)
    if len(negative) >= 4:
        shown = ", ".join(f"{int(c)}: {means[c]:.3g}" for c in negative[:5])
        raise CheckpointMismatch(
            f"{source} was not trained on SyncTalk_2D's 'ave' audio features: {len(negative)} of {len(means)} feature "
            f"channels have a negative training mean ({shown}{' ...' if len(negative) > 5 else ''}), but the 'ave' "
            "encoder's features are ReLU outputs (>= 0). A 'hubert' checkpoint (the weights have the same shapes) "
            "needs HuBERT features, which this server does not compute; retrain with --asr ave. "
            "(--skip-audio-check imports it anyway.)"
        )


def import_generator(
    state: dict[str, np.ndarray], variant: str = "full", source: str = "checkpoint", check_audio: bool = True
) -> onnx.ModelProto:
    """The generator graph with ``state``'s weights, or CheckpointMismatch naming what differs
    (and, with ``check_audio``, refusing a generator trained on other than "ave" features)."""

    def hint(missing, unexpected):
        if any(n.startswith("audio_model.") for n in missing + unexpected):
            return "the audio_model entries differ: a 'hubert' or 'wenet' checkpoint? only 'ave' is served"
        return None

    model = _fill(
        build_generator(variant, stand_in=False),
        state,
        f"the SyncTalk_2D generator ({variant}, audio branch 'ave')",
        source,
        hint,
    )
    if check_audio:
        check_ave_features(state, source)
    model.doc_string = f"SyncTalk_2D generator ({variant}) with the weights of {source}"
    return model


def import_audio_encoder(
    state: dict[str, np.ndarray], variant: str = "full", source: str = "checkpoint"
) -> onnx.ModelProto:
    """The ``audio_encoder_synctalk2d`` graph with the weights of SyncTalk_2D's AudioEncoder.
    ``state``'s names may carry the module's ``audio_encoder.`` prefix or not (the shipped
    ``audio_visual_encoder.pth`` has none)."""
    state = {
        name if name.startswith(SYNCTALK2D_ENCODER_PREFIX) else SYNCTALK2D_ENCODER_PREFIX + name: value
        for name, value in state.items()
    }

    def hint(missing, unexpected):
        if any(
            n.startswith(SYNCTALK2D_ENCODER_PREFIX + "audio_encoder") or ".conv_block." not in n for n in unexpected
        ):
            return (
                "not the AudioEncoder's state dict (audio_encoder.N.conv_block.{0,1}.*, N = 0..12): "
                "a generator or SyncNet checkpoint?"
            )
        return None

    model = _fill(
        build_synctalk2d_audio_encoder(variant), state, f"SyncTalk_2D's AudioEncoder ({variant})", source, hint
    )
    model.doc_string = f"SyncTalk_2D AudioEncoder ({variant}) with the weights of {source}"
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--checkpoint", type=Path, help="SyncTalk_2D generator state dict (checkpoint/<name>/<epoch>.pth)"
    )
    which.add_argument(
        "--audio-encoder", type=Path, help="SyncTalk_2D AudioEncoder state dict (audio_visual_encoder.pth)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the ONNX file to write")
    parser.add_argument("--variant", default="full", help="graph widths: full (SyncTalk_2D) or tiny")
    parser.add_argument(
        "--skip-audio-check",
        action="store_true",
        help="import a generator whose batch-norm statistics suggest signed (non-'ave') audio features",
    )
    args = parser.parse_args(argv)
    path = args.checkpoint or args.audio_encoder
    try:
        state = load_state_dict(path)
        if args.checkpoint:
            model = import_generator(state, args.variant, path.name, check_audio=not args.skip_audio_check)
        else:
            model = import_audio_encoder(state, args.variant, path.name)
    except CheckpointMismatch as exc:
        parser.exit(2, f"error: {exc}\n")
    except (FileNotFoundError, IsADirectoryError) as exc:
        parser.exit(2, f"error: cannot read {path}: {exc.strerror or exc}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, args.out)
    stats = model_stats(model)
    print(
        f"wrote {args.out}: {len(_parameters(model))} tensors from {path.name}, "
        f"{stats['parameters'] / 1e6:.2f} M parameters, {stats['macs_per_sample'] / 1e9:.2f} GMACs per "
        f"{'frame' if args.checkpoint else 'window'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
