"""Outlier-robust activation observer torchao does not ship.

Transformer activations carry a few huge outliers (LayerNorm outputs, GELU inputs):
min-max spends the whole int8 grid on them. `PercentileObserver` clips at the p-th
percentile of each calibration batch and averages those bounds over batches.
"""

import torch
from torchao.quantization.pt2e import MinMaxObserver

# torch.kthvalue over more elements than this is slow; a strided sample keeps the
# percentile estimate stable while calibration stays fast.
_MAX_SAMPLES = 1 << 20


class PercentileObserver(MinMaxObserver):
    """Per-tensor observer whose range is the mean over batches of the
    [100 - p, p] percentiles, instead of the absolute min and max."""

    def __init__(self, percentile: float = 99.99, **kwargs) -> None:
        super().__init__(**kwargs)
        self.percentile = percentile
        self.register_buffer("batches_seen", torch.tensor(0, dtype=torch.int64))

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().reshape(-1).to(self.min_val.dtype)
        if x.numel() > _MAX_SAMPLES:
            x = x[:: x.numel() // _MAX_SAMPLES + 1]
        n = x.numel()
        k_hi = max(1, min(n, round(n * self.percentile / 100.0)))
        k_lo = max(1, min(n, n + 1 - k_hi))
        lo = torch.kthvalue(x, k_lo).values
        hi = torch.kthvalue(x, k_hi).values
        seen = int(self.batches_seen)
        if seen == 0:
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
        else:
            self.min_val.copy_((self.min_val * seen + lo) / (seen + 1))
            self.max_val.copy_((self.max_val * seen + hi) / (seen + 1))
        self.batches_seen += 1
        return x_orig

    def extra_repr(self) -> str:
        return f"percentile={self.percentile}, min_val={self.min_val}, max_val={self.max_val}"
