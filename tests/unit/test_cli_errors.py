"""synctalk-client on user mistakes: one line naming the problem, a non-zero exit, no traceback;
arguments checked before any work; --url anywhere; audio at any rate resampled to 16 kHz."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile

from synctalk_client import synthetic
from synctalk_client.cli import main, read_wav
from synctalk_common import contract

DEAD = "127.0.0.1:1"  # nothing listens there


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    soundfile.write(tmp_path / "short.wav", synthetic.speech_like_audio(3), 16000)
    (tmp_path / "folder").mkdir()
    return tmp_path


def cases(t):
    return [
        (["composite", "--audio", str(t / "missing.wav")], 2, f"audio file {t / 'missing.wav'} not found"),
        (["composite", "--audio", str(t / "bad.wav")], 2, "not a readable audio file"),
        (["composite", "--audio", str(t / "folder")], 2, "is not an audio file (a directory?)"),
        (["render", "--audio", str(t / "empty.wav"), "--out", str(t / "x.mp4")], 2, "the audio is empty"),
        (["composite", "--image", str(t / "folder")], 2, "is not an image file"),
        (["composite", "--batch-size", "0"], 2, "--batch-size: must be 1..32 frames, got 0"),
        (["composite", "--batch-size", "33"], 2, "--batch-size: must be 1..32 frames, got 33"),
        (["composite", "--batch-size", "-1"], 2, "--batch-size: must be 1..32 frames, got -1"),
        (["render", "--batch-size", "0"], 2, "--batch-size: must be 1..32 frames, got 0"),
        (["composite", "--audio", str(t / "short.wav"), "--batch-size", "8"], 2, "--batch-size 8: "),
        (["composite", "--audio", str(t / "short.wav"), "--start-frame", "5"], 2, "--start-frame 5 is past the end"),
        (["render", "--out", str(t / "noext")], 2, "the video needs one of the extensions .mp4"),
        (["render", "--out", str(t / "folder")], 2, "is a directory: give a video file name"),
        (["models", "--url", DEAD], 1, f"server not reachable at {DEAD}"),
        (["--url", DEAD, "stats", "nobody"], 1, f"server not reachable at {DEAD}"),
        (["composite", "--url", DEAD, "--batch-size", "2"], 1, f"server not reachable at {DEAD}"),
    ]


def run_cli(argv) -> int:
    """main()'s exit status, argparse's refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("index", range(16))
def test_every_mistake_is_one_line_and_a_non_zero_exit(files, capsys, index):
    argv, code, message = cases(files)[index]
    assert run_cli(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (files / "x.mp4").exists(), "no partial output"


def test_debug_shows_the_traceback(files):
    result = subprocess.run(
        [sys.executable, "-m", "synctalk_client.cli", "composite", "--debug", "--audio", str(files / "bad.wav")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr
    plain = subprocess.run(
        [sys.executable, "-m", "synctalk_client.cli", "composite", "--audio", str(files / "bad.wav")],
        capture_output=True,
        text=True,
    )
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and len(plain.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("rate,channels", [(44100, 1), (48000, 2), (22050, 1), (16000, 2)])
def test_audio_at_any_rate_and_channel_count_becomes_16_khz_mono(tmp_path, rate, channels):
    """44.1 kHz speech resampled (soxr) equals the same speech made at 16 kHz, within resampling error."""
    seconds = 1.0
    t16 = np.arange(int(16000 * seconds)) / 16000
    tone = lambda t: 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1330 * t)  # noqa: E731
    t = np.arange(int(rate * seconds)) / rate
    samples = np.stack([tone(t)] * channels, axis=1).astype(np.float32)
    soundfile.write(tmp_path / "speech.wav", samples, rate, subtype="FLOAT")
    audio = read_wav(tmp_path / "speech.wav")
    assert audio.dtype == np.float32 and abs(len(audio) - len(t16)) <= 1
    n = min(len(audio), len(t16))
    assert np.abs(audio[200 : n - 200] - tone(t16[200 : n - 200])).max() < 2e-3
    assert contract.SAMPLE_RATE == 16000
