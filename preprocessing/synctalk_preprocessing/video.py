"""H.264 for live streams: one encoder per stream, frames in as they are rendered, one access unit
out per frame (Annex B), at once.

``H264Encoder`` wraps FFmpeg's encoders through PyAV: ``libx264`` (the CPU profile) with
``tune=zerolatency`` and preset ``ultrafast``, or ``h264_nvenc`` (the GPU profile: NVIDIA's
hardware encoder, ultra-low-latency tuning). Either way: no B-frames and no lookahead (a frame's
bytes come out with the frame), the bitrate held within half a second's buffer (key
frames included: no burst a viewer's link must absorb), a key frame first, every
``keyframe_interval_s`` and on request (a viewer that lost packets asks for one), a target
bitrate a stream may change at any frame, and the parameter sets (SPS/PPS) repeated before
every key frame, so a viewer can start at any key frame.

A bitrate change opens the encoder afresh at the new target, so the next frame is a key frame:
FFmpeg's libx264 takes a new average bitrate on a running encoder only with VBV settings PyAV
cannot change after opening (measured: no change at all in ABR), and a fresh encoder behaves the
same on NVENC. A change is rare (a viewer's bandwidth estimate moving; ``synctalk_webrtc`` changes
it at most once a second), and the key frame it costs is one at the new, lower or higher, rate.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

ENCODERS = ("libx264", "h264_nvenc")
MIN_KBPS, MAX_KBPS = 100, 20_000  # what a stream may ask for (WebRTC's range is ~300-3000)
DEFAULT_KBPS = 2_000
KEYFRAME_INTERVAL_S = 2.0
# The rate control's buffer (VBV): the encoder never gets further ahead of the target than this
# much of a second's bits. Without it libx264's average bitrate let a 720p key frame take 117 KB (a
# second with one at 2.6 Mbit/s for a 2 Mbit/s target, a 0.45 s burst on a 2 Mbit/s link); with
# half a second, key frames 52 KB and no second above 1.1x the target (3 Mbit/s: 1.17x).
VBV_BUFFER_S = 0.5

_OPTIONS = {
    "libx264": {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "repeat-headers": "1",
        # a stream's own thread does its encoding; sliced threads would only fight the other steps
        "threads": "1",
        "x264-params": "bframes=0:rc-lookahead=0:sync-lookahead=0",
    },
    "h264_nvenc": {"preset": "p1", "tune": "ull", "zerolatency": "1", "bf": "0", "delay": "0", "rc": "cbr"},
}


def check_bitrate(kbps: int) -> str | None:
    """A problem with a requested bitrate, or None."""
    if not MIN_KBPS <= int(kbps) <= MAX_KBPS:
        return f"bitrate {int(kbps)} kbit/s: use {MIN_KBPS} to {MAX_KBPS}"
    return None


class H264Encoder:
    """One stream's H.264 encoder (see the module). Frames are RGB uint8 [H, W, 3]; an odd height
    or width loses its last row or column (4:2:0 needs even sizes)."""

    def __init__(
        self,
        fps: int = 25,
        bitrate_kbps: int = DEFAULT_KBPS,
        encoder: str = "libx264",
        keyframe_interval_s: float = KEYFRAME_INTERVAL_S,
    ):
        if encoder not in ENCODERS:
            raise ValueError(f"H.264 encoder must be one of {ENCODERS}, got {encoder!r}")
        problem = check_bitrate(bitrate_kbps)
        if problem:
            raise ValueError(problem)
        self.fps, self.encoder, self.bitrate_kbps = int(fps), encoder, int(bitrate_kbps)
        self.gop = max(1, round(keyframe_interval_s * fps))
        self._context = None  # opened on the first frame, at its size
        self._frames = 0
        self._key_due = True

    def _open(self, height: int, width: int):
        import av

        context = av.CodecContext.create(self.encoder, "w")
        context.width, context.height = width, height
        context.pix_fmt = "yuv420p"
        context.time_base = Fraction(1, self.fps)
        context.framerate = Fraction(self.fps, 1)
        context.gop_size = self.gop
        context.max_b_frames = 0
        context.bit_rate = self.bitrate_kbps * 1000
        context.options = {
            **_OPTIONS[self.encoder],
            "maxrate": f"{self.bitrate_kbps}k",  # the codec context's own, both encoders honour them
            "bufsize": f"{round(self.bitrate_kbps * VBV_BUFFER_S)}k",
        }
        context.open()
        return context

    def set_bitrate(self, kbps: int) -> None:
        """The target from the next frame on (ValueError outside MIN_KBPS..MAX_KBPS)."""
        problem = check_bitrate(kbps)
        if problem:
            raise ValueError(problem)
        if int(kbps) != self.bitrate_kbps:
            self.bitrate_kbps = int(kbps)
            self._context = None  # opened afresh at the new target on the next frame, a key frame

    def request_key_frame(self) -> None:
        """The next frame is a key frame."""
        self._key_due = True

    def encode(self, rgb: np.ndarray) -> tuple[bytes, bool]:
        """One frame -> (its access unit, whether it is a key frame)."""
        import av

        rgb = np.ascontiguousarray(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2])
        if self._context is None:  # the first frame, or the first at a new bitrate: a key frame
            self._context, self._key_due = self._open(rgb.shape[0], rgb.shape[1]), True
        context = self._context  # close() from another thread leaves this frame's encoding be
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = self._frames
        if self._key_due or self._frames % self.gop == 0:
            frame.pict_type = av.video.frame.PictureType.I
            self._key_due = False
        self._frames += 1
        packets = context.encode(frame)
        if len(packets) != 1:  # zero latency: one frame in, its packet out
            raise RuntimeError(f"{self.encoder}: {len(packets)} packets for one frame (not zero-latency)")
        return bytes(packets[0]), bool(packets[0].is_keyframe)

    def close(self) -> None:
        """Frees the encoder (no frame is held back to flush: zero latency)."""
        self._context = None


def usable_encoder(preferred: str, fallback: str = "libx264") -> tuple[str, str | None]:
    """The encoder this host can run: ``preferred`` when it opens and encodes a frame here, else
    ``fallback`` and why. NVENC is not on every NVIDIA GPU (H100, H200 and A100 have none; L4,
    L40S, A10 and T4 have it) nor in every container (the driver's ``video`` capability); a server
    finds out at load, once, not at a viewer's first frame. ``fallback`` itself must work."""
    try:
        probe = H264Encoder(encoder=preferred)
        probe.encode(np.zeros((144, 256, 3), np.uint8))  # NVENC's smallest sizes are ~145x49
        probe.close()
        return preferred, None
    except Exception as exc:  # noqa: BLE001 - any reason (no device, no driver, no library) falls back
        if preferred == fallback:
            raise
        return fallback, f"{preferred} cannot encode on this host ({type(exc).__name__}: {exc}): using {fallback}"


def decode(units) -> list[np.ndarray]:
    """A stream's access units (each a whole frame, as the encoder gives them and a WebRTC
    receiver reassembles them) decoded to RGB frames [H, W, 3]: what a viewer sees."""
    import av

    decoder = av.CodecContext.create("h264", "r")
    frames = []
    for unit in units:
        frames += [f.to_ndarray(format="rgb24") for f in decoder.decode(av.Packet(bytes(unit)))]
    return frames + [f.to_ndarray(format="rgb24") for f in decoder.decode(None)]
