"""Each ONNX pass: a case where it fires, one where it must not, node counts and numerics."""

from __future__ import annotations

import collections
import operator

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

import pt2e_int8 as q
from backends.onnx.passes import (
    CollapseDynamicQuantizePass,
    ConvertActivationDtypePass,
    FoldWeightTransposePass,
    NameDynamicAxesPass,
    QuantizeBiasPass,
    RewriteDynamicLinearPass,
    RewriteLinearAsGemmPass,
    ShiftWeightsToUint8Pass,
    run_passes,
)
from pt2e_int8.errors import LoweringError
from tests.onnx._models import Linear, counts, fresh, run


@pytest.fixture(scope="module")
def linear_3d():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 32)
    qm = q.quantize(Linear().eval(), (x,), calibration=[(torch.randn(4, 5, 32),) for _ in range(4)])
    return qm, x


@pytest.fixture(scope="module")
def linear_3d_dynamic():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 32)
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.dynamic())
    return q.quantize(Linear().eval(), (x,), quantizer=quantizer), x


@pytest.fixture(scope="module")
def linear_2d_weight_only():
    torch.manual_seed(0)
    x = torch.randn(4, 32)
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.weight_only())
    return q.quantize(Linear().eval(), (x,), quantizer=quantizer), x


def test_fold_weight_transpose_fires_on_nd_linear(linear_3d):
    model = fresh(*linear_3d)
    before = counts(model)
    assert FoldWeightTransposePass()(model).modified
    after = counts(model)
    assert before["Transpose"] == 1 and after["Transpose"] == 0, (before, after)
    np.testing.assert_array_equal(run(model, linear_3d[1]), run(fresh(*linear_3d), linear_3d[1]))


def test_fold_weight_transpose_leaves_2d_gemm(linear_2d_weight_only):
    model = fresh(*linear_2d_weight_only)
    assert not FoldWeightTransposePass()(model).modified


def _bias_dq(model: ir.Model) -> list[ir.Node]:
    return [n for n in model.graph if n.op_type == "DequantizeLinear" and n.inputs[0].const_value is not None
            and n.inputs[0].const_value.dtype == ir.DataType.INT32]


def test_quantize_bias_fires_on_static_linear(linear_3d):
    qm, x = linear_3d
    model = fresh(qm, x)
    FoldWeightTransposePass()(model)
    ref = run(model, x)
    assert not _bias_dq(model), "the quantizer left the bias float"
    assert QuantizeBiasPass()(model).modified
    (dq,) = _bias_dq(model)
    scale = dq.inputs[1].const_value.numpy()
    np.testing.assert_allclose(dq.inputs[0].const_value.numpy() * scale, _float_bias(qm), rtol=1e-6, atol=0)
    # The converted graph's bias already sits on this grid (pt2e_int8/bias_grid.py), so the
    # int32 bias holds exactly the same values: the outputs do not move.
    np.testing.assert_array_equal(run(model, x), ref)


def _float_bias(qm) -> np.ndarray:
    linear = next(n for n in qm.graph.nodes if n.target == torch.ops.aten.linear.default)
    return operator.attrgetter(linear.args[2].target)(qm).detach().numpy()


def test_quantize_bias_leaves_dynamic_and_weight_only(linear_3d_dynamic, linear_2d_weight_only):
    for qm, x in (linear_3d_dynamic, linear_2d_weight_only):
        model = fresh(qm, x)
        FoldWeightTransposePass()(model)
        assert not QuantizeBiasPass()(model).modified
        assert not _bias_dq(model)


def test_rewrite_linear_as_gemm_fires_and_is_exact(linear_3d):
    qm, x = linear_3d
    model = fresh(qm, x)
    FoldWeightTransposePass()(model)
    QuantizeBiasPass()(model)
    ref = run(model, x)
    assert RewriteLinearAsGemmPass()(model).modified
    c = counts(model)
    assert c["MatMul"] == 0 and c["Gemm"] == 1 and c["Add"] == 0 and c["Reshape"] == 2 and c["Shape"] == 0, c
    np.testing.assert_array_equal(run(model, x), ref)
    # ... and ONNX Runtime now fuses it, bias included.
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(__import__("tempfile").mkdtemp() + "/o.onnx")
    ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString(), so)
    fused = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    assert fused["QGemm"] == 1 and fused["Add"] == 0, fused


def test_rewrite_linear_as_gemm_takes_a_float_bias(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 5, 32)
    cfg = q.QuantConfig.static(quantize_bias=False)
    qm = q.quantize(Linear().eval(), (x,), calibration=[(x,)], quantizer=q.Int8Quantizer().set_global(cfg))
    model = fresh(qm, x)
    FoldWeightTransposePass()(model)
    ref = run(model, x)
    assert RewriteLinearAsGemmPass()(model).modified
    c = counts(model)
    assert c["Gemm"] == 1 and c["MatMul"] == c["Add"] == 0, c
    np.testing.assert_array_equal(run(model, x), ref)
    from backends.onnx import export_onnx

    res = export_onnx(qm, (x,), tmp_path / "float_bias.onnx")
    assert res.detail["fc"].endswith("QGemm"), res.detail  # still one fused int8 kernel, bias included


