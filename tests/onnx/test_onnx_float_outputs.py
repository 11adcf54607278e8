"""KeepGemmOutputFloatPass and its reference: a static linear read only in float writes float."""

from __future__ import annotations

import collections
import copy

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from torch import nn

import pt2e_int8 as q
from backends.onnx.export import export_onnx
from backends.onnx.float_output_reference import keep_linear_outputs_float
from backends.onnx.passes import (
    FoldWeightTransposePass,
    KeepGemmOutputFloatPass,
    QuantizeBiasPass,
    RewriteLinearAsGemmPass,
)
from backends.onnx.reference import onnx_reference
from pt2e_int8.qdq import is_quantize
from tests.onnx._models import counts, fresh, run

D = 32


class PostNorm(nn.Module):
    """BERT's FFN output: linear → residual add → LayerNorm, output channel 3 huge (so the
    smoothing preset rescales it with a float multiply)."""

    def __init__(self):
        super().__init__()
        self.fc, self.norm = nn.Linear(D, D), nn.LayerNorm(D)
        with torch.no_grad():
            self.fc.bias[3] = 200.0

    def forward(self, x):
        return self.norm(x + self.fc(x))


class Chain(nn.Module):
    """fc's result is read by another int8 linear (through a view): it must stay int8; `out`'s
    goes into a residual LayerNorm (float) and `head`'s is the model's output: neither fires."""

    def __init__(self):
        super().__init__()
        self.fc, self.out, self.norm, self.head = nn.Linear(D, D), nn.Linear(D, D), nn.LayerNorm(D), nn.Linear(D, D)

    def forward(self, x):
        h = self.fc(x)
        return self.head(self.norm(x + self.out(h.view(h.shape[0], -1, D))))


def _quantized(model, smooth: bool):
    torch.manual_seed(0)
    x = torch.randn(4, 6, D)
    cal = [(torch.randn(4, 6, D),) for _ in range(8)]
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.static(smooth=smooth))
    return q.quantize(model.eval(), (x,), calibration=cal, quantizer=quantizer, progress=False), x


def _through_gemm(qm, x) -> ir.Model:
    model = fresh(qm, x)
    for p in (FoldWeightTransposePass(), QuantizeBiasPass(), RewriteLinearAsGemmPass()):
        p(model)
    return model


@pytest.fixture(scope="module")
def post_norm():
    torch.manual_seed(0)
    qm, x = _quantized(PostNorm(), smooth=True)
    assert any(n.target == torch.ops.aten.mul.Tensor for n in qm.graph.nodes), "the rescale did not fire"
    return qm, x


def test_fires_and_folds_the_rescale_multiply(post_norm):
    qm, x = post_norm
    model = _through_gemm(qm, x)
    before, ref = counts(model), run(model, x)
    assert KeepGemmOutputFloatPass()(model).modified
    after = counts(model)
    assert after["Gemm"] == 1 and after["Mul"] == before["Mul"] - 1, (before, after)
    assert after["QuantizeLinear"] == before["QuantizeLinear"] - 1, (before, after)
    assert after["DequantizeLinear"] == before["DequantizeLinear"] - 1, (before, after)
    # Only the linear's output rounding is gone: LayerNorm's output moves by far less than its range.
    got = run(model, x)
    err = np.abs(got - ref).max()
    assert 0 < err < 0.05 * np.abs(ref).max(), err


@pytest.mark.parametrize(("target", "style"), [("x86-vnni", "qdq"), ("x86-avx2", "qdq"), ("arm64", "qdq"),
                                             ("x86-vnni", "qop")])
def test_file_matches_onnx_reference_exactly(post_norm, tmp_path, target, style):
    """Every target's weight storage (uint8-shifted on AVX2) and the explicit-operator style
    (QGemm without an output scale) compute what onnx_reference computes, bit for bit."""
    qm, x = post_norm
    res = export_onnx(qm, (x,), tmp_path / "m.onnx", target=target, style=style)
    ops = collections.Counter(n.op_type for n in onnx.load(str(res.path)).graph.node)
    assert ops["Mul"] == 0 and ops["QuantizeLinear"] == 1, ops  # the input's quantize only
    assert ops["QGemm" if style == "qop" else "Gemm"] == 1, ops
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        ref, converted = onnx_reference(qm)(x), qm(x)
    assert torch.equal(got, ref), float((got - ref).abs().max())
    # ... and the reference keeps the linear float, so it differs from the converted graph
    # (which rounds the linear's output to int8) by a fraction of that output's range.
    assert 0 < float((ref - converted).abs().max()) < 0.05 * float(converted.abs().max())


def _quantize_follows(gemm: ir.Node) -> bool:
    return any(c.op_type == "QuantizeLinear" for c in gemm.outputs[0].consumers())


def test_fires_only_where_every_reader_is_float():
    qm, x = _quantized(Chain(), smooth=False)
    model = _through_gemm(qm, x)
    assert KeepGemmOutputFloatPass()(model).modified
    kept = [_quantize_follows(n) for n in model.graph if n.op_type == "Gemm"]
    assert sorted(kept) == [False, True, True], kept  # `out` writes float; `fc` and `head` int8
    # The converted graph's side makes the same choice, for the same linear.
    ref = copy.deepcopy(qm)
    names = keep_linear_outputs_float(ref)
    assert len(names) == 1, names
    (out,) = [n for n in ref.graph.nodes if n.name in names]
    scopes = [name for name, _ in (out.meta.get("nn_module_stack") or {}).values()]
    assert scopes[-1] == "out", scopes
    linears = [n for n in ref.graph.nodes if n.target == torch.ops.aten.linear.default]
    assert sum(any(is_quantize(u) for u in n.users) for n in linears) == 2
