"""`pt2e-int8 demo [-o DIR]`: the whole job on data that ships with the install.

    train a float MLP on scikit-learn digits → PTQ static, PTQ dynamic, QAT
    → export each to .pte and .onnx → accuracy of every artifact on the test split
    → interleaved latency at batch 1 → one table + report.md, report.json, accuracy_latency.png
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

import pt2e_int8 as q
from backends.registry import BACKENDS, load_artifact
from pt2e_int8.app.artifact_run import run_in_chunks
from pt2e_int8.app.device import describe_device, summary_line
from pt2e_int8.app.digits import BATCH, DigitsMLP, Split, accuracy, load_digits_split, train
from pt2e_int8.app.plot import accuracy_latency_plot
from pt2e_int8.app.progress import Steps
from pt2e_int8.app.staging import staged_names, staged_output
from pt2e_int8.app.timing import default_batch, latency_stats, time_interleaved
from pt2e_int8.atomic import write_text_atomic
from pt2e_int8.text_table import text_table

EPOCHS = 40  # float training; the QAT fine-tune is a fraction of it
FLOAT_LR, QAT_LR = 3e-3, 3e-4
BENCH_ITERS, BENCH_WARMUP = 300, 30


def _quantize_variants(model: torch.nn.Module, split: Split, epochs: int, steps: Steps) -> dict:
    """variant name -> converted GraphModule: the three ways to int8 the README describes."""
    example = (split.x_train[:BATCH],)
    calibration = [(xb,) for xb in split.x_train.split(BATCH)]
    variants = {"float": model}  # the baseline each int8 variant is timed against, in the same runtime
    with steps(f"PTQ static (calibrating on {len(calibration)} batches)"):
        variants["ptq-static"] = q.quantize(copy.deepcopy(model), example, calibration=calibration)
    with steps("PTQ dynamic"):
        dyn = q.Int8Quantizer().set_global(q.QuantConfig.dynamic())
        variants["ptq-dynamic"] = q.quantize(copy.deepcopy(model), example, quantizer=dyn)
    qat_epochs = max(1, epochs // 8)
    with steps(f"QAT ({qat_epochs} epochs of fine-tuning)"):
        pm = q.prepare_qat(copy.deepcopy(model), example)
        per_epoch = -(-len(split.x_train) // BATCH)
        sched = q.QATSchedule(pm, freeze_observers_after=max(1, per_epoch * qat_epochs - per_epoch // 2))
        train(pm, split, qat_epochs, QAT_LR, on_step=sched.step)
        variants["qat"] = q.convert(pm)
    return variants


def _artifact_logits(prog, path: Path, x: torch.Tensor) -> torch.Tensor:
    return run_in_chunks(prog, [x], path, "the test split")[0]


def _count_layers(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Linear) for m in model.modules())


def _bench_input(prog, path: Path, x: torch.Tensor) -> list[torch.Tensor]:
    """Batch 1, the on-device case; an artifact exported with a static batch gets its own size."""
    return [x[:default_batch(prog, path)]]


def _table(rows: list[dict]) -> str:
    header = ("variant", "format", "accuracy", "size KiB", "median ms", "p90 ms", "vs float",
              f"ms @{BATCH}", "placement")
    body = []
    for r in rows:
        body.append((r["variant"], r["format"], f"{100 * r['accuracy']:.2f}%", f"{r['size_bytes'] / 1024:.1f}",
                     f"{r['median_ms']:.4f}", f"{r['p90_ms']:.4f}", f"{r['latency_vs_float']:.2f}x",
                     f"{r[f'median_ms_batch{BATCH}']:.4f}", f"{r['int8_layers']}/{r['layers']} int8"))
    return text_table(header, body)


def _markdown(doc: dict, table: str) -> str:
    d = doc["device"]
    return "\n".join([
        "# pt2e-int8 demo: digits MLP, float → int8", "",
        f"scikit-learn digits, {doc['dataset']['train']} train / {doc['dataset']['test']} test samples; "
        f"MLP 64-128-64-10 trained {doc['settings']['epochs']} epochs (float accuracy "
        f"{100 * doc['float_accuracy']:.2f}%).", "",
        f"Device: {summary_line(d)}; torch {d['runtimes']['torch']}, executorch {d['runtimes']['executorch']}, "
        f"onnxruntime {d['runtimes']['onnxruntime']}. Latency: batch 1 (and batch {BATCH}: 'ms @{BATCH}'), {doc['settings']['bench_iters']} interleaved "
        f"iterations after {doc['settings']['bench_warmup']} warm-up; 'vs float' is the median over the float "
        "artifact's in the same runtime.",
        "", "```", table, "```", "", "![accuracy vs latency](accuracy_latency.png)", "",
        f"_Total run time {doc['seconds']:.0f}s._", ""])


# The demo times batch 1 and batch BATCH from one file, so its .pte asks for a dynamic batch
# (export_pte's default is static shapes, the faster program for one fixed batch).
EXPORT_OPTIONS = {"pte": {"max_batch": BATCH}}


def _export_all(variants: dict, example: tuple, stage: Path) -> list[dict]:
    rows = []
    for variant, qm in variants.items():
        layers = len(q.coverage(qm).layers) if variant != "float" else _count_layers(qm)
        for fmt in BACKENDS.values():
            res = fmt.export(qm, example, str(stage / f"{variant}{fmt.suffix}"), **EXPORT_OPTIONS.get(fmt.name, {}))
            rows.append({"variant": variant, "format": fmt.name, "file": res.path.name,
                         "size_bytes": res.size_bytes, "placement": dict(res.placement),
                         "int8_layers": len(res.int8_layers), "layers": layers})
    return rows


def _bench(rows: list[dict], progs: list, paths: list[Path], x_test: torch.Tensor, iters: int, warmup: int) -> None:
    """Batch 1 (the on-device case; the plot's x axis) and a full batch of BATCH, both interleaved."""
    inputs = [_bench_input(p, path, x_test) for p, path in zip(progs, paths, strict=True)]
    samples = time_interleaved([lambda p=p, x=x: p.run(x) for p, x in zip(progs, inputs, strict=True)],
                               iters, warmup)
    for r, ms, x in zip(rows, samples, inputs, strict=True):
        r.update(latency_stats(ms), bench_batch=len(x[0]))
    full = [x_test[:BATCH]]
    samples = time_interleaved([lambda p=p: p.run(full) for p in progs], max(1, iters // 3), max(1, warmup // 3))
    for r, ms in zip(rows, samples, strict=True):
        r[f"median_ms_batch{BATCH}"] = latency_stats(ms)["median_ms"]
    float_ms = {r["format"]: r["median_ms"] for r in rows if r["variant"] == "float"}
    for r in rows:
        r["latency_vs_float"] = r["median_ms"] / float_ms[r["format"]] if r["format"] in float_ms else float("nan")


def run(args) -> int:
    start = time.monotonic()
    epochs = args.epochs or EPOCHS
    iters = args.bench_iters or BENCH_ITERS
    warmup = min(BENCH_WARMUP, iters)
    out_dir = Path(args.output)
    steps = Steps(7)
    torch.manual_seed(0)
    with steps(f"training a float MLP on scikit-learn digits ({epochs} epochs)"):
        split = load_digits_split()
        model = train(DigitsMLP(), split, epochs, FLOAT_LR)
        with torch.no_grad():
            float_acc = accuracy(model(split.x_test), split.y_test)
    variants = _quantize_variants(model, split, epochs, steps)
    with staged_output(out_dir) as stage:
        with steps(f"exporting {len(variants)} variants to {', '.join(BACKENDS)}"):
            rows = _export_all(variants, (split.x_train[:BATCH],), stage)
        with steps("running every artifact on the test split"):
            progs = [load_artifact(stage / r["file"]) for r in rows]
            for r, prog in zip(rows, progs, strict=True):
                r["accuracy"] = accuracy(_artifact_logits(prog, stage / r["file"], split.x_test), split.y_test)
        with steps(f"benchmarking ({iters} interleaved iterations at batch 1, {max(1, iters // 3)} at {BATCH})"):
            _bench(rows, progs, [stage / r["file"] for r in rows], split.x_test, iters, warmup)
        table = _table(rows)
        doc = {"dataset": {"name": "sklearn.datasets.load_digits", "train": len(split.x_train),
                           "test": len(split.x_test)},
               "float_accuracy": float_acc, "device": describe_device(),
               "settings": {"epochs": epochs, "bench_iters": iters, "bench_warmup": warmup},
               "rows": rows,
               "coverage": {v: q.coverage(qm).to_dict() for v, qm in variants.items() if v != "float"},
               "seconds": time.monotonic() - start}
        accuracy_latency_plot(rows, stage / "accuracy_latency.png",
                              f"digits MLP on {doc['device']['cpu_model']}: accuracy vs latency (size = marker)")
        write_text_atomic(stage / "report.json", json.dumps(doc, indent=2) + "\n")
        write_text_atomic(stage / "report.md", _markdown(doc, table))
        written = staged_names(stage)
    print(f"device: {summary_line(doc['device'])}")
    print(f"float model (eager PyTorch): {100 * float_acc:.2f}% test accuracy. Latency: median of {iters} "
          f"interleaved runs at batch 1 (p90 beside it) and at batch {BATCH}")
    print(table)
    print(f"wrote {out_dir}/{{{','.join(written)}}} in {time.monotonic() - start:.0f}s")
    return 0
