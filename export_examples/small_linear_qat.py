"""A user's case: a Linear(16, 1) model with int8 weights AND int8 activations, via QAT.

    python export_examples/small_linear_qat.py [-o out/small_linear] [--quick]

Older torchao eager int8 configs skipped every Linear with <= 16 input features, and
users found out by printing weights. Here every layer is quantized whatever its size,
and the converted graph's int8 weight constants are printed as the proof. The torchao
eager config's result with the pinned torchao is printed beside it, measured, not assumed.
"""

import copy
import operator
from pathlib import Path

import torch
from _common import export_and_run, parse_args, print_table, save_results
from torch import nn

import pt2e_int8 as q

args = parse_args(__doc__, "out/small_linear")
torch.manual_seed(0)
x = torch.randn(2048, 16)
y = x @ torch.linspace(-1, 1, 16)[:, None] + 0.1 * torch.randn(2048, 1)

model = nn.Sequential(nn.Linear(16, 1))


def fit(module, steps, lr):
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,))
        loss = nn.functional.mse_loss(module(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


# The usual QAT recipe: train in float, then fine-tune with fake-quantization. (QAT from a
# random init starts with output ranges observed on a random model; clipped outputs get no
# gradient through the fake-quant, so training stalls.)
fit(model, 300, lr=1e-2)  # milliseconds: no need to shorten it for --quick
pm = q.prepare_qat(copy.deepcopy(model), (x[:32],))
fit(pm, 30 if args.quick else 100, lr=1e-3)
qm = q.convert(pm)

print(q.coverage(qm), "\n")
for node in qm.graph.nodes:
    if node.op == "get_attr":
        val = operator.attrgetter(node.target)(qm)
        if isinstance(val, torch.Tensor) and val.dtype == torch.int8:
            print(f"int8 weight constant {node.target}: shape {tuple(val.shape)}")
acts = [n for n in qm.graph.nodes if n.target == torch.ops.quantized_decomposed.quantize_per_tensor.default]
print(f"int8 activation quantize ops: {len(acts)} (input and output of the Linear)\n")

try:  # the eager alternative, for comparison
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    eager = copy.deepcopy(model)
    quantize_(eager, Int8DynamicActivationInt8WeightConfig())
    print(f"torchao eager Int8DynamicActivationInt8WeightConfig: weight is {type(eager[0].weight).__name__}\n")
except Exception as e:  # noqa: BLE001  (a comparison only)
    print(f"torchao eager int8 config could not run here: {e}\n")

r = export_and_run("small_linear_qat", qm, (x[:1],), (x[:256],), Path(args.out))
mse = {k: nn.functional.mse_loss(r[k], y[:256]).item() for k in ("eager", "pte", "onnx")}
header = ["artifact", "mse", "int8 layers"]
rows = [["torch (converted)", mse["eager"], ""], [".pte", mse["pte"], r["int8_layers"]],
        [".onnx", mse["onnx"], r["int8_layers"]]]
print_table(header, rows)
save_results(Path(args.out), header, rows)
