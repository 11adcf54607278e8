"""Helpers shared by the core tests: op counts, training loops, the digits MLP."""

import collections
import operator

import torch
import torch.nn.functional as F
from torch import nn

from pt2e_int8.qdq import QDQ_OPS


def op_counts(gm: torch.fx.GraphModule) -> collections.Counter:
    """q/dq/choose_qparams node counts keyed by OpOverload."""
    return collections.Counter(
        n.target for n in gm.graph.nodes if n.op == "call_function" and n.target in QDQ_OPS
    )


def int8_weight_constants(gm: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """The int8 tensors stored in the converted graph (folded quantized weights)."""
    out = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            val = operator.attrgetter(node.target)(gm)
            if isinstance(val, torch.Tensor) and val.dtype == torch.int8:
                out[node.target] = val
    return out


def train(model: nn.Module, x, y, epochs: int, lr: float = 0.01, batch: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item() * 100


class DigitsMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(64, 64), nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


