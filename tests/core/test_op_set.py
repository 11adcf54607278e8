"""The XNNPACK int8 op set, per family and scheme: exact q/dq counts, SQNR against float, and
int8 end to end through a small CNN (no float edge between two ops but fused activations)."""

from __future__ import annotations

import pytest
import torch

import pt2e_int8 as q
from pt2e_int8.decision import decision_of
from pt2e_int8.ops import FUSED_ACTIVATIONS, INT8_INPUT_OPS
from pt2e_int8.qdq import QDQ_OPS, is_dequantize, is_quantize
from tests.core._helpers import op_counts
from tests.core._op_models import CASES, inputs, quantized


@pytest.mark.parametrize("case_id", CASES, ids=CASES)
def test_family(case_id):
    case = CASES[case_id]
    model, qm = quantized(case_id)
    if case.counts or case_id.endswith("left-float"):
        counts = dict(op_counts(qm))
        assert counts == case.counts, f"q/dq counts {counts}"
    x = inputs(case, seed=7)
    with torch.no_grad():
        db = q.sqnr(model(*x), qm(*x))
    assert db > case.min_sqnr, f"SQNR {db:.1f} dB <= {case.min_sqnr} dB"


def float_edges(gm: torch.fx.GraphModule) -> list[str]:
    """Float ops, and edges that carry a float tensor into or out of an op outside a fused pair.

    In a graph that is int8 end to end, every op can take int8 (ops.INT8_INPUT_OPS), reads
    dequantized inputs and has its result quantized, except a layer → fused activation pair
    (one int8 kernel). dq → LayerNorm → q is a float island however quantized it looks.
    """
    compute = [n for n in gm.graph.nodes if n.op == "call_function" and n.target not in QDQ_OPS]
    found = [f"{n.name} runs in float" for n in compute if n.target not in INT8_INPUT_OPS]
    for node in compute:
        for arg in node.all_input_nodes:
            val = arg.meta.get("val")
            if not (isinstance(val, torch.Tensor) and val.dtype.is_floating_point) or arg.op == "get_attr":
                continue
            fused = arg.op == "call_function" and node.target in FUSED_ACTIVATIONS.get(arg.target, ())
            if not is_dequantize(arg) and not fused:
                found.append(f"{arg.name} → {node.name}")
        for user in node.users:
            fused = node.target in FUSED_ACTIVATIONS and user.target in FUSED_ACTIVATIONS[node.target]
            if not is_quantize(user) and not fused and user.op != "output":
                found.append(f"{node.name} → {user.name}")
    return found


@pytest.mark.parametrize("case_id", ["cnn/static", "cnn/static-per-tensor"])
def test_int8_flows_through_a_cnn(case_id):
    _, qm = quantized(case_id)
    assert not float_edges(qm), f"float islands: {float_edges(qm)}"
    targets = {n.target for n in qm.graph.nodes if n.op == "call_function"}
    aten = torch.ops.aten
    for op in (aten.max_pool2d.default, aten.pad.default, aten.avg_pool2d.default, aten.cat.default,
               aten.permute.default, aten.upsample_bilinear2d.vec, aten.conv_transpose2d.input, aten.mean.dim):
        assert op in targets, f"{op} not in the exported CNN: the test model no longer covers it"


