"""The drift fix: files for x86-avx2 (and `auto` on such a CPU) give int8 kernels uint8 weights,
which no x86 kernel can overflow; files for VNNI / ARM keep int8 weights, which AVX2 would.

This machine's CPU may have VNNI (then ONNX Runtime's U8S8 kernel is exact and the drift
cannot be reproduced natively), so the saturating AVX2 kernel is modelled in numpy:
vpmaddubsw adds each pair of u8 × s8 products into a saturating int16.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import backends.onnx.target as target_mod
import pt2e_int8 as q
from backends.onnx import export_onnx


def u8s8_avx2(a_u8: np.ndarray, b_s8: np.ndarray) -> np.ndarray:
    """A[M,K] u8 @ B[K,N] s8 the way MLAS's AVX2 U8S8 kernel sums: int16-saturated pairs, then int32."""
    k = a_u8.shape[1] + a_u8.shape[1] % 2
    a = np.zeros((a_u8.shape[0], k), np.int32)
    b = np.zeros((k, b_s8.shape[1]), np.int32)
    a[:, : a_u8.shape[1]], b[: b_s8.shape[0]] = a_u8, b_s8
    pairs = a[:, 0::2, None] * b[None, 0::2] + a[:, 1::2, None] * b[None, 1::2]
    return np.clip(pairs, -32768, 32767).sum(axis=1)


def weights_of_int8_kernels(path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight [K, N] or conv [O, ...], zero point) of every int8 GEMM / conv in the file: weights of
    MatMulInteger(ToFloat) and the weight DequantizeLinear of quantized Gemm / Conv / MatMul."""
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    out = []
    for node in model.graph.node:
        if node.op_type == "MatMulInteger":
            out.append((inits[node.input[1]], inits[node.input[3]]))
        elif node.op_type == "MatMulIntegerToFloat":
            out.append((inits[node.input[1]], inits[node.input[5]]))
        elif node.op_type in ("Gemm", "Conv", "MatMul"):
            a, w = producers.get(node.input[0]), producers.get(node.input[1])
            if a is not None and a.op_type == "DequantizeLinear" and w is not None and w.input[0] in inits:
                weight = inits[w.input[0]]
                if node.op_type == "Gemm" and any(at.name == "transB" and at.i for at in node.attribute):
                    weight = weight.T
                out.append((weight, inits[w.input[2]]))
    return out


def saturating_columns(weight: np.ndarray) -> int:
    """How many output columns ONNX Runtime's AVX2 U8S8 kernel gets wrong for their worst input.

    uint8 weights run U8U8 (widened before multiplying: exact), so 0. For int8 weights [K, N] (a
    conv's [O, I, kh, kw] as [I·kh·kw, O]) the worst uint8 input of column n is 255 where its
    weights are positive (or negative), 0 elsewhere: the largest pair sums either way.
    """
    if weight.dtype == np.uint8:
        return 0
    w = weight.reshape(weight.shape[0], -1).T if weight.ndim > 2 else weight
    w = w.astype(np.int32)
    bad = np.zeros(w.shape[1], bool)
    for sign in (1, -1):
        worst = ((sign * w) > 0).T.astype(np.int32) * 255  # [N, K]: column n's worst input as row n
        got = np.diagonal(u8s8_avx2(worst, w.astype(np.int8)))
        bad |= got != np.diagonal(worst @ w)
    return int(bad.sum())


AVX2_ONLY = ("x86_64", {"sse4_1": True, "avx2": True, "fma": True})


@pytest.mark.parametrize("target", ["x86-avx2", "auto-on-avx2"])
@pytest.mark.parametrize("name", ["static", "conv", "dynamic", "dynamic-per-tensor"])
def test_avx2_files_are_exact_under_the_saturating_kernel(block_case, conv_qat, scheme_cases, tmp_path, monkeypatch,
                                                          name, target):
    case = {"static": block_case, "conv": conv_qat}.get(name, scheme_cases["dynamic"])
    if target == "auto-on-avx2":
        monkeypatch.setattr(target_mod, "this_cpu", lambda: AVX2_ONLY)
    path = tmp_path / f"{name}.onnx"
    res = export_onnx(case.qm, (case.inputs,), path, target=target.removesuffix("-on-avx2"),
                      dynamic_act="per-tensor" if name == "dynamic-per-tensor" else "per-row")
    assert res.options["target"] == "x86-avx2"
    found = weights_of_int8_kernels(path)
    assert found, "no int8 kernel weights found"
    for weight, zero_point in found:
        assert weight.dtype == np.uint8 and zero_point.dtype == np.uint8 and (zero_point == 128).all()
        assert saturating_columns(weight) == 0


def test_vnni_files_keep_int8_weights_that_avx2_would_saturate(block_case, tmp_path):
    path = tmp_path / "vnni.onnx"
    export_onnx(block_case.qm, (block_case.inputs,), path, target="x86-vnni")
    found = weights_of_int8_kernels(path)
    assert found and all(w.dtype == np.int8 for w, _ in found)
    assert sum(saturating_columns(w) for w, _ in found) > 0, "full-range int8 weights should saturate vpmaddubsw"


def test_uint8_weights_avoid_the_saturation_int8_weights_hit(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU()).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.sign(torch.randn(32, 64)))  # full-range int8 weights: ±127
    x = torch.rand(16, 64) * 4
    qm = q.quantize(model, (x,), calibration=[(torch.rand(16, 64) * 4,)])
    path = tmp_path / "m.onnx"
    export_onnx(qm, (x,), path, target="x86-avx2")
    ((w_u8, zp),) = weights_of_int8_kernels(path)
    w = w_u8.astype(np.int32)  # [K, N] in the uint8 encoding
    a = np.random.default_rng(0).integers(200, 256, size=(16, 64))  # large uint8 activations
    exact = a @ (w - 128)
    u8u8 = a @ w - a.sum(1, keepdims=True) * 128  # widened to int16 before multiplying: exact
    int8_kernel = u8s8_avx2(a, (w - 128).astype(np.int8))
    np.testing.assert_array_equal(u8u8, exact)
    assert np.abs(int8_kernel - exact).max() > 10_000, "int8 weights should saturate vpmaddubsw here"


def test_seven_bit_weights_keep_the_int8_path(tmp_path):
    """Weights within -64..63 cannot saturate U8S8: "auto" keeps them int8 (fast on VNNI), exact."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 24), torch.nn.ReLU(), torch.nn.Linear(24, 8)).eval()
    x = torch.randn(8, 32)
    cfg = q.QuantConfig.static(weight_qmin=-64, weight_qmax=63)
    qm = q.quantize(model, (x,), calibration=[(torch.randn(8, 32),)], quantizer=q.Int8Quantizer().set_global(cfg))
    auto, forced = tmp_path / "auto.onnx", tmp_path / "forced.onnx"
    export_onnx(qm, (x,), auto, target="x86-avx2")
    export_onnx(qm, (x,), forced, target="x86-avx2", weight_dtype="uint8")
    assert {w.dtype for w, _ in weights_of_int8_kernels(auto)} == {np.dtype(np.int8)}
    assert sum(saturating_columns(w) for w, _ in weights_of_int8_kernels(auto)) == 0
    assert {w.dtype for w, _ in weights_of_int8_kernels(forced)} == {np.dtype(np.uint8)}
    step = float([n for n in qm.graph.nodes if n.op == "output"][0].args[0][0].args[1])
    ref = qm(x)
    for path in (auto, forced):
        sess = __import__("onnxruntime").InferenceSession(str(path))
        got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
        assert (ref - got).abs().max().item() / step <= 1.0 + 1e-6
