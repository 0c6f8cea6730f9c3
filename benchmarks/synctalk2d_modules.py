"""SyncTalk_2D's module trees in PyTorch, for measuring them on a GPU with PyTorch's own kernels
(``benchmarks.gpu_check``): ``unet_328.Model(6, mode="ave")``, ``utils.AudioEncoder`` (with the
served graph's each-distinct-window-once gather) and the wav2lip-style stand-in encoder.

The modules carry upstream's names (``inc.inconv.0.conv.3``, ``down1.maxpool_conv.0.double_conv.1``,
``audio_encoder.4.conv_block.1``, ...), which are also the names of the initializers that
``ops/synctalk_build/build_models.py`` writes, so :func:`from_onnx` fills a module from the served ONNX graph by
name, strictly (every parameter and buffer, nothing left over), and ``benchmarks.gpu_check``
checks the two agree numerically before it times anything.

Imports nothing but torch, numpy and onnx: it runs on a bare GPU host.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn


class InvertedResidual(nn.Module):
    """unet_328.InvertedResidual: 1x1 expand, 3x3 depthwise, 1x1 project, batch-norms, no biases."""

    def __init__(self, inp: int, oup: int, stride: int, use_res_connect: bool, expand_ratio: int = 2):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = use_res_connect
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class DoubleConvDW(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 2):
        super().__init__()
        self.double_conv = nn.Sequential(
            InvertedResidual(cin, cout, stride, use_res_connect=False), InvertedResidual(cout, cout, 1, True)
        )

    def forward(self, x):
        return self.double_conv(x)


class InConvDw(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.inconv = nn.Sequential(InvertedResidual(cin, cout, 1, use_res_connect=False))

    def forward(self, x):
        return self.inconv(x)


class Down(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.maxpool_conv = nn.Sequential(DoubleConvDW(cin, cout, stride=2))

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConvDW(cin, cout, stride=1)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy, dx = x2.shape[2] - x1.shape[2], x2.shape[3] - x1.shape[3]
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x1, x2], dim=1))


class OutConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class AudioConvAve(nn.Module):
    """unet_328.AudioConvAve: audio features [32,16,16] -> [ch4,10,10]."""

    def __init__(self, ch: Sequence[int], audio_channels: int):
        super().__init__()
        self.conv1 = InvertedResidual(audio_channels, ch[1], 1, use_res_connect=False)
        self.conv2 = InvertedResidual(ch[1], ch[2], 1, use_res_connect=False)
        self.conv3 = nn.Conv2d(ch[2], ch[3], kernel_size=3, padding=1, stride=1)
        self.bn3 = nn.BatchNorm2d(ch[3])
        self.conv4 = InvertedResidual(ch[3], ch[3], 1, use_res_connect=True)
        self.conv5 = nn.Conv2d(ch[3], ch[4], kernel_size=3, padding=3, stride=2)
        self.bn5 = nn.BatchNorm2d(ch[4])
        self.relu = nn.ReLU()
        self.conv6 = InvertedResidual(ch[4], ch[4], 1, use_res_connect=True)
        self.conv7 = InvertedResidual(ch[4], ch[4], 1, use_res_connect=True)

    def forward(self, x):
        x = self.conv2(self.conv1(x))
        x = self.conv4(self.relu(self.bn3(self.conv3(x))))
        x = self.relu(self.bn5(self.conv5(x)))
        return self.conv7(self.conv6(x))


class Generator(nn.Module):
    """unet_328.Model(6, mode="ave") with the widths ``ch``; ``stand_in_blend`` (a weight, or
    None) mixes the input crop into the output as the stand-in graph does (a trained graph: None)."""

    def __init__(self, ch: Sequence[int], audio_channels: int = 32, stand_in_blend: float | None = None):
        super().__init__()
        self.stand_in_blend = stand_in_blend
        self.audio_model = AudioConvAve(ch, audio_channels)
        self.fuse_conv = nn.Sequential(DoubleConvDW(ch[4] * 2, ch[4], stride=1), DoubleConvDW(ch[4], ch[3], stride=1))
        self.inc = InConvDw(6, ch[0])
        self.down1 = Down(ch[0], ch[0])
        self.down2 = Down(ch[0], ch[1])
        self.down3 = Down(ch[1], ch[2])
        self.down4 = Down(ch[2], ch[3])
        self.down5 = Down(ch[3], ch[4])
        self.up1 = Up(ch[4], ch[3] // 2)
        self.up2 = Up(ch[3], ch[2] // 2)
        self.up3 = Up(ch[2], ch[1] // 2)
        self.up4 = Up(ch[1], ch[0])
        self.up5 = Up(ch[1], ch[0] // 2)
        self.outc = OutConv(ch[0] // 2, 3)

    def forward(self, x, audio_feat):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x6 = self.down5(x5)
        x6 = self.fuse_conv(torch.cat([x6, self.audio_model(audio_feat)], dim=1))
        y = self.up5(self.up4(self.up3(self.up2(self.up1(x6, x5), x4), x3), x2), x1)
        out = torch.sigmoid(self.outc(y))
        if self.stand_in_blend is not None:
            out = self.stand_in_blend * x[:, :3] + (1.0 - self.stand_in_blend) * out
        return out


class ConvBlock(nn.Module):
    """utils.Conv2d: convolution (with bias) + batch-norm, the residual added before the ReLU."""

    def __init__(self, cin, cout, kernel, stride, padding, residual=False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x):
        out = self.conv_block(x)
        return F.relu(out + x if self.residual else out)


class SyncTalk2DAudioEncoder(nn.Module):
    """utils.AudioEncoder (``audio_encoder.0`` .. ``12``) applied as the served graph applies it:
    a request's frames are consecutive, so its B x 16 neighbouring windows hold B + 15 distinct
    ones; each is encoded once, gathered back to [B,16,512], masked and reshaped to [B,32,16,16]."""

    def __init__(self, blocks: Sequence[tuple], widths: Sequence[int]):
        super().__init__()
        layers, cin = [], 1
        for width, kernel, stride, padding, residual in blocks:
            layers.append(ConvBlock(cin, widths[width], kernel, stride, padding, residual))
            cin = widths[width]
        self.audio_encoder = nn.Sequential(*layers)

    def forward(self, mel_neighbours, mask):  # [B,16,1,80,16], [B,16]
        b, n = mel_neighbours.shape[:2]
        windows = torch.cat([mel_neighbours[:, 0], mel_neighbours[-1, 1:]], dim=0)  # [B+15,1,80,16]
        embeddings = self.audio_encoder(windows).flatten(1)  # [B+15,512]
        index = torch.arange(b, device=mel_neighbours.device)[:, None] + torch.arange(n, device=mask.device)
        stacked = embeddings[index] * mask[..., None]  # [B,16,512]
        return stacked.reshape(b, 32, 16, 16)


class Wav2LipEncoder(nn.Module):
    """The request-flow reference's stand-in encoder: one window [1,80,16] -> [32,16,16]."""

    def __init__(self, widths: Sequence[int], features: int = 32 * 16 * 16):
        super().__init__()
        strides = (1, (3, 1), 3, (3, 2))
        self.enc = nn.ModuleList()
        cin = 1
        for width, stride in zip(widths[:4], strides):
            self.enc.append(nn.ModuleList([nn.Conv2d(cin, width, 3, stride, 1), nn.Conv2d(width, width, 3, 1, 1)]))
            cin = width
        # 3x3 -> 1x1, then a 1x1 convolution: enc.4 and enc.5
        self.enc.append(nn.Conv2d(cin, widths[4], 3, 1, 0))
        self.enc.append(nn.Conv2d(widths[4], widths[4], 1, 1, 0))
        self.to_features = nn.Linear(widths[4], features)

    def forward(self, mel):  # [B,1,80,16]
        x = mel
        for first, second in self.enc[:4]:
            x = F.relu(first(x))
            x = F.relu(x + second(x))
        x = F.relu(self.enc[5](F.relu(self.enc[4](x))))
        return self.to_features(x.flatten(1)).reshape(-1, 32, 16, 16)


def onnx_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def from_onnx(module: nn.Module, model: onnx.ModelProto) -> nn.Module:
    """Fill every parameter and buffer of ``module`` from the initializer of the same name (strict:
    a missing name or a shape that differs raises); the graph's other constants (shapes, scales)
    are not weights. Returns the module in eval mode."""
    weights = onnx_weights(model)
    state = {}
    for name, current in module.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = current
            continue
        if name not in weights:
            raise KeyError(f"{name}: not an initializer of the ONNX graph")
        value = torch.from_numpy(np.array(weights[name]))
        if tuple(value.shape) != tuple(current.shape):
            raise ValueError(f"{name}: ONNX {tuple(value.shape)} vs module {tuple(current.shape)}")
        state[name] = value
    module.load_state_dict(state, strict=True)
    return module.eval()
