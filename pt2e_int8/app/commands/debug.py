"""`pt2e-int8 debug MODEL -o DIR`: where accuracy goes, layer by layer.

    load the float MODEL → export once, calibrate once, convert (--scheme / --plan / --keep-float)
    → per-layer errors against float (accumulated and local) → [--artifacts pte,onnx: the same
    layer outputs read from the .pte in the ExecuTorch runtime and from the .onnx in ONNX Runtime,
    first divergence named] → [--sensitivity: the metric with each layer alone moved off static]
    → DIR/debug.json, DIR/debug.png → the table on stdout

Outputs are staged and moved into DIR only when every step succeeded.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pt2e_int8 as q
from backends.registry import parse_formats
from pt2e_int8.app.commands.export import SCHEMES, _example_inputs
from pt2e_int8.app.inputs import check_finite, load_batches
from pt2e_int8.app.modelspec import load_model
from pt2e_int8.app.progress import Steps
from pt2e_int8.app.staging import check_targets, staged_output
from pt2e_int8.atomic import write_text_atomic
from pt2e_int8.errors import ConfigError, UserInputError

FILES = ["debug.json", "debug.png"]


def _quantizer(args) -> q.Int8Quantizer:
    if args.plan:
        if args.scheme or args.keep_float:
            raise ConfigError("--plan already says every layer's scheme: drop --scheme / --keep-float, "
                              "or drop --plan.")
        from pt2e_int8.debug.plan import QuantPlan

        return QuantPlan.load(args.plan).to_quantizer()
    quantizer = q.Int8Quantizer().set_global(SCHEMES[args.scheme or "static"]())
    for name in args.keep_float or []:
        quantizer.set_module_name(name, None)
    return quantizer


def _artifact_reports(formats, qm, example, inputs, steps) -> dict:
    reports = {}
    for fmt in formats:
        with steps(f"reading each layer's output from the {fmt.suffix} ({fmt.describe})"):
            if fmt.name == "pte":
                from backends.executorch.debug import debug_pte

                reports[fmt.name] = debug_pte(qm, inputs)
            else:
                import tempfile

                from backends.onnx.debug import debug_onnx
                from backends.onnx.export import export_onnx

                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "model.onnx"
                    export_onnx(qm, example, path)
                    reports[fmt.name] = debug_onnx(path, qm, inputs)
    return reports


def _sensitivity(calibrated, quantizer, inputs, emulate, steps):
    from pt2e_int8.debug.metrics import output_cosine
    from pt2e_int8.debug.plan import QuantPlan
    from pt2e_int8.debug.sensitivity import Space, run_sensitivity

    metric = output_cosine(calibrated.float_graph, inputs)
    space = Space(calibrated, QuantPlan.from_quantizer(quantizer, calibrated.float_graph), metric,
                  emulate=emulate, progress=steps.say)
    return run_sensitivity(space, mode="one_off")


def run(args) -> int:
    from pt2e_int8.debug.calibrated import Calibrated
    from pt2e_int8.debug.numeric import layer_errors

    out_dir = Path(args.output)
    check_targets(out_dir, FILES)
    formats = parse_formats(args.artifacts) if args.artifacts else []
    steps = Steps(2 + len(formats) + (1 if args.sensitivity else 0))
    steps.say(f"loading {args.model}")
    loaded = load_model(args.model, trust=getattr(args, "trust_model_file", False))
    if loaded.converted:
        raise ConfigError(
            f"MODEL {args.model} is already quantized; the debugger compares a quantized model with its float "
            "original. Pass the float model (a float .pt2 or file.py:function); debug quantizes it itself "
            "(--scheme, --keep-float, --plan).")
    example = _example_inputs(loaded, args.example_inputs)
    quantizer = _quantizer(args)
    calibration = load_batches(args.calibration, arity=len(example)) if args.calibration else [example]
    check_finite(calibration, args.calibration or "--example-inputs")
    inputs = load_batches(args.inputs, arity=len(example)) if args.inputs else calibration
    check_finite(inputs, args.inputs or "the calibration batches")
    if not args.calibration and any(c.needs_calibration for c in quantizer.configs):
        steps.say("no --calibration given: calibrating on the example inputs alone")
    with steps(f"quantizing once ({len(calibration)} calibration batches)"):
        calibrated = Calibrated(loaded.module, example, calibration, quantizer)
        qm = calibrated.convert(quantizer)
    with steps(f"per-layer errors against float on {len(inputs)} batches"):
        report = layer_errors(calibrated.float_graph, qm, inputs)
    artifacts = _artifact_reports(formats, qm, example, inputs, steps)
    sens = None
    if args.sensitivity:
        emulate = None
        if [f.name for f in formats] == ["pte"]:
            from backends.executorch.reference import xnnpack_reference as emulate
        with steps("sensitivity: each layer alone moved off static int8"):
            sens = _sensitivity(calibrated, quantizer, inputs, emulate, steps)
    doc = {"model": args.model, "coverage": q.coverage(qm).to_dict()["summary"], **report.to_dict(),
           "worst_local": [r.name for r in report.worst(5)],
           "artifacts": {k: v.to_dict() for k, v in artifacts.items()},
           "sensitivity": sens.to_dict() if sens is not None else None}
    with staged_output(out_dir) as staging:
        write_text_atomic(staging / "debug.json", json.dumps(doc, indent=2) + "\n")
        try:
            from pt2e_int8.app.debug_plot import layer_sqnr_plot

            layer_sqnr_plot(doc["layers"], staging / "debug.png", f"{args.model}: SQNR per layer vs float")
        except UserInputError as e:
            warnings.warn(f"debug.png not written: {e}", stacklevel=1)
        written = sorted(out_dir / f.name for f in staging.iterdir() if not f.name.startswith("."))
    print(report)
    for rep in artifacts.values():
        print()
        print(rep)
    if sens is not None:
        print()
        print(sens)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
