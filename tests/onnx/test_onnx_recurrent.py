"""Recurrent layers in ONNX: the core unrolls them into int8 linears, the ONNX backend fuses them back
into ONNX Runtime's LSTM / GRU op (faster there, bench/recurrent.md) and says so in placement; and a
weight read by several linears is stored once."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import pt2e_int8 as q
from backends.onnx import export_onnx
from backends.onnx.recompose_recurrent import RecomposeRecurrentPass
from backends.onnx.runtime import load_onnx

STEPS, HIDDEN = 6, 32


class Classifier(nn.Module):
    def __init__(self, cell: str) -> None:
        super().__init__()
        self.rnn = getattr(nn, cell)(8, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, 4)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def _quantized(cell: str, scheme: str):
    torch.manual_seed(0)
    model = Classifier(cell).eval()
    x = torch.randn(16, STEPS, 8)
    cfg = q.QuantConfig.static() if scheme == "static" else q.QuantConfig.dynamic()
    return model, x, q.quantize(model, (x[:4],), calibration=[(x,)], quantizer=q.Int8Quantizer().set_global(cfg))


@pytest.mark.parametrize("scheme", ["static", "dynamic"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_recurrent_layer_is_fused_back_in_onnx(cell, scheme, tmp_path):
    model, x, qm = _quantized(cell, scheme)
    res = export_onnx(qm, (x[:4],), tmp_path / f"{cell}-{scheme}.onnx")
    ops = [n.op_type for n in onnx.load(str(res.path)).graph.node]
    assert ops.count(cell) == 1, ops
    for row in ("rnn.weight_ih_l0", "rnn.weight_hh_l0"):
        assert res.placement[row] == "float" and f"ONNX Runtime's {cell} op" in res.detail[row], res.detail
    assert res.placement["head"] == "int8", res.detail
    session = load_onnx(res.path)
    for batch in (1, 4):
        xb = torch.randn(batch, STEPS, 8)
        with torch.no_grad():
            want, converted = model(xb), qm(xb)
        out = torch.as_tensor(np.asarray(session.run([xb])[0]))
        # The fused op computes in float on the int8-rounded weights: about as close to the float model
        # as the converted graph (int8 activations at every step), often closer (measured 27-50 dB).
        db, db_graph = q.sqnr(want, out), q.sqnr(want, converted)
        assert db >= min(25.0, db_graph - 3.0), f"{cell} {scheme} batch {batch}: {db:.1f} dB vs float, graph {db_graph:.1f} dB"


def test_recompose_fires_only_on_tagged_graphs():
    _, x, qm = _quantized("LSTM", "dynamic")
    fired = RecomposeRecurrentPass()(qm.__deepcopy__({}))
    assert fired.modified
    targets = [n.target for n in fired.graph_module.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.aten.lstm.input) == 1 and torch.ops.aten.linear.default in targets  # the head
    plain = q.quantize(nn.Sequential(nn.Linear(8, 8)).eval(), (torch.randn(2, 8),),
                       quantizer=q.Int8Quantizer().set_global(q.QuantConfig.dynamic()))
    assert not RecomposeRecurrentPass()(plain).modified


class Shared(nn.Module):
    """One Linear read twice: dynamic ONNX used to store its transposed weight once per use."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 24)

    def forward(self, a, b):
        return self.fc(a) + self.fc(b)


def test_a_weight_read_twice_is_stored_once(tmp_path):
    torch.manual_seed(0)
    args = (torch.randn(2, 16), torch.randn(2, 16))
    qm = q.quantize(Shared().eval(), args, quantizer=q.Int8Quantizer().set_global(q.QuantConfig.dynamic()))
    res = export_onnx(qm, args, tmp_path / "shared.onnx")
    weights = [i for i in onnx.load(str(res.path)).graph.initializer if sorted(i.dims) == [16, 24]]
    assert len(weights) == 1, [i.name for i in weights]
