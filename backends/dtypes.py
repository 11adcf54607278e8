"""One table of tensor element types as each runtime spells them.

torch (by name, so runtime-only boards need no torch), numpy, ONNX Runtime's type strings and
c10's ScalarType codes (what ExecuTorch's TensorInfo.dtype() returns).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DType:
    name: str  # torch / numpy spelling: "float32"
    onnx: str  # ONNX Runtime's NodeArg.type: "tensor(float)"
    c10: int  # c10::ScalarType code


DTYPES = (
    DType("uint8", "tensor(uint8)", 0),
    DType("int8", "tensor(int8)", 1),
    DType("int16", "tensor(int16)", 2),
    DType("int32", "tensor(int32)", 3),
    DType("int64", "tensor(int64)", 4),
    DType("float16", "tensor(float16)", 5),
    DType("float32", "tensor(float)", 6),
    DType("float64", "tensor(double)", 7),
    DType("bool", "tensor(bool)", 11),
    DType("bfloat16", "tensor(bfloat16)", 15),
)
_BY_ONNX = {d.onnx: d for d in DTYPES}
_BY_C10 = {d.c10: d for d in DTYPES}
FLOAT32 = _BY_ONNX["tensor(float)"]


def from_onnx(type_string: str, default: DType | None = FLOAT32) -> DType | None:
    """ONNX Runtime's "tensor(float)" → DType (`default` when unknown)."""
    return _BY_ONNX.get(type_string, default)


def from_c10(code: int) -> DType:
    """c10 ScalarType code → DType (float32 when unknown)."""
    return _BY_C10.get(int(code), FLOAT32)


@dataclass(frozen=True)
class InputSpec:
    """One input of an artifact, as its runtime describes it."""

    shape: tuple[int | None, ...]  # None: a dynamic dimension (a .pte gives its upper bound instead)
    dtype: DType
