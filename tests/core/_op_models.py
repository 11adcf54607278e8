"""Small models for each op family of the XNNPACK int8 op set, and their expected q/dq counts.

Shared by tests/core/test_op_set.py (counts, SQNR) and tests/executorch/test_op_set_lowering.py
(stock and our lowering); `quantized(case_id)` quantizes each once per session.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import pt2e_int8 as q
import pt2e_int8.qdq  # noqa: F401  (registers torch.ops.quantized_decomposed)

qd = torch.ops.quantized_decomposed
Q, DQ = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
DQ_CH = qd.dequantize_per_channel.default
CHOOSE, Q_T, DQ_T = qd.choose_qparams.tensor, qd.quantize_per_tensor.tensor, qd.dequantize_per_tensor.tensor

STATIC, STATIC_PT = q.QuantConfig.static(), q.QuantConfig.static(per_channel=False)
DYNAMIC, WEIGHT_ONLY = q.QuantConfig.dynamic(), q.QuantConfig.weight_only()


# -- layers -------------------------------------------------------------------------
class ConvTranspose2dRelu(nn.Module):
    def __init__(self, groups: int = 1):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=groups)

    def forward(self, x):
        return F.relu(self.up(x))


class ConvTranspose2dGrouped(ConvTranspose2dRelu):
    def __init__(self):
        super().__init__(groups=2)


class ConvTranspose1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose1d(4, 6, 4, stride=2)

    def forward(self, x):
        return self.up(x)


def _non_trivial(bn: nn.BatchNorm2d, weight: bool = False) -> nn.BatchNorm2d:
    """Running statistics (and optionally the scale) away from identity, so folding them matters."""
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        if weight:
            bn.weight.uniform_(0.5, 1.5)
    return bn


class ConvBnRelu(nn.Module):
    """PTQ conv → batch-norm → relu (prepare_pt2e folds the batch-norm first)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), _non_trivial(nn.BatchNorm2d(8), weight=True)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class ConvTransposeBnRelu(nn.Module):
    """PTQ transposed conv → batch-norm → relu: folded, then one int8 deconvolution."""

    def __init__(self):
        super().__init__()
        self.up, self.bn = nn.ConvTranspose2d(4, 6, 2, stride=2), _non_trivial(nn.BatchNorm2d(6))

    def forward(self, x):
        return F.relu(self.bn(self.up(x)))


class DepthwiseConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)

    def forward(self, x):
        return self.dw(x)


class Conv1dSame(nn.Module):
    """padding="same" exports as aten.conv1d.padding."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 4, padding="same")

    def forward(self, x):
        return self.conv(x)


class LinearClamp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x):
        return torch.clamp(self.fc(x), -0.5, 0.5)


# -- ops between layers ---------------------------------------------------------------
class Add(nn.Module):
    def forward(self, a, b):
        return a + b


class Sub(nn.Module):
    def forward(self, a, b):
        return a - b


class MulRelu(nn.Module):
    """XNNPACK's mul fuses no activation: mul gets its own qparams, relu shares them."""

    def forward(self, a, b):
        return F.relu(a * b)


class AddRelu6(nn.Module):
    """add fuses relu only: a hardtanh after it is a standalone int8 clamp."""

    def forward(self, a, b):
        return F.relu6(a + b)


class ResidualIntoNorm(nn.Module):
    """A residual add that only feeds LayerNorm: no int8 neighbour, so it stays float."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(8)

    def forward(self, a, b):
        return self.norm(a + b)


class SmallCNN(nn.Module):
    """int8 through a CNN: conv → relu → max-pool → pad → conv → relu6 → cat (with an
    avg-pooled branch) → permute → permute → bilinear upsample → transposed conv → mean → linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3)
        self.side = nn.Conv2d(8, 8, 1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        a = F.relu6(self.c2(F.pad(h, (1, 1, 1, 1))))
        b = F.avg_pool2d(self.side(F.pad(h, (1, 1, 1, 1))), 3, stride=1)
        y = torch.cat([a, b], dim=1).permute(0, 2, 3, 1).permute(0, 3, 1, 2)
        y = self.up(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False))
        return self.head(torch.flatten(y.mean((2, 3), keepdim=True), 1))


