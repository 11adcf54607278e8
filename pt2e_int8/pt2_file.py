"""Load a `.pt2` (torch.export.save) without running code from it.

`torch.export.load` trusts its file (torch 2.13, `torch/export/pt2_archive/_package.py` and
`torch/_export/serde/serialize.py`). It

- unpickles with `weights_only=False` every weight or tensor constant whose payload config says
  `use_pickle`, and legacy `weights/<model>.pt` / `constants/<model>.pt` entries after a failed
  restricted load;
- falls back to an unrestricted `torch.load` for sample inputs that are not plain tensors;
- unpickles opaque constants with `pickle.loads` and TorchBind objects with TorchScript's
  unpickler, and dlopens AOTInductor shared libraries;
- parses symbolic shape expressions with `sympy.sympify`, which calls `eval`;
- resolves node targets to any attribute reachable from `torch` (`torch.serialization.os.system`),
  which then runs when the program runs.

A file from a model hub or a colleague can therefore run any code. `load_pt2` reads the archive
once, checks every entry torch would unpickle, eval or dlopen, and refuses the file
(`UnsafeModelFileError`, naming each entry and why) unless pickles hold only tensors and
containers (they load with torch's `weights_only` unpickler), shape expressions are sympy
constructors over symbols and numbers, and there is no native code or opaque object. torch then
loads the same bytes with `TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`, so a path this check missed still
cannot unpickle more than tensors, and every call target of the loaded graph must be an operator.
`trust=True` skips all of it: the file is loaded exactly as `torch.export.load` would.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import operator
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from pt2e_int8.errors import InputFileError, UnsafeModelFileError

_REFUSED = ("Refused because loading it could run code from the file. If you trust the file and "
            "its source, pass --trust-model-file (command line) or trust=True (load_pt2).")
_RECREATE = "re-create it with torch.export.save(torch.export.export(model, args), path)"

# Functions a symbolic shape expression may call: sympy's constructors as `srepr` prints them
# (what torch.export.save writes) and the shape functions torch's deserializer provides.
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Mod", "Abs",
    "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan",
    "LessThan", "GreaterThan", "Equality", "Unequality", "And", "Or", "Not", "Xor", "Piecewise",
    "ExprCondPair", "BooleanTrue", "BooleanFalse", "true", "false", "Infinity", "NegativeInfinity",
    "NaN", "ComplexInfinity", "oo", "zoo", "nan", "Half", "One", "Zero", "NegativeOne",
    "IntInfinity", "NegativeIntInfinity", "Tuple",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
    "ToFloat", "Identity",
})
_MAX_EXPR_CHARS = 20_000
_MAX_INT_LITERAL = 2**63

# Python callables an exported graph legitimately calls besides operators: SymInt arithmetic
# (torch's own list in serialize.py) and tuple indexing of multi-output ops.
_SAFE_CALL_TARGETS = frozenset({
    operator.getitem, operator.eq, operator.ne, operator.le, operator.ge, operator.lt, operator.gt,
    operator.neg, operator.pos, operator.mul, operator.add, operator.sub, operator.floordiv,
    operator.mod, operator.pow, operator.truediv, operator.and_, operator.or_, operator.lshift,
    operator.rshift, operator.not_, operator.abs,
    __import__("math").trunc, __import__("math").ceil, __import__("math").floor,
    torch.sym_not, torch.sym_int, torch.sym_float, torch.sym_ite, torch.sym_max, torch.sym_min,
    torch.sym_sqrt, torch.sym_sum, torch._assert,
})


def load_pt2(path: str | os.PathLike, *, trust: bool = False) -> torch.export.ExportedProgram:
    """`torch.export.load` that never runs code from the file unless `trust=True`.

    Args:
        path: a `.pt2` written by `torch.export.save`.
        trust: load the file exactly as `torch.export.load` does: pickled entries and all. Only for
            files whose source you trust as you would trust a Python script from it.

    Raises:
        UnsafeModelFileError: the file holds something that could run code (names each entry).
        InputFileError: the file is missing, not a regular file, truncated, corrupt or not a `.pt2`.

    Example:
        ep = load_pt2("model.pt2"); out = ep.module()(x)
    """
    if not isinstance(path, str | os.PathLike):
        raise InputFileError(f"load_pt2 takes a path (str or os.PathLike), got {type(path).__name__}.")
    path = Path(path)
    data = _read_regular_file(path)
    if trust:
        return _torch_load(path, io.BytesIO(data))
    problems = list(dict.fromkeys(inspect_pt2(data, path)))
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise UnsafeModelFileError(f"{path}: {shown}. {_REFUSED}")
    with _weights_only_everywhere():
        ep = _torch_load(path, io.BytesIO(data))
    bad = unsafe_call_targets(ep.graph_module)
    if bad:
        raise UnsafeModelFileError(
            f"{path}: the graph calls {', '.join(bad[:5])}, which {'is' if len(bad) == 1 else 'are'} not "
            f"operators: a crafted graph can name any Python function as a node target. {_REFUSED}")
    return ep


def _read_regular_file(path: Path) -> bytes:
    if not path.exists():
        raise InputFileError(f"{path}: no such file. Pass a .pt2 written by torch.export.save.")
    if not path.is_file():  # a directory, FIFO or device: reading it would fail or block
        raise InputFileError(f"{path} is not a regular file. Pass a .pt2 written by torch.export.save.")
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputFileError(f"{path}: cannot be read ({e.strerror}). Check its permissions.") from e


def _torch_load(path: Path, buffer: io.BytesIO) -> torch.export.ExportedProgram:
    import pt2e_int8.qdq  # noqa: F401  (registers quantized_decomposed ops so a converted .pt2 deserializes)

    try:
        return torch.export.load(buffer)
    except Exception as e:  # corrupt archives fail in many ways
        text = str(e).strip()
        first = f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__
        raise InputFileError(
            f"{path}: cannot be loaded with torch.export.load ({first}). The file is truncated, corrupt or not "
            f"an ExportedProgram: {_RECREATE}."
        ) from e


@contextlib.contextmanager
def _weights_only_everywhere() -> Iterator[None]:
    """Every torch.load in torch.export.load is restricted, whatever its call site asks for."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    saved = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def inspect_pt2(data: bytes, path: str | os.PathLike = "<bytes>") -> list[str]:
    """What in a .pt2 archive could run code on load; empty when nothing could.

    Raises:
        InputFileError: the bytes are not a readable zip archive (with the reason).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        # Reading every entry checks its CRC: a flipped byte is caught here, before torch.
        infos = [info for info in archive.infolist() if not info.is_dir()]
        entries = {_record_name(info.filename): archive.read(info) for info in infos}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError, OSError) as e:
        raise InputFileError(
            f"{path}: not a readable .pt2 archive ({type(e).__name__}: {e}). The file is truncated, corrupt "
            f"or not written by torch.export.save: {_RECREATE}."
        ) from e
    # torch 2.7+ writes archive_format = "pt2"; older torch.export.save wrote serialized_exported_program.json.
    if entries.get("archive_format") != b"pt2" and "serialized_exported_program.json" not in entries:
        hint = (" It is a torch.save checkpoint (weights), not a program: pass a .pt2 from torch.export.save, or "
                "file.py:function that builds the model and loads these weights.") if "data.pkl" in entries else ""
        raise InputFileError(f"{path}: not a .pt2 archive (a zip without torch.export.save's archive_format "
                             f"entry).{hint or ' ' + _RECREATE[0].upper() + _RECREATE[1:] + '.'}")
    problems: list[str] = []
    if len(entries) != len(infos):  # which copy torch reads is not ours to guess
        names = [_record_name(info.filename) for info in infos]
        twice = sorted({n for n in names if names.count(n) > 1})
        problems.append(f"{', '.join(twice[:3])} appear{'s' if len(twice) == 1 else ''} more than once")
    pickled: dict[str, str] = {}  # entry -> what it holds, for entries torch unpickles
    for name, blob in entries.items():
        if name.startswith("data/aotinductor/"):
            problems.append(f"{name} is AOTInductor native code (a shared library the loader would load)")
        elif name.startswith("data/constants/") and name.rsplit("/", 1)[-1].startswith(("custom_obj_", "opaque_obj_")):
            problems.append(f"{name} is a pickled Python/TorchBind object")
        elif name.endswith(".pt"):
            pickled[name] = "sample inputs" if name.startswith("data/sample_inputs/") else "a pickle"
        elif name.endswith(".json"):
            problems += _json_problems(name, blob, entries, pickled)
    for name, what in pickled.items():
        reason = _not_weights_only(entries.get(name))
        if reason:
            problems.append(f"{name} ({what}) holds more than tensors ({reason})")
    return problems


def _record_name(filename: str) -> str:
    # torch writes every record under one top-level folder (the archive's name) and reads them without it.
    return filename.split("/", 1)[1] if "/" in filename else filename


def _json_problems(name: str, blob: bytes, entries: dict[str, bytes], pickled: dict[str, str]) -> list[str]:
    try:
        doc = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []  # not ours to judge: torch fails on it without running anything
    problems = []
    config = doc.get("config") if isinstance(doc, dict) else None
    if name.endswith(("_weights_config.json", "_constants_config.json")) and isinstance(config, dict):
        folder = name.rsplit("/", 1)[0]
        for fqn, meta in config.items():
            if isinstance(meta, dict) and meta.get("use_pickle"):
                entry = f"{folder}/{meta.get('path_name')}"
                kind = "weight" if "weights" in name else "constant"
                pickled[entry] = f"pickled {kind} {fqn!r}"
                if entry not in entries:
                    problems.append(f"{entry} (pickled {kind} {fqn!r}) is missing")
    for expr in _expr_strings(doc):
        reason = unsafe_expression(expr)
        if reason:
            problems.append(f"{name} has a shape expression that is not plain sympy ({reason}): {expr[:80]!r}")
    return problems


def _expr_strings(doc) -> Iterator[str]:
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str" and isinstance(value, str):
                    yield value
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def unsafe_expression(expr: str) -> str | None:
    """Why torch's sympy.sympify(expr) could do more than build a shape expression; None if it cannot.

    Accepted: calls of sympy constructors and torch shape functions (`Symbol('s0', integer=True)`,
    `FloorDiv(Symbol('s0'), Integer(2))`) with literal arguments. No attribute access, no other
    names, no operators but a minus sign on a number.
    """
    if len(expr) > _MAX_EXPR_CHARS:
        return f"{len(expr)} characters"
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return "not an expression"
    for node in ast.walk(tree):
        if isinstance(node, ast.Expression | ast.Load | ast.keyword | ast.USub):
            continue
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                return "calls something that is not a plain name"
            continue
        if isinstance(node, ast.Name):
            if node.id not in _SYMPY_NAMES:
                return f"unknown name {node.id!r}"
            continue
        if isinstance(node, ast.Constant):
            if isinstance(node.value, int) and abs(node.value) > _MAX_INT_LITERAL:
                return "an integer out of range"
            if not isinstance(node.value, int | float | str | bool) and node.value is not None:
                return f"a {type(node.value).__name__} literal"
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            continue
        return f"a {type(node).__name__} node"
    return None


def _not_weights_only(blob: bytes | None) -> str | None:
    """Why torch's restricted unpickler refuses a pickle; None when it loads (tensors and containers only)."""
    if blob is None:
        return None
    try:
        torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001  (the restricted unpickler raises many types)
        # torch's text goes on to suggest allow-listing the global or weights_only=False: not quoted.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            return f"it imports {found.group(1)}"
        text = str(e).strip().splitlines()
        return f"{type(e).__name__}: {text[-1][:160] if text else ''}"
    return None


def unsafe_call_targets(gm: torch.nn.Module) -> list[str]:
    """Node targets (and callable arguments) of a loaded graph that are not operators."""
    bad: list[str] = []

    def check(value) -> None:
        if callable(value) and not isinstance(value, torch.fx.Node) and not _is_operator(value):
            text = f"{getattr(value, '__module__', '') or ''}.{getattr(value, '__qualname__', repr(value))}".lstrip(".")
            if text not in bad:
                bad.append(text)
        return value

    for module in gm.modules():
        graph = getattr(module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op == "call_function":
                check(node.target)
            torch.fx.node.map_aggregate((node.args, node.kwargs), check)
    return bad


def _is_operator(target) -> bool:
    ops = torch._ops  # OpOverload / HigherOrderOperator are torch's operator types (public via torch.ops)
    if isinstance(target, ops.OpOverload | ops.OpOverloadPacket | ops.HigherOrderOperator):
        return True
    try:
        return target in _SAFE_CALL_TARGETS
    except TypeError:  # unhashable
        return False
