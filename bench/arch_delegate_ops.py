"""Op counts inside the XNNPACK delegates of our static int8 .pte vs the stock flow's, per model.

    PYTHONPATH=<torchvision 0.28.0> .venv/bin/python bench/arch_delegate_ops.py mobilenet_v2 [...]

Why: two programs with the same ops inside one delegate run at the same speed, so a latency ratio
off 1.0 between them is noise; a structural difference (extra q/dq pairs, ops left outside) is not.
Prints only the ops whose counts differ, and the ops outside the delegates of each.
"""

from __future__ import annotations

import collections
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def delegate_ops(ep) -> tuple[collections.Counter, collections.Counter]:
    """(ops inside the delegates, ops outside) of a lowered edge program."""
    inside, outside = collections.Counter(), collections.Counter()
    gm = ep.graph_module
    for n in gm.graph.nodes:
        if n.op != "call_function" or "getitem" in str(n.target):
            continue
        if "executorch_call_delegate" in str(n.target):
            lowered = getattr(gm, n.args[0].target)
            inside.update(str(m.target).split("::")[-1].split("(")[0]
                          for m in lowered.original_module.graph.nodes if m.op == "call_function")
        else:
            outside[getattr(n.target, "__name__", str(n.target))] += 1
    return inside, outside


def compare(name: str) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    import pt2e_int8 as q
    from backends.executorch.lower import lower_program
    from bench import anchors
    from bench.arch import _data
    from bench.arch_models import MODELS, build

    model, data = build(name), _data(MODELS[name], False)
    ex = data["example"]
    qm = q.quantize(model, ex, calibration=data["calibration"], progress=False)
    ours = delegate_ops(lower_program(qm, ex, dynamic_shapes=None).edge.exported_program())
    prepared = prepare_pt2e(torch.export.export(model, ex).module(), anchors.stock_quantizer(dynamic=False))
    with torch.no_grad():
        for batch in data["calibration"]:
            for i in range(len(batch[0])):
                prepared(*(t[i:i + 1] for t in batch))
    edge = to_edge_transform_and_lower(torch.export.export(convert_pt2e(prepared), ex),
                                       partitioner=[XnnpackPartitioner()])
    stock = delegate_ops(edge.exported_program())
    print(f"== {name}: ops inside the delegates whose counts differ (ours / stock)")
    for op in sorted(set(ours[0]) | set(stock[0])):
        if ours[0][op] != stock[0][op]:
            print(f"  {op}: {ours[0][op]} / {stock[0][op]}")
    print(f"  outside, ours: {dict(ours[1])}; stock: {dict(stock[1])}")


if __name__ == "__main__":
    for module in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(module, type(sys)(module))  # their CUDA-built _C does not load
    warnings.simplefilter("ignore")
    for model_name in sys.argv[1:]:
        compare(model_name)
