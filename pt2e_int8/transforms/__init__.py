"""Rewrites of the exported float graph before annotation, one per file, exact in float.

Each is a `torch.fx` `PassBase` (`<Verb><Noun>Pass`, `call(gm) -> PassResult` with a truthful
`modified`). Two registries:

- `PRE_ANNOTATION_TRANSFORMS` need nothing but the graph; `Int8Quantizer.transform_for_annotation`
  runs them in that order (torchao's prepare_pt2e calls it before `annotate`).
- `CALIBRATED_TRANSFORMS` choose per-channel factors from activation statistics
  (`pt2e_int8.calibration_stats`), which prepare_pt2e cannot hand them. Each is built as
  `T(stats, config_of)`; `apply_calibrated_transforms` runs them after the statistics pass and
  before prepare_pt2e (workflow.quantize, workflow.prepare_qat), only for scopes whose config
  asks for them (`QuantConfig.smooth`).

A transform
notes what it did on the nodes it creates (`pt2e_int8.decision.add_note`), so coverage rows
say, for example, that a linear came from an LSTM. Integer and boolean subgraphs are never
touched: masks, positions and indices stay exactly as exported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase

from pt2e_int8.calibration_stats import ActivationStats
from pt2e_int8.config import QuantConfig
from pt2e_int8.errors import Pt2eInt8Error
from pt2e_int8.transforms.clamp_to_hardtanh import RewriteClampAsHardtanhPass
from pt2e_int8.transforms.decompose_recurrent import DecomposeRecurrentPass
from pt2e_int8.transforms.rescale_outputs import RescaleOutputChannelsPass
from pt2e_int8.transforms.smooth_quant import SmoothActivationsPass

# The registration: explicit and ordered.
PRE_ANNOTATION_TRANSFORMS: tuple[type[PassBase], ...] = (
    DecomposeRecurrentPass,  # LSTM / GRU / RNN → linears + gates: their projections become int8 layers
    RewriteClampAsHardtanhPass,  # clamp after a layer → hardtanh / relu, which XNNPACK fuses
)

# Data-driven, in order: output rescaling first (it divides weight rows), then SmoothQuant
# (weight columns), whose α search then sees the weights as they will be quantized.
CALIBRATED_TRANSFORMS: tuple[type[PassBase], ...] = (RescaleOutputChannelsPass, SmoothActivationsPass)


class TransformError(Pt2eInt8Error):
    """A pre-annotation transform failed; the message names it."""


def run_transforms(gm: GraphModule, transforms: Sequence[PassBase]) -> tuple[GraphModule, list[str]]:
    """Apply `transforms` in order; returns the graph and the names of those that changed it."""
    fired = []
    for t in transforms:
        name = type(t).__name__
        try:
            result = t.call(gm)
            gm.graph.lint()
        except Pt2eInt8Error:
            raise
        except Exception as e:
            raise TransformError(f"graph transform {name} failed: {type(e).__name__}: {e}") from e
        if result.modified:
            gm = result.graph_module
            gm.recompile()
            fired.append(name)
    return gm, fired


def apply_calibrated_transforms(gm: GraphModule, stats: ActivationStats,
                                config_of: Callable[[Node], QuantConfig | None],
                                transforms: Sequence[type[PassBase]] = CALIBRATED_TRANSFORMS,
                                ) -> tuple[GraphModule, list[str]]:
    """Build each calibrated transform with `stats` and `config_of` (the quantizer's per-node
    config) and run them in order; returns the graph and the names of those that changed it."""
    return run_transforms(gm, [t(stats, config_of) for t in transforms])
