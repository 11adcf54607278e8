"""Small models for the ExecuTorch backend tests."""

from __future__ import annotations

import math

import torch
from torch import nn


class LinearRelu(nn.Module):
    """A single quantized layer: linear + fused relu."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 12)

    def forward(self, x):
        return torch.relu(self.fc(x))


class LinearClamp(nn.Module):
    """A single linear with a fused two-sided clamp (XNNPACK only fuses relu / hardtanh)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 12)

    def forward(self, x):
        return torch.clamp(self.fc(x), -0.4, 0.6)


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class AttentionBlock(nn.Module):
    """1-layer pre-norm transformer block, eager matmul attention, fused qkv (split by chunk)."""

    def __init__(self, dim: int = 32, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(self.ln1(x)).chunk(3, -1)
        q, k, v = (z.view(b, t, self.heads, hd).transpose(1, 2) for z in (q, k, v))
        att = (torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd)).softmax(-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))


class LinearHeavy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, 10))

    def forward(self, x):
        return self.net(x)


class SplitBatch(nn.Module):
    """chunk over dim 0 (the batch): not a split the slice pass may rewrite."""

    def forward(self, x):
        a, b = x.chunk(2, 0)
        return a + b


class TwoDimNorm(nn.Module):
    """LayerNorm over the last two dimensions: not a last-dim norm the pass may rewrite."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm([6, 32])

    def forward(self, x):
        return self.norm(x)


class LinearThenMean(nn.Module):
    """A 3-D mean the XNNPACK partitioner rejects (it only pools 4-D tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 12)

    def forward(self, x):
        return self.fc(x).mean(-1, keepdim=True)
