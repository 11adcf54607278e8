"""Biases on their int32 grid after convert: what every int8 kernel computes with, no more."""

from __future__ import annotations

import torch
from torch import nn

import pt2e_int8 as q


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def _layers(qm):
    aten = torch.ops.aten
    return [n for n in qm.graph.nodes if n.target in (aten.conv2d.default, aten.linear.default)]


def _value(qm, node):
    return qm.get_parameter(node.target) if node.target in dict(qm.named_parameters()) else getattr(qm, node.target)


def test_static_biases_sit_on_the_int32_grid_and_the_model_is_untouched():
    torch.manual_seed(0)
    model = Net().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 3, 8, 8)
    qm = q.quantize(model, (x,), calibration=[(x,)])
    for layer in _layers(qm):
        act, weight, bias = layer.args[:3]
        scale_w = weight.args[1]
        sw = getattr(qm, scale_w.target) if isinstance(scale_w, torch.fx.Node) else torch.tensor(scale_w)
        scale = torch.tensor(act.args[1], dtype=torch.float32) * sw
        b = _value(qm, bias)
        k = b / scale
        assert torch.allclose(k, k.round(), atol=1e-3), f"{layer.name}: bias off the int32 grid"
        original = before[f"{'conv' if 'conv' in layer.name else 'fc'}.bias"]
        assert (b - original).abs().max() <= scale.max() / 2 + 1e-7, f"{layer.name}: bias moved more than half an int32 step"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"the float model's {key} was changed"


def test_dynamic_biases_stay_as_trained():
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(8, 3, 8, 8)
    qm = q.quantize(model, (x,), quantizer=q.Int8Quantizer().set_global(q.QuantConfig.dynamic()))
    fc = next(n for n in qm.graph.nodes if n.target == torch.ops.aten.linear.default)
    assert torch.equal(_value(qm, fc.args[2]), model.fc.bias)
