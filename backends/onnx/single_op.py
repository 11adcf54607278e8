"""One ONNX operator in an ONNX Runtime CPU session: how the ONNX file's references evaluate an op
the way the file's runtime does (`softmax_reference`, `layer_norm_reference`).

Each session is made once per (operator, input ranks, attributes) and kept: its dimensions are
free, so one session serves every call of that op in a model (all-MiniLM-L6-v2: one Softmax
session for its 6 softmaxes, one LayerNormalization session for its 13 LayerNorms).
"""

from __future__ import annotations

import numpy as np

_SESSIONS: dict[tuple, object] = {}


def run_single_op(op_type: str, inputs: list[np.ndarray], *, opset: int, **attrs) -> np.ndarray:
    """`op_type(*inputs, **attrs)` as ONNX Runtime's CPU provider computes it (fp32 inputs, one
    output shaped like the first input).

    Example:
        run_single_op("Softmax", [x], opset=13, axis=-1)
    """
    key = (op_type, tuple(a.ndim for a in inputs), opset, tuple(sorted(attrs.items())))
    session = _SESSIONS.get(key)
    if session is None:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        from backends.onnx.runtime import session_options

        names = [f"x{i}" for i in range(len(inputs))]
        values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [f"{n}_d{j}" for j in range(a.ndim)])
                  for n, a in zip(names, inputs, strict=True)]
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"x0_d{j}" for j in range(inputs[0].ndim)])
        graph = helper.make_graph([helper.make_node(op_type, names, ["y"], **attrs)], op_type, values, [out])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        session = ort.InferenceSession(model.SerializeToString(), session_options(),
                                       providers=["CPUExecutionProvider"])
        _SESSIONS[key] = session
    return session.run(None, {f"x{i}": a for i, a in enumerate(inputs)})[0]
