"""`make bench`: the served pipeline's speed, measured side by side with its alternatives.

Runs on the CPU profile with the full-size stand-in models, on this machine, in one run:

1. micro: our mel front end vs ``librosa.feature.melspectrogram``; the compositor (in process)
   vs a bare OpenCV resize + libjpeg-turbo encode;
2. in process: the whole pipeline called directly (same ONNX models in onnxruntime, same audio and
   compositor code), sequentially, as a monolith would: frames/s;
3. served: a fresh tritonserver; the first request after ready vs the steady state; perf_analyzer
   (real input data) for request batch sizes 1, 8, 32 over a concurrency sweep; the stage
   breakdown from Triton's statistics API; gRPC vs system shared memory for 32-frame requests;
4. live streams (``benchmarks.live_streams``): how many live avatar streams (perf_analyzer's sequence mode,
   audio only) a server keeps in real time, with the tiny and the full model; request bytes per
   frame before and after audio-only requests.

Writes ``benchmarks/results/latest.json`` and the PNG plots, and regenerates
``benchmarks/README.md``'s table from them.

    python -m benchmarks.bench            # full run (about 10 minutes on 2 cores)
    python -m benchmarks.bench --quick    # shorter measurement windows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import live_streams, overload, perf_analyzer
from synctalk_build import paths
from synctalk_build.render_repository import render
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_common import contract
from synctalk_ops.process_tree import server_processes
from synctalk_ops.serve import TritonServer, apply_malloc_settings

RESULTS = paths.ROOT / "benchmarks" / "results"
REPORT = paths.ROOT / "benchmarks" / "README.md"


def median_ms(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def request_for(batch: int, seed: int = 0) -> CompositeBatchRequest:
    crops = synthetic.face_crops(batch, seed=seed)
    return CompositeBatchRequest.from_arrays(
        contract.DEFAULT_MODEL_ID, crops, synthetic.masked(crops), synthetic.speech_like_audio(batch, seed=seed)
    )


# -- 1. micro benchmarks ------------------------------------------------------------------
def bench_mel(batch: int = 8, repeat: int = 50) -> dict[str, float]:
    from synctalk_preprocessing.audio import MelFrontEnd, librosa_log_mel

    audio = synthetic.speech_like_audio(batch).reshape(batch, contract.SAMPLES_PER_FRAME)
    front_end = MelFrontEnd()

    def with_librosa():
        return front_end.frame_windows(librosa_log_mel(audio.reshape(-1)).astype(np.float32), batch)

    ours = median_ms(lambda: front_end.windows_for_audio(audio), repeat)
    reference = median_ms(with_librosa, repeat)
    return {"batch": batch, "ours_ms": ours, "librosa_ms": reference, "mel_vs_librosa_speedup": reference / ours}


def generated_faces(batch: int) -> np.ndarray:
    """Generator-like output: a face with texture, [B, 3, 320, 320] BGR in [0, 1]."""
    noise = np.random.default_rng(0).random((batch, 3, 320, 320), dtype=np.float32)
    return (0.75 * synthetic.face_crops(batch) + 0.25 * noise).astype(np.float32)


def bench_compositor_served(grpc_url: str, batch: int, repeat: int) -> dict[str, float]:
    """The served compositor steps (frame_resize + jpeg_encoder compute, from Triton's statistics)
    for lone requests: the same conditions as the bare in-process baseline."""
    with CompositeClient(grpc_url) as client:
        times = [
            client.infer_batch_composite(request_for(batch, seed=5)).raise_for_error().composite_time_ms
            for _ in range(repeat)
        ]
    return {"batch": batch, "composite_ms": statistics.median(t for t in times if t is not None)}


def bench_compositor_in_process(batch: int = 8, repeat: int = 5) -> dict[str, float]:
    import cv2
    import simplejpeg

    from synctalk_preprocessing.compositing import CpuJpegEncoder, composite_frames

    faces = generated_faces(batch)
    encoder = CpuJpegEncoder(threads=1)
    ours = median_ms(lambda: encoder.encode(list(composite_frames(faces))), repeat)

    def bare():
        """What the reference does per frame: BGR float -> 8-bit RGB, resize, encode."""
        for face in faces:
            bgr8 = np.clip(face.transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)
            full = cv2.resize(
                cv2.cvtColor(bgr8, cv2.COLOR_BGR2RGB),
                (contract.OUTPUT_WIDTH, contract.OUTPUT_HEIGHT),
                interpolation=cv2.INTER_LINEAR,
            )
            simplejpeg.encode_jpeg(full, quality=95, colorspace="RGB", colorsubsampling="420")

    bare_ms = median_ms(bare, repeat)
    encoder.close()
    return {"batch": batch, "ours_one_thread_ms": ours, "bare_ms": bare_ms, "in_process_ratio": ours / bare_ms}


# -- 2. the monolith baseline ----------------------------------------------------------------
class InProcessPipeline:
    """The served pipeline's work, called directly in this process (one caller, in sequence)."""

    def __init__(self, models_dir: Path):
        import onnxruntime as ort

        from synctalk_preprocessing.audio import MelFrontEnd
        from synctalk_preprocessing.compositing import CpuJpegEncoder

        self.front_end = MelFrontEnd()
        self.encoder = ort.InferenceSession(str(models_dir / "audio_encoder.onnx"), providers=["CPUExecutionProvider"])
        self.generator = ort.InferenceSession(str(models_dir / "synctalk.onnx"), providers=["CPUExecutionProvider"])
        self.jpeg = CpuJpegEncoder(threads=2)

    def __call__(self, request: CompositeBatchRequest) -> list[bytes]:
        from synctalk_preprocessing.compositing import composite_frames

        windows = self.front_end.windows_for_audio(request.audio_tensor())[:, None]
        (features,) = self.encoder.run(None, {contract.MEL_WINDOWS.name: windows})
        (face,) = self.generator.run(None, {"input": request.visual_tensor(), "audio": features})
        return self.jpeg.encode(list(composite_frames(face)))


def bench_in_process(models_dir: Path, batch: int, repeat: int) -> dict[str, float]:
    pipeline = InProcessPipeline(models_dir)
    request = request_for(batch)
    pipeline(request_for(contract.MAX_BATCH_SIZE))  # same warm-up as the server: largest batch first
    ms = median_ms(lambda: pipeline(request), repeat)
    return {"batch": batch, "ms_per_request": ms, "frames_per_s": batch * 1000 / ms}


# -- 3. served ----------------------------------------------------------------------------------
STAGE_TIMES = ("queue", "compute_input", "compute_infer", "compute_output")  # Triton's, per model


def model_statistics(client: CompositeClient) -> dict[str, dict[str, int]]:
    stats = client._triton.get_inference_statistics(as_json=True)
    table = {}
    for m in stats.get("model_stats", []):
        inference = m.get("inference_stats", {})
        row = {k: int(inference.get(k, {}).get("ns", 0)) for k in STAGE_TIMES}
        row["count"] = int(inference.get("success", {}).get("count", 0))
        row["executions"] = int(m.get("execution_count", 0))
        row["inferences"] = int(m.get("inference_count", 0))  # a batched model's frames
        table[m["name"]] = row
    return table


def stage_breakdown(before: dict, after: dict) -> dict[str, dict[str, float]]:
    out = {}
    for name in (contract.DEFAULT_MODEL_ID, *contract.COMPOSING_MODELS):
        count = after[name]["count"] - before[name]["count"]
        if count <= 0:
            continue
        out[name] = {k: (after[name][k] - before[name][k]) / count / 1e6 for k in STAGE_TIMES}
        out[name]["requests"] = count
        out[name]["executions"] = after[name]["executions"] - before[name]["executions"]
    return out


def bench_first_request(grpc_url: str, batch: int, repeat: int) -> dict[str, float]:
    request = request_for(batch, seed=1)
    with CompositeClient(grpc_url, stage_timings=False) as client:
        first = client.infer_batch_composite(request).raise_for_error().total_time_ms
        steady = statistics.median(
            client.infer_batch_composite(request).raise_for_error().total_time_ms for _ in range(repeat)
        )
    return {
        "batch": batch,
        "first_ms": first,
        "steady_ms": steady,
        "first_request_vs_steady_latency_ratio": first / steady,
    }


def bench_transport(grpc_url: str, batch: int, repeat: int) -> dict[str, dict[str, float]]:
    """Client-side overhead per request = client wall time - the ensemble's server time."""
    results = {}
    for mode, shared in (("grpc", False), ("system_shared_memory", True)):
        with CompositeClient(grpc_url, stage_timings=False, shared_memory=shared) as client:
            request = request_for(batch, seed=2)
            client.infer_batch_composite(request).raise_for_error()
            overheads, totals = [], []
            for _ in range(repeat):
                before = model_statistics(client)[contract.DEFAULT_MODEL_ID]
                total = client.infer_batch_composite(request).raise_for_error().total_time_ms
                after = model_statistics(client)[contract.DEFAULT_MODEL_ID]
                deadline = time.perf_counter() + 0.5
                while after["count"] == before["count"] and time.perf_counter() < deadline:
                    # the ensemble records its statistics as it releases the request, a moment after the response
                    time.sleep(0.005)
                    after = model_statistics(client)[contract.DEFAULT_MODEL_ID]
                if after["count"] != before["count"] + 1:
                    continue
                server_ms = sum(after[k] - before[k] for k in STAGE_TIMES) / 1e6
                totals.append(total)
                overheads.append(total - server_ms)
            results[mode] = {
                "batch": batch,
                "total_ms": statistics.median(totals),
                "client_overhead_ms": statistics.median(overheads),
            }
    return results


def bench_live_streams(seconds: float) -> dict:
    print("live streams ...", flush=True)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "bytes_per_frame": live_streams.request_bytes_per_frame(),
        **{v: live_streams.measure_variant(v, seconds) for v in ("tiny", "full")},
    }


