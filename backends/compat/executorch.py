"""ExecuTorch 1.5.1 internals the backend relies on, and why no public API does the job.

Imports are deferred into each function: `pt2e-int8 bench` on a board loads only the
runtime bindings, never `executorch.exir`. `PRIVATE_SYMBOLS` names every private symbol;
tests/executorch/test_compat.py fails when an upgrade removes one.
"""

from __future__ import annotations

from torch.fx import Node

PINNED = "executorch==1.5.1"

# (module path, attribute) of every private name used below.
PRIVATE_SYMBOLS = (
    ("executorch.extension.pybindings._C", "_unsafe_reset_threadpool"),
    ("executorch.extension.pybindings._C", "_threadpool_get_thread_count"),
    ("executorch.extension.pybindings._C", "_load_for_executorch"),
    ("executorch.extension.pybindings._C", "_load_program_from_buffer"),
    ("executorch.exir._serialize._program", "deserialize_pte_binary"),
)


def missing_private_symbols() -> list[str]:
    """The private names above that this ExecuTorch no longer has (empty when all is well)."""
    import importlib

    from executorch.exir.dialects._ops import ops as exir_ops

    missing = [f"{mod}.{name}" for mod, name in PRIVATE_SYMBOLS
               if not hasattr(importlib.import_module(mod), name)]
    if not hasattr(exir_ops.edge.aten.add.Tensor, "_op"):
        missing.append("EdgeOpOverload._op")
    return missing


def edge_target(node: Node):
    """The aten / quantized_decomposed OpOverload behind an edge-dialect node target.

    Edge ops wrap the aten overload in `EdgeOpOverload._op`; there is no public accessor.
    """
    return getattr(node.target, "_op", node.target)


def runtime_bindings():
    """ExecuTorch's C++ runtime bindings (`_C`, which `portable_lib` re-exports).

    Not `executorch.runtime` nor `portable_lib`: both import `executorch.exir`, the compiler stack
    (seconds on a board, 19-38 s under qemu). torch is imported first: the pip wheel's bindings
    resolve libtorch from the loaded process.
    """
    import torch  # noqa: F401
    from executorch.extension.pybindings import _C

    return _C


def load_program(data: bytes):
    """A program from .pte bytes, verified for internal consistency (what `executorch.runtime` does)."""
    et = runtime_bindings()
    return et._load_program_from_buffer(data, program_verification=et.Verification.InternalConsistency)


def reset_threadpool(threads: int) -> bool:
    """Size XNNPACK's process-wide thread pool; False when this runtime build cannot.

    The only way to set it from Python (ExecuTorch's own pybindings tests use it).
    """
    reset = getattr(runtime_bindings(), "_unsafe_reset_threadpool", None)
    if reset is None:
        return False
    reset(int(threads))
    return True


def threadpool_size() -> int | None:
    get = getattr(runtime_bindings(), "_threadpool_get_thread_count", None)
    return get() if get else None


def method_input_meta(path: str, method: str = "forward") -> list[tuple[tuple[int, ...], int]]:
    """(sizes, c10 ScalarType code) of each input of a .pte method, read by the bare runtime
    bindings (no exir import): what `bench` needs to make random inputs."""
    meta = runtime_bindings()._load_for_executorch(str(path)).method_meta(method)
    return [(tuple(meta.input_tensor_meta(i).sizes()), meta.input_tensor_meta(i).dtype())
            for i in range(meta.num_inputs())]


def pte_structure(data: bytes) -> dict:
    """Delegates and operators of a .pte, read from its flatbuffer (exir's deserializer is the
    only reader of the schema in Python)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(data).program
    plans = program.execution_plan
    return {
        "delegates": [d.id for plan in plans for d in plan.delegates],
        "operators": sorted({op.name for plan in plans for op in plan.operators}),
    }
