"""MODEL on the command line: a `.pt2` file, or `path/file.py:function` / `package.module:function`.

A factory returns a module or `(module, example_inputs)`. A `.pt2` (torch.export.save) is
float, or already converted by pt2e-int8 (it has quantize/dequantize ops), in which case it
goes to the backends as is. Every way this can fail is an InputFileError naming the fix.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from pt2e_int8.errors import InputFileError

_FORMS = ("a .pt2 file written by torch.export.save, or path/to/file.py:function / "
          "package.module:function where the function returns an nn.Module or (module, example_inputs)")


@dataclass
class LoadedModel:
    module: torch.nn.Module  # the float module, or the converted GraphModule
    example_inputs: tuple | None  # from the factory or the .pt2, when it has them
    converted: bool  # already quantized: has q/dq ops
    source: str  # the MODEL argument, for messages and the report


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


def is_converted(gm: torch.nn.Module) -> bool:
    """True when the graph already holds pt2e quantize/dequantize ops."""
    from pt2e_int8.qdq import QDQ_OPS

    graph = getattr(gm, "graph", None)
    return graph is not None and any(n.op == "call_function" and n.target in QDQ_OPS for n in graph.nodes)


def _freeze_train_eval(gm: torch.nn.Module) -> torch.nn.Module:
    # torch.export's unlifted module raises on .train()/.eval(); its graph is already fixed in
    # the mode it was exported in, so both are no-ops (quantize() calls model.eval()).
    gm.train = types.MethodType(lambda self, mode=True: self, gm)
    gm.eval = types.MethodType(lambda self: self, gm)
    return gm


def _load_pt2(path: Path, source: str, trust: bool) -> LoadedModel:
    from pt2e_int8.pt2_file import load_pt2

    ep = load_pt2(path, trust=trust)
    gm = _freeze_train_eval(ep.module())
    example = None
    saved = getattr(ep, "example_inputs", None)
    if saved:
        args, kwargs = saved
        example = tuple(args) if not kwargs else None
    return LoadedModel(gm, example, is_converted(gm), source)


def _exec_file(path: Path, source: str) -> types.ModuleType:
    if not path.exists():
        raise InputFileError(f"MODEL {source}: the file {path} does not exist. Pass {_FORMS}.")
    if not path.is_file():
        raise InputFileError(f"MODEL {source}: {path} is not a regular file. Pass {_FORMS}.")
    name = f"_pt2e_int8_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputFileError(f"MODEL {source}: {path} is not a Python file. Pass {_FORMS}.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # Let the file import its siblings, as `python file.py` would.
    sys.path.insert(0, str(path.resolve().parent))
    spec.loader.exec_module(module)
    return module


def _import_factory_module(target: str, source: str) -> types.ModuleType:
    looks_like_file = target.endswith(".py") or "/" in target or "\\" in target
    try:
        return _exec_file(Path(target), source) if looks_like_file else importlib.import_module(target)
    except InputFileError:
        raise
    except ModuleNotFoundError as e:
        if not looks_like_file and e.name and target.startswith(e.name):
            raise InputFileError(
                f"MODEL {source}: no module named {target!r}. Pass a module importable from here "
                f"(check PYTHONPATH) or a file path; {_FORMS}."
            ) from e
        raise InputFileError(f"MODEL {source}: importing it failed ({_first_line(e)}). Install what it imports.") from e
    except SystemExit as e:
        raise InputFileError(
            f"MODEL {source}: importing {target} called sys.exit({e.code!r}). A model file must define the "
            "factory without exiting on import: guard its script part with `if __name__ == \"__main__\":`."
        ) from e
    except Exception as e:  # noqa: BLE001  (the user's module raised at import)
        raise InputFileError(
            f"MODEL {source}: importing {target} raised {_first_line(e)}. Fix the module so it imports "
            "cleanly (run it with python to see the traceback, or add --debug)."
        ) from e


def _call_factory(target: str, func_name: str, source: str) -> LoadedModel:
    module = _import_factory_module(target, source)
    factory = getattr(module, func_name, None)
    if not callable(factory):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        have = f"; it defines {', '.join(names)}" if names else ""
        raise InputFileError(
            f"MODEL {source}: {target} has no function {func_name!r}{have}. "
            "Name a function that returns an nn.Module or (module, example_inputs)."
        )
    try:
        made = factory()
    except SystemExit as e:
        raise InputFileError(
            f"MODEL {source}: calling {func_name}() called sys.exit({e.code!r}). The factory must return the "
            "model (or (model, example_inputs)), not exit."
        ) from e
    except Exception as e:  # noqa: BLE001  (the user's factory raised)
        raise InputFileError(
            f"MODEL {source}: calling {func_name}() raised {_first_line(e)}. Fix the factory so it builds "
            "the model without arguments (add --debug for the traceback)."
        ) from e
    example = None
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        made, example = made
        example = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if not isinstance(made, torch.nn.Module):
        raise InputFileError(
            f"MODEL {source}: {func_name}() returned {type(made).__name__}; it must return an nn.Module "
            "or a tuple (module, example_inputs)."
        )
    return LoadedModel(made, example, is_converted(made), source)


def load_model(spec: str, *, trust: bool = False) -> LoadedModel:
    """Load MODEL as given on the command line.

    A `.pt2` is checked for anything that could run code on load and refused when it has some,
    unless `trust` (--trust-model-file); see `pt2e_int8.pt2_file`. A `file.py:function` is code
    the user runs on purpose.

    Example:
        load_model("models/mlp.py:build")   # -> LoadedModel(module, example_inputs, converted=False, ...)
        load_model("out/qm.pt2")
    """
    if spec.lower().endswith(".pt2"):
        return _load_pt2(Path(spec), spec, trust)
    target, sep, func_name = spec.rpartition(":")
    if not sep or not target or not func_name:
        if Path(spec).suffix.lower() in (".pt", ".pth", ".ckpt", ".safetensors"):
            raise InputFileError(
                f"MODEL {spec}: a weights file holds no model code. Write a file.py with a function that builds the "
                f"module and loads these weights, and pass file.py:function; or pass {_FORMS}."
            )
        raise InputFileError(f"MODEL {spec!r} is neither a .pt2 file nor module:function. Pass {_FORMS}.")
    return _call_factory(target, func_name, spec)


def model_file_of(spec: str) -> Path | None:
    """The file MODEL names (the .pt2, or the .py of file.py:function); None for package.module:function."""
    if spec.lower().endswith(".pt2"):
        return Path(spec)
    target, sep, _ = spec.rpartition(":")
    if sep and (target.endswith(".py") or "/" in target or "\\" in target):
        return Path(target)
    return None


def run_model(module: torch.nn.Module, args: tuple, *, what: str, fix: str) -> list[torch.Tensor]:
    """The model's outputs on `args`, flattened; a model that raises, exits or returns no tensor
    is the user's to fix (ExampleInputsError naming `what` and `fix`).

    Example:
        run_model(loaded.module, example, what="MODEL on the example inputs", fix="Pass --example-inputs ...")
    """
    from pt2e_int8.app.parity import flatten_outputs
    from pt2e_int8.capture import describe_inputs
    from pt2e_int8.errors import ExampleInputsError

    try:
        with torch.no_grad():
            out = module(*args)
    except SystemExit as e:
        raise ExampleInputsError(f"{what} {describe_inputs(args)}: forward called sys.exit({e.code!r}). {fix}") from e
    except Exception as e:  # noqa: BLE001  (any failure of the user's forward on the user's inputs)
        raise ExampleInputsError(f"{what} {describe_inputs(args)} fails: {_first_line(e)}. {fix}") from e
    outs = flatten_outputs(out)
    if not outs:
        raise ExampleInputsError(
            f"{what} returns {type(out).__name__}, no tensor: forward must return a tensor or a tuple/list/dict of "
            "tensors.")
    return outs
