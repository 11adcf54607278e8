"""The project's error hierarchy.

`UserInputError` subclasses are the user's to fix (bad model, inputs, files, config):
the command line prints their message and exits 2. Anything else is our bug (exit 1).
Messages name every offending item and the fix, in one paragraph.
"""


class Pt2eInt8Error(Exception):
    """Base of every error pt2e-int8 raises on purpose."""


class UserInputError(Pt2eInt8Error):
    """A mistake in what the user passed: the message says what and how to fix it."""


class ConfigError(UserInputError, ValueError):
    """A QuantConfig field or quantizer override is invalid or matches nothing."""


class ExportError(UserInputError):
    """torch.export could not trace the model."""


class ExampleInputsError(UserInputError):
    """Example inputs do not fit the model's forward signature."""


class CalibrationError(UserInputError):
    """Calibration data is missing, non-finite, or does not run through the model."""


class InputFileError(UserInputError):
    """An input file (model, tensors, artifact) is missing, corrupt or of an unknown kind."""


class DistributedError(UserInputError):
    """Ranks disagree (model, weights, graph) or torch.distributed is not set up for the call."""


class LoweringError(Pt2eInt8Error):
    """A backend lowering pass failed; the message names the pass."""


class UnsafeModelFileError(InputFileError):
    """A model file holds something that could run code on load (a pickle, native code, an eval'd string)."""


class OutputPathError(UserInputError):
    """An output path cannot be written (a directory in the way, no permission, one of the run's inputs)."""


class WorkflowError(UserInputError, TypeError):
    """A model at the wrong stage for the call (a prepared model exported, convert called twice, ...)."""
