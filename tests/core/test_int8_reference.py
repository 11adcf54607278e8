"""int8_reference: which layers it rewrites (fires / must not fire), and that it computes the
exact integer result where the converted graph's fp32 sum is off at a rounding tie."""

from __future__ import annotations

import torch
from torch import nn

import pt2e_int8 as q
from pt2e_int8.int8_reference import int8_layer, int8_reference


def _quantize(model, cfg, x):
    return q.quantize(model.eval(), (x,), calibration=[(x,)], quantizer=q.Int8Quantizer().set_global(cfg),
                      progress=False)


def _rewritten(gm) -> int:
    return sum(n.op == "call_function" and n.target is int8_layer for n in gm.graph.nodes)


def test_fires_on_static_linears_and_leaves_the_converted_graph_alone():
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    qm = _quantize(nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8)), q.QuantConfig.static(), x)
    before = qm.code
    ref = int8_reference(qm)
    assert _rewritten(ref) == 2
    assert qm.code == before  # a copy: the graph that gets lowered is untouched
    with torch.no_grad():
        a, b = qm(x), ref(x)
    assert (a - b).abs().max().item() <= 1.01 * float(qm.graph.find_nodes(op="output")[0].args[0][0].args[1])


def test_must_not_fire_on_dynamic_layers_or_float_models():
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8))
    assert _rewritten(int8_reference(_quantize(model, q.QuantConfig.dynamic(), x))) == 0
    assert int8_reference(model) is model


def test_integer_accumulation_is_exact_where_fp32_is_not():
    """xq·wq summed exactly in int, then one fp32 multiply: the value an int8 kernel rounds."""
    g = torch.Generator().manual_seed(0)
    xq = torch.randint(-128, 128, (512, 1536), generator=g, dtype=torch.int8)
    wq = torch.randint(-127, 128, (384, 1536), generator=g, dtype=torch.int8)
    sx, sw, sy = 0.0517, torch.full((384,), 0.0031), 0.9
    got = int8_layer("aten.linear.default", (None, None, None), 0, 1, 2, "linear", xq, sx, 0, wq, sw,
                     torch.zeros(384, dtype=torch.int64), 0, None, sy, 0, -128, 127)
    acc = xq.long() @ wq.long().T  # exact, in int64
    mult = torch.tensor(sx, dtype=torch.float32) * sw / torch.tensor(sy, dtype=torch.float32)
    want = torch.round((acc.float() * mult).clamp(-128, 127))
    assert torch.equal(torch.round(got.double() / sy), want.double())
    # the converted graph's way (fp32 sum of dequantized values) rounds some of them differently
    fp32 = torch.nn.functional.linear(xq.float() * sx, wq.float() * sw[:, None]) / sy
    assert (torch.round(fp32.clamp(-128, 127)) != want).any()
