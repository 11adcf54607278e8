"""The ONNX Runtime reference (backends.onnx.reference, debug_onnx's default): QGemm /
QLinearMatMul accumulate exactly in int32 and QuantizeLinear divides, so the reference computed
that way matches ONNX Runtime bit for bit, where the converted graph is one step off at ties."""

from __future__ import annotations

import pytest
import torch

import pt2e_int8 as q
from backends.onnx import export_onnx
from backends.onnx.debug import debug_onnx
from backends.onnx.reference import onnx_reference
from backends.onnx.runtime import load_onnx
from pt2e_int8.app.parity import output_steps
from tests._transformer import (
    gelu_block,
    layer_norm_block,
    randn,
    softmax_block,
    tiny_transformer,
    wide_mlp,
)


def _static(model, shape, tmp_path, name):
    calibration = [(randn(*shape, seed=s),) for s in (1, 2)]
    qm = q.quantize(model, calibration[0], calibration=calibration,
                    quantizer=q.Int8Quantizer().set_global(q.QuantConfig.static()), progress=False)
    x = randn(*shape, seed=3)
    path = export_onnx(qm, (x,), tmp_path / f"{name}.onnx").path
    got = torch.as_tensor(load_onnx(path).run([x])[0])
    with torch.no_grad():
        plain, kernel = qm(x), onnx_reference(qm)(x)
    return qm, path, x, got, plain, kernel, output_steps(qm)[0]


def _off(a, b, step) -> int:
    return int(((a - b).abs() > step / 2).sum())


def test_static_linears_match_onnx_runtime_bit_for_bit(tmp_path):
    qm, path, x, got, plain, kernel, step = _static(wide_mlp(), (4096, 1024), tmp_path, "mlp")
    assert _off(got, plain, step) > 0  # the converted graph's fp32 sums flip some roundings ...
    assert (got - kernel).abs().max().item() < 1e-3 * step  # ... integer accumulation does not
    rep = debug_onnx(path, qm, [(x[:512],)])
    assert rep.reference == "onnx_reference(model)"
    assert all(r.error_steps == 0 for r in rep.rows), str(rep)


def test_tiny_transformer_onnx_is_closer_to_the_kernel_reference(tmp_path):
    """LayerNorm, GELU and softmax stay float in ONNX Runtime (their own ulps can still flip a
    rounding), but the linears' and matmuls' flips are gone."""
    *_, got, plain, kernel, step = _static(tiny_transformer(), (32, 64, 64), tmp_path, "tiny")
    off_plain, off_kernel = _off(got, plain, step), _off(got, kernel, step)
    assert off_plain >= 10, off_plain
    assert off_kernel * 2 <= off_plain, (off_kernel, off_plain)
    assert (got - kernel).abs().max().item() <= 1.01 * step


# Each float op ONNX Runtime computes with its own MLAS kernel, and how it once moved a MiniLM file:
# - Softmax: MLAS's exp and sum differ from torch's in the last bit of a third of these
#   probabilities (static MiniLM: one sentence 16.4 steps off);
# - LayerNorm: one-pass fp32 sums, E[x²] − mean² (smooth_insert QAT MiniLM: 4.11 steps off);
# - GELU: MLAS's erf (smooth_insert MiniLM, once the FFN up-projection writes float: 5.57 steps off).
FLOAT_OPS = [(softmax_block, "rewrite_softmaxes"), (layer_norm_block, "rewrite_layer_norms"),
             (gelu_block, "rewrite_gelus")]


@pytest.mark.parametrize(("block", "rewrite"), FLOAT_OPS, ids=["softmax", "layer_norm", "gelu"])
def test_float_op_is_computed_as_onnx_runtime_computes_it(tmp_path, monkeypatch, block, rewrite):
    """At a tie of the next QuantizeLinear, the op's last bit flips an int8 value. The reference
    evaluates that op with ONNX Runtime on its own inputs: bit for bit."""
    qm, _, x, got, _, kernel, step = _static(block(), (1 << 19, 8), tmp_path, rewrite)
    monkeypatch.setattr(f"backends.onnx.reference.{rewrite}", lambda gm: False)
    with torch.no_grad():
        torch_op = onnx_reference(qm)(x)
    assert _off(got, torch_op, step) > 0  # torch's op: ties flip ...
    assert (got - kernel).abs().max().item() == 0.0  # ... ONNX Runtime's on our inputs: none
