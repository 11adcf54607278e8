"""Activation statistics of the float exported graph, gathered before annotation.

Outlier handling (SmoothQuant's migration, per-channel output rescaling) rewrites weights from
how the activations around each linear are distributed, so it needs the calibration batches
*before* `prepare_pt2e` inserts observers. `collect_activation_stats` runs them through the float
GraphModule once (a `torch.fx.Interpreter`: the graph is not modified) and keeps, for the input
and the output of every linear with a constant weight, per-channel ranges along the last dim and
a bounded sample of rows to search scales on.

    stats = collect_activation_stats(gm, calibration)
    stats.of(linear_node.args[0]).absmax      # per-input-channel max |x|
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch.fx import GraphModule, Interpreter, Node

from pt2e_int8.ops import layer_op

aten = torch.ops.aten

# Rows kept per tensor for the scale searches: enough to estimate a layer's quantization error
# (a 16-sentence batch at seq 128 has 2,048 rows), small enough for 1536-wide FFN inputs.
DEFAULT_MAX_ROWS = 4096
# Layers whose activations are recorded: GEMMs with a constant weight (the ones outlier handling rewrites).
GEMM_OPS = frozenset({aten.linear.default})


@dataclass
class ChannelStats:
    """One tensor's statistics over the calibration batches; channels are its last dim."""

    min: torch.Tensor  # [C] per-channel minimum
    max: torch.Tensor  # [C] per-channel maximum
    samples: torch.Tensor  # [N, C] rows, N <= max_rows, kept evenly from every batch
    rows_seen: int = 0

    @property
    def absmax(self) -> torch.Tensor:
        return torch.maximum(self.max.abs(), self.min.abs())


@dataclass
class ActivationStats:
    """Statistics keyed by the name of the graph node that produces each tensor."""

    tensors: dict[str, ChannelStats] = field(default_factory=dict)
    batches: int = 0

    def of(self, node: Node) -> ChannelStats | None:
        return self.tensors.get(node.name)

    def __contains__(self, node: Node) -> bool:
        return node.name in self.tensors


def recorded_nodes(gm: GraphModule) -> set[Node]:
    """The tensors worth recording: input and output of every linear with a float activation."""
    wanted: set[Node] = set()
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in GEMM_OPS and layer_op(node) is not None:
            act = node.args[0]
            if isinstance(act, Node):
                wanted.add(act)
            wanted.add(node)
    return wanted


class _Recorder(Interpreter):
    def __init__(self, gm: GraphModule, wanted: set[Node], stats: ActivationStats, max_rows: int,
                 rows_per_batch: int) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.wanted, self.stats = wanted, stats
        self.max_rows, self.rows_per_batch = max_rows, rows_per_batch

    def run_node(self, n: Node):
        value = super().run_node(n)
        if n in self.wanted and isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() >= 1:
            self._record(n.name, value.detach())
        return value

    def _record(self, name: str, value: torch.Tensor) -> None:
        rows = value.reshape(-1, value.shape[-1]).float()
        lo, hi = rows.amin(0), rows.amax(0)
        # Evenly strided rows from each batch, so every batch is represented in the sample.
        step = max(1, rows.shape[0] // self.rows_per_batch)
        picked = rows[::step][: self.rows_per_batch].clone()
        st = self.stats.tensors.get(name)
        if st is None:
            self.stats.tensors[name] = ChannelStats(lo, hi, picked, rows.shape[0])
            return
        st.min, st.max = torch.minimum(st.min, lo), torch.maximum(st.max, hi)
        room = self.max_rows - st.samples.shape[0]
        if room > 0:
            st.samples = torch.cat([st.samples, picked[:room]])
        st.rows_seen += rows.shape[0]


def collect_activation_stats(gm: GraphModule, batches: Iterable[tuple], *, nodes: set[Node] | None = None,
                             max_rows: int = DEFAULT_MAX_ROWS) -> ActivationStats:
    """Run `batches` (tuples of positional inputs) through the float `gm` and record statistics.

    Args:
        gm: the exported float GraphModule (not modified).
        batches: the calibration batches, as `quantize` takes them.
        nodes: which tensors to record (default: `recorded_nodes(gm)`).
        max_rows: rows kept per tensor for scale searches.

    Returns:
        ActivationStats keyed by node name.
    """
    batches = list(batches)
    wanted = recorded_nodes(gm) if nodes is None else nodes
    stats = ActivationStats()
    rows_per_batch = max(1, max_rows // max(1, len(batches)))
    recorder = _Recorder(gm, wanted, stats, max_rows, rows_per_batch)
    with torch.no_grad():
        for batch in batches:
            recorder.run(*batch)
            stats.batches += 1
    return stats
