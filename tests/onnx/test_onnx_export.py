"""export_onnx end to end: valid QDQ files that ONNX Runtime runs in int8, faithful to the reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import pt2e_int8 as q
from backends.onnx import export_onnx
from tests.onnx._models import op_counts, output_step, steps

SINGLE_LAYER = ["linear_relu", "linear_3d", "attention", "digits_mlp"]


def ort_run(path, x: torch.Tensor) -> torch.Tensor:
    """A plain InferenceSession with default options: what a user gets."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])


def batches(case):
    g = torch.Generator().manual_seed(7)
    shape = case.inputs.shape[1:]
    return {b: torch.randn(b, *shape, generator=g) for b in (1, 8)}


@pytest.mark.parametrize("name", SINGLE_LAYER)
def test_single_layer_within_one_step(static_cases, name):
    case = static_cases[name]
    step = output_step(case.qm)
    for b, x in batches(case).items():
        err = steps(case.qm(x), ort_run(case.path, x), step)
        assert err <= 1.0 + 1e-6, f"{name} batch {b}: ONNX Runtime is {err:.2f} output steps from the reference"


def test_conv_bn_relu_qat_within_one_step(conv_qat):
    step = output_step(conv_qat.qm)
    for b, x in batches(conv_qat).items():
        err = steps(conv_qat.qm(x), ort_run(conv_qat.path, x), step)
        assert err <= 1.0 + 1e-6, f"conv-bn-relu batch {b}: {err:.2f} output steps from the reference"


def test_block_within_two_steps_and_35db(block_case):
    step = output_step(block_case.qm)
    for b, x in batches(block_case).items():
        ref, got = block_case.qm(x), ort_run(block_case.path, x)
        err, db = steps(ref, got, step), q.sqnr(ref, got)
        assert err <= 2.0 + 1e-6, f"block batch {b}: {err:.2f} output steps from the reference"
        assert db >= 35, f"block batch {b}: SQNR {db:.1f} dB against the reference"


@pytest.mark.parametrize("name", [*SINGLE_LAYER, "conv_bn_relu", "block"])
def test_every_quantized_layer_placed_int8(static_cases, conv_qat, block_case, name):
    case = {**static_cases, "conv_bn_relu": conv_qat, "block": block_case}[name]
    rows = q.coverage(case.qm).layers
    assert rows and all(r.quantized for r in rows), str(q.coverage(case.qm))
    placement = case.result.placement
    assert set(placement) == {r.name for r in rows}
    floats = {k: case.result.detail[k] for k, v in placement.items() if v != "int8"}
    assert not floats, f"{name}: layers ONNX Runtime runs in float: {floats}"


@pytest.mark.parametrize("name", [*SINGLE_LAYER, "conv_bn_relu", "block"])
def test_file_is_valid_standard_qdq(static_cases, conv_qat, block_case, name):
    case = {**static_cases, "conv_bn_relu": conv_qat, "block": block_case}[name]
    model = onnx.load(str(case.path))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}.get("", 0) == 20
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    layers = [n for n in model.graph.node if n.op_type in ("Gemm", "Conv")]
    assert layers, "no Gemm/Conv in the file"
    for layer in layers:
        dq_x, dq_w = producers[layer.input[0]], producers[layer.input[1]]
        assert dq_x.op_type == dq_w.op_type == "DequantizeLinear", layer.name
        w = inits[dq_w.input[0]]
        assert w.dtype in (np.uint8, np.int8) and w.ndim >= 2, f"{layer.name}: weight {w.dtype}{w.shape}"
        w_scale = inits[dq_w.input[1]]
        assert w_scale.ndim == 1 and w_scale.size > 1, f"{layer.name}: weight not per-channel"
        axis = next((a.i for a in dq_w.attribute if a.name == "axis"), 1)
        assert w.shape[axis] == w_scale.size
        # The graph's bias is float (QuantConfig.quantize_bias=False, and QAT folds batch-norm
        # into a float bias); QuantizeBiasPass writes the int32 bias ONNX Runtime fuses.
        dq_b = producers[layer.input[2]]
        bias = inits[dq_b.input[0]]
        assert bias.dtype == np.int32, f"{layer.name}: bias is {bias.dtype}"
        np.testing.assert_allclose(inits[dq_b.input[1]], inits[dq_x.input[1]] * w_scale, rtol=1e-6)
        (out_q,) = [n for n in model.graph.node if layer.output[0] in n.input]
        assert out_q.op_type in ("QuantizeLinear", "Relu"), f"{layer.name} output goes to {out_q.op_type}"
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch", dims


