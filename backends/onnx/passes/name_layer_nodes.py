"""NameLayerNodesPass: name each linear / conv / matmul node after the converted-graph node it came from.

    node_MatMul_22 (from exported fx node `linear`, converted-graph node `linear_4`)  ⇒  linear_4

`coverage()` rows carry the converted graph's node names; ONNX Runtime keeps a node's name in
the name of the fused kernel it becomes, so this is how placement finds each layer after
optimization. Reads torch.onnx's `pkg.torch.onnx.fx_node` metadata and maps the exported name
through `names` (re-export renames nodes); the first Gemm / MatMul / Conv of each layer gets
the name, other nodes and nodes without metadata keep theirs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import onnx_ir as ir

LAYER_OP_TYPES = frozenset({"Gemm", "MatMul", "Conv"})
_FX_NAME = re.compile(r"%(\S+) :")


def fx_node_name(node: ir.Node) -> str | None:
    match = _FX_NAME.match(node.metadata_props.get("pkg.torch.onnx.fx_node", ""))
    return match.group(1) if match else None


class NameLayerNodesPass(ir.passes.InPlacePass):
    def __init__(self, names: Mapping[str, str]) -> None:
        super().__init__()
        self.names = dict(names)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        taken = {n.name for n in graph}
        for node in graph:
            fx_name = fx_node_name(node) if node.op_type in LAYER_OP_TYPES and node.domain == "" else None
            name = self.names.get(fx_name, fx_name) if fx_name is not None else None
            if name is None or name == node.name or name in taken:
                continue
            taken.add(name)
            node.name = name
            modified = True
        return ir.passes.PassResult(model, modified)
