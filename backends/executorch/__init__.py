"""ExecuTorch backend: `export_pte` (lowering, heavy imports) and `load_pte` (runtime only).

`export_pte` is resolved lazily so that `import backends.executorch.runtime` — what the
`bench` command uses on a board — does not pull in torch.export, torchao or exir.
"""

from __future__ import annotations

__all__ = ["export_pte", "load_pte"]


def __getattr__(name: str):
    if name == "export_pte":
        from backends.executorch.lower import export_pte

        return export_pte
    if name == "load_pte":
        from backends.executorch.runtime import load_pte

        return load_pte
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
