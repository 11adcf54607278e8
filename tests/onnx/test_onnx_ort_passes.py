"""The passes that make ONNX Runtime's CPU provider fast and faithful on transformers: each fires on
its pattern and leaves the rest alone, with node counts and numerics checked."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx_ir.passes.common import RemoveUnusedNodesPass

import pt2e_int8 as q
from backends.onnx import export_onnx
from backends.onnx.export import to_onnx_ir
from backends.onnx.passes import (
    ClampMaskedSoftmaxPass,
    CollapseDynamicQuantizePass,
    FlattenResidualLayerNormPass,
    FoldWeightTransposePass,
    KeepDynamicConvFloatPass,
    QuantizeActivationRowsPass,
    RewriteDynamicLinearPass,
)
from backends.onnx.passes.keep_dynamic_conv_float import REASON
from tests.onnx._models import Block, ConvBnRelu, Linear, PostNormBlock, counts


def session(model: ir.Model, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized: Path | None = None):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def run(model: ir.Model, *inputs: torch.Tensor, **kw) -> np.ndarray:
    sess = session(model, **kw)
    return sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs, strict=True)})[0]


def ort_kernels(model: ir.Model) -> collections.Counter:
    """Op types of ONNX Runtime's fully optimized graph of `model` (what really runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        session(model, optimized=out)
        return collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node)


def fresh(qm, *args) -> ir.Model:
    return to_onnx_ir(qm, args, opset=20, dynamic_shapes="batch")[0]


# --- QuantizeActivationRowsPass --------------------------------------------------------------

@pytest.fixture(scope="module")
def dynamic_linear():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 32)
    float_model = Linear().eval()
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.dynamic())
    return float_model, q.quantize(float_model, (x,), quantizer=quantizer), x


def _dynamic_form(qm, x) -> ir.Model:
    model = fresh(qm, x)
    for p in (CollapseDynamicQuantizePass(), FoldWeightTransposePass(), RewriteDynamicLinearPass()):
        p(model)
    return model


def _per_row_reference(model: ir.Model, x: torch.Tensor) -> torch.Tensor:
    """What the rewritten file must compute: rows quantized symmetrically to ±127, then x·W + b,
    with W, its scales and b read from the file itself."""
    (mm,) = [n for n in model.graph if n.op_type == "MatMulIntegerToFloat"]
    (add,) = [n for n in model.graph if n.op_type == "Add"]
    w = torch.from_numpy(mm.inputs[1].const_value.numpy().astype(np.float32))
    w_scale = torch.from_numpy(mm.inputs[3].const_value.numpy())
    bias = torch.from_numpy(next(v.const_value.numpy() for v in add.inputs if v.const_value is not None))
    s = x.abs().amax(-1, keepdim=True).clamp(min=1e-30) / 127
    return (torch.round(x / s).clamp(-127, 127) * s) @ (w * w_scale) + bias


def test_quantize_activation_rows_fires_and_scales_each_row(dynamic_linear):
    float_model, qm, _ = dynamic_linear
    x = torch.randn(2, 6, 32) * torch.logspace(-2, 2, 6)[None, :, None]  # rows of very different magnitudes
    model = _dynamic_form(qm, x)
    assert counts(model)["DynamicQuantizeLinear"] == 1
    assert QuantizeActivationRowsPass()(model).modified
    RemoveUnusedNodesPass()(model)  # the zero point's Casts torch.onnx left behind, as in qdq_passes
    c = counts(model)
    assert c["DynamicQuantizeLinear"] == 0 and c["MatMulInteger"] == 0 and c["MatMulIntegerToFloat"] == 1, c
    assert c["Add"] == 1, "the bias must stay a separate Add (ONNX Runtime scales an MMITF bias by a row scale)"
    got = torch.from_numpy(run(model, x))
    torch.testing.assert_close(got, _per_row_reference(model, x), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        ref_float, per_tensor = float_model(x), qm(x)
    small = slice(0, 3)  # the rows whose values are 100-10⁴ times smaller than the largest row's
    gain = q.sqnr(ref_float[:, small], got[:, small]) - q.sqnr(ref_float[:, small], per_tensor[:, small])
    assert gain > 20, f"per-row should keep small rows that per-tensor flattens; gained {gain:.1f} dB"
    assert q.sqnr(ref_float, got) >= q.sqnr(ref_float, per_tensor) - 0.5
    assert ort_kernels(model)["MatMulIntegerToFloat"] == 1  # and ONNX Runtime runs it in int8


def test_quantize_activation_rows_leaves_static_2d_and_other_uses(linear_static, dynamic_linear):
    model = fresh(*linear_static)
    assert not QuantizeActivationRowsPass()(model).modified
    x2d = torch.randn(4, 32)  # rows are samples: per-tensor (one fused DynamicQuantizeMatMul) stays
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.dynamic())
    model = _dynamic_form(q.quantize(Linear().eval(), (x2d,), quantizer=quantizer), x2d)
    assert counts(model)["MatMulInteger"] == 1 and not QuantizeActivationRowsPass()(model).modified
    _, qm, x = dynamic_linear
    model = _dynamic_form(qm, x)
    dql = [n for n in model.graph if n.op_type == "DynamicQuantizeLinear"][0]
    # a second, non-linear use of the quantized activation: per-row would change what it reads
    ident = ir.Node("", "Identity", [dql.outputs[0]], outputs=[ir.Value(name="extra")])
    model.graph.append(ident)
    model.graph.outputs.append(ident.outputs[0])
    assert not QuantizeActivationRowsPass()(model).modified


