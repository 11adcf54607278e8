"""NameDynamicAxesPass: readable names for the graph inputs' dynamic axes.

    float[s31, s7, 384]  ⇒  float[batch, sequence, 384]

torch.export's symbols (s31, s7) change from export to export and mean nothing to a user
binding inputs. Dim 0 of an input is `batch`, a dynamic dim 1 of a rank ≥ 2 input is
`sequence`, any other dynamic dim `<input>_dim<i>`; the names replace the symbol in every
value's shape, so one symbol keeps one name. Static dims are left alone.
"""

from __future__ import annotations

import onnx_ir as ir

_BY_POSITION = {0: "batch", 1: "sequence"}


def _rename(shape: ir.Shape, names: dict[str, str]) -> ir.Shape | None:
    dims = [ir.SymbolicDim(names[d.value]) if isinstance(d, ir.SymbolicDim) and d.value in names else d
            for d in shape]
    return ir.Shape(dims) if dims != list(shape) else None


class NameDynamicAxesPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, names = model.graph, {}
        for value in graph.inputs:
            for i, dim in enumerate(value.shape or ()):
                if isinstance(dim, ir.SymbolicDim) and dim.value is not None and dim.value not in names:
                    wanted = _BY_POSITION.get(i, f"{value.name}_dim{i}")
                    names[dim.value] = wanted if wanted not in names.values() else f"{value.name}_dim{i}"
        names = {k: v for k, v in names.items() if k != v}
        modified = False
        values = list(graph.inputs) + [v for n in graph.all_nodes() for v in n.outputs]
        for value in values:
            if value.shape is not None and (new := _rename(value.shape, names)) is not None:
                value.shape = new
                modified = True
        return ir.passes.PassResult(model, modified)
