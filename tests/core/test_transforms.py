"""Pre-annotation transforms: each fires where it should and leaves the rest, exactly in float."""

from __future__ import annotations

import collections
import copy

import torch
from torch import nn

from pt2e_int8.capture import export_model
from pt2e_int8.transforms import RewriteClampAsHardtanhPass, run_transforms

aten = torch.ops.aten


class Clamps(nn.Module):
    """A clamp after a linear (fused by XNNPACK once it is hardtanh), clamp(min=0) after a
    conv, and clamps XNNPACK runs standalone: on the input, and one-sided after a linear."""

    def __init__(self):
        super().__init__()
        self.fc, self.fc2 = nn.Linear(16, 8), nn.Linear(16, 8)
        self.conv = nn.Conv1d(1, 2, 3)

    def forward(self, x):
        a = torch.clamp(self.fc(torch.clamp(x, -1.0, 1.0)), -0.5, 0.5)
        b = torch.clamp(self.fc2(x), min=-0.25)
        c = torch.clamp(self.conv(x[:, None]), min=0)
        return a, b, c


def _counts(gm):
    return collections.Counter(n.target for n in gm.graph.nodes if n.op == "call_function")


def test_clamp_after_layer_becomes_hardtanh_or_relu():
    x = torch.randn(4, 16)
    gm = export_model(Clamps().eval(), (x,), "batch").module()
    before = copy.deepcopy(gm)
    after, fired = run_transforms(gm, [RewriteClampAsHardtanhPass()])
    assert fired == ["RewriteClampAsHardtanhPass"]
    counts = _counts(after)
    assert counts[aten.hardtanh.default] == 1 and counts[aten.relu.default] == 1, counts
    assert counts[aten.clamp.default] == 2, "the input clamp and the one-sided clamp must stay"
    with torch.no_grad():
        for ref, out in zip(before(x), after(x), strict=True):
            assert torch.equal(ref, out)


def test_clamp_elsewhere_is_left_alone():
    class InputClamp(nn.Module):
        def forward(self, x):
            return torch.clamp(x, -1.0, 1.0) * 2

    x = torch.randn(4, 16)
    gm = export_model(InputClamp().eval(), (x,), "batch").module()
    counts = _counts(gm)
    result = RewriteClampAsHardtanhPass().call(gm)
    assert not result.modified and _counts(result.graph_module) == counts
