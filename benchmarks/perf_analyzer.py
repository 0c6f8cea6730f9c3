"""Run NVIDIA's perf_analyzer against the ensemble on any server, with real input data.

    python -m benchmarks.perf_analyzer --url 127.0.0.1:8001                 # CPU scenarios
    python -m benchmarks.perf_analyzer --url gpu-host:8001 --set gpu_scenarios
    python -m benchmarks.perf_analyzer --scenario batch8 --concurrency 1,2

perf_analyzer comes in the ``tritonclient==2.50.0`` wheel (``.venv/bin/perf_analyzer``). It links
``libb64.so.0d`` and ``libcudart.so.12`` (no GPU is used); both are taken from the
``nvidia-pytriton`` wheel's bundled libraries, so nothing else needs installing. Scenarios live
in ``deploy/perf_analyzer/scenarios.yaml``; the input data JSON (synthetic crops and speech-like
audio, base64) is written to ``build/perf/``. Results: one CSV per scenario and a JSON summary.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from synctalk_build import paths
from synctalk_client import synthetic
from synctalk_common import contract
from synctalk_ops import api_key

SCENARIOS = paths.ROOT / "deploy" / "perf_analyzer" / "scenarios.yaml"
PERF_DIR = paths.BUILD / "perf"


def perf_analyzer_binary() -> Path:
    binary = Path(sys.executable).parent / "perf_analyzer"
    if not binary.is_file():
        found = shutil.which("perf_analyzer")
        if not found:
            raise FileNotFoundError("perf_analyzer not found: install tritonclient==2.50.0 (make install)")
        binary = Path(found)
    return binary


def library_dir() -> Path:
    """libb64.so.0d and libcudart.so.12 under the names perf_analyzer links, from nvidia-pytriton."""
    import pytriton

    bundled = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
    target = PERF_DIR / "lib"
    target.mkdir(parents=True, exist_ok=True)
    for pattern, name in (("libb64-*.so.0d", "libb64.so.0d"), ("libcudart-*.so.12*", "libcudart.so.12")):
        matches = sorted(bundled.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"{pattern} not in {bundled}")
        link = target / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(matches[0])
    return target


def write_input_data(path: Path, samples: int = 4, frame_index: bool = False) -> Path:
    """perf_analyzer --input-data JSON: `samples` different frames (shapes without the batch dim);
    ``frame_index``: an avatar's ensemble, which takes FRAME_INDEX too."""
    crops = synthetic.face_crops(samples, seed=7)
    visual = np.concatenate([crops, synthetic.masked(crops)], axis=1)
    audio = synthetic.speech_like_audio(samples, seed=7).reshape(samples, contract.SAMPLES_PER_FRAME)
    data = []
    for i in range(samples):
        data.append(
            {
                contract.VISUAL.name: {
                    "b64": base64.b64encode(visual[i].astype("<f4").tobytes()).decode(),
                    "shape": list(contract.VISUAL.dims),
                },
                contract.AUDIO.name: {
                    "b64": base64.b64encode(audio[i].astype("<f4").tobytes()).decode(),
                    "shape": list(contract.AUDIO.dims),
                },
                **(
                    {contract.FRAME_INDEX.name: {"content": [i], "shape": list(contract.FRAME_INDEX.dims)}}
                    if frame_index
                    else {}
                ),
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": data}))
    return path


def takes_frame_index(url: str, model: str) -> bool:
    """Whether the served model id is an avatar's ensemble (it takes FRAME_INDEX)."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as triton:
        metadata = triton.get_model_metadata(model, as_json=True)
    return any(t["name"] == contract.FRAME_INDEX.name for t in metadata.get("inputs", []))


def key_header() -> list[str]:
    """perf_analyzer's ``-H`` with the server's API key: registering shared memory is one of the
    restricted APIs (``synctalk_ops.api_key``); perf_analyzer sends its headers with every call."""
    key = api_key.read_key()
    return ["-H", f"{contract.GRPC_API_KEY_HEADER}:{key}"] if key else []


def edge_header_args(model: str, frames: int | None) -> list[str]:
    """perf_analyzer's ``-H`` with what the edge routes and counts a request by (the SDK's
    metadata, ``contract.edge_headers``), so a run through the edge is counted as the SDK's is."""
    return [arg for name, value in contract.edge_headers(model, frames).items() for arg in ("-H", f"{name}:{value}")]


def command(
    url: str, model: str, batch_size: int, concurrency: list[int], input_data: Path, csv_path: Path, measurement: dict
) -> list[str]:
    return [
        str(perf_analyzer_binary()),
        *edge_header_args(model, batch_size),
        "-m",
        model,
        "-u",
        url,
        "-i",
        "grpc",
        "-b",
        str(batch_size),
        "--concurrency-range",
        f"{min(concurrency)}:{max(concurrency)}:{_step(concurrency)}",
        "--input-data",
        str(input_data),
        "--measurement-mode",
        measurement.get("mode", "count_windows"),
        "--measurement-request-count",
        str(measurement.get("request_count", 16)),
        "--stability-percentage",
        str(measurement.get("stability_percentage", 25)),
        "--max-trials",
        str(measurement.get("max_trials", 6)),
        "--percentile",
        "99",
        *(
            [
                "--shared-memory",
                measurement["shared_memory"],
                "--output-shared-memory-size",
                str(measurement.get("output_shared_memory_size", 16 << 20)),
                *key_header(),
            ]
            if measurement.get("shared_memory", "none") != "none"
            else []
        ),
        "-f",
        str(csv_path),
        "--verbose-csv",
    ]


def _step(values: list[int]) -> int:
    """perf_analyzer takes start:end:step; a doubling sweep is run one value at a time instead."""
    if len(values) < 2:
        return 1
    steps = {b - a for a, b in zip(values, values[1:])}
    return steps.pop() if len(steps) == 1 else 0


def read_csv(path: Path, batch_size: int) -> list[dict[str, float]]:
    rows = []
    with open(path) as f:
        for row in csv.DictReader(f):
            inferences = float(row["Inferences/Second"])
            rows.append(
                {
                    "concurrency": int(row["Concurrency"]),
                    "frames_per_s": inferences,  # perf_analyzer counts inferences = frames (batch items)
                    "requests_per_s": inferences / batch_size,
                    "p50_ms": float(row["p50 latency"]) / 1000,
                    "p90_ms": float(row["p90 latency"]) / 1000,
                    "p95_ms": float(row["p95 latency"]) / 1000,
                    "p99_ms": float(row["p99 latency"]) / 1000,
                    "client_send_us": float(row.get("Client Send", 0) or 0),
                    "client_recv_us": float(row.get("Client Recv", 0) or 0),
                    "server_queue_us": float(row.get("Server Queue", 0) or 0),
                    "server_compute_infer_us": float(row.get("Server Compute Infer", 0) or 0),
                }
            )
    return sorted(rows, key=lambda r: r["concurrency"])


STABILITY_FAILURE = "Failed to obtain stable measurement"
# Measuring again, where a level would not stabilize: the numbers are kept, marked not stable.
RELAXED = {"stability_percentage": 1000, "max_trials": 3}


def measure_levels(levels: list[int], run) -> list[dict]:
    """Every concurrency level of ``levels`` measured, with ``run(group, relaxed) -> (returncode,
    output, rows)`` running perf_analyzer once over ``group`` (a regular sweep in one call, an
    irregular one level per call).

    perf_analyzer ends a sweep at the first level that does not stabilize and still exits 0
    when an earlier level did (its ``Profile``: only a sweep whose one measured level is unstable
    is a STABILITY_ERROR), so a level missing from its CSV is measured again on its own, where
    instability is an error that the relaxed settings answer; those rows are marked
    ``stable: False``. A level that yields nothing even then is an error, never a missing row."""
    rows: list[dict] = []
    groups = [levels] if _step(levels) else [[c] for c in levels]
    for group in groups:
        code, output, measured = run(group, False)
        stable = True
        if code != 0 and STABILITY_FAILURE in output and len(group) == 1:
            code, output, measured = run(group, True)
            stable = False
        if code != 0 and STABILITY_FAILURE not in output:
            raise RuntimeError(f"perf_analyzer failed ({code}) for concurrency {group}:\n{output[-3000:]}")
        rows += [dict(row, stable=stable) for row in measured if row["concurrency"] in group]
        for missing in sorted(set(group) - {row["concurrency"] for row in measured}):
            if len(group) == 1:
                raise RuntimeError(
                    f"perf_analyzer measured nothing at concurrency {missing} ({code}):\n{output[-3000:]}"
                )
            rows += measure_levels([missing], run)
    return sorted(rows, key=lambda r: r["concurrency"])


def run_scenario(
    url: str,
    model: str,
    scenario: dict,
    measurement: dict,
    out_dir: Path,
    concurrency: list[int] | None = None,
    timeout: float = 600,
) -> list[dict]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(library_dir()), env.get("LD_LIBRARY_PATH")]))
    input_data = write_input_data(PERF_DIR / f"input_data_{model}.json", frame_index=takes_frame_index(url, model))
    out_dir.mkdir(parents=True, exist_ok=True)
    measurement = {**measurement, **scenario.get("measurement", {})}

    def run(group: list[int], relaxed: bool):
        csv_path = out_dir / f"{scenario['name']}_c{group[0]}-{group[-1]}.csv"
        csv_path.unlink(missing_ok=True)
        settings = {**measurement, **RELAXED} if relaxed else measurement
        cmd = command(url, model, scenario["batch_size"], group, input_data, csv_path, settings)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        rows = read_csv(csv_path, scenario["batch_size"]) if csv_path.is_file() else []
        return result.returncode, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}", rows

    return measure_levels(list(concurrency or scenario["concurrency"]), run)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC endpoint")
    parser.add_argument("--config", type=Path, default=SCENARIOS)
    parser.add_argument("--set", default="scenarios", help="scenarios (CPU) or gpu_scenarios")
    parser.add_argument(
        "--model",
        help="model id to load-test (default: the config's; an avatar gets FRAME_INDEX data; "
        "perf_analyzer's --shared-memory refuses an avatar's optional inputs, so use gRPC scenarios)",
    )
    parser.add_argument("--scenario", action="append", help="only these scenario names")
    parser.add_argument("--concurrency", help="override the sweep, e.g. 1,2")
    parser.add_argument("--out", type=Path, default=PERF_DIR / "results")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    concurrency = [int(c) for c in args.concurrency.split(",")] if args.concurrency else None
    summary = {}
    for scenario in config[args.set]:
        if args.scenario and scenario["name"] not in args.scenario:
            continue
        rows = run_scenario(
            args.url, args.model or config["model"], scenario, config.get("measurement", {}), args.out, concurrency
        )
        summary[scenario["name"]] = {"batch_size": scenario["batch_size"], "results": rows}
        for row in rows:
            print(
                f"{scenario['name']:<16} c={row['concurrency']:<3} {row['frames_per_s']:8.1f} frames/s  "
                f"p50 {row['p50_ms']:8.1f} ms  p95 {row['p95_ms']:8.1f} ms  p99 {row['p99_ms']:8.1f} ms"
            )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
