"""pt2e-int8: int8 export for edge CPUs.

    import pt2e_int8 as q
    qm = q.quantize(model, example_inputs, calibration=batches)
    print(q.coverage(qm))
"""

from pt2e_int8.config import QuantConfig
from pt2e_int8.coverage import CoverageReport, LayerRow, coverage
from pt2e_int8.errors import (
    CalibrationError,
    ConfigError,
    ExampleInputsError,
    ExportError,
    InputFileError,
    LoweringError,
    Pt2eInt8Error,
    UserInputError,
)
from pt2e_int8.numerics import cosine, max_error_in_steps, sqnr
from pt2e_int8.observers import PercentileObserver
from pt2e_int8.qat import (
    QATSchedule,
    freeze_bn_stats,
    freeze_observers,
    move_to_eval,
    move_to_train,
)
from pt2e_int8.quantizer import Int8Quantizer
from pt2e_int8.workflow import calibrate, convert, prepare_qat, quantize

__version__ = "0.1.0"

__all__ = [
    "CalibrationError",
    "ConfigError",
    "CoverageReport",
    "ExampleInputsError",
    "ExportError",
    "InputFileError",
    "Int8Quantizer",
    "LayerRow",
    "LoweringError",
    "PercentileObserver",
    "Pt2eInt8Error",
    "QATSchedule",
    "QuantConfig",
    "UserInputError",
    "calibrate",
    "convert",
    "cosine",
    "coverage",
    "freeze_bn_stats",
    "freeze_observers",
    "max_error_in_steps",
    "move_to_eval",
    "move_to_train",
    "prepare_qat",
    "quantize",
    "sqnr",
]
