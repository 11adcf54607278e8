"""FlattenResidualLayerNormPass: run residual LayerNorms on [tokens, hidden] rows.

    Add(a, b)[B, S, E] → LayerNormalization(axis=-1)
      ⇒  Add(a, b) → Reshape[-1, E] → LayerNormalization → Reshape[B, S, E]

Why: ONNX Runtime's SkipLayerNormFusion (on by default) replaces a 3-D Add → LayerNormalization
with com.microsoft.SkipLayerNormalization, whose CPU kernel is a scalar C++ loop: on
[1, 128, 384] it took 0.22 ms where Add + LayerNormalization take 0.05 ms (Intel Xeon, ONNX
Runtime 1.32, one or two threads), 2.6 ms of all-MiniLM-L6-v2's 13.7 ms int8 inference. The
fusion only matches an Add with 3-D inputs feeding the LayerNormalization directly; a
LayerNormalization over the same rows in 2-D is the same computation (normalised over the
last axis either way, bit for bit), and the Reshapes cost no copy in ONNX Runtime.

Fires on a LayerNormalization over the last axis of a rank-3 float tensor produced by an Add
that feeds nothing else (post-norm transformers such as BERT). Leaves alone LayerNormalizations
of other ranks or axes, those not fed by an Add, and those whose Add has other users (pre-norm
residual streams): ONNX Runtime fuses none of those.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import add_initializer, attr, node, producer, replace_value


def _target_shape(graph: ir.Graph, x: ir.Value, name: str, new: list) -> ir.Value:
    """[-1, S, E] as a constant when only the batch is dynamic, else Shape(x) at run time."""
    dims = list(x.shape)
    if all(isinstance(d, int) for d in dims[1:]):
        return add_initializer(graph, f"{name}_3d", np.array([-1, *dims[1:]], np.int64))
    shape = node(graph, "Shape", [x], name=f"{name}_shape")
    shape.outputs[0].type = ir.TensorType(ir.DataType.INT64)
    new.append(shape)
    return shape.outputs[0]


class FlattenResidualLayerNormPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for ln in [n for n in graph if n.op_type == "LayerNormalization" and n.domain == ""]:
            x = ln.inputs[0]
            if producer(x, "Add") is None or len(x.uses()) != 1 or x.is_graph_output() or x.shape is None or len(x.shape) != 3 or attr(ln, "axis", -1) not in (-1, 2):
                continue
            hidden = x.shape[2]
            if not isinstance(hidden, int) or x.dtype != ir.DataType.FLOAT:
                continue
            if any(o.uses() or o.is_graph_output() for o in ln.outputs[1:]):
                continue  # mean / inv-std outputs in use (training graphs): leave as is
            name, new = ln.name or "layer_norm", []
            target = _target_shape(graph, x, name, new)
            rows = node(graph, "Reshape", [x, add_initializer(graph, f"{name}_2d", np.array([-1, hidden], np.int64))],
                        name=f"{name}_rows")
            flat_ln = node(graph, "LayerNormalization", [rows.outputs[0], *ln.inputs[1:]], name=f"{name}_2d_ln",
                           num_outputs=1, **{k: a.value for k, a in ln.attributes.items()})
            back = node(graph, "Reshape", [flat_ln.outputs[0], target], name=f"{name}_3d_out")
            for n in (rows, flat_ln, back):
                n.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
            back.outputs[0].shape = ln.outputs[0].shape
            new += [rows, flat_ln, back]
            graph.insert_before(ln, new)
            replace_value(graph, ln.outputs[0], back.outputs[0])
            graph.remove(ln, safe=True)
            flat_ln.name = ln.name or flat_ln.name
            modified = True
        return ir.passes.PassResult(model, modified)