def bench_overload(variant: str, seconds: float) -> dict:
    print("overload ...", flush=True)
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **overload.run(variant, seconds=seconds)}


def run(args) -> dict:
    apply_malloc_settings()  # the in-process baselines allocate as the served models do
    models_dir = paths.MODELS / args.variant
    quick = args.quick
    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        "{platform.python_version()}",
        "variant": args.variant,
        "profile": "cpu",
    }
    print("micro benchmarks ...", flush=True)
    report["mel"] = bench_mel()
    report["compositor_in_process"] = bench_compositor_in_process()
    print("in-process pipeline ...", flush=True)
    report["in_process"] = {str(b): bench_in_process(models_dir, b, 3 if quick else 5) for b in (8,)}

    repository = render("cpu", paths.BUILD / "repository" / f"bench-{args.variant}", models_dir)
    server = TritonServer(repository, 18000, 18001, 18002, log_path=paths.BUILD / "logs" / "bench-tritonserver.log")
    with server:
        print("first request vs steady ...", flush=True)
        report["first_request"] = bench_first_request(server.grpc_url, 8, 3 if quick else 5)
        report["compositor_served"] = bench_compositor_served(server.grpc_url, 8, 3 if quick else 7)
        config = perf_analyzer.yaml.safe_load(perf_analyzer.SCENARIOS.read_text())
        measurement = dict(config["measurement"])
        if quick:
            measurement.update(request_count=6, max_trials=3, stability_percentage=50)
        report["perf_analyzer"] = {}
        report["stages"] = {}
        with CompositeClient(server.grpc_url, stage_timings=False) as client:
            for scenario in config["scenarios"]:
                if quick:
                    scenario = dict(scenario, concurrency=scenario["concurrency"][:2])
                print(f"perf_analyzer {scenario['name']} ...", flush=True)
                before = model_statistics(client)
                rows = perf_analyzer.run_scenario(
                    server.grpc_url,
                    config["model"],
                    scenario,
                    measurement,
                    perf_analyzer.PERF_DIR / "bench",
                    timeout=1800,
                )
                report["perf_analyzer"][scenario["name"]] = {"batch_size": scenario["batch_size"], "results": rows}
                report["stages"][scenario["name"]] = stage_breakdown(before, model_statistics(client))
                report.setdefault("rss_after_scenario_bytes", {})[scenario["name"]] = sum(
                    server_processes(server.process.pid).values()
                )
            print("gRPC vs shared memory ...", flush=True)
            report["transport"] = bench_transport(server.grpc_url, contract.MAX_BATCH_SIZE, 3 if quick else 5)
            # client-side stage timings of a lone batch-8 request
            report["client_timings"] = (
                client.__class__(server.grpc_url).infer_batch_composite(request_for(8)).raise_for_error().timings()
            )

    report["live_streams"] = bench_live_streams(5.0 if quick else 8.0)
    report["overload"] = bench_overload(args.variant, 8.0 if quick else 15.0)

    batch8 = report["perf_analyzer"]["batch8"]["results"]
    batch8_shm = report["perf_analyzer"].get("batch8_shm", {}).get("results", [])
    best_grpc = max(batch8, key=lambda r: r["frames_per_s"])
    best = max(batch8 + batch8_shm, key=lambda r: r["frames_per_s"])
    transport = "system shared memory" if best in batch8_shm else "gRPC"
    c1 = next(r for r in (batch8_shm if best in batch8_shm else batch8) if r["concurrency"] == 1)
    in_process_fps = report["in_process"]["8"]["frames_per_s"]
    report["ratios"] = {
        "ensemble_vs_inprocess_throughput_ratio": best["frames_per_s"] / in_process_fps,
        "ensemble_vs_inprocess_throughput_ratio_grpc_inputs": best_grpc["frames_per_s"] / in_process_fps,
        "mel_vs_librosa_speedup": report["mel"]["mel_vs_librosa_speedup"],
        "compositor_vs_bare_encoder_ratio": report["compositor_served"]["composite_ms"]
        / report["compositor_in_process"]["bare_ms"],
        "first_request_vs_steady_latency_ratio": report["first_request"]["first_request_vs_steady_latency_ratio"],
        "best_vs_concurrency1_throughput_ratio_batch8": best["frames_per_s"] / c1["frames_per_s"],
        "shared_memory_vs_grpc_client_overhead_ratio_batch32": report["transport"]["system_shared_memory"][
            "client_overhead_ms"
        ]
        / report["transport"]["grpc"]["client_overhead_ms"],
    }
    report["best_concurrency_batch8"] = best["concurrency"]
    report["best_transport_batch8"] = transport
    return report


