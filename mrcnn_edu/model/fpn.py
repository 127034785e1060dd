"""Feature Pyramid Network: C2..C5 -> P2..P6 (lesson 05_backbone_fpn_levels).

Lin et al. 2017: "a top-down pathway and lateral connections": each Ci is projected to F
channels by a 1x1 conv (lateral), the coarser level is upsampled by nearest neighbour and
added, then a 3x3 conv smooths the sum into Pi. P6, used only by the RPN for the largest
anchors, is P5 subsampled by a stride-2 max-pool with a 1x1 window (as in the paper's code
and torchvision).

Shape legend: B images, F = out_channels, H x W the padded input size (a multiple of 32).

    P2 (B, F, H/4, W/4)  P3 (B, F, H/8, W/8)  P4 (B, F, H/16, W/16)  P5 (B, F, H/32, W/32)
    P6 (B, F, ceil(H/64), ceil(W/64))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FPN(nn.Module):
    """forward([C2, C3, C4, C5]) -> [P2, P3, P4, P5, P6], all with `out_channels` channels."""

    def __init__(self, in_channels: list[int], out_channels: int = 256):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1)
                                    for _ in in_channels)
        self.out_channels = out_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        top = self.lateral[-1](features[-1])  # (B, F, H/32, W/32)
        outputs = [self.output[-1](top)]
        for i in range(len(features) - 2, -1, -1):  # C4, C3, C2: coarse to fine
            lateral = self.lateral[i](features[i])  # (B, F, h, w)
            # size= rather than scale_factor=2 so an odd-sized map (unpadded input) still adds up.
            # In place: the lateral conv's backward needs its input, not this output.
            top = lateral.add_(F.interpolate(top, size=lateral.shape[-2:], mode="nearest"))
            outputs.insert(0, self.output[i](top))
        outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2))  # P6
        return outputs
