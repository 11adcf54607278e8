"""Small models for the debugger and search tests, built so that one known layer is the problem."""

import torch
from torch import nn


class OutlierBlock(nn.Module):
    """A transformer-style block in miniature: fc2's output carries one channel ~100x the others
    (BERT's FFN-output outliers), and it feeds a residual add into LayerNorm, which runs in float.
    Static int8 rounds fc2's output with one per-tensor step sized for the outlier, wiping out
    the other channels; dynamic int8 on fc2 keeps its output float. Every other layer is benign.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 8)
        with torch.no_grad():
            self.fc2.weight[0] *= 100.0
            self.norm.weight[0] = 0.01  # LayerNorm's affine tames the outlier downstream, as in BERT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(torch.relu(self.fc1(x)))
        return self.head(self.norm(y + x))


def outlier_block() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, calibration data, held-out data) with fixed seeds."""
    torch.manual_seed(0)
    model = OutlierBlock().eval()
    gen = torch.Generator().manual_seed(1)
    return model, torch.randn(64, 32, generator=gen), torch.randn(64, 32, generator=gen)
