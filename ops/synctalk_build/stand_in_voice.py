"""A stand-in Piper voice: a tiny ONNX model with a real Piper voice's signature and its JSON
config, so that the Piper path (``synctalk_client.tts.PiperTTS``: piper-tts's loading, its
espeak-ng phonemes, its sentence by sentence synthesis) runs where no trained voice can be fetched.

Piper's voices are VITS models exported to ONNX: ``input`` [1, N] int64 phoneme ids,
``input_lengths`` [1] int64, ``scales`` [3] float32 (noise, length, noise_w) in; audio
[1, 1, samples] float32 out, at the config's ``audio.sample_rate``. The stand-in says each phoneme
id as ``PHONEME_SAMPLES`` (70 ms) of a tone whose pitch follows the id (so different text gives different
audio, deterministically), at half scale. A trained voice is the operator's pair of files
(``VOICE.onnx`` and ``VOICE.onnx.json``), used the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SAMPLE_RATE = 22_050  # most of Piper's voices ("medium" quality)
HOP = 256  # Piper's hop length (its alignments' unit)
PHONEME_SAMPLES = 6 * HOP  # what the stand-in says for each phoneme id: 70 ms, about a trained voice's


def build(path: Path) -> Path:
    """Writes ``path`` (the model) and ``path.json`` (its config); returns ``path``."""
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(PHONEME_SAMPLES, dtype=np.float32).reshape(1, 1, PHONEME_SAMPLES) / SAMPLE_RATE
    initializers = [
        numpy_helper.from_array(t * 2 * np.pi, "phase_per_hz"),
        numpy_helper.from_array(np.array([4.0], np.float32), "hz_per_id"),
        numpy_helper.from_array(np.array([120.0], np.float32), "lowest_hz"),
        numpy_helper.from_array(np.array([0.5], np.float32), "gain"),
        numpy_helper.from_array(np.array([1, 1, -1], np.int64), "audio_shape"),
        numpy_helper.from_array(np.array([2], np.int64), "last_axis"),
    ]
    nodes = [
        helper.make_node("Cast", ["input"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["ids", "last_axis"], ["ids3"]),  # [1, N, 1]
        helper.make_node("Mul", ["ids3", "hz_per_id"], ["above"]),
        helper.make_node("Add", ["above", "lowest_hz"], ["hz"]),
        helper.make_node("Mul", ["hz", "phase_per_hz"], ["phase"]),  # [1, N, PHONEME_SAMPLES]
        helper.make_node("Sin", ["phase"], ["tone"]),
        helper.make_node("Mul", ["tone", "gain"], ["scaled"]),
        helper.make_node("Reshape", ["scaled", "audio_shape"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "stand_in_piper_voice",
        [
            helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
            helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "samples"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    config = {
        "audio": {"sample_rate": SAMPLE_RATE, "quality": "stand-in"},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
        "num_symbols": 1 + max(i for ids in DEFAULT_PHONEME_ID_MAP.values() for i in ids),
        "num_speakers": 1,
        "hop_length": HOP,
        "piper_version": "1.8.0",
        "dataset": "stand-in",
    }
    Path(f"{path}.json").write_text(json.dumps(config, ensure_ascii=False, indent=1))
    return path
