"""An LSTM decomposed before annotation (pt2e_int8/transforms/decompose_recurrent.py) exports to ONNX as
int8 linears: each weight stored once however many steps read it, parity with the converted graph at
batch 1 and 4, and placement of its projections in ONNX Runtime's int8 kernels."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import pt2e_int8 as q
from backends.onnx import export_onnx
from backends.onnx.runtime import load_onnx

STEPS, HIDDEN = 6, 32


class LstmClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, 4)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("scheme", ["static", "dynamic"])
def test_lstm_exports_as_int8_linears(scheme, tmp_path):
    torch.manual_seed(0)
    model = LstmClassifier().eval()
    x = torch.randn(16, STEPS, 8)
    cfg = q.QuantConfig.static() if scheme == "static" else q.QuantConfig.dynamic()
    qm = q.quantize(model, (x[:4],), calibration=[(x,)], quantizer=q.Int8Quantizer().set_global(cfg))
    res = export_onnx(qm, (x[:4],), tmp_path / f"lstm-{scheme}.onnx")
    proto = onnx.load(str(res.path))
    # W_hh is [4H, H] (or its transpose): one initializer however many steps read it
    hh = [i for i in proto.graph.initializer if sorted(i.dims) == sorted([4 * HIDDEN, HIDDEN])]
    assert len(hh) == 1, [i.name for i in hh]
    assert res.placement["rnn.weight_hh_l0"] == "int8", res.detail
    assert res.placement["rnn.weight_ih_l0"] == "int8", res.detail
    session = load_onnx(res.path)
    for batch in (1, 4):
        xb = torch.randn(batch, STEPS, 8)
        with torch.no_grad():
            ref = qm(xb)
        out = torch.as_tensor(np.asarray(session.run([xb])[0]))
        db = q.sqnr(ref, out)
        assert db >= 30, f"{scheme} batch {batch}: SQNR {db:.1f} dB against the converted graph"
