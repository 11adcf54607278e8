"""Optional dependencies of the application (the demo's data set and plot), imported on use."""

from __future__ import annotations

import importlib
from types import ModuleType

from pt2e_int8.errors import UserInputError


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or say which pip extra brings it.

    Example:
        datasets = require("sklearn.datasets", "demo")
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UserInputError(
            f"{module.split('.')[0]} is not installed; it comes with pt2e-int8's {extra!r} extra. "
            f"Install it with `pip install 'pt2e-int8[{extra}]'` (`make demo` does)."
        ) from e
