"""ConvertActivationDtypePass: int8 ⇄ uint8 activations, exactly (q ± 128, zero point ± 128).

    QuantizeLinear(x, s, z:int8) → … → DequantizeLinear(·, s, z)  ⇒  same with z + 128 : uint8

Why: ONNX Runtime on x86 rewrites int8 activation Q/DQ to uint8 at load time anyway (its
U8 × S8 / U8 × U8 kernels take unsigned activations), and so do other x86 runtimes; writing
them as uint8 puts that choice in the file, where it is visible and overridable. On ARM,
int8 × int8 kernels are native and int8 stays. Touches only per-tensor activation Q/DQ (a
scalar constant zero point on a non-constant tensor); weights and int32 biases are left alone,
as are tensors already in the target type. Types of the data-movement ops between a Q and
its DQs (Reshape, Transpose, Gather, …) follow.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import add_initializer, constant

_SHIFT = {ir.DataType.UINT8: (np.int8, -128), ir.DataType.INT8: (np.uint8, 128)}
_NP = {ir.DataType.UINT8: np.uint8, ir.DataType.INT8: np.int8}
# Ops whose output has their (first) input's element type.
_PASS_THROUGH = frozenset({"Reshape", "Transpose", "Gather", "Squeeze", "Unsqueeze", "Flatten",
                           "Slice", "Concat", "Identity", "MaxPool", "Split", "Expand", "Tile"})


class ConvertActivationDtypePass(ir.passes.InPlacePass):
    def __init__(self, target: ir.DataType) -> None:
        super().__init__()
        if target not in _NP:
            raise ValueError(f"activation dtype must be INT8 or UINT8, got {target}")
        self.target = target

    def _convert(self, graph: ir.Graph, zp: ir.Value, cache: dict) -> ir.Value | None:
        array = constant(zp)
        if array is None or array.ndim > 0 and array.size != 1 or array.dtype == _NP[self.target]:
            return None
        if zp.name not in cache:
            shifted = (array.astype(np.int16) + (128 if self.target == ir.DataType.UINT8 else -128))
            cache[zp.name] = add_initializer(graph, f"{zp.name}_{self.target.name.lower()}",
                                             shifted.astype(_NP[self.target]))
        return cache[zp.name]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified, cache = model.graph, False, {}
        for node in graph:
            if node.domain != "" or node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                continue
            if len(node.inputs) < 3 or constant(node.inputs[0]) is not None:
                continue  # no zero point (uint8 by default in ONNX), or a constant: weight / bias
            new_zp = self._convert(graph, node.inputs[2], cache)
            if new_zp is None:
                continue
            node.replace_input_with(2, new_zp)
            if node.op_type == "QuantizeLinear":
                node.outputs[0].type = ir.TensorType(self.target)
            modified = True
        if modified:
            for node in graph:  # forward the new element type through data movement
                if node.op_type in _PASS_THROUGH and node.domain == "" and node.inputs[0] is not None:
                    src = node.inputs[0].dtype
                    if src in _NP and node.outputs[0].dtype in _NP and node.outputs[0].dtype != src:
                        node.outputs[0].type = ir.TensorType(src)
        return ir.passes.PassResult(model, modified)
