"""A live stream's H.264 encoder (synctalk_preprocessing.video): key frames where a viewer needs
them, one access unit a frame at once, a bitrate that changes, and what comes out decodes to the
frames that went in."""

from __future__ import annotations

import numpy as np
import pytest

from synctalk_preprocessing import video
from tests.synctalk2d_reference import psnr

H, W = 144, 176


def moving_frames(n: int, height: int = H, width: int = W) -> list[np.ndarray]:
    """Smooth, moving content (what a face is to an encoder, not noise)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return [
        np.stack(
            [
                128 + 100 * np.sin(xx / 17 + i * 0.3) * np.cos(yy / 23 - i * 0.2),
                128 + 100 * np.sin(xx / 9 - i * 0.5),
                128 + 60 * np.cos((xx + yy) / 31 + i * 0.1),
            ],
            -1,
        ).astype(np.uint8)
        for i in range(n)
    ]


def test_each_frame_is_one_access_unit_at_once_and_decodes_to_the_frame():
    encoder = video.H264Encoder(fps=25, bitrate_kbps=2000)
    frames = moving_frames(30)
    units = [encoder.encode(frame) for frame in frames]  # each call returns its frame's bytes
    assert all(unit.startswith(b"\x00\x00\x00\x01") or unit.startswith(b"\x00\x00\x01") for unit, _ in units)
    decoded = video.decode([unit for unit, _ in units])
    assert len(decoded) == len(frames)
    assert min(psnr(d, f) for d, f in zip(decoded, frames)) > 30


def test_key_frames_first_every_interval_and_on_request():
    encoder = video.H264Encoder(fps=25, keyframe_interval_s=1.0)
    keys = []
    for i, frame in enumerate(moving_frames(60)):
        if i == 37:
            encoder.request_key_frame()
        keys.append(encoder.encode(frame)[1])
    assert [i for i, key in enumerate(keys) if key] == [0, 25, 37, 50]
    # a viewer that joins at a key frame decodes from there (the parameter sets come with it)
    encoder = video.H264Encoder(fps=25, keyframe_interval_s=1.0)
    units = [encoder.encode(frame)[0] for frame in moving_frames(30)]
    assert len(video.decode(units[25:])) == 5


def test_a_new_bitrate_takes_effect_at_once_with_a_key_frame():
    sizes = {}
    for first, then in ((3000, 300), (300, 3000)):
        encoder = video.H264Encoder(fps=25, bitrate_kbps=first)
        units = []
        for i, frame in enumerate(moving_frames(60)):
            if i == 30:
                encoder.set_bitrate(then)
            units.append(encoder.encode(frame))
        assert units[30][1], "the first frame at a new bitrate is a key frame"
        assert len(video.decode([u for u, _ in units])) == 60, "one stream, decodable across the change"
        sizes[first, then] = (np.mean([len(u) for u, _ in units[10:30]]), np.mean([len(u) for u, _ in units[40:]]))
    assert sizes[3000, 300][1] < 0.4 * sizes[3000, 300][0]
    assert sizes[300, 3000][1] > 2.5 * sizes[300, 3000][0]


def test_no_second_of_a_stream_goes_far_past_its_bitrate_key_frames_included():
    """Half a second's buffer: a key frame is not a burst of several times the frame budget."""
    kbps, fps = 300, 25
    rng = np.random.default_rng(1)
    frames = [
        np.clip(f.astype(np.int16) + rng.integers(-40, 40, f.shape), 0, 255).astype(np.uint8)
        for f in moving_frames(150)
    ]
    encoder = video.H264Encoder(fps=fps, bitrate_kbps=kbps)
    units = [encoder.encode(frame) for frame in frames]
    bits = [8 * len(unit) for unit, _ in units]
    key_frames = [len(u) for u, key in units if key]
    assert len(key_frames) == 3, "one every 2 s"
    assert max(key_frames) * 8 < kbps * 1000 * video.VBV_BUFFER_S, "a key frame fits in the buffer"
    worst = max(sum(bits[i : i + fps]) for i in range(len(bits) - fps)) / 1000
    assert worst < 1.3 * kbps, f"a second at {worst:.0f} kbit/s for a {kbps} kbit/s target"


def test_bitrates_out_of_range_and_unknown_encoders_are_refused():
    for kbps in (0, video.MIN_KBPS - 1, video.MAX_KBPS + 1):
        with pytest.raises(ValueError, match="kbit/s"):
            video.H264Encoder(bitrate_kbps=kbps)
        with pytest.raises(ValueError, match="kbit/s"):
            video.H264Encoder().set_bitrate(kbps)
    with pytest.raises(ValueError, match="encoder"):
        video.H264Encoder(encoder="libvpx")


def test_odd_sizes_lose_their_last_row_and_column():
    encoder = video.H264Encoder()
    unit, key = encoder.encode(moving_frames(1, 73, 97)[0])
    assert key and video.decode([unit])[0].shape == (72, 96, 3)


def test_an_encoder_the_host_cannot_run_falls_back_to_libx264_at_load_by_name():
    """The GPU profile asks for NVENC; an H100 has none: the stream model finds out at load."""
    assert video.usable_encoder("libx264") == ("libx264", None)
    encoder, why = video.usable_encoder("h264_nvenc")
    if why is None:
        assert encoder == "h264_nvenc"  # a host with NVENC keeps it
        return
    assert encoder == "libx264" and why.startswith("h264_nvenc cannot encode on this host (")
    assert why.endswith("using libx264")
    unit, key = video.H264Encoder(encoder=encoder).encode(moving_frames(1)[0])
    assert key and video.decode([unit])
