"""Digits MLP, end to end: float training, PTQ (static int8) and QAT, to .pte and .onnx.

    python export_examples/digits_mlp_qat.py [-o out/digits_mlp] [--quick]

Data: scikit-learn's 8x8 digits (ships with the install). Prints accuracy of the float
model and of each int8 model in PyTorch, in ExecuTorch (XNNPACK) and in ONNX Runtime.
"""

import copy
from pathlib import Path

from _common import export_and_run, parse_args, print_table, save_results

import pt2e_int8 as q
from pt2e_int8.app.digits import DigitsMLP, accuracy, load_digits_split, train

args = parse_args(__doc__, "out/digits_mlp")
split = load_digits_split()
epochs, qat_epochs = (3, 1) if args.quick else (30, 3)

# 1. Train the float model.
model = train(DigitsMLP(), split, epochs=epochs, lr=3e-3)
float_acc = accuracy(model(split.x_test), split.y_test)

# 2. PTQ: static int8, calibrated on 512 training samples.
calibration = [(b,) for b in split.x_train[:512].split(64)]
ptq = q.quantize(copy.deepcopy(model), (split.x_train[:32],), calibration=calibration)

# 3. QAT: fine-tune with fake-quantization from the float weights, then convert.
pm = q.prepare_qat(copy.deepcopy(model), (split.x_train[:32],))
schedule = q.QATSchedule(pm, freeze_observers_after=len(split.x_train) // 64 * max(qat_epochs - 1, 1))
train(pm, split, epochs=qat_epochs, lr=1e-4, on_step=schedule.step)
qat = q.convert(pm)

print(q.coverage(qat), "\n")
rows = [["float", float_acc * 100, "", "", "", ""]]
for name, gm in [("ptq_static", ptq), ("qat", qat)]:
    r = export_and_run(name, gm, (split.x_test[:1],), (split.x_test,), Path(args.out))
    accs = [accuracy(r[k], split.y_test) * 100 for k in ("eager", "pte", "onnx")]
    rows.append([name, *accs, f"{r['pte_kb']:.1f} / {r['onnx_kb']:.1f}", r["int8_layers"]])
header = ["model", "acc % torch", "acc % .pte", "acc % .onnx", "KB pte / onnx", "int8 layers"]
print_table(header, rows)
save_results(Path(args.out), header, rows)
