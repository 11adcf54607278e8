"""The per-node quantization decision: which annotator looked at a layer, what it applied, or why not.

Written once by the annotation walk (and amended by calibration checks), read by `coverage()`
and the backends' reports. Stored in `node.meta["custom"]`, which survives
`torch.export.save` / `load` and re-export, so a reloaded `.pt2` keeps its reasons.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch.fx import Node

# node.meta["custom"] key of the decision.
META_KEY = "pt2e_int8"


@dataclass(frozen=True)
class Decision:
    """What happened to one anchor node during annotation."""

    annotator: str  # the op family's annotator that decided ("linear", "conv", ...)
    scheme: str | None  # the config applied (`QuantConfig.scheme`), None when left float
    reason: str | None  # why it was left float, in words a user can act on
    # Calibration never reached it: its activation qparams are placeholders.
    unobserved: bool = False
    # Graph rewrites applied before annotation (e.g. "smoothed", "decomposed from LSTM").
    notes: tuple[str, ...] = ()

    @property
    def quantized(self) -> bool:
        return self.scheme is not None and not self.unobserved

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict) -> Decision:
        fields = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in fields}
        kept["notes"] = tuple(kept.get("notes") or ())
        return cls(**kept)


def record(node: Node, decision: Decision) -> Decision:
    """Attach `decision` to `node` (replacing an earlier one)."""
    node.meta.setdefault("custom", {})[META_KEY] = decision.to_dict()
    return decision


def decision_of(node: Node) -> Decision | None:
    """The decision recorded for `node`, also after a save/load or re-export round trip."""
    data = (node.meta.get("custom") or {}).get(META_KEY)
    return Decision.from_dict(data) if isinstance(data, dict) else None


def amend(node: Node, **changes) -> Decision | None:
    """Change fields of an existing decision (e.g. `unobserved=True`); None if there is none."""
    current = decision_of(node)
    return record(node, dataclasses.replace(current, **changes)) if current is not None else None


def add_note(node: Node, note: str) -> None:
    """Note a rewrite on a node before annotation; kept when the annotator records its decision."""
    notes = node.meta.setdefault("custom", {}).setdefault(f"{META_KEY}_notes", [])
    if note not in notes:
        notes.append(note)


def pending_notes(node: Node) -> tuple[str, ...]:
    return tuple((node.meta.get("custom") or {}).get(f"{META_KEY}_notes") or ())


def keep_float(node: Node, reason: str) -> None:
    """Mark a node a transform made that must stay float (e.g. a rescale `mul` whose whole point is
    to restore a range after an int8 op); the annotation walk skips it and records `reason`."""
    node.meta.setdefault("custom", {})[f"{META_KEY}_keep_float"] = reason


def keep_float_reason(node: Node) -> str | None:
    return (node.meta.get("custom") or {}).get(f"{META_KEY}_keep_float")


def record_param_names(gm) -> None:
    """Remember each layer's weight parameter name (`encoder.0.self_attn.in_proj_weight`) before
    annotation: convert folds weights into anonymous constants, and coverage names rows by it."""
    from pt2e_int8.ops import layer_operands

    for node in gm.graph.nodes:
        weight = layer_operands(node).weight if node.op == "call_function" else None
        if weight is not None and weight.op == "get_attr":
            node.meta.setdefault("custom", {})[f"{META_KEY}_param"] = str(weight.target)


def param_name(node: Node) -> str | None:
    """The weight parameter name recorded by `record_param_names`, if any."""
    return (node.meta.get("custom") or {}).get(f"{META_KEY}_param")