def test_float_edges_sees_an_island():
    """The checker above must be able to fail: a float LayerNorm between two int8 linears."""

    class Island(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.norm, self.b = torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.b(self.norm(self.a(x)))

    x = torch.randn(4, 8)
    qm = q.quantize(Island().eval(), (x,), calibration=[(x,)])
    assert float_edges(qm), "a float LayerNorm between two linears went unnoticed"


def test_standalone_ops_say_why_they_stay_float():
    """Ops XNNPACK cannot run in int8 are left float, with the backend's reason."""

    class Unsupported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            h = self.conv(x)
            return h.mean(1, keepdim=True), torch.nn.functional.avg_pool2d(h, 3, ceil_mode=True)

    x = torch.randn(2, 3, 9, 9)
    qm = q.quantize(Unsupported().eval(), (x,), calibration=[(x,)])
    reasons = {n.target: decision_of(n).reason for n in qm.graph.nodes if decision_of(n) is not None}
    aten = torch.ops.aten
    assert "H and W of a 4-D tensor" in reasons[aten.mean.dim], reasons
    assert "ceil mode" in reasons[aten.avg_pool2d.default], reasons


def test_residual_into_norm_stays_float_with_reason():
    _, qm = quantized("residual-into-norm/static-left-float")
    add = next(n for n in qm.graph.nodes if n.target == torch.ops.aten.add.Tensor)
    assert "only feeds float ops" in decision_of(add).reason


def test_conv_transpose_bn_relu_qat_folds_into_one_int8_deconvolution():
    from tests.core._op_models import DQ, DQ_CH, ConvTransposeBnRelu, Q

    torch.manual_seed(0)
    x = torch.randn(4, 4, 6, 6)
    pm = q.prepare_qat(ConvTransposeBnRelu(), (x,))
    with torch.no_grad():
        for seed in range(3):
            pm(torch.randn(4, 4, 6, 6, generator=torch.Generator().manual_seed(seed)))
    pm.eval()
    with torch.no_grad():
        fake_quant = pm(x)
    qm = q.convert(pm)
    assert dict(op_counts(qm)) == {Q: 2, DQ: 2, DQ_CH: 1}
    assert not [n for n in qm.graph.nodes if n.target == torch.ops.aten.batch_norm.default], "batch-norm not folded"
    (row,) = q.coverage(qm).layers
    assert row.quantized and row.scheme == "static+qat/per-channel", row
    with torch.no_grad():
        db = q.sqnr(fake_quant, qm(x))
    assert db > 30, f"converted vs fake-quantized model: SQNR {db:.1f} dB"


def test_residual_through_data_movement_into_norm_stays_float():
    """feeds_int8 looks through data movement: add → transpose → LayerNorm has no int8 consumer."""

    class TransposedResidual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.norm = torch.nn.Linear(8, 8), torch.nn.LayerNorm(4)

        def forward(self, x):
            return self.norm((x + self.fc(x)).transpose(1, 2))

    x = torch.randn(2, 4, 8)
    qm = q.quantize(TransposedResidual().eval(), (x,), calibration=[(x,)])
    add = next(n for n in qm.graph.nodes if n.target == torch.ops.aten.add.Tensor)
    assert "only feeds float ops" in decision_of(add).reason


class _InPlaceResidual(torch.nn.Module):
    """torchvision's BasicBlock: `out += identity` (add_) and one ReLU module called twice."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.relu = torch.nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.conv2(self.relu(self.conv1(x)))
        out += x
        return self.relu(out)


def test_in_place_residual_add_is_int8():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), _InPlaceResidual(), _InPlaceResidual()).eval()
    qm = q.quantize(model, (torch.randn(2, 3, 6, 6),), calibration=[(torch.randn(2, 3, 6, 6),)])
    adds = [n for n in qm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.add_.Tensor]
    assert len(adds) == 2, "the model no longer exports an in-place add"
    for add in adds:
        assert all(is_dequantize(a) for a in add.args[:2]), f"{add.name} adds float tensors"
        (relu,) = add.users
        assert any(is_quantize(u) for u in relu.users), f"{add.name}'s relu output stays float"
    assert not float_edges(qm), f"float islands: {float_edges(qm)}"


class _SqueezeExcite(torch.nn.Module):
    """MobileNetV3's block: hardswish (float: no qs8 kernel), then a mean feeding the SE convs."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = torch.nn.functional.hardswish(self.conv(x))
        return y * torch.sigmoid(self.fc(y.mean((2, 3), keepdim=True)))


def test_mean_after_a_float_op_feeding_a_conv_is_int8():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    qm = q.quantize(_SqueezeExcite().eval(), (x,), calibration=[(x,)])
    (mean,) = [n for n in qm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.mean.dim]
    assert is_dequantize(mean.args[0]), "the mean reads float: XNNPACK would run it between two converts"
    assert any(is_quantize(u) for u in mean.users), "the mean's output is not quantized"
