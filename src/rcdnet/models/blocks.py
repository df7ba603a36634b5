"""The two blocks RcdNet adds to its backbone (paper section 2.3.1).

Shapes are given for a batch of B feature maps with C channels and spatial size H x W.
"""

from __future__ import annotations

import torch
from torch import nn


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k conv (one filter per channel) then pointwise 1 x 1 conv, each with BN + SiLU.

    (B, C_in, H, W) -> (B, C_out, H, W). Parameters: C_in*k*k + C_in*C_out (+ BN), against C_in*C_out*k*k for a
    standard convolution."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3):
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, kernel_size, padding=kernel_size // 2, groups=in_ch, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.depthwise(x)))
        return self.act(self.bn2(self.pointwise(x)))


class ChannelAttention(nn.Module):
    """CBAM channel attention: a shared MLP over average- and max-pooled descriptors.

    (B, C, H, W) -> (B, C, 1, 1) weights in (0, 1)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a k x k conv over channel-wise mean and max maps.

    (B, C, H, W) -> (B, 1, H, W) weights in (0, 1)."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(desc))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., 2018): channel attention, then spatial attention.

    (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)
