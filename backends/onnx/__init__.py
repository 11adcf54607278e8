"""ONNX backend: QDQ (or explicit int8 operator) ONNX that ONNX Runtime runs as fused int8 kernels.

`export_onnx` is imported lazily so that `import backends.onnx.runtime` pulls in only
onnxruntime and numpy: `pt2e-int8 bench` runs on boards that have just a runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.onnx.export import export_onnx

__all__ = ["export_onnx"]


def __getattr__(name: str):
    if name == "export_onnx":
        from backends.onnx.export import export_onnx

        return export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
