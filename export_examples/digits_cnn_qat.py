"""Digits as 8x8 images: conv-bn-relu blocks, QAT with batch-norm folding, to .pte and .onnx.

    python export_examples/digits_cnn_qat.py [-o out/digits_cnn] [--quick]

QAT recipe: start from the trained float weights, fine-tune with fake-quantization,
freeze batch-norm statistics and then the observers for the last steps, convert
(batch-norm is folded into the int8 conv weights).
"""

import copy
from pathlib import Path

import torch
from _common import export_and_run, parse_args, print_table, save_results

import pt2e_int8 as q
from pt2e_int8.app.digits import DigitsCNN, accuracy, load_digits_split, train

args = parse_args(__doc__, "out/digits_cnn")
split = load_digits_split()
epochs, qat_epochs = (2, 1) if args.quick else (15, 3)
steps_per_epoch = (len(split.x_train) + 63) // 64

model = train(DigitsCNN(), split, epochs=epochs, lr=3e-3)
float_acc = accuracy(model(split.x_test), split.y_test)

pm = q.prepare_qat(copy.deepcopy(model), (split.x_train[:32],))
schedule = q.QATSchedule(
    pm,
    freeze_bn_after=max(1, (qat_epochs - 1) * steps_per_epoch),  # last epoch: running BN stats
    freeze_observers_after=max(2, qat_epochs * steps_per_epoch - steps_per_epoch // 2),
)
train(pm, split, epochs=qat_epochs, lr=1e-4, on_step=schedule.step)
qat = q.convert(pm)
assert torch.ops.aten.batch_norm.default not in {n.target for n in qat.graph.nodes}, "BN not folded"

print(q.coverage(qat), "\n")
r = export_and_run("qat", qat, (split.x_test[:1],), (split.x_test,), Path(args.out))
accs = [accuracy(r[k], split.y_test) * 100 for k in ("eager", "pte", "onnx")]
header = ["model", "acc % torch", "acc % .pte", "acc % .onnx", "KB pte / onnx", "int8 layers"]
rows = [["float", float_acc * 100, "", "", "", ""],
        ["qat (bn folded)", *accs, f"{r['pte_kb']:.1f} / {r['onnx_kb']:.1f}", r["int8_layers"]]]
print_table(header, rows)
save_results(Path(args.out), header, rows)
