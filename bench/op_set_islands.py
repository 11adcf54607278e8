"""Int8 islands in torchvision CNNs: Int8Quantizer against the stock XNNPACKQuantizer.

    .venv/bin/pip install --no-deps torchvision==0.28.0   # model code only (uninstall after: transformers
    .venv/bin/python bench/op_set_islands.py [mobilenet_v2 ...]  # imports it and fails on its CUDA _C)

Each model (random init, batch-norm statistics re-estimated on random data, batch 1, static
shapes) is quantized by both quantizers (per-channel static, 4 calibration batches) and lowered
through ExecuTorch's standard `to_edge_transform_and_lower(XnnpackPartitioner)`, none of our
passes. Counted from the lowered program: delegate calls, ops left outside a delegate (and how
many of them are q/dq), and float conversions inside the delegates (a q/dq XNNPACK did not
absorb into an int8 kernel: the input / output converts plus one per float island). No timing:
structure only, so the numbers do not depend on the machine. Writes bench/op_set_islands.md.
"""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODELS = ("mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_1", "resnet18")
SHAPE = (1, 3, 224, 224)


def _torchvision():
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import torchvision

    return torchvision


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = getattr(_torchvision().models, name)()
    for bn in model.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None
    model.train()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, *SHAPE[1:], generator=g))
    return model.eval()


def _stock(model, x, calibration):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (x,), strict=True).module(), quantizer)
    for batch in calibration:
        prepared(batch)
    return convert_pt2e(prepared)


def _ours(model, x, calibration):
    import pt2e_int8 as q

    return q.quantize(model, (x,), calibration=[(c,) for c in calibration], dynamic_shapes=None, progress=False)


def lowered_structure(qm, x) -> tuple[int, int, int, int]:
    """(delegate calls, ops outside delegates, q/dq among them, float converts inside delegates)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.utils.quant_utils import (
        is_dequant,
        is_quant,
        is_tagged_as_implicit_q_dq,
    )
    from executorch.exir import to_edge_transform_and_lower

    from backends.compat.executorch import edge_target
    from pt2e_int8.qdq import QDQ_OPS

    edge = to_edge_transform_and_lower(torch.export.export(qm, (x,), strict=False),
                                       partitioner=[XnnpackPartitioner()])
    gm = edge.exported_program().graph_module
    delegates = outside = outside_qdq = converts = 0
    for node in gm.graph.nodes:
        lowered = getattr(gm, node.target, None) if node.op == "get_attr" else None
        if hasattr(lowered, "original_module"):
            delegates += 1
            converts += sum(1 for n in lowered.original_module.graph.nodes if n.op == "call_function"
                            and (is_quant(n) or is_dequant(n)) and not is_tagged_as_implicit_q_dq(n))
        elif node.op == "call_function" and "getitem" not in str(node.target) and "call_delegate" not in str(node.target):
            outside += 1
            outside_qdq += edge_target(node) in QDQ_OPS
    return delegates, outside, outside_qdq, converts


def main(names: list[str]) -> None:
    import pt2e_int8 as q

    lines = ["| model | quantizer | delegate calls | ops outside | q/dq outside | float converts in delegates | SQNR vs float dB |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name in names:
        model = _model(name)
        g = torch.Generator().manual_seed(1)
        calibration = [torch.randn(*SHAPE, generator=g) for _ in range(4)]
        x = torch.randn(*SHAPE, generator=g)
        with torch.no_grad():
            reference = model(x)
        for label, quantize in (("stock XNNPACKQuantizer", _stock), ("Int8Quantizer", _ours)):
            qm = quantize(model, x, calibration)
            with torch.no_grad():
                db = q.sqnr(reference, qm(x))
            row = lowered_structure(qm, x)
            lines.append(f"| {name} | {label} | " + " | ".join(map(str, row)) + f" | {db:.1f} |")
            print(lines[-1], flush=True)
    out = REPO / "bench" / "op_set_islands.md"
    out.write_text("Made by `.venv/bin/python bench/op_set_islands.py` (structure only: machine-independent).\n\n"
                   + "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    main(sys.argv[1:] or list(MODELS))
