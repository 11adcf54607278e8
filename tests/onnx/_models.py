"""Small models and measures for the ONNX backend tests."""

from __future__ import annotations

import collections
import math

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from backends.onnx.export import to_onnx_ir
from pt2e_int8.qdq import is_dequantize


def run(model: ir.Model, x: torch.Tensor, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL) -> np.ndarray:
    """An onnx_ir model's first output in ONNX Runtime (graph optimizations off by default)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    data = ir.serde.serialize_model(model).SerializeToString()
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def fresh(qm, x) -> ir.Model:
    """The converted `qm` as torch.onnx writes it (opset 20, dynamic batch), before our passes."""
    return to_onnx_ir(qm, (x,), opset=20, dynamic_shapes="batch")[0]


def counts(model) -> collections.Counter:
    """Node count per op type of an onnx_ir graph."""
    return collections.Counter(n.op_type for n in model.graph)


class LinearRelu(nn.Module):
    def __init__(self, k: int = 32, n: int = 48):
        super().__init__()
        self.fc = nn.Linear(k, n)

    def forward(self, x):
        return F.relu(self.fc(x))


class Linear(nn.Module):
    def __init__(self, k: int = 32, n: int = 16):
        super().__init__()
        self.fc = nn.Linear(k, n)

    def forward(self, x):
        return self.fc(x)


class ConvBnRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class AttentionScores(nn.Module):
    """q, k projections and the activation × activation matmul between them."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.q, self.k = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        return torch.matmul(self.q(x), self.k(x).transpose(-1, -2))


class Block(nn.Module):
    """One pre-norm transformer layer (eager matmul attention, LayerNorm, GELU MLP) and a linear head."""

    def __init__(self, d: int = 64, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, d)

    def forward(self, x):
        b, s, d = x.shape
        qkv = self.qkv(self.ln1(x)).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (1 / math.sqrt(d // self.heads)), -1)
        ctx = torch.matmul(att, v).permute(0, 2, 1, 3).reshape(b, s, d)
        x = x + self.proj(ctx)
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.head(x)


class PostNormBlock(Block):
    """BERT's layer order: LayerNorm after each residual Add (the Add feeds only the LayerNorm)."""

    def forward(self, x):
        b, s, d = x.shape
        qkv = self.qkv(x).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (1 / math.sqrt(d // self.heads)), -1)
        x = self.ln1(x + self.proj(torch.matmul(att, v).permute(0, 2, 1, 3).reshape(b, s, d)))
        x = self.ln2(x + self.fc2(F.gelu(self.fc1(x))))
        return self.head(x)


def output_step(gm: torch.fx.GraphModule) -> float:
    """The quantization step of the converted graph's (single) output."""
    (out,) = [n for n in gm.graph.nodes if n.op == "output"]
    node = out.args[0][0] if isinstance(out.args[0], (tuple, list)) else out.args[0]
    assert is_dequantize(node), f"output {node} is not dequantized: pick a model with a quantized output"
    return float(node.args[1])


def steps(reference: torch.Tensor, approx: torch.Tensor, step: float) -> float:
    return (reference.double() - approx.double()).abs().max().item() / step


def op_counts(path) -> collections.Counter:
    """ONNX node counts keyed by op type (domain-qualified outside the default domain)."""
    model = onnx.load(str(path))
    return collections.Counter(n.op_type if not n.domain else f"{n.domain}.{n.op_type}" for n in model.graph.node)


def initializer(path, name: str) -> np.ndarray:
    model = onnx.load(str(path))
    (init,) = [i for i in model.graph.initializer if i.name == name]
    return onnx.numpy_helper.to_array(init)
