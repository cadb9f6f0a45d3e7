"""DSM-Net (Liu et al. 2018, arXiv 1805.06332): one 3D CNN, three heads.

Our reading of the paper (the authors released no code); deviations are stated here:
- Encoder "3D ResNet-9" on a 40³ input: 3³ conv (32) → 2× max-pool (20³) → residual block (32) →
  stride-2 3³ conv (64, 10³) → residual block (64) → stride-2 3³ conv (128, 5³) → residual block
  (128) → global average pool. A residual block is conv-BN-ReLU-conv-BN, plus the identity, then
  ReLU, as in ResNet.
- Batch normalisation after every 3³ conv/deconv (not the heads' 1³ convs). The paper names a
  ResNet but does not list normalisation layers; without them the classification branch did not
  leave chance level in our exploratory runs on dataset A, so every model here uses it
  (``batch_norm=False`` gives the plain reading). It adds 2 parameters per channel.
- Classification head: FC 1024 + ReLU (the *features* used for discovery), dropout 0.7, FC C.
- Decoder (segmentation and recovery share it): stride-2 3³ deconvs 5→10→20, each followed by
  ReLU and an *additive* skip from the encoder residual block of the same size (the paper does not
  say add or concatenate; addition reproduces its 1.95 M parameters), a residual block (32), a
  stride-2 deconv 20→40 (32 channels), then parallel 1³ convs to 2 channels (segmentation logits)
  and 1 channel (recovered density).
- Heads are switchable: ``heads=("cls",)`` is the Cls subnet, ``("seg",)`` the Seg subnet, and
  so on; the decoder exists only when ``seg`` or ``rec`` is on.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Heads = tuple[Literal["cls", "seg", "rec"], ...]


#: Bumped whenever a change alters weights' meaning; part of every training run's identity.
ARCHITECTURE_VERSION = 2


def conv3(cin: int, cout: int, stride: int = 1, batch_norm: bool = True) -> nn.Module:
    """3³ convolution (padding 1), followed by batch normalisation when asked."""
    conv = nn.Conv3d(cin, cout, 3, stride=stride, padding=1)
    return nn.Sequential(conv, nn.BatchNorm3d(cout)) if batch_norm else conv


def deconv3(cin: int, cout: int, batch_norm: bool = True) -> nn.Module:
    """Stride-2 3³ transposed convolution that doubles the edge (5→10, 10→20, 20→40)."""
    deconv = nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=1, output_padding=1)
    return nn.Sequential(deconv, nn.BatchNorm3d(cout)) if batch_norm else deconv


class ResidualBlock(nn.Module):
    """conv3-(BN)-ReLU-conv3-(BN), plus the input, then ReLU (channels unchanged)."""

    def __init__(self, channels: int, batch_norm: bool = True):
        super().__init__()
        self.conv1 = conv3(channels, channels, batch_norm=batch_norm)
        self.conv2 = conv3(channels, channels, batch_norm=batch_norm)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.conv2(self.relu(self.conv1(x))))


class Encoder(nn.Module):
    """40³×1 → feature maps at 20³×32, 10³×64 and 5³×128."""

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), batch_norm: bool = True):
        super().__init__()
        w1, w2, w3 = widths
        bn = batch_norm
        self.stem = nn.Sequential(conv3(1, w1, batch_norm=bn), nn.ReLU(inplace=True),
                                  nn.MaxPool3d(2))
        self.res1 = ResidualBlock(w1, bn)
        self.down2 = nn.Sequential(conv3(w1, w2, 2, bn), nn.ReLU(inplace=True))
        self.res2 = ResidualBlock(w2, bn)
        self.down3 = nn.Sequential(conv3(w2, w3, 2, bn), nn.ReLU(inplace=True))
        self.res3 = ResidualBlock(w3, bn)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f20 = self.res1(self.stem(x))
        f10 = self.res2(self.down2(f20))
        f5 = self.res3(self.down3(f10))
        return f20, f10, f5


class Decoder(nn.Module):
    """5³ → 40³ with additive skips from the encoder at 10³ and 20³."""

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), batch_norm: bool = True):
        super().__init__()
        w1, w2, w3 = widths
        self.up10 = deconv3(w3, w2, batch_norm)
        self.up20 = deconv3(w2, w1, batch_norm)
        self.res = ResidualBlock(w1, batch_norm)
        self.up40 = deconv3(w1, w1, batch_norm)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, f20: torch.Tensor, f10: torch.Tensor, f5: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.up10(f5)) + f10
        x = self.relu(self.up20(x)) + f20
        return self.relu(self.up40(self.res(x)))


class DSMNet(nn.Module):
    """DSM-Net with switchable heads. Input (N, 1, 40, 40, 40), normalised per box.

    ``forward`` returns a dict with ``features`` (N, 1024) and ``logits`` (N, C) when ``cls`` is
    on, ``seg`` (N, 2, 40, 40, 40) logits when ``seg`` is on, ``rec`` (N, 1, 40, 40, 40) when
    ``rec`` is on.
    """

    def __init__(self, n_classes: int = 22, heads: Heads = ("cls", "seg", "rec"),
                 widths: tuple[int, int, int] = (32, 64, 128), hidden: int = 1024,
                 dropout: float = 0.7, batch_norm: bool = True):
        super().__init__()
        if not heads or set(heads) - {"cls", "seg", "rec"}:
            raise ValueError(f"heads must be a non-empty subset of cls, seg, rec; got {heads}")
        self.heads = tuple(h for h in ("cls", "seg", "rec") if h in heads)
        self.n_classes = n_classes
        self.encoder = Encoder(widths, batch_norm)
        if "cls" in self.heads:
            self.fc = nn.Linear(widths[2], hidden)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(hidden, n_classes)
        if "seg" in self.heads or "rec" in self.heads:
            self.decoder = Decoder(widths, batch_norm)
        if "seg" in self.heads:
            self.seg_head = nn.Conv3d(widths[0], 2, 1)
        if "rec" in self.heads:
            self.rec_head = nn.Conv3d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f20, f10, f5 = self.encoder(x)
        out: dict[str, torch.Tensor] = {}
        if "cls" in self.heads:
            features = torch.relu(self.fc(f5.mean(dim=(2, 3, 4))))
            out["features"] = features
            out["logits"] = self.classifier(self.dropout(features))
        if "seg" in self.heads or "rec" in self.heads:
            decoded = self.decoder(f20, f10, f5)
            if "seg" in self.heads:
                out["seg"] = self.seg_head(decoded)
            if "rec" in self.heads:
                out["rec"] = self.rec_head(decoded)
        return out
