"""pt2e-int8: int8 export for edge CPUs.

    import pt2e_int8 as q
    qm = q.quantize(model, example_inputs, calibration=batches)
    print(q.coverage(qm))

Names are re-exported lazily (PEP 562): `import pt2e_int8.app.cli` or `pt2e_int8.errors` must not
pull in torchao, so `pt2e-int8 bench` runs on a board that has only a runtime installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "QuantConfig": "pt2e_int8.config",
    "CoverageReport": "pt2e_int8.coverage_report",
    "LayerRow": "pt2e_int8.coverage_report",
    "coverage": "pt2e_int8.coverage_report",
    "AutoResult": "pt2e_int8.debug.auto",
    "auto_quantize": "pt2e_int8.debug.auto",
    "LayerErrorReport": "pt2e_int8.debug.numeric",
    "layer_errors": "pt2e_int8.debug.numeric",
    "QuantPlan": "pt2e_int8.debug.plan",
    "SensitivityReport": "pt2e_int8.debug.sensitivity",
    "sensitivity": "pt2e_int8.debug.sensitivity",
    "CalibrationError": "pt2e_int8.errors",
    "ConfigError": "pt2e_int8.errors",
    "DistributedError": "pt2e_int8.errors",
    "ExampleInputsError": "pt2e_int8.errors",
    "ExportError": "pt2e_int8.errors",
    "InputFileError": "pt2e_int8.errors",
    "LoweringError": "pt2e_int8.errors",
    "OutputPathError": "pt2e_int8.errors",
    "Pt2eInt8Error": "pt2e_int8.errors",
    "UserInputError": "pt2e_int8.errors",
    "DistillResult": "pt2e_int8.distillation",
    "distill": "pt2e_int8.distillation",
    "WorkflowError": "pt2e_int8.errors",
    "UnsafeModelFileError": "pt2e_int8.errors",
    "load_pt2": "pt2e_int8.pt2_file",
    "sync_observers": "pt2e_int8.distributed",
    "unshard_for_convert": "pt2e_int8.fsdp",
    "wrap_ddp": "pt2e_int8.distributed",
    "cosine": "pt2e_int8.numerics",
    "max_error_in_steps": "pt2e_int8.numerics",
    "sqnr": "pt2e_int8.numerics",
    "PercentileObserver": "pt2e_int8.observers",
    "QATSchedule": "pt2e_int8.qat",
    "freeze_bn_stats": "pt2e_int8.qat",
    "freeze_observers": "pt2e_int8.qat",
    "learn_ranges": "pt2e_int8.qat",
    "move_to_eval": "pt2e_int8.qat",
    "move_to_train": "pt2e_int8.qat",
    "load_qat_checkpoint": "pt2e_int8.qat_checkpoint",
    "save_qat_checkpoint": "pt2e_int8.qat_checkpoint",
    "Int8Quantizer": "pt2e_int8.quantizer",
    "calibrate": "pt2e_int8.workflow",
    "convert": "pt2e_int8.workflow",
    "prepare_qat": "pt2e_int8.workflow",
    "quantize": "pt2e_int8.workflow",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from pt2e_int8.config import QuantConfig  # noqa: F401
    from pt2e_int8.coverage_report import CoverageReport, LayerRow, coverage  # noqa: F401
    from pt2e_int8.debug.auto import AutoResult, auto_quantize  # noqa: F401
    from pt2e_int8.debug.numeric import LayerErrorReport, layer_errors  # noqa: F401
    from pt2e_int8.debug.plan import QuantPlan  # noqa: F401
    from pt2e_int8.debug.sensitivity import SensitivityReport, sensitivity  # noqa: F401
    from pt2e_int8.distillation import DistillResult, distill  # noqa: F401
    from pt2e_int8.distributed import sync_observers, wrap_ddp  # noqa: F401
    from pt2e_int8.errors import (  # noqa: F401
        CalibrationError,
        ConfigError,
        DistributedError,
        ExampleInputsError,
        ExportError,
        InputFileError,
        LoweringError,
        OutputPathError,
        Pt2eInt8Error,
        UnsafeModelFileError,
        UserInputError,
        WorkflowError,
    )
    from pt2e_int8.fsdp import unshard_for_convert  # noqa: F401
    from pt2e_int8.numerics import cosine, max_error_in_steps, sqnr  # noqa: F401
    from pt2e_int8.observers import PercentileObserver  # noqa: F401
    from pt2e_int8.pt2_file import load_pt2  # noqa: F401
    from pt2e_int8.qat import (  # noqa: F401
        QATSchedule,
        freeze_bn_stats,
        freeze_observers,
        learn_ranges,
        move_to_eval,
        move_to_train,
    )
    from pt2e_int8.qat_checkpoint import load_qat_checkpoint, save_qat_checkpoint  # noqa: F401
    from pt2e_int8.quantizer import Int8Quantizer  # noqa: F401
    from pt2e_int8.workflow import calibrate, convert, prepare_qat, quantize  # noqa: F401


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pt2e_int8' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
