"""A live stream's speed against its own generator's, setting by setting, in one run.

    python -m benchmarks.live_speed                       # full model, the demo's 1280x720 avatar
    python -m benchmarks.live_speed --variant tiny --seconds 2 --settings before catch-up

One CPU-profile server per setting, one after another on this host (the numbers of one run are
read side by side, as ratios: these hosts are noisy):

- **the bare generator**, in process at batch 1 (onnxruntime, its default options: the memory
  arena) on the same ONNX file: frames a second, the ceiling a stream could reach;
- **a live stream** of ``--seconds`` of speech to the avatar (``presenter``: SyncTalk_2D's front
  end, 1280x720 frames as ``make demo`` adds it), in 40 ms and 160 ms chunks, sent as fast as
  possible (frames a second: frames over the time from the first chunk to the last frame) and at
  real time (the last frame's delay after the last chunk: near the lookahead when the stream keeps
  pace); and the server's time per frame in each step (Triton's statistics over the fast 40 ms
  stream: queue + compute per frame, and the generator's frames per execution);
- **settings**: ``before`` (one frame a request: ``catch_up_batch`` 1, how the stream model
  rendered before catching up; the avatar's generator without an arena hands its memory back
  after every run), ``catch-up`` (batches of up to 8 when behind), ``kept-run`` (the generator runs
  one frame a run and keeps that run's memory: ``run_batch`` 1, what the CPU profile installs),
  ``no-spinning`` (that, and every onnxruntime step's idle threads sleep at once:
  ``allow_spinning`` 0), ``arena`` (catch-up, the avatar's generator with onnxruntime's memory
  arena, as ``synctalk-avatars add --arena``); these five render every frame through the avatar's
  ensemble (the stream's ``encode_windows`` 0: its encoder step encodes each request's windows
  afresh); ``windows-once`` (one-frame runs, and the stream encodes each audio window once and
  sends the features to ``<id>_from_features``: what the CPU profile serves), ``int8`` (that, with
  the avatar's INT8 generator, as ``synctalk-avatars add --int8`` builds it: ``synctalk_build.int8``, whose
  speed-up and PSNR on the avatar's frames are measured too; ``int8-ensemble``: the INT8
  generator through the avatar's ensemble); with the resident memory of the avatar's generator
  process. ``--key NAME`` keeps the file's other runs and stores this one
  under NAME.

Writes ``benchmarks/results/live_speed.json`` and prints the tables for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.bench import STAGE_TIMES, model_statistics
from synctalk_build import paths
from synctalk_build.render_model import read_config, write_config
from synctalk_build.render_repository import render
from synctalk_client import CompositeClient, synthetic
from synctalk_client.stream import LiveStream
from synctalk_common import contract
from synctalk_ops.process_tree import server_processes
from synctalk_ops.serve import TritonServer

SETTINGS = ("before", "catch-up", "frame-runs", "no-spinning", "arena", "windows-once", "int8-ensemble", "int8")
SPF = contract.SAMPLES_PER_FRAME
RESULTS = paths.ROOT / "benchmarks" / "results" / "live_speed.json"


def bare_generator_fps(onnx_file: Path, repeat: int = 12) -> float:
    """The generator alone at batch 1: onnxruntime's defaults (its arena), both cores."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        i.name: rng.random([1 if not isinstance(d, int) else d for d in i.shape], dtype=np.float32)
        for i in session.get_inputs()
    }
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return 1.0 / statistics.median(times)


def set_parameters(config_file: Path, values: dict[str, str]) -> None:
    config = read_config(config_file)
    for key, value in values.items():
        config.parameters[key].string_value = value
    write_config(config, config_file, "# benchmarks.live_speed's setting")


