"""The ONNX debugger: each layer's output from ONNX Runtime (extra graph outputs, same fused kernels)
against the converted model; a damaged weight pinned to its layer."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import pt2e_int8 as q
from backends.onnx.debug import debug_onnx


@pytest.mark.parametrize("which", ["static", "dynamic"])
def test_a_correct_file_matches_layer_by_layer(block_case, scheme_cases, which):
    case = block_case if which == "static" else scheme_cases["dynamic"]
    rep = debug_onnx(case.path, case.qm, [(case.inputs,), (torch.randn(3, 16, 64),)])
    rows = q.coverage(case.qm).layers
    assert [r.name for r in rep.rows] == [r.name for r in rows]
    assert all(r.max_error is not None for r in rep.rows), str(rep)
    assert rep.first_divergence is None, str(rep)
    assert "same int8 kernels" in rep.notes[1], rep.notes


def test_a_damaged_weight_is_pinned_to_its_layer(block_case, tmp_path):
    proto = onnx.load(str(block_case.path))
    nodes = {n.name: n for n in proto.graph.node}
    producer = {o: n for n in proto.graph.node for o in n.output}
    fc2 = next(r for r in q.coverage(block_case.qm).layers if r.name == "fc2")
    weight_dq = producer[nodes[fc2.node].input[1]]
    scale = next(i for i in proto.graph.initializer if i.name == weight_dq.input[1])
    scale.CopyFrom(onnx.numpy_helper.from_array(
        (onnx.numpy_helper.to_array(scale) * 1.05).astype(np.float32), scale.name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(proto, str(damaged))
    rep = debug_onnx(damaged, block_case.qm, [(block_case.inputs,)])
    assert rep.first_divergence is not None and rep.first_divergence.name == "fc2", str(rep)
    before = [r for r in rep.rows[: [r.name for r in rep.rows].index("fc2")]]
    assert all(not r.diverged for r in before)


def test_not_an_onnx_file(block_case, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(q.InputFileError, match="not a readable ONNX model"):
        debug_onnx(bad, block_case.qm, [(block_case.inputs,)])
