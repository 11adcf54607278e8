"""The artifact formats: one entry per backend, with its exporter and its runtime loader.

Each entry's functions import their backend inside the call, so `pt2e-int8 bench model.onnx`
never imports the ExecuTorch side (and the other way round) and a board with only one
runtime installed can still bench its files. The imports are written out below, where a
reader and an import-graph tool both see them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pt2e_int8.errors import ConfigError, InputFileError


def _export_pte(model, example_inputs, path, **kwargs):
    from backends.executorch.lower import export_pte

    return export_pte(model, example_inputs, path, **kwargs)


def _load_pte(path, threads=None):
    from backends.executorch.runtime import load_pte

    return load_pte(path, threads=threads)


def _import_pte_runtime():
    from backends.compat.executorch import runtime_bindings
    from backends.executorch import runtime  # noqa: F401

    runtime_bindings()


def _export_onnx(model, example_inputs, path, **kwargs):
    from backends.onnx.export import export_onnx

    return export_onnx(model, example_inputs, path, **kwargs)


def _load_onnx(path, threads=None):
    from backends.onnx.runtime import load_onnx

    return load_onnx(path, threads=threads)


def _import_onnx_runtime():
    from backends.onnx import runtime  # noqa: F401


def _pte_reference(gm):
    from backends.executorch.reference import xnnpack_reference

    return xnnpack_reference(gm)


def _onnx_reference(gm):
    from backends.onnx.reference import onnx_reference

    return onnx_reference(gm)


@dataclass(frozen=True)
class Backend:
    name: str  # as written in --format and in report.json placement keys
    suffix: str
    # (model, example_inputs, path, **options) -> backends.result.ExportResult
    export: Callable
    # (path, threads=None) -> a program with .run([tensors]) -> [tensors] and .input_specs()
    load: Callable
    runtime: str  # distribution name of the runtime, for versions and install hints
    describe: str
    # () -> None: import the runtime, so that a later `load` costs only the file
    import_runtime: Callable
    # (converted GraphModule) -> the PyTorch model computing what this runtime computes (integer
    # accumulation, its rounding): the reference a parity check measures output steps against
    reference: Callable


BACKENDS: dict[str, Backend] = {
    b.name: b for b in (
        Backend("pte", ".pte", _export_pte, _load_pte, "executorch", "ExecuTorch program, XNNPACK-delegated",
                _import_pte_runtime, _pte_reference),
        Backend("onnx", ".onnx", _export_onnx, _load_onnx, "onnxruntime", "QDQ ONNX for ONNX Runtime",
                _import_onnx_runtime, _onnx_reference),
    )
}


def parse_formats(text: str) -> list[Backend]:
    """'pte,onnx' -> [Backend, Backend]; an unknown name is a ConfigError listing the known ones."""
    names = [n.strip().lower().lstrip(".") for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise ConfigError(
            f"Unknown --format {', '.join(map(repr, unknown)) or repr(text)}: pt2e-int8 writes "
            f"{', '.join(BACKENDS)}. Pass a comma-separated list such as --format {','.join(BACKENDS)}."
        )
    return [BACKENDS[n] for n in dict.fromkeys(names)]


def backend_of(path: str | Path) -> Backend:
    """The backend of an artifact file, from its suffix."""
    suffix = Path(path).suffix.lower()
    for backend in BACKENDS.values():
        if backend.suffix == suffix:
            return backend
    raise InputFileError(
        f"{path}: unknown artifact kind {suffix or '(no suffix)'!r}. pt2e-int8 runs "
        f"{', '.join(b.suffix for b in BACKENDS.values())} files, as written by `pt2e-int8 export`."
    )


def check_artifact(path: str | Path) -> Backend:
    """The backend of an artifact that exists as a regular file; InputFileError otherwise."""
    path = Path(path)
    backend = backend_of(path)
    if not path.exists():
        raise InputFileError(
            f"{path}: no such file. Pass the path of a {backend.suffix} written by `pt2e-int8 export`.")
    if not path.is_file():  # a directory, FIFO or device: reading it fails or blocks
        raise InputFileError(
            f"{path} is not a regular file. Pass the path of a {backend.suffix} written by `pt2e-int8 export`.")
    return backend


def load_artifact(path: str | Path, threads: int | None = None):
    """Load a .pte / .onnx with its runtime; a missing, truncated or corrupt file is an InputFileError."""
    path = Path(path)
    backend = check_artifact(path)
    try:
        return backend.load(str(path), threads=threads)
    except InputFileError:
        raise
    except ImportError as e:
        raise InputFileError(
            f"{path}: the {backend.runtime} runtime is not importable ({e}). Install it "
            f"(`pip install {backend.runtime}`) to run {backend.suffix} files."
        ) from e
    except Exception as e:  # noqa: BLE001  (any failure to load a user's file is that file's problem)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise InputFileError(
            f"{path}: cannot be loaded as a {backend.describe} ({type(e).__name__}: {first}). "
            f"The file is truncated, corrupt or not a {backend.suffix}; re-create it with `pt2e-int8 export`."
        ) from e


def import_runtimes(paths) -> None:
    """Import the runtime of each artifact's format now (e.g. while a probe runs); a runtime that is
    not installed is left for `load_artifact` to report."""
    for backend in {backend_of(p).name: backend_of(p) for p in paths}.values():
        try:
            backend.import_runtime()
        except ImportError:
            pass