def apply_setting(repository: Path, avatar: str, setting: str) -> None:
    """The repository's configs for ``setting``."""
    set_parameters(
        repository / contract.STREAM_MODEL / "config.pbtxt",
        {
            "catch_up_batch": "1" if setting == "before" else "8",
            "encode_windows": "1" if setting in ("windows-once", "int8") else "0",  # int8-ensemble: 0
        },
    )
    onnx_steps = [p.parent for p in repository.glob("*/config.pbtxt") if read_config(p).backend == "onnxruntime_cpu"]
    for folder in onnx_steps:
        set_parameters(folder / "config.pbtxt", {"allow_spinning": "0" if setting == "no-spinning" else "1"})
    generator = repository / contract.avatar_models(avatar)["generator"] / "config.pbtxt"
    one_frame = setting in ("frame-runs", "no-spinning", "windows-once", "int8-ensemble", "int8")
    arena = "1" if setting == "arena" or one_frame else "0"
    set_parameters(generator, {"enable_mem_arena": arena, "run_batch": "1" if one_frame else "0"})


def install_int8(repository: Path, avatar: str, store: Path) -> dict:
    """The avatar's generator quantized as ``add --int8`` does, in place of its FP32 model file
    (the last setting: the next run renders the repository afresh)."""
    from synctalk_build import int8
    from synctalk_preprocessing.avatar import AvatarAssets

    assets = AvatarAssets.load(store / avatar)
    preset = assets.source.get("audio_preset", "reference")
    encoder = contract.PRESET_AUDIO_ENCODERS[preset]
    model = paths.onnx_file(repository, contract.avatar_models(avatar)["generator"])
    quantized = model.with_name("model_int8.onnx")
    result = int8.build(
        model,
        quantized,
        assets.backgrounds,
        assets.boxes,
        preset,
        paths.onnx_file(repository, encoder),
        int8.speech(None),
        min_speedup=0.0,
    )
    model.unlink()  # a hard link to the stored FP32 file: replaced, not written through
    quantized.rename(model)
    print(int8.describe(result), flush=True)
    return result


def stream(url: str, avatar: str, audio: np.ndarray, chunk_frames: int, real_time: bool) -> dict:
    """One stream of ``audio``: frames a second (as fast as possible), or the last frame's delay
    after the last chunk (at real time)."""
    step = chunk_frames * SPF
    chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
    answers: queue.Queue = queue.Queue()
    started = time.perf_counter()
    with LiveStream(url, avatar, timeout_s=600) as live:
        for n, chunk in enumerate(chunks):
            if real_time:
                time.sleep(max(0.0, started + n * step / contract.SAMPLE_RATE - time.perf_counter()))
            live.send_async(
                chunk, lambda frames, error: answers.put((frames, error, time.perf_counter())), end=n == len(chunks) - 1
            )
        last_sent = time.perf_counter()
        got = [answers.get(timeout=600) for _ in chunks]
    errors = [e for _, e, _ in got if e is not None]
    if errors:
        raise errors[0]
    frames = sum(len(f) for f, _, _ in got)
    done = max(t for f, _, t in got if f)
    return {
        "frames": frames,
        "frames_per_s": frames / (done - started),
        "last_frame_after_last_chunk_s": done - last_sent,
    }


