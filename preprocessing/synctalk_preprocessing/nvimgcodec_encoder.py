"""nvImageCodec JPEG encoder for the production ``jpeg_encoder`` model (GPU), with its CPU
backend usable where there is no GPU. DALI has no JPEG encoder operator, so the pipeline encodes
here, on the frames DALI resized, without a host round trip when they arrive as GPU tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from synctalk_common import contract

_SUBSAMPLING = {
    "420": lambda m: m.ChromaSubsampling.CSS_420,
    "422": lambda m: m.ChromaSubsampling.CSS_422,
    "444": lambda m: m.ChromaSubsampling.CSS_444,
}


class EncodeError(RuntimeError):
    """nvImageCodec returned no image for some frames (it answers ``None``, it does not raise)."""


class NvImageCodecEncoder:
    """``cpu_only``: nvImageCodec's CPU backend (tests, machines without a GPU). ``require_gpu``
    (production): only GPU backends, and a probe encode at construction, so a missing nvJPEG
    (nvImageCodec without its extension registers no GPU encoder and, left to choose, would fall
    back to the CPU silently) fails here, at model load, with the reason."""

    def __init__(
        self,
        quality: int = contract.JPEG_QUALITY,
        subsampling: str = contract.JPEG_SUBSAMPLING,
        device_id: int = 0,
        cpu_only: bool = False,
        require_gpu: bool = False,
    ):
        from nvidia import nvimgcodec

        self._nvimgcodec = nvimgcodec
        if cpu_only:
            self._encoder = nvimgcodec.Encoder(
                device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)],
            )
        elif require_gpu:
            gpu = [
                nvimgcodec.Backend(kind)
                for kind in (nvimgcodec.BackendKind.GPU_ONLY, nvimgcodec.BackendKind.HYBRID_CPU_GPU)
            ]
            try:
                self._encoder = nvimgcodec.Encoder(device_id=device_id, backends=gpu)
            except RuntimeError as error:
                raise EncodeError(f"no GPU JPEG encoder on device {device_id}: {error}") from error
        else:
            self._encoder = nvimgcodec.Encoder(device_id=device_id)
        self._params = nvimgcodec.EncodeParams(
            quality_type=nvimgcodec.QualityType.QUALITY,
            quality_value=float(quality),
            chroma_subsampling=_SUBSAMPLING[subsampling](nvimgcodec),
        )

        if require_gpu:
            self.probe(device_id)

    def probe(self, device_id: int = 0) -> None:
        """One small encode on the GPU; raises :class:`EncodeError` naming nvJPEG if it fails."""
        import cupy

        with cupy.cuda.Device(device_id):
            frame = cupy.zeros((64, 64, 3), dtype=cupy.uint8)
        try:
            self.encode([frame])
        except EncodeError as error:
            raise EncodeError(
                f"nvImageCodec has no working GPU JPEG encoder on device {device_id} ({error}); "
                "is its nvJPEG extension installed (nvidia-nvimgcodec-cu12[nvjpeg], nvidia-nvjpeg-cu12)?"
            ) from error

    def encode(self, frames: Sequence[Any]) -> list[bytes]:
        """Frames: HxWx3 uint8 RGB, as NumPy arrays or objects exposing DLPack / CUDA arrays.
        Raises :class:`EncodeError` naming the frames nvImageCodec could not encode."""
        images = [self._nvimgcodec.as_image(f) for f in frames]
        encoded = self._encoder.encode(images, codec="jpeg", params=self._params)
        failed = [i for i, b in enumerate(encoded) if b is None]
        if failed:
            shape = tuple(images[failed[0]].shape)
            raise EncodeError(
                f"nvImageCodec could not encode {len(failed)} of {len(images)} frames (first: frame {failed[0]}, "
                f"shape {shape})"
            )
        return [bytes(b) for b in encoded]
