"""The op set lowered two ways: ExecuTorch's standard `to_edge_transform_and_lower` with
`XnnpackPartitioner` (none of our passes: the drop-in for XNNPACKQuantizer), and `export_pte`.

Each way: no quantize/dequantize left outside the delegate, every quantized layer placed in
an int8 kernel, and the program runs close to the converted graph.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower

import pt2e_int8 as q
from backends.executorch import export_pte
from backends.executorch.placement import leftover_qdq, place
from backends.executorch.rejections import collect_rejections
from backends.executorch.runtime import load_pte
from tests.core._op_models import CASES, inputs, quantized
from tests.executorch._helpers import pte_operators

# Weight-only layers have no XNNPACK kernel: the stock lowering leaves their weight dequantize
# outside the delegate (export_pte folds it); the stock flow has no weight-only scheme either.
STOCK_CASES = [c for c in CASES if not c.endswith("weight-only")]
MIN_DB = 30  # .pte against the converted graph


def _expected_int8(row) -> bool:
    return row.quantized and not row.scheme.startswith("weight-only")


def _run(buffer: bytes, path, x) -> torch.Tensor:
    path.write_bytes(buffer)
    return load_pte(path).run(list(x))[0]


@pytest.mark.parametrize("case_id", STOCK_CASES, ids=STOCK_CASES)
def test_stock_lowering(case_id, tmp_path):
    _, qm = quantized(case_id)
    x = inputs(CASES[case_id], seed=3)
    with warnings.catch_warnings(), collect_rejections() as rejections:
        warnings.simplefilter("ignore")
        ep = torch.export.export(qm, x, strict=False)
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    program, graph_id = edge.exported_program(), id(qm.graph)
    left = leftover_qdq(program, graph_id)
    assert not left, f"q/dq outside the delegate: {sorted(left)}"
    rows = q.coverage(qm).layers
    placement, detail = place(rows, program, graph_id, rejections.by_source(graph_id))
    for row in rows:
        want = "int8" if _expected_int8(row) else "float"
        assert placement[row.name] == want, f"{row.name}: {detail[row.name]}"
    out = _run(edge.to_executorch().buffer, tmp_path / "stock.pte", x)
    with torch.no_grad():
        db = q.sqnr(qm(*x), out)
    assert db >= MIN_DB, f"stock-lowered .pte: SQNR {db:.1f} dB against the converted graph"


@pytest.mark.parametrize("case_id", list(CASES), ids=list(CASES))
def test_export_pte(case_id, tmp_path):
    _, qm = quantized(case_id)
    x = inputs(CASES[case_id], seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_pte(qm, x, tmp_path / "ours.pte", max_batch=4)
    assert not [o for o in pte_operators(result.path) if "quantized" in o]
    for row in q.coverage(qm).layers:
        want = "int8" if _expected_int8(row) else "float"
        assert result.placement[row.name] == want, f"{row.name}: {result.detail[row.name]}"
    out = load_pte(result.path).run(list(x))[0]
    with torch.no_grad():
        db = q.sqnr(qm(*x), out)
    assert db >= MIN_DB, f"export_pte .pte: SQNR {db:.1f} dB against the converted graph"