@dataclass(frozen=True)
class Case:
    model: type[nn.Module]
    shapes: tuple[tuple[int, ...], ...]
    config: q.QuantConfig
    counts: dict  # expected q/dq nodes by op in the converted graph
    min_sqnr: float  # dB against the float model


CASES: dict[str, Case] = {
    "conv-transpose2d-relu/static": Case(ConvTranspose2dRelu, ((2, 4, 6, 6),), STATIC, {Q: 2, DQ: 2, DQ_CH: 1}, 30),
    "conv-transpose2d-relu/static-per-tensor": Case(ConvTranspose2dRelu, ((2, 4, 6, 6),), STATIC_PT,
                                                    {Q: 2, DQ: 3}, 30),
    "conv-transpose2d-relu/dynamic": Case(ConvTranspose2dRelu, ((2, 4, 6, 6),), DYNAMIC,
                                          {CHOOSE: 1, Q_T: 1, DQ_T: 1, DQ_CH: 1}, 30),
    "conv-transpose2d-relu/weight-only": Case(ConvTranspose2dRelu, ((2, 4, 6, 6),), WEIGHT_ONLY, {DQ_CH: 1}, 35),
    # groups=2: XNNPACK takes per-channel deconv weights only with groups == 1
    "conv-transpose2d-grouped/static": Case(ConvTranspose2dGrouped, ((2, 4, 6, 6),), STATIC, {Q: 2, DQ: 3}, 30),
    "conv-transpose1d/static": Case(ConvTranspose1d, ((2, 4, 10),), STATIC, {Q: 2, DQ: 2, DQ_CH: 1}, 30),
    "conv-bn-relu/static": Case(ConvBnRelu, ((2, 3, 8, 8),), STATIC, {Q: 2, DQ: 2, DQ_CH: 1}, 30),
    "conv-transpose-bn-relu/static": Case(ConvTransposeBnRelu, ((2, 4, 6, 6),), STATIC, {Q: 2, DQ: 2, DQ_CH: 1}, 30),
    "depthwise-conv/static": Case(DepthwiseConv, ((2, 6, 8, 8),), STATIC, {Q: 2, DQ: 2, DQ_CH: 1}, 30),
    "conv1d-same/static": Case(Conv1dSame, ((2, 4, 12),), STATIC, {Q: 2, DQ: 2, DQ_CH: 1}, 30),
    "linear-clamp/static": Case(LinearClamp, ((8, 16),), STATIC, {Q: 2, DQ: 2, DQ_CH: 1}, 30),
    "add/static": Case(Add, ((2, 8, 4, 4),) * 2, STATIC, {Q: 3, DQ: 3}, 30),
    "sub/static-per-tensor": Case(Sub, ((2, 8, 4, 4),) * 2, STATIC_PT, {Q: 3, DQ: 3}, 30),
    "mul-relu/static": Case(MulRelu, ((2, 8, 4, 4),) * 2, STATIC, {Q: 4, DQ: 4}, 25),
    "add-relu6/static": Case(AddRelu6, ((2, 8, 4, 4),) * 2, STATIC, {Q: 4, DQ: 4}, 25),
    "residual-into-norm/static-left-float": Case(ResidualIntoNorm, ((4, 8),) * 2, STATIC, {}, 200),
    "cnn/static": Case(SmallCNN, ((2, 3, 16, 16),), STATIC, {}, 20),
    "cnn/static-per-tensor": Case(SmallCNN, ((2, 3, 16, 16),), STATIC_PT, {}, 20),
}


def inputs(case: Case, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*s, generator=g) for s in case.shapes)


@functools.cache
def quantized(case_id: str) -> tuple[nn.Module, torch.fx.GraphModule]:
    """(float model, converted GraphModule) of a case, calibrated on 4 seeded batches."""
    case = CASES[case_id]
    torch.manual_seed(0)
    model = case.model().eval()
    calibration = [inputs(case, seed) for seed in range(4)]
    quantizer = q.Int8Quantizer().set_global(case.config)
    return model, q.quantize(model, inputs(case), calibration=calibration, quantizer=quantizer)
