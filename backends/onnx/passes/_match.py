"""Graph-matching helpers the ONNX passes share: what produced a value, its constant, fresh names."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

QUANTIZED_DTYPES = (ir.DataType.INT8, ir.DataType.UINT8)


def producer(value: ir.Value | None, op_type: str, domain: str = "") -> ir.Node | None:
    """The node that produced `value` if it is a `domain::op_type`, else None."""
    node = value.producer() if value is not None else None
    if node is not None and node.op_type == op_type and node.domain == domain:
        return node
    return None


def only_consumer(value: ir.Value, op_type: str | None = None) -> ir.Node | None:
    """The single node that reads `value` (and is `op_type`), or None; graph outputs disqualify."""
    users = value.consumers()
    if len(users) != 1 or value.is_graph_output():
        return None
    node = users[0]
    return node if op_type is None or (node.op_type == op_type and node.domain == "") else None


def live_nodes(graph: ir.Graph) -> set[int]:
    """ids of the nodes some graph output depends on (dead leftovers of earlier passes excluded)."""
    live: set[int] = set()
    stack = [v.producer() for v in graph.outputs if v.producer() is not None]
    while stack:
        n = stack.pop()
        if id(n) in live:
            continue
        live.add(id(n))
        stack += [v.producer() for v in n.inputs if v is not None and v.producer() is not None]
    return live


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant (initializer) contents as numpy, or None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def attr(node: ir.Node, name: str, default=None):
    a = node.attributes.get(name)
    return default if a is None else a.value


def fresh_name(graph: ir.Graph, base: str) -> str:
    """A value/initializer name not used in `graph` yet, deterministic for a given graph."""
    taken = graph.meta.setdefault("_taken_names", _all_names(graph))
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _all_names(graph: ir.Graph) -> set[str]:
    names = set(graph.initializers)
    names.update(v.name for v in graph.inputs)
    for node in graph.all_nodes():
        names.update(v.name for v in node.outputs if v.name)
        if node.name:
            names.add(node.name)
    return names


def add_initializer(graph: ir.Graph, base: str, array: np.ndarray) -> ir.Value:
    """Register `array` as a new initializer named after `base`."""
    name = fresh_name(graph, base)
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name),
                     shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
    graph.register_initializer(value)
    return value


def node(graph: ir.Graph, op_type: str, inputs, *, name: str, domain: str = "",
         num_outputs: int = 1, **attributes) -> ir.Node:
    """A new node with a unique name and named outputs (not yet inserted)."""
    node_name = fresh_name(graph, name)
    outputs = [ir.Value(name=fresh_name(graph, f"{node_name}_out{i}" if num_outputs > 1 else node_name))
               for i in range(num_outputs)]
    return ir.Node(domain, op_type, inputs, attributes=ir.convenience.convert_attributes(attributes),
                   outputs=outputs, name=node_name)


def set_tensor_type(value: ir.Value, dtype: ir.DataType, shape=None) -> None:
    value.type = ir.TensorType(dtype)
    if shape is not None:
        value.shape = ir.Shape(shape)


def replace_value(graph: ir.Graph, old: ir.Value, new: ir.Value) -> None:
    """Point every use of `old` (graph outputs too, keeping the output's name) at `new`."""
    if old.is_graph_output():
        name = old.name
        old.name = fresh_name(graph, f"{name}_replaced")
        new.name = name
    old.replace_all_uses_with(new, replace_graph_outputs=True)


def zero_point_is_min(q: ir.Node) -> bool:
    """Whether Q's zero point is its type's minimum: then Q(Relu(y)) == Q(y), the clamp absorbs the Relu."""
    zp = constant(q.inputs[2]) if len(q.inputs) > 2 else np.zeros((), np.uint8)
    return zp is not None and zp.size == 1 and int(zp.reshape(())) == np.iinfo(zp.dtype).min


def quantized_output(value: ir.Value) -> tuple[ir.Node | None, ir.Node] | None:
    """(relu | None, Q) when `value` is quantized right away, through a Relu the Q can absorb."""
    relu = only_consumer(value, "Relu")
    q = only_consumer(relu.outputs[0] if relu is not None else value, "QuantizeLinear")
    if q is None or relu is not None and not zero_point_is_min(q):
        return None
    return relu, q


def dequantized_input(value: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value | None] | None:
    """(quantized tensor, scale, zero point) of a DequantizeLinear output, or None."""
    dq = producer(value, "DequantizeLinear")
    if dq is None:
        return None
    return dq.inputs[0], dq.inputs[1], dq.inputs[2] if len(dq.inputs) > 2 else None


def replace_with_fused(graph: ir.Graph, fused: ir.Node, anchor: ir.Node, relu: ir.Node | None,
                       q: ir.Node) -> None:
    """Put `fused` in place of anchor [→ relu] → q, keeping the anchor's name; drop orphaned DQs."""
    fused.outputs[0].type, fused.outputs[0].shape = q.outputs[0].type, q.outputs[0].shape
    graph.insert_before(q, fused)
    replace_value(graph, q.outputs[0], fused.outputs[0])
    feeders = [v.producer() for v in anchor.inputs if v is not None and v.producer() is not None]
    for dead in dict.fromkeys(d for d in (q, relu, anchor) if d is not None):  # q is anchor for a float result
        graph.remove(dead, safe=True)
    fused.name = anchor.name
    for node in feeders:
        if node.op_type == "DequantizeLinear" and not any(o.uses() or o.is_graph_output() for o in node.outputs):
            graph.remove(node, safe=True)