def measure_setting(repository: Path, avatar: str, setting: str, audio: np.ndarray, port: int) -> dict:
    apply_setting(repository, avatar, setting)
    log = paths.BUILD / "logs" / f"live-speed-{setting}.log"
    generator = contract.avatar_models(avatar)["generator"]
    with TritonServer(repository, port, port + 1, port + 2, log_path=log) as server:
        url = server.grpc_url
        stream(url, avatar, audio[: 2 * contract.STREAM_LOOKAHEAD], 1, False)  # the stream's path warmed
        result = {}
        with CompositeClient(url) as client:
            for key, chunk_frames, real_time in (
                ("fast_40ms", 1, False),
                ("fast_160ms", 4, False),
                ("real_time_40ms", 1, True),
                ("real_time_160ms", 4, True),
            ):
                before = model_statistics(client)
                result[key] = stream(url, avatar, audio, chunk_frames, real_time)
                after = model_statistics(client)
                if key not in ("fast_40ms", "real_time_40ms"):
                    continue
                # the server's time per frame by step, the generator's frames per run, and the
                # windows encoded (one a row of the window encoder, B + 15 a run of the 16-neighbour one)
                frames = result[key]["frames"]
                grew = {m: {k: after[m][k] - before[m][k] for k in after[m]} for m in after}
                result[key]["stages_ms_per_frame"] = {
                    name: round(sum(grew[name][k] for k in STAGE_TIMES) / frames / 1e6, 1)
                    for name in grew
                    if sum(grew[name][k] for k in STAGE_TIMES) > 0 and name != contract.STREAM_MODEL
                }
                result[key]["generator_frames_per_run"] = round(
                    grew[generator]["inferences"] / max(1, grew[generator]["executions"]), 2
                )
                neighbours, one = contract.SYNCTALK2D_AUDIO_ENCODER_MODEL, contract.SYNCTALK2D_WINDOW_ENCODER_MODEL
                edge = contract.AUDIO_NEIGHBOURS - 1
                windows = (
                    grew[one]["inferences"] + grew[neighbours]["inferences"] + edge * grew[neighbours]["executions"]
                )
                result[key]["windows_encoded_per_frame"] = round(windows / frames, 2)
        result["stages_ms_per_frame"] = result["fast_40ms"]["stages_ms_per_frame"]
        result["generator_frames_per_run"] = result["fast_40ms"]["generator_frames_per_run"]
        memory = server_processes(server.process.pid)
        result["generator_process_mb"] = round(memory.get(f"stub:{generator}", 0) / 2**20)
    print(setting, json.dumps(result), flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("tiny", "full"), default="full")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--port", type=int, default=18400)
    parser.add_argument("--key", help="store this run under KEY in the results file, keeping its other runs")
    args = parser.parse_args(argv)
    args.settings = sorted(set(args.settings), key=SETTINGS.index)  # int8* replace the model file: last
    from devtools.demo import AVATAR_ID, add_demo_avatar

    models_dir = paths.MODELS / args.variant
    root = paths.BUILD / "live-speed"
    repository = render("cpu", root / "repository", models_dir, avatar_store=root / "avatars")
    (root / "source").mkdir(parents=True, exist_ok=True)
    add_demo_avatar(repository, root / "source")
    audio = synthetic.speech_like_audio(int(args.seconds * contract.FPS), seed=11)
    results = {
        "variant": args.variant,
        "seconds": args.seconds,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "bare_generator_batch1_fps": round(bare_generator_fps(models_dir / "synctalk.onnx"), 2),
    }
    print(f"bare generator, batch 1, in process: {results['bare_generator_batch1_fps']} frames/s", flush=True)
    for setting in args.settings:
        if setting.startswith("int8") and "int8_generator" not in results:
            results["int8_generator"] = install_int8(repository, AVATAR_ID, root / "avatars")
        results[setting] = measure_setting(repository, AVATAR_ID, setting, audio, args.port)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if args.key:
        results = {**(json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}), args.key: results}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    results = results[args.key] if args.key else results
    bare = results["bare_generator_batch1_fps"]
    print(
        "\n| setting | 40 ms fast fps | of bare | 160 ms fast fps | real time 40 ms: last frame after last chunk "
        "| 160 ms | generator frames/run | generator process |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for setting in args.settings:
        r = results[setting]
        print(
            f"| {setting} | {r['fast_40ms']['frames_per_s']:.1f} | {r['fast_40ms']['frames_per_s'] / bare:.2f} | "
            f"{r['fast_160ms']['frames_per_s']:.1f} | {r['real_time_40ms']['last_frame_after_last_chunk_s']:.2f} s | "
            f"{r['real_time_160ms']['last_frame_after_last_chunk_s']:.2f} s | {r['generator_frames_per_run']} | "
            f"{r['generator_process_mb']} MB |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
