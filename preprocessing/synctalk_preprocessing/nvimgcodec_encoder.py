"""nvImageCodec JPEG encoder for the production ``jpeg_encoder`` model (GPU), with its CPU
backend usable where there is no GPU. DALI has no JPEG encoder operator, so the pipeline encodes
here, on the frames DALI resized, without a host round trip when they arrive as GPU tensors."""
from __future__ import annotations

from typing import Any, List, Sequence

from synctalk_client import contract


_SUBSAMPLING = {
    "420": lambda m: m.ChromaSubsampling.CSS_420,
    "422": lambda m: m.ChromaSubsampling.CSS_422,
    "444": lambda m: m.ChromaSubsampling.CSS_444,
}


class NvImageCodecEncoder:
    def __init__(
        self,
        quality: int = contract.JPEG_QUALITY,
        subsampling: str = contract.JPEG_SUBSAMPLING,
        device_id: int = 0,
        cpu_only: bool = False,
    ):
        from nvidia import nvimgcodec

        self._nvimgcodec = nvimgcodec
        if cpu_only:
            self._encoder = nvimgcodec.Encoder(
                device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)],
            )
        else:
            self._encoder = nvimgcodec.Encoder(device_id=device_id)
        self._params = nvimgcodec.EncodeParams(
            quality_type=nvimgcodec.QualityType.QUALITY,
            quality_value=float(quality),
            chroma_subsampling=_SUBSAMPLING[subsampling](nvimgcodec),
        )

    def encode(self, frames: Sequence[Any]) -> List[bytes]:
        """Frames: HxWx3 uint8 RGB, as NumPy arrays or objects exposing DLPack / CUDA arrays."""
        images = [self._nvimgcodec.as_image(f) for f in frames]
        return [bytes(b) for b in self._encoder.encode(images, codec="jpeg", params=self._params)]
