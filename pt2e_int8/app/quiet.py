"""Known-harmless third-party chatter, kept off the terminal of `pt2e-int8` (shown with --debug).

Each entry is a logger and the text of a message that says nothing about the user's run.
Filters are attached to the loggers by name, so they hold whether or not the library has
been imported yet (torch re-levels its loggers on import; it keeps their filters).
"""

from __future__ import annotations

import logging

# logger name -> substrings of messages to drop
KNOWN_NOISE: dict[str, tuple[str, ...]] = {
    # torchao 0.18 probes optional CUDA / other-Python kernels at import.
    "torchao": ("Failed to load",),
    # torch.onnx registers torchvision's ops when torchvision is importable, and warns when not.
    "torch.onnx._internal.exporter._registration": ("torchvision is not installed",),
    # torch warns about torchao's enum registration on every import.
    "torch.utils._pytree": ("is an Enum subclass",),
}


class _DropKnown(logging.Filter):
    def __init__(self, texts: tuple[str, ...]) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(t in message for t in self.texts)


def quiet_third_party() -> None:
    """Attach the filters (idempotent)."""
    for name, texts in KNOWN_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown(texts))