# -- report -----------------------------------------------------------------------------------
def plots(report: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stamp = f"{report['machine']} — {report['date']}"
    files = []

    def save(fig, name: str) -> None:
        fig.text(0.01, 0.01, stamp, fontsize=7, color="grey")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        files.append(name)

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, scenario in report["perf_analyzer"].items():
        rows = scenario["results"]
        suffix = ", shm inputs" if name.endswith("_shm") else ""
        ax.plot(
            [r["concurrency"] for r in rows],
            [r["frames_per_s"] for r in rows],
            marker="o",
            label=f"{scenario['batch_size']} frames/request{suffix}",
        )
    ax.axhline(report["in_process"]["8"]["frames_per_s"], ls="--", color="grey", label="in process, 8 frames")
    ax.set(
        xlabel="concurrent requests",
        ylabel="frames / s",
        title=f"Throughput vs concurrency ({report['variant']} model, CPU profile)",
    )
    ax.legend(fontsize=8)
    save(fig, "throughput.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    labels, p50, p95, p99 = [], [], [], []
    for name, scenario in report["perf_analyzer"].items():
        for r in scenario["results"]:
            labels.append(f"b{scenario['batch_size']}{'s' if name.endswith('_shm') else ''} c{r['concurrency']}")
            p50.append(r["p50_ms"])
            p95.append(r["p95_ms"])
            p99.append(r["p99_ms"])
    x = np.arange(len(labels))
    for offset, values, label in ((-0.27, p50, "p50"), (0, p95, "p95"), (0.27, p99, "p99")):
        ax.bar(x + offset, values, width=0.27, label=label)
    ax.set_xticks(x, labels, rotation=45, fontsize=8)
    ax.set(ylabel="latency per request (ms)", title="Latency percentiles")
    ax.legend(fontsize=8)
    save(fig, "latency.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    stages = report["stages"]["batch8"]
    models = [m for m in contract.COMPOSING_MODELS if m in stages]
    bottom = np.zeros(len(models))
    for key in STAGE_TIMES:
        values = np.array([stages[m][key] for m in models])
        ax.bar(models, values, bottom=bottom, label=key)
        bottom += values
    ax.set(ylabel="ms per request (8 frames)", title="Stage breakdown, Triton statistics (8-frame requests)")
    ax.legend(fontsize=8)
    save(fig, "stages.png")
    plt.close("all")
    return files


def markdown_table(report: dict) -> str:
    r = report["ratios"]
    lines = [
        f"Measured {report['date']} on {report['machine']} (CPU profile, {report['variant']} stand-in models).",
        "",
        "| ratio | value | target |",
        "|---|---|---|",
        "| `ensemble_vs_inprocess_throughput_ratio` (batch 8, best: concurrency "
        f"{report['best_concurrency_batch8']}, inputs over {report['best_transport_batch8']}) | "
        f"{r['ensemble_vs_inprocess_throughput_ratio']:.2f} | >= 0.9 |",
        f"| the same with inputs over gRPC | {r['ensemble_vs_inprocess_throughput_ratio_grpc_inputs']:.2f} | |",
        f"| `mel_vs_librosa_speedup` | {r['mel_vs_librosa_speedup']:.1f} | >= 3 |",
        "| `compositor_vs_bare_encoder_ratio` (served frame_resize + jpeg_encoder, lone 8-frame requests, vs a "
        "bare per-frame convert + OpenCV resize + libjpeg-turbo encode) | "
        f"{r['compositor_vs_bare_encoder_ratio']:.2f} | <= 1.2 |",
        f"| `first_request_vs_steady_latency_ratio` (batch 8) | {r['first_request_vs_steady_latency_ratio']:.2f} "
        "| <= 2 |",
        f"| best / concurrency-1 throughput, batch 8 | {r['best_vs_concurrency1_throughput_ratio_batch8']:.2f} | "
        ">= 1.5 |",
        "| shared-memory / gRPC client overhead, batch 32 | "
        f"{r['shared_memory_vs_grpc_client_overhead_ratio_batch32']:.2f} | |",
        "",
        "| request batch | concurrency | frames/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, scenario in report["perf_analyzer"].items():
        for row in scenario["results"]:
            lines.append(
                f"| {scenario['batch_size']}{' (shm)' if name.endswith('_shm') else ''} | {row['concurrency']} | "
                f"{row['frames_per_s']:.1f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['p99_ms']:.0f} |"
            )
    ip = report["in_process"]["8"]
    lines += [
        "",
        f"In process (same models and code, one caller): {ip['frames_per_s']:.1f} frames/s for 8-frame requests "
        f"({ip['ms_per_request']:.0f} ms each).",
        "",
        "| stage (8-frame requests, ms per request) | queue | compute input | compute infer | compute output |",
        "|---|---|---|---|---|",
    ]
    for name, row in report["stages"]["batch8"].items():
        lines.append(
            f"| {name} | {row['queue']:.1f} | {row['compute_input']:.1f} | {row['compute_infer']:.1f} | "
            f"{row['compute_output']:.1f} |"
        )
    t = report["transport"]
    lines += [
        "",
        "| 32-frame request | client total ms | client-side overhead ms |",
        "|---|---|---|",
        f"| gRPC | {t['grpc']['total_ms']:.0f} | {t['grpc']['client_overhead_ms']:.0f} |",
        f"| system shared memory | {t['system_shared_memory']['total_ms']:.0f} | "
        f"{t['system_shared_memory']['client_overhead_ms']:.0f} |",
        "",
        f"Mel: ours {report['mel']['ours_ms']:.2f} ms vs librosa {report['mel']['librosa_ms']:.2f} ms for 8 frames. "
        f"Compositor: served {report['compositor_served']['composite_ms']:.0f} ms, the same code in process "
        f"{report['compositor_in_process']['ours_one_thread_ms']:.0f} ms (one thread), bare "
        f"{report['compositor_in_process']['bare_ms']:.0f} ms for 8 frames. "
        f"First request {report['first_request']['first_ms']:.0f} ms vs steady "
        f"{report['first_request']['steady_ms']:.0f} ms.",
    ]
    live = report.get("live_streams")
    if live:
        b = live["bytes_per_frame"]
        lines += [
            "",
            f"Live streams (measured {live['date']}; `benchmarks.live_streams`: perf_analyzer's sequence mode on the "
            "`stream` model, N streams each sending its own speech at real time, `--serial-sequences`, "
            f"{live['tiny']['seconds']:.0f} s per level; kept in real time = perf_analyzer achieves the offered "
            "rate; delay = from a chunk's arrival to the frames it completed, p50 / p99; the viewer's delay is that "
            "plus the floor, 0.5 s of lookahead and the chunk; first frame: from a stream's first chunk, played at "
            "real time):",
            "",
            "| model | chunk | streams kept in real time | delay p50 / p99 at 1 stream | floor | first frame |",
            "|---|---|---|---|---|---|",
        ]
        for variant in ("tiny", "full"):
            for chunk in ("chunk_40ms", "chunk_160ms"):
                row = live[variant][chunk]
                one = row["trials"][0]
                lines.append(
                    f"| {variant} | {chunk[6:]} | {row['max_real_time_streams']} | {one['p50_ms']:.0f} / "
                    f"{one['p99_ms']:.0f} ms ({one['achieved_per_s']:.1f} of {one['offered_per_s']:.1f} chunks/s) | "
                    f"{row['floor_ms']:.0f} ms | {live[variant]['first_frame_ms']} ms |"
                )
        lines += [
            "",
            "A stream (160 ms chunks, played at real time through the SDK) alone and while renders of the same "
            "avatar run back to back beside it: live before offline (render's batches at Triton's priority level 2, "
            "the stream's frames at level 1, on the door's and the generators' queues); before: the same measured "
            "without priority levels:",
            "",
            "| model | chunk-to-frame p50 / p99 alone | beside a render | before (no priority levels) | "
            "renders done meanwhile |",
            "|---|---|---|---|---|",
        ]
        for variant in ("tiny", "full"):
            row = live[variant].get("beside_render")
            if row:
                before = row.get("before_priority_levels")
                was = f"{before['p50_ms']:.0f} / {before['p99_ms']:.0f} ms" if before else "-"
                lines.append(
                    f"| {variant} | {row['alone']['p50_ms']:.0f} / {row['alone']['p99_ms']:.0f} ms | "
                    f"{row['beside_render']['p50_ms']:.0f} / {row['beside_render']['p99_ms']:.0f} ms | {was} | "
                    f"{row['renders']} |"
                )
        lines += [
            "",
            "| request bytes per frame | crops + audio (reference contract) | audio only (avatars) | live stream |",
            "|---|---|---|---|",
            f"| without audio context | {b['crop_upload']:,.0f} | {b['audio_only']:,.0f} | {b['live_stream']:,.0f} |",
            f"| with audio context (client-cut batches) | {b['crop_upload_with_context']:,.0f} | "
            f"{b['audio_only_with_context']:,.0f} | - |",
        ]
    if report.get("overload"):
        lines += ["", *overload_table(report["overload"])]
    return "\n".join(lines)


def overload_table(result: dict) -> list[str]:
    """``benchmarks.overload``'s rows: with the door and bounded queues, and before them."""
    after = result["after"]
    lines = [
        f"Overload (measured {result['date']}; `benchmarks.overload`, {result['variant']} model, an avatar's "
        f"audio-only requests of {after['batch']} frames arriving open loop at multiples of the unloaded "
        f"throughput ({after.get('capacity_clients', 2)} closed-loop clients, as many as the door admits) for "
        f"{result['seconds']:g} s, each with a {after['deadline_s']:g} s deadline and no busy "
        "retries; memory: the resident sets of the server and its stubs added up, shared pages counted in each):",
        "",
        "| server | offered | goodput (of unloaded) | refused as busy (p50 / max) | admitted p50 / p99 | other "
        "failures | peak memory | generator runs after the clients stopped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ms = lambda s: "-" if s is None else f"{s * 1000:.0f} ms"  # noqa: E731
    for name in ("after", "before"):
        if name not in result:
            continue
        part = result[name]
        for level, row in part["levels"].items():
            lines.append(
                f"| {'door + bounded queues' if name == 'after' else 'before (unbounded)'}, {level} of "
                f"{part['unloaded_per_s']:.2f}/s | {row['offered']} | {row['goodput_per_s']:.2f}/s "
                f"({row['goodput_of_unloaded']:.0%}) | {row['refused_busy']} ({ms(row['refused_p50_s'])} / "
                f"{ms(row['refused_max_s'])}) | {ms(row['served_p50_s'])} / {ms(row['served_p99_s'])} | "
                f"{row['failed_otherwise']} | {row['peak_memory_bytes'] / 2**30:.1f} GiB "
                f"(idle {part['memory_idle_bytes'] / 2**30:.1f}) | {row['generator_runs_after_clients_stopped']} |"
            )
    return lines


def write_report(report: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    files = plots(report, RESULTS)
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    text = REPORT.read_text() if REPORT.exists() else f"# Benchmarks\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    body = markdown_table(report) + "\n\n" + "\n".join(f"![{f}](results/{f})" for f in files)
    REPORT.write_text(f"{head}{begin}\n{body}\n{end}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="full")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from latest.json")
    parser.add_argument("--live-only", action="store_true", help="measure the live streams alone, into latest.json")
    parser.add_argument("--overload-only", action="store_true", help="measure overload alone, into latest.json")
    args = parser.parse_args(argv)
    if args.live_only:
        report = json.loads((RESULTS / "latest.json").read_text())
        report["live_streams"] = bench_live_streams(5.0 if args.quick else 8.0)
    elif args.overload_only:
        report = json.loads((RESULTS / "latest.json").read_text())
        report["overload"] = bench_overload(args.variant, 8.0 if args.quick else 15.0)
    else:
        report = json.loads((RESULTS / "latest.json").read_text()) if args.report_only else run(args)
    write_report(report)
    print(json.dumps(report["ratios"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
