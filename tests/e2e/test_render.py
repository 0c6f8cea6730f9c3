"""`synctalk-client render`: batches in flight, frames in order, an MP4 with video and audio."""

import subprocess

import imageio_ffmpeg
import pytest

from synctalk_client.cli import main as cli_main

pytestmark = pytest.mark.e2e


def test_render_writes_an_mp4_with_every_frame_and_the_audio(server, tmp_path):
    import simplejpeg

    out = tmp_path / "clip.mp4"
    # 0.8 s = 20 frames in batches of 8, 8 and 4, two requests in flight
    assert (
        cli_main(
            [
                "--url",
                server.grpc_url,
                "render",
                "--seconds",
                "0.8",
                "--batch-size",
                "8",
                "--in-flight",
                "2",
                "--quiet",
                "--out",
                str(out),
                "--frames-dir",
                str(tmp_path / "frames"),
            ]
        )
        == 0
    )
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert frames == 20 and abs(seconds - 0.8) < 0.1
    jpegs = sorted((tmp_path / "frames").iterdir())
    assert [p.name for p in jpegs] == [f"frame_{i:05d}.jpg" for i in range(20)]  # the JPEGs the server returned
    assert all(simplejpeg.decode_jpeg(p.read_bytes()).shape == (1080, 1920, 3) for p in jpegs)
    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True
    ).stderr
    assert "Video: h264" in probe and "1920x1080" in probe and "Audio: aac" in probe


def test_ctrl_c_stops_render_within_two_seconds_and_leaves_no_output(server, tmp_path):
    import signal
    import sys
    import time

    out, frames = tmp_path / "long.mp4", tmp_path / "frames"
    # SIGINT as from a terminal, even where pytest itself runs with it ignored (nohup, &): set in a
    # small Python that execs the CLI (a Popen preexec_fn would run gRPC's fork handlers, which
    # can hang the fork in a process with gRPC channels)
    sigint_default = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            sigint_default,
            sys.executable,
            "-m",
            "synctalk_client.cli",
            "--url",
            server.grpc_url,
            "render",
            "--seconds",
            "30",
            "--quiet",
            "--out",
            str(out),
            "--frames-dir",
            str(frames),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (frames.is_dir() and any(frames.iterdir())):  # the render is under way
        assert process.poll() is None and time.monotonic() < deadline, (
            process.stderr.read() if process.poll() is not None else "no frame in 120 s"
        )
        time.sleep(0.05)
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=10)
    assert time.monotonic() - interrupted < 2.0
    assert code == 130 and process.stderr.read().strip() == "interrupted"
    assert not out.exists() and not any(frames.iterdir()), "no partial output"