def test_dynamic_quantization_is_per_row_and_closer_to_float(scheme_cases):
    case = scheme_cases["dynamic"]
    counts = op_counts(case.path)
    linears = [r for r in q.coverage(case.qm).layers if r.quantized]
    assert counts["com.microsoft.MatMulIntegerToFloat"] == len(linears) == 5, counts
    assert counts["QuantizeLinear"] == 5 and counts["DynamicQuantizeLinear"] == 0, counts  # one per input
    assert {case.result.placement[r.name] for r in linears} == {"int8"}, case.result.detail
    assert all(case.result.detail[r.name].endswith("MatMulIntegerToFloat") for r in linears), case.result.detail
    for b, x in batches(case).items():
        with torch.no_grad():
            ref, float_out = case.qm(x), case.float_model(x)
        got = ort_run(case.path, x)
        # per-row differs from the converted graph's per-tensor rounding, and is closer to float
        assert q.sqnr(ref, got) >= 25, f"dynamic batch {b}: SQNR {q.sqnr(ref, got):.1f} dB against the reference"
        assert q.sqnr(float_out, got) >= q.sqnr(float_out, ref) - 0.5, f"dynamic batch {b}: farther from float"


def test_dynamic_per_tensor_fuses_and_matches(scheme_cases, onnx_dir):
    case = scheme_cases["dynamic"]
    path = onnx_dir / "block_dynamic_per_tensor.onnx"
    res = export_onnx(case.qm, (case.inputs,), path, dynamic_act="per-tensor")
    counts = op_counts(path)
    linears = [r for r in q.coverage(case.qm).layers if r.quantized]
    assert counts["DynamicQuantizeLinear"] == len(linears) == counts["MatMulInteger"] == 5, counts
    assert counts["QuantizeLinear"] == 0, counts
    assert all(res.detail[r.name].endswith("DynamicQuantizeMatMul") for r in linears), res.detail
    for b, x in batches(case).items():
        db = q.sqnr(case.qm(x), ort_run(path, x))
        assert db >= 40, f"dynamic per-tensor batch {b}: SQNR {db:.1f} dB against the reference"


def test_weight_only_runs_in_float_with_int8_weights(scheme_cases):
    case = scheme_cases["weight_only"]
    model = onnx.load(str(case.path))
    int8_inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert len(int8_inits) == 5, [i.name for i in model.graph.initializer]
    assert op_counts(case.path)["QuantizeLinear"] == 0
    assert set(case.result.placement.values()) == {"float"}, case.result.placement
    for b, x in batches(case).items():
        db = q.sqnr(case.qm(x), ort_run(case.path, x))
        assert db >= 40, f"weight-only batch {b}: SQNR {db:.1f} dB against the reference"


def test_float_module_exports_in_float(onnx_dir):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    x = torch.randn(8, 8)
    res = export_onnx(model, (x,), onnx_dir / "float.onnx")
    counts = op_counts(res.path)
    assert counts["QuantizeLinear"] == counts["DequantizeLinear"] == 0, counts
    assert set(res.placement.values()) == {"float"}
    torch.testing.assert_close(ort_run(res.path, x), model(x), rtol=1e-5, atol=1e-5)


def test_act_dtype_override_is_exact(onnx_dir, static_cases):
    case = static_cases["linear_relu"]
    path = onnx_dir / "linear_relu_int8_acts.onnx"
    export_onnx(case.qm, (case.inputs,), path, act_dtype="int8")
    model = onnx.load(str(path))
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    inits = {i.name: i for i in model.graph.initializer}
    assert qs and all(inits[n.input[2]].data_type == onnx.TensorProto.INT8 for n in qs)
    x = batches(case)[8]
    assert steps(case.qm(x), ort_run(path, x), output_step(case.qm)) <= 1.0 + 1e-6


def test_bad_style_is_a_config_error(static_cases, onnx_dir):
    case = static_cases["linear_relu"]
    with pytest.raises(q.ConfigError, match="style"):
        export_onnx(case.qm, (case.inputs,), onnx_dir / "bad.onnx", style="tflite")
    with pytest.raises(q.ConfigError, match="dynamic_act='per-channel'"):
        export_onnx(case.qm, (case.inputs,), onnx_dir / "bad.onnx", dynamic_act="per-channel")
    assert not (onnx_dir / "bad.onnx").exists()


def test_dynamic_sequence_axis_is_named(onnx_dir):
    # The sequence must be dynamic from quantize on: a graph converted with a static sequence has it baked in.
    from tests.onnx._models import Linear

    torch.manual_seed(0)
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")},)
    x = torch.randn(4, 5, 32)
    qm = q.quantize(Linear().eval(), (x,), calibration=[(torch.randn(4, 7, 32),)], dynamic_shapes=dims)
    path = onnx_dir / "linear_3d_seq.onnx"
    res = export_onnx(qm, (x,), path, dynamic_shapes=dims)
    model = onnx.load(str(path))
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == \
        ["batch", "sequence", 32]
    assert set(res.placement.values()) == {"int8"}
    x = torch.randn(2, 9, 32)
    assert steps(qm(x), ort_run(path, x), output_step(qm)) <= 1.0 + 1e-6
