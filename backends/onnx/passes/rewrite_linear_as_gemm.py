"""RewriteLinearAsGemmPass: every static int8 linear in the one form ONNX Runtime fuses with its bias.

    Q(x) → DQ → MatMul(·, DQ(W)) [→ Add(·, DQ(b:int32) | b:float)] [→ Relu] → Q(y)
      ⇒  Q(x) → Reshape[-1, K] → DQ → Gemm(·, DQ(W), b) [→ Relu] → Q(y) → Reshape[..., N]

torch.onnx writes an N-D linear as MatMul + Add. ONNX Runtime fuses DQ → MatMul → Q into
QLinearMatMul only when the MatMul feeds the Q directly, so the bias Add leaves the MatMul in
float (or as MatMulIntegerToFloat). Gemm takes the bias as its C input and fuses, bias
included, into QGemm: the int32 bias as is, a float bias (QuantConfig(quantize_bias=False))
rounded by ONNX Runtime to int32 at scale x_scale · w_scale. The reshapes act on the int8 tensors, so they cost a copy, not a
requantization. Fires only when the activation and the weight are dequantized int8 and the
result is quantized; 2-D Gemms from torch.onnx are already in this form and are left alone.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import (
    add_initializer,
    constant,
    node,
    only_consumer,
    producer,
    replace_value,
)


def _match(matmul: ir.Node):
    """(act DQ, weight DQ, bias | None, add | None, relu | None, output Q) of a static linear, or None.

    The bias is the int32 bias's DequantizeLinear output or a float constant [N] (QuantConfig(quantize_bias=False)):
    ONNX Runtime fuses either into QGemm."""
    act_dq, w_dq = producer(matmul.inputs[0], "DequantizeLinear"), producer(matmul.inputs[1], "DequantizeLinear")
    if act_dq is None or w_dq is None or constant(act_dq.inputs[0]) is not None:
        return None
    weight = constant(w_dq.inputs[0])
    if weight is None or weight.ndim != 2:
        return None
    tail, bias, relu = matmul.outputs[0], None, None
    add = only_consumer(tail, "Add")
    if add is not None:
        bias = add.inputs[1] if add.inputs[0] is tail else add.inputs[0]
        bias_dq = producer(bias, "DequantizeLinear")
        float_bias = constant(bias)
        if bias_dq is not None and constant(bias_dq.inputs[0]) is None:
            return None
        if bias_dq is None and (float_bias is None or float_bias.dtype != np.float32
                                or float_bias.shape != (weight.shape[1],)):
            return None
        tail = add.outputs[0]
    relu = only_consumer(tail, "Relu")
    if relu is not None:
        tail = relu.outputs[0]
    q = only_consumer(tail, "QuantizeLinear")
    return None if q is None else (act_dq, w_dq, bias, add, relu, q)


class RewriteLinearAsGemmPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for matmul in [n for n in graph if n.op_type == "MatMul" and n.domain == ""]:
            found = _match(matmul)
            if found is None:
                continue
            self._rewrite(graph, matmul, *found)
            modified = True
        return ir.passes.PassResult(model, modified)

    @staticmethod
    def _rewrite(graph: ir.Graph, matmul, act_dq, w_dq, bias, add, relu, q) -> None:
        k, n = constant(w_dq.inputs[0]).shape
        q_x = act_dq.inputs[0]
        rank = len(q_x.shape) if q_x.shape is not None else None
        new_nodes = []
        if rank != 2:
            flat = node(graph, "Reshape", [q_x, add_initializer(graph, f"{matmul.name}_2d", np.array([-1, k], np.int64))],
                        name=f"{matmul.name}_flatten")
            flat.outputs[0].type = q_x.type
            new_nodes.append(flat)
            q_x = flat.outputs[0]
        dq = node(graph, "DequantizeLinear", [q_x, *act_dq.inputs[1:]], name=f"{act_dq.name}_2d",
                  **{k_: a.value for k_, a in act_dq.attributes.items()})
        gemm = node(graph, "Gemm", [dq.outputs[0], w_dq.outputs[0], bias],
                    name=matmul.name)
        new_nodes += [dq, gemm]
        tail = gemm.outputs[0]
        if relu is not None:
            new_relu = node(graph, "Relu", [tail], name=relu.name)
            new_nodes.append(new_relu)
            tail = new_relu.outputs[0]
        new_q = node(graph, "QuantizeLinear", [tail, *q.inputs[1:]], name=q.name,
                     **{k_: a.value for k_, a in q.attributes.items()})
        new_q.outputs[0].type = q.outputs[0].type
        new_nodes.append(new_q)
        out = new_q.outputs[0]
        if rank != 2:
            middle = list(act_dq.inputs[0].shape)[1:-1] if rank is not None else None
            if middle is not None and all(isinstance(d, int) for d in middle):
                # Only the batch is dynamic: a constant target shape, no Shape/Concat per call.
                target = add_initializer(graph, f"{matmul.name}_nd", np.array([-1, *middle, n], np.int64))
            else:
                lead = node(graph, "Shape", [act_dq.inputs[0]], name=f"{matmul.name}_lead_shape", end=-1)
                shape = node(graph, "Concat",
                             [lead.outputs[0], add_initializer(graph, f"{matmul.name}_n", np.array([n], np.int64))],
                             name=f"{matmul.name}_out_shape", axis=0)
                new_nodes += [lead, shape]
                target = shape.outputs[0]
            unflat = node(graph, "Reshape", [out, target], name=f"{matmul.name}_unflatten")
            unflat.outputs[0].type, unflat.outputs[0].shape = q.outputs[0].type, q.outputs[0].shape
            new_nodes.append(unflat)
            out = unflat.outputs[0]
        graph.insert_before(q, new_nodes)
        replace_value(graph, q.outputs[0], out)
        for dead in (q, relu, add, matmul):
            if dead is not None:
                graph.remove(dead, safe=True)
        gemm.name = matmul.name  # the layer's name, which placement looks for
        if not act_dq.outputs[0].uses():
            graph.remove(act_dq, safe=True)
