"""Collect the XNNPACK partitioner's reasons for leaving nodes out of a delegate.

The partitioner reports them through `WhyNoPartition`, which only logs at DEBUG level.
For the duration of one lowering we listen on its logger (DEBUG records are not
passed on to the user's handlers; anything the user would have seen still is) and keep (node, reason) pairs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from torch.fx import Node

from backends.executorch.provenance import source_names

_LOGGER = "executorch.backends.xnnpack"


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.pairs: list[tuple[Node, str]] = []
        self.forward_level = logging.WARNING
        self.forward_to: logging.Logger | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= self.forward_level and self.forward_to is not None:
            self.forward_to.handle(record)  # what the user would have seen anyway
        why = record.msg
        node, reason = getattr(why, "node", None), getattr(why, "reason", None)
        if isinstance(node, Node) and reason:
            self.pairs.append((node, str(reason)))


class Rejections:
    def __init__(self) -> None:
        self._collector = _Collector()

    def reason_for(self, node: Node) -> str | None:
        """The partitioner's reason for leaving out `node` of the lowered program, or None.

        The partitioner judged the node before `to_edge` decomposed it (it saw `max_pool2d`; the
        program runs `max_pool2d_with_indices`), so the match follows provenance into the graph
        it judged, not names alone.
        """
        for judged, reason in self._collector.pairs:
            if judged.name == node.name or judged.name in source_names(node, id(judged.graph)):
                return reason
        return None

    def by_source(self, graph_id: int) -> dict[str, str]:
        """Exported-graph node name -> first reason given for a node derived from it."""
        out: dict[str, str] = {}
        for node, reason in self._collector.pairs:
            for name in source_names(node, graph_id):
                out.setdefault(name, f"{node.name}: {reason}")
        return out


@contextlib.contextmanager
def collect_rejections() -> Iterator[Rejections]:
    logger = logging.getLogger(_LOGGER)
    rejections = Rejections()
    old_level, old_propagate = logger.level, logger.propagate
    rejections._collector.forward_level = logger.getEffectiveLevel()
    rejections._collector.forward_to = logger.parent
    logger.addHandler(rejections._collector)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield rejections
    finally:
        logger.removeHandler(rejections._collector)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
