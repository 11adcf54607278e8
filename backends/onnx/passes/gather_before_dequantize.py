"""GatherBeforeDequantizePass: look rows up in the int8 embedding table, then dequantize only those.

    Gather(DQ(T:int8 [V, D], s [V], 0, axis=0), ids)  ⇒  Cast(Gather(T, ids)) · Unsqueeze(Gather(s, ids), -1)

Runtimes do not constant-fold DequantizeLinear, so the QDQ form dequantizes the whole table
(30522 × 384 for BERT's vocabulary) on every call to use 128 rows of it. Multiplying the
gathered int8 rows by their row scales gives the same float values. Fires on a Gather along
axis 0 of a dequantized 2-D constant with zero zero points (per-row or per-tensor scale);
leaves every other Gather alone.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import (
    add_initializer,
    attr,
    constant,
    node,
    producer,
    replace_value,
)


class GatherBeforeDequantizePass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for gather in [n for n in graph if n.op_type == "Gather" and n.domain == ""]:
            dq = producer(gather.inputs[0], "DequantizeLinear")
            table = constant(dq.inputs[0]) if dq is not None else None
            scale = constant(dq.inputs[1]) if dq is not None else None
            zero_point = constant(dq.inputs[2]) if dq is not None and len(dq.inputs) > 2 else None
            if table is None or table.ndim != 2 or scale is None or attr(gather, "axis", 0) != 0:
                continue
            if zero_point is not None and zero_point.any() or scale.ndim == 1 and attr(dq, "axis", 1) != 0:
                continue
            ids, name = gather.inputs[1], gather.name
            rows = node(graph, "Gather", [dq.inputs[0], ids], name=f"{name}_int8_rows", axis=0)
            floats = node(graph, "Cast", [rows.outputs[0]], name=f"{name}_to_float", to=ir.DataType.FLOAT)
            new_nodes = [rows, floats]
            if scale.ndim == 1:
                row_scale = node(graph, "Gather", [dq.inputs[1], ids], name=f"{name}_row_scales", axis=0)
                axes = add_initializer(graph, f"{name}_last_axis", np.array([-1], np.int64))
                col = node(graph, "Unsqueeze", [row_scale.outputs[0], axes], name=f"{name}_row_scales_col")
                new_nodes += [row_scale, col]
                factor = col.outputs[0]
            else:
                factor = dq.inputs[1]
            mul = node(graph, "Mul", [floats.outputs[0], factor], name=f"{name}_dequantize")
            new_nodes.append(mul)
            mul.outputs[0].type, mul.outputs[0].shape = gather.outputs[0].type, gather.outputs[0].shape
            graph.insert_before(gather, new_nodes)
            replace_value(graph, gather.outputs[0], mul.outputs[0])
            graph.remove(gather, safe=True)
            if not dq.outputs[0].uses():
                graph.remove(dq, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)
