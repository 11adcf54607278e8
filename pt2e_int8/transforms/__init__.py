"""Rewrites of the exported float graph before annotation, one per file, exact in float.

Each is a `torch.fx` `PassBase` (`<Verb><Noun>Pass`, `call(gm) -> PassResult` with a truthful
`modified`) listed in `PRE_ANNOTATION_TRANSFORMS`; `Int8Quantizer.transform_for_annotation`
runs them in that order (torchao's prepare_pt2e calls it before `annotate`). A transform
notes what it did on the nodes it creates (`pt2e_int8.decision.add_note`), so coverage rows
say, for example, that a linear came from an LSTM. Integer and boolean subgraphs are never
touched: masks, positions and indices stay exactly as exported.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch.fx import GraphModule
from torch.fx.passes.infra.pass_base import PassBase

from pt2e_int8.errors import Pt2eInt8Error
from pt2e_int8.transforms.clamp_to_hardtanh import RewriteClampAsHardtanhPass
from pt2e_int8.transforms.decompose_recurrent import DecomposeRecurrentPass

# The registration: explicit and ordered.
PRE_ANNOTATION_TRANSFORMS: tuple[type[PassBase], ...] = (
    DecomposeRecurrentPass,  # LSTM / GRU / RNN → linears + gates: their projections become int8 layers
    RewriteClampAsHardtanhPass,  # clamp after a layer → hardtanh / relu, which XNNPACK fuses
)


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
