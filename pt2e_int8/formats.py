"""The artifact formats the command line knows: one registry shared by export, bench, compare, demo.

Each entry names its exporter and its runtime loader as "module:attribute" strings, imported
only when used, so `pt2e-int8 bench model.onnx` never imports the ExecuTorch side (and the
other way round) and a board with only one runtime installed can still bench its files.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

from pt2e_int8.errors import ConfigError, InputFileError


@dataclass(frozen=True)
class Format:
    name: str  # as written in --format and in report.json placement keys
    suffix: str
    exporter: str  # "module:function" -> (gm, example_inputs, path) -> ExportResult
    loader: str  # "module:function" -> (path) -> object with .run([tensors]) -> [tensors]
    runtime: str  # distribution name of the runtime, for versions and install hints
    describe: str


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    if fmt.name in FORMATS:
        raise ValueError(f"format {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return fmt


register(Format("pte", ".pte", "backends.executorch:export_pte", "backends.executorch.runtime:load_pte",
                "executorch", "ExecuTorch program, XNNPACK-delegated"))
register(Format("onnx", ".onnx", "backends.onnx:export_onnx", "backends.onnx.runtime:load_onnx",
                "onnxruntime", "QDQ ONNX for ONNX Runtime"))


def parse_formats(text: str) -> list[Format]:
    """'pte,onnx' -> [Format, Format]; an unknown name is a ConfigError listing the known ones."""
    names = [n.strip().lower().lstrip(".") for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ConfigError(
            f"Unknown --format {', '.join(map(repr, unknown)) or repr(text)}: pt2e-int8 writes "
            f"{', '.join(FORMATS)}. Pass a comma-separated list such as --format {','.join(FORMATS)}."
        )
    return [FORMATS[n] for n in dict.fromkeys(names)]


def format_of(path: str | Path) -> Format:
    """The format of an artifact file, from its suffix."""
    suffix = Path(path).suffix.lower()
    for fmt in FORMATS.values():
        if fmt.suffix == suffix:
            return fmt
    raise InputFileError(
        f"{path}: unknown artifact kind {suffix or '(no suffix)'!r}. pt2e-int8 runs "
        f"{', '.join(f.suffix for f in FORMATS.values())} files, as written by `pt2e-int8 export`."
    )


def resolve(ref: str):
    """Import "module:attribute" on first use."""
    module, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise InputFileError(
            f"The {module} backend is not importable ({e}). Install the project "
            "(`pip install -e .`) or, on a board, the runtime package for this file."
        ) from e


def load_artifact(path: str | Path, threads: int | None = None):
    """Load a .pte / .onnx with its runtime; a missing, truncated or corrupt file is an InputFileError."""
    path = Path(path)
    fmt = format_of(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file. Pass the path of a {fmt.suffix} written by `pt2e-int8 export`.")
    loader = resolve(fmt.loader)
    kwargs = {"threads": threads} if threads is not None and "threads" in inspect.signature(loader).parameters else {}
    try:
        return loader(str(path), **kwargs)
    except InputFileError:
        raise
    except Exception as e:  # noqa: BLE001  (any failure to load a user's file is that file's problem)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise InputFileError(
            f"{path}: cannot be loaded as a {fmt.describe} ({type(e).__name__}: {first}). "
            f"The file is truncated, corrupt or not a {fmt.suffix}; re-create it with `pt2e-int8 export`."
        ) from e
