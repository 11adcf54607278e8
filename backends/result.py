"""What every backend exporter returns: the file, and where each layer really runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Placement = Literal["int8", "float"]


@dataclass
class ExportResult:
    path: Path
    format: Literal["pte", "onnx"]
    # coverage row name (pt2e_int8.coverage(gm).layers[i].name) -> where it runs in this artifact
    placement: dict[str, Placement] = field(default_factory=dict)
    # coverage row name -> the kernel it became ("xnnpack fully_connected qs8") or why it is float
    detail: dict[str, str] = field(default_factory=dict)
    # What the program accepts: "dynamic batch 1..64", "static batch 1" (.pte); None when not tracked.
    shapes: str | None = None
    # .pte: calls into the XNNPACK delegate per run, and every op left outside it
    # ({"node", "op", "reason"} with the partitioner's reason). None / [] for ONNX.
    delegate_calls: int | None = None
    outside_delegate: list[dict] = field(default_factory=list)
    # Choices the exporter made on the user's behalf (e.g. static shapes instead of a dynamic batch).
    notes: list[str] = field(default_factory=list)
    # export choices that decide how the artifact runs, e.g. the ONNX target and its int8 types
    options: dict[str, str] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def int8_layers(self) -> list[str]:
        return [k for k, v in self.placement.items() if v == "int8"]
