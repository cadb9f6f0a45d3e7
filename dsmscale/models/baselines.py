"""Baselines from the same lab: SSN3D-ED (segmentation) and DSRF3D-v2 (classification).

SSN3D-ED (arXiv 1802.04087): [3³ conv 32]×2 → pool → [64]×2 → pool → [128]×2 → pool (5³); the
decoder applies a 1³ conv (128), upsamples ×2 (trilinear), adds a 1³ conv of the second pooled
map, 1³ conv (64), upsamples, adds a 1³ conv of the first pooled map, 1³ conv (32), upsamples to
40³ and a 1³ conv gives 2-class logits. DSRF3D-v2 (arXiv 1707.04885): the same encoder, flatten
(128·5³ = 16000) → FC 1024 → dropout 0.7 → FC 1024 → dropout 0.7 → FC C. ReLU after every
conv and hidden FC; batch normalisation after every 3³ conv, as in our DSM-Net (see its module
docstring; ``batch_norm=False`` for the plain reading). Both return the same dict keys as DSM-Net
(``seg`` or ``logits``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsmscale.models.dsmnet import conv3


def _vgg_stage(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    return nn.Sequential(conv3(cin, cout, batch_norm=batch_norm), nn.ReLU(inplace=True),
                         conv3(cout, cout, batch_norm=batch_norm), nn.ReLU(inplace=True),
                         nn.MaxPool3d(2))


class _VGGEncoder(nn.Module):
    def __init__(self, batch_norm: bool = True):
        super().__init__()
        self.stage1 = _vgg_stage(1, 32, batch_norm)
        self.stage2 = _vgg_stage(32, 64, batch_norm)
        self.stage3 = _vgg_stage(64, 128, batch_norm)

    def forward(self, x):
        p1 = self.stage1(x)
        p2 = self.stage2(p1)
        return p1, p2, self.stage3(p2)


class SSN3DED(nn.Module):
    """SSN3D-ED semantic segmentation network: returns ``{"seg": (N, 2, 40, 40, 40)}``."""

    heads = ("seg",)

    def __init__(self, batch_norm: bool = True):
        super().__init__()
        self.encoder = _VGGEncoder(batch_norm)
        self.top = nn.Conv3d(128, 128, 1)
        self.skip2 = nn.Conv3d(64, 128, 1)
        self.mid = nn.Conv3d(128, 64, 1)
        self.skip1 = nn.Conv3d(32, 64, 1)
        self.low = nn.Conv3d(64, 32, 1)
        self.out = nn.Conv3d(32, 2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p1, p2, p3 = self.encoder(x)
        up = lambda t: F.interpolate(t, scale_factor=2, mode="trilinear", align_corners=False)  # noqa: E731
        y = up(torch.relu(self.top(p3))) + self.skip2(p2)
        y = up(torch.relu(self.mid(y))) + self.skip1(p1)
        y = up(torch.relu(self.low(y)))
        return {"seg": self.out(y)}


class DSRF3Dv2(nn.Module):
    """DSRF3D-v2 classifier: returns ``{"logits": (N, C), "features": (N, 1024)}``."""

    heads = ("cls",)

    def __init__(self, n_classes: int = 22, dropout: float = 0.7, batch_norm: bool = True):
        super().__init__()
        self.n_classes = n_classes
        self.encoder = _VGGEncoder(batch_norm)
        self.fc1 = nn.Linear(128 * 5 * 5 * 5, 1024)
        self.fc2 = nn.Linear(1024, 1024)
        self.out = nn.Linear(1024, n_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _, _, p3 = self.encoder(x)
        h = self.dropout(torch.relu(self.fc1(p3.flatten(1))))
        features = torch.relu(self.fc2(h))
        return {"logits": self.out(self.dropout(features)), "features": features}
