"""Small models whose int8 layers are wide enough that an fp32 sum of dequantized values and an
int8 kernel's exact int32 sum round differently at some output elements (pt2e_int8.int8_reference)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def wide_mlp() -> nn.Module:
    """Two static linears with K = 1024 and 512: an fp32 sum lands on the other side of a rounding tie about once per 100,000 outputs."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 256)).eval()


class TinyBlock(nn.Module):
    """One post-norm encoder layer: attention (matmul, softmax), residual + LayerNorm, GELU FFN."""

    def __init__(self, d: int = 64, ffn: int = 1024, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.up, self.down = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.head = nn.Linear(d, d)  # a quantized output: steps are defined by its quantize

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (lin(x).view(b, t, self.heads, -1).transpose(1, 2) for lin in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v
        x = self.ln1(x + self.o(att.transpose(1, 2).reshape(b, t, d)))
        x = self.ln2(x + self.down(F.gelu(self.up(x))))
        return self.head(x)


def tiny_transformer() -> nn.Module:
    torch.manual_seed(0)
    return TinyBlock().eval()


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class NormBlock(nn.Module):
    """Linear, residual add, LayerNorm, linear: the LayerNorm's float output feeds a static quantize."""

    def __init__(self, d: int = 256) -> None:
        super().__init__()
        self.proj, self.ln, self.head = nn.Linear(d, d), nn.LayerNorm(d), nn.Linear(d, d)

    def forward(self, x):
        return self.head(self.ln(x + self.proj(x)))


def norm_block() -> nn.Module:
    torch.manual_seed(0)
    block = NormBlock().eval()
    with torch.no_grad():  # an affine LayerNorm, as trained ones are
        block.ln.weight.uniform_(0.5, 2.0)
        block.ln.bias.uniform_(-0.5, 0.5)
    return block


def _identity_head(block: nn.Module) -> nn.Module:
    """`block.head` made the identity: output i is the float op's value i, so one int8 level of it
    moves the output one step."""
    with torch.no_grad():
        block.head.weight.copy_(torch.eye(block.head.in_features))
        block.head.bias.zero_()
    return block


class SoftmaxBlock(nn.Module):
    """Softmax into a static linear: the float probabilities feed a static quantize, as attention's do."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.head = nn.Linear(d, d)

    def forward(self, x):
        return self.head(torch.softmax(x, dim=-1))


def softmax_block() -> nn.Module:
    torch.manual_seed(0)
    return _identity_head(SoftmaxBlock().eval())  # output i is probability i


class GeluBlock(nn.Module):
    """GELU of float inputs into a static linear: the GELU values feed a static quantize, as a
    BERT FFN's do once its up-projection writes float (ONNX)."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.head = nn.Linear(d, d)

    def forward(self, x):
        return self.head(F.gelu(x))


def gelu_block() -> nn.Module:
    torch.manual_seed(0)
    return _identity_head(GeluBlock().eval())  # output i is GELU value i


class LayerNormBlock(nn.Module):
    """LayerNorm into a static linear: the float normalized values feed a static quantize, as a
    post-norm encoder's do."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, d)

    def forward(self, x):
        return self.head(self.norm(x))


def layer_norm_block() -> nn.Module:
    torch.manual_seed(0)
    block = LayerNormBlock().eval()
    with torch.no_grad():  # a trained-looking affine; output i is normalized value i
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.uniform_(-0.2, 0.2)
    return _identity_head(block)