@pytest.fixture(scope="module")
def linear_static():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 32)
    return q.quantize(Linear().eval(), (x,), calibration=[(torch.randn(4, 5, 32),)]), x


# --- ClampMaskedSoftmaxPass ------------------------------------------------------------------

class MaskedAttention(torch.nn.Module):
    """Scores + Hugging Face's additive mask ((1 - mask) * finfo.min), softmax, context."""

    def forward(self, x, mask):
        scores = x @ x.transpose(-1, -2) / 4
        bias = (1.0 - mask[:, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        return torch.softmax(scores + bias, dim=-1) @ x


class PlainAttention(torch.nn.Module):
    def forward(self, x, mask):
        return torch.softmax(x @ x.transpose(-1, -2) / 4 + mask[:, None, :].to(x.dtype), dim=-1) @ x


def _mask(batch: int, seq: int, keep: int) -> torch.Tensor:
    mask = torch.zeros(batch, seq, dtype=torch.long)
    mask[:, :keep] = 1
    return mask


def test_clamp_masked_softmax_fires_and_changes_nothing_visible():
    torch.manual_seed(0)
    x, mask = torch.randn(2, 64, 16) * 3, _mask(2, 64, 7)
    model = fresh(MaskedAttention().eval(), x, mask)
    before = run(model, x, mask)
    assert ClampMaskedSoftmaxPass()(model).modified
    c = counts(model)
    assert c["Softmax"] == 1 and c["ReduceMax"] == 1 and c["Max"] == 1, c
    after = run(model, x, mask)
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-30)
    with torch.no_grad():
        np.testing.assert_allclose(after, MaskedAttention()(x, mask).numpy(), rtol=1e-5, atol=1e-5)
    # every masked position still gets (numerically) nothing: the masked keys' rows of x do not leak
    x2 = x.clone()
    x2[:, 7:] = 1e3
    ref = MaskedAttention()(x[:, :7], mask[:, :7]).numpy()
    np.testing.assert_allclose(run(model, x2, mask)[:, :7], ref, rtol=1e-5, atol=1e-5)


def test_clamp_masked_softmax_leaves_unmasked_softmax():
    x, mask = torch.randn(2, 8, 16), _mask(2, 8, 8)
    model = fresh(PlainAttention().eval(), x, mask)  # an Add, but of a small bias: no -1e4 constant
    assert not ClampMaskedSoftmaxPass()(model).modified


# --- FlattenResidualLayerNormPass ------------------------------------------------------------

def test_flatten_residual_layer_norm_fires_and_stops_the_skip_fusion():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 64)
    model = fresh(PostNormBlock().eval(), x)
    assert ort_kernels(model)["SkipLayerNormalization"] == 2  # both residual Add → LayerNorm pairs, as is
    before = run(model, x)
    assert FlattenResidualLayerNormPass()(model).modified
    c = counts(model)
    assert c["LayerNormalization"] == 2 and c["Reshape"] >= 4, c
    kernels = ort_kernels(model)
    assert kernels["SkipLayerNormalization"] == 0 and kernels["LayerNormalization"] == 2, kernels
    np.testing.assert_allclose(run(model, x), before, rtol=1e-5, atol=1e-5)


def test_flatten_residual_layer_norm_leaves_pre_norm_and_input_layer_norms():
    x = torch.randn(2, 16, 64)
    assert not FlattenResidualLayerNormPass()(fresh(torch.nn.LayerNorm(64).eval(), x)).modified
    # pre-norm: the residual sum also feeds the next residual Add, which ONNX Runtime does not fuse
    model = fresh(Block().eval(), x)
    assert ort_kernels(model)["SkipLayerNormalization"] == 0
    assert not FlattenResidualLayerNormPass()(model).modified


# --- KeepDynamicConvFloatPass ----------------------------------------------------------------

def test_keep_dynamic_conv_float_fires_on_dynamic_convs(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 12, 12)
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.dynamic())
    qm = q.quantize(ConvBnRelu().eval(), (x,), quantizer=quantizer)
    rows = q.coverage(qm).layers
    assert [r.quantized for r in rows] == [True], str(q.coverage(qm))
    model = fresh(qm, x)
    CollapseDynamicQuantizePass()(model)
    assert KeepDynamicConvFloatPass()(model).modified
    RemoveUnusedNodesPass()(model)
    c = counts(model)
    assert c["DynamicQuantizeLinear"] == c["DequantizeLinear"] == 0 and c["Conv"] == 1, c
    got = torch.from_numpy(run(model, x))
    assert q.sqnr(qm(x), got) > 30  # only the activation rounding is gone
    res = export_onnx(qm, (x,), tmp_path / "conv.onnx")
    (row,) = rows
    assert res.placement[row.name] == "float" and res.detail[row.name] == REASON


def test_keep_dynamic_conv_float_leaves_static_convs(conv_qat):
    model = fresh(conv_qat.qm, conv_qat.inputs)
    CollapseDynamicQuantizePass()(model)
    assert not KeepDynamicConvFloatPass()(model).modified
