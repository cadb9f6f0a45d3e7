"""Compact students for knowledge distillation (Guo et al. 2018) and a small DSM-Net.

The lab's published students (conv widths per stage): L (32,32 | 64,64 | 128,128),
M (32,32 | 64,64 | 64,64), S (16,16 | 32,32 | 32,32). Each stage is two 3³ conv + ReLU and ends in a
3³ max-pool with stride 3 (40 → 13 → 4 → 1), then one FC 1024 + ReLU (the features) and linear
logits. Batch normalisation after every 3³ conv, as in our DSM-Net. They classify only; the
DSM-Net-shaped student (``dsmnet_small``: DSM-Net with widths 16/32/64) keeps all three heads, so
it can replace the teacher in a job (features, segmentation and recovery).
"""

from __future__ import annotations

import torch
from torch import nn

from dsmscale.models.dsmnet import DSMNet, conv3

GUO_WIDTHS = {
    "guo_l": ((32, 32), (64, 64), (128, 128)),
    "guo_m": ((32, 32), (64, 64), (64, 64)),
    "guo_s": ((16, 16), (32, 32), (32, 32)),
}
SMALL_DSMNET_WIDTHS = (16, 32, 64)


class GuoStudent(nn.Module):
    """Classification student; returns ``{"features": (N, 1024), "logits": (N, C)}``."""

    heads = ("cls",)

    def __init__(self, n_classes: int, widths=GUO_WIDTHS["guo_l"], hidden: int = 1024,
                 box: int = 40, batch_norm: bool = True):
        super().__init__()
        layers, cin, edge = [], 1, box
        for a, b in widths:
            layers += [conv3(cin, a, batch_norm=batch_norm), nn.ReLU(inplace=True),
                       conv3(a, b, batch_norm=batch_norm), nn.ReLU(inplace=True),
                       nn.MaxPool3d(3, stride=3)]
            cin, edge = b, edge // 3
        if edge < 1:
            raise ValueError(f"box {box} is too small for three stride-3 pools")
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * edge**3, hidden)
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = torch.relu(self.fc(self.body(x).flatten(1)))
        return {"features": features, "logits": self.classifier(features)}


def small_dsmnet(n_classes: int, batch_norm: bool = True) -> DSMNet:
    return DSMNet(n_classes, widths=SMALL_DSMNET_WIDTHS, batch_norm=batch_norm)