def test_rewrite_linear_as_gemm_leaves_dynamic_and_weight_only(linear_3d_dynamic, linear_2d_weight_only):
    for qm, x in (linear_3d_dynamic, linear_2d_weight_only):
        model = fresh(qm, x)
        FoldWeightTransposePass()(model)
        assert not RewriteLinearAsGemmPass()(model).modified


def test_shift_weights_to_uint8_fires_on_static_only(linear_3d, linear_2d_weight_only):
    qm, x = linear_3d
    model = fresh(qm, x)
    ref = run(model, x)
    assert not ShiftWeightsToUint8Pass()(model).modified  # weight DQ feeds a Transpose, not a MatMul
    FoldWeightTransposePass()(model)
    assert ShiftWeightsToUint8Pass()(model).modified
    weights = [v.const_value.numpy() for v in model.graph.initializers.values()
               if v.uses() and v.const_value.numpy().ndim == 2]
    assert weights and all(w.dtype == np.uint8 for w in weights)
    np.testing.assert_array_equal(run(model, x), ref)
    wo = fresh(*linear_2d_weight_only)
    assert not ShiftWeightsToUint8Pass()(wo).modified  # float activations: nothing can overflow


@pytest.mark.parametrize("target", [ir.DataType.UINT8, ir.DataType.INT8], ids=["uint8", "int8"])
def test_convert_activation_dtype_is_exact(linear_3d, target):
    qm, x = linear_3d
    model = fresh(qm, x)
    ref = run(model, x)
    modified = ConvertActivationDtypePass(target)(model).modified
    assert modified == (target == ir.DataType.UINT8)  # the quantizer wrote int8 activations
    qs = [n for n in model.graph if n.op_type == "QuantizeLinear"]
    assert qs and all(n.outputs[0].dtype == target for n in qs)
    np.testing.assert_array_equal(run(model, x), ref)


def test_dynamic_passes_collapse_and_fuse(linear_3d_dynamic):
    qm, x = linear_3d_dynamic
    model = fresh(qm, x)
    assert counts(model)["QuantizeLinear"] == 1
    assert CollapseDynamicQuantizePass()(model).modified
    assert counts(model)["QuantizeLinear"] == 0
    FoldWeightTransposePass()(model)
    assert RewriteDynamicLinearPass()(model).modified
    c = counts(model)
    assert c["MatMulInteger"] == 1 and c["DynamicQuantizeLinear"] == 1, c
    got = torch.from_numpy(run(model, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL))
    assert q.sqnr(qm(x), got) > 40


def test_dynamic_passes_leave_static_graphs(linear_3d):
    model = fresh(*linear_3d)
    assert not CollapseDynamicQuantizePass()(model).modified
    assert not RewriteDynamicLinearPass()(model).modified


def test_name_dynamic_axes(linear_3d):
    model = fresh(*linear_3d)
    assert NameDynamicAxesPass()(model).modified
    assert [str(d) for d in model.graph.inputs[0].shape] == ["batch", "5", "32"]
    assert str(model.graph.outputs[0].shape[0]) == "batch"
    assert not NameDynamicAxesPass()(model).modified


def test_pass_failure_names_the_pass(linear_3d):
    class BrokenPass(ir.passes.InPlacePass):
        def call(self, model):
            raise RuntimeError("boom")

    with pytest.raises(LoweringError, match="BrokenPass failed: RuntimeError: boom"):
        run_passes(fresh(*linear_3d), [FoldWeightTransposePass(), BrokenPass()])


class _Embed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.fc = torch.nn.Linear(16, 8)

    def forward(self, ids):
        return self.fc(self.emb(ids))


@pytest.mark.parametrize("quantize_table", [True, False], ids=["int8-table", "float-table"])
def test_gather_before_dequantize(quantize_table):
    from backends.onnx.passes import GatherBeforeDequantizePass

    torch.manual_seed(0)
    ids = torch.randint(0, 50, (4, 7))
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.weight_only())
    quantizer.set_module_type(torch.nn.Embedding, q.QuantConfig.weight_only() if quantize_table else None)
    qm = q.quantize(_Embed().eval(), (ids,), quantizer=quantizer)
    model = fresh(qm, ids)
    before = counts(model)
    ref = run(model, ids)
    assert GatherBeforeDequantizePass()(model).modified == quantize_table
    after = counts(model)
    if quantize_table:
        assert after["DequantizeLinear"] == before["DequantizeLinear"] - 1 and after["Gather"] == 2, after
        gathered = [n for n in model.graph if n.op_type == "Gather"][0]
        assert gathered.inputs[0].dtype == ir.DataType.INT8  # rows looked up in the int8 table
    np.testing.assert_array_equal(run(model, ids), ref)
