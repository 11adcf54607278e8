"""`pt2e-int8 export MODEL -o DIR`: quantize (unless already converted), write .pte / .onnx + reports.

    load MODEL → quantize (--scheme, --calibration, --keep-float) → export each --format
    → parity of each artifact vs the quantized graph (and float) on the example inputs
    → report.json + report.md → move everything into DIR

Everything is built in a staging directory inside DIR and renamed into place only when every
step succeeded, so a failed run leaves the user's existing files as they were.
"""

from __future__ import annotations

from pathlib import Path

import torch

import pt2e_int8 as q
from backends.registry import load_artifact, parse_formats
from pt2e_int8.app.device import runtime_versions
from pt2e_int8.app.inputs import check_finite, load_batches
from pt2e_int8.app.modelspec import LoadedModel, load_model
from pt2e_int8.app.parity import compare_outputs, flatten_outputs, format_parity, output_steps
from pt2e_int8.app.progress import Steps
from pt2e_int8.app.report import build_report, to_json, to_markdown
from pt2e_int8.app.staging import check_targets, staged_output
from pt2e_int8.atomic import write_text_atomic
from pt2e_int8.errors import ConfigError, ExampleInputsError, LoweringError, UserInputError

# --scheme value -> the config preset it stands for
SCHEMES = {
    "static": q.QuantConfig.static,
    "dynamic": q.QuantConfig.dynamic,
    "weight-only": q.QuantConfig.weight_only,
}
DEFAULT_SCHEME = "static"
REPORT_FILES = ["report.json", "report.md"]


def _example_inputs(loaded: LoadedModel, path: str | None) -> tuple:
    if path:
        return load_batches(path)[0]
    if loaded.example_inputs is not None:
        return loaded.example_inputs
    raise ExampleInputsError(
        f"MODEL {loaded.source} comes without example inputs. Pass --example-inputs FILE (a .pt with a tensor "
        "or a tuple of tensors, batch first), or let the factory return (module, example_inputs)."
    )


def _check_converted_flags(args, loaded: LoadedModel) -> None:
    given = [flag for flag, value in (("--scheme", args.scheme), ("--calibration", args.calibration),
                                      ("--keep-float", args.keep_float), ("--smooth", args.smooth)) if value]
    if loaded.converted and given:
        raise ConfigError(
            f"MODEL {loaded.source} is already quantized (it has quantize/dequantize ops), so {', '.join(given)} "
            "cannot apply. Drop them to export it as is, or pass the float model to quantize it again."
        )


def _quantize(args, loaded: LoadedModel, example: tuple, steps: Steps):
    scheme = args.scheme or DEFAULT_SCHEME
    if args.smooth and scheme != "static":
        raise ConfigError(f"--smooth applies to the static scheme only (got --scheme {scheme}): drop --smooth, "
                          "or use --scheme static.")
    quantizer = q.Int8Quantizer().set_global(SCHEMES[scheme](**({"smooth": True} if args.smooth else {})))
    for name in args.keep_float or []:
        quantizer.set_module_name(name, None)
    calibration = None
    if args.calibration and scheme != "static":
        steps.say(f"--calibration is not used by the {scheme} scheme (it needs no activation ranges)")
    elif args.calibration:
        calibration = load_batches(args.calibration, arity=len(example))
        check_finite(calibration, args.calibration)
    elif scheme == "static":
        check_finite([example], "--example-inputs")
        calibration = [example]
        steps.say("no --calibration given: calibrating on the example inputs alone; pass --calibration FILE "
                  "with a few hundred representative samples for production ranges")
    label = f"quantizing ({scheme}" + (f", {len(calibration)} calibration batches)" if calibration else ")")
    with steps(label):
        return q.quantize(loaded.module, example, calibration=calibration, quantizer=quantizer, progress=True)


def _run_reference(module, example: tuple) -> list[torch.Tensor]:
    with torch.no_grad():
        return flatten_outputs(module(*example))


def _parity(path: Path, example: tuple, quantized_ref, float_ref, steps_per_output) -> tuple[dict, str]:
    """The artifact's outputs on the example inputs vs the quantized graph (in steps) and vs float."""
    try:
        prog = load_artifact(path)
        got = [t if isinstance(t, torch.Tensor) else torch.as_tensor(t) for t in prog.run(list(example))]
    except UserInputError as e:
        # A file we just wrote that its runtime rejects is a backend bug, not the user's input (exit 1).
        raise LoweringError(f"the freshly exported {path.name} does not run on the example inputs: {e}") from e
    vs_q = compare_outputs([quantized_ref], [got], steps_per_output)
    vs_f = compare_outputs([float_ref], [got], [None] * len(got)) if float_ref is not None else None
    doc = {"vs_quantized_graph": [r.to_dict() for r in vs_q],
           "vs_float": [r.to_dict() for r in vs_f] if vs_f is not None else None}
    return doc, format_parity(vs_q)


def run(args) -> int:
    formats = parse_formats(args.format)
    out_dir = Path(args.output)
    check_targets(out_dir, [f"model{f.suffix}" for f in formats] + REPORT_FILES)
    steps = Steps(0)
    steps.say(f"loading {args.model}")
    loaded = load_model(args.model)
    _check_converted_flags(args, loaded)
    example = _example_inputs(loaded, args.example_inputs)
    steps.total = len(formats) + (1 if loaded.converted else 2)
    float_ref = None
    if loaded.converted:
        steps.say("MODEL is already quantized: exporting it as is")
        qm, scheme = loaded.module, "as converted"
    else:
        float_ref = _run_reference(loaded.module.eval(), example)
        qm = _quantize(args, loaded, example, steps)
        scheme = (args.scheme or DEFAULT_SCHEME) + (" + smooth" if args.smooth else "")
    coverage = q.coverage(qm)
    with staged_output(out_dir) as staging:
        results = {}
        for fmt in formats:
            with steps(f"exporting model{fmt.suffix} ({fmt.describe})"):
                results[fmt.name] = fmt.export(qm, example, str(staging / f"model{fmt.suffix}"))
        with steps("checking parity on the example inputs"):
            quantized_ref = _run_reference(qm, example)
            step_sizes = output_steps(qm)
            checked = {name: _parity(res.path, example, quantized_ref, float_ref, step_sizes)
                       for name, res in results.items()}
        report = build_report(
            model=args.model, scheme=scheme, example_inputs=[list(t.shape) for t in example],
            coverage=coverage, results=results, parity={name: doc for name, (doc, _) in checked.items()},
            versions=runtime_versions())
        json_name, md_name = REPORT_FILES
        write_text_atomic(staging / json_name, to_json(report))
        write_text_atomic(staging / md_name, to_markdown(report))
        written = sorted(out_dir / f.name for f in staging.iterdir())
    print(coverage)
    for name, art in report["artifacts"].items():
        print(f"{name:5} {out_dir / art['path']}  {art['size_bytes'] / 1024:.1f} KiB  "
              f"int8 layers {art['int8_layers']}/{len(report['layers'])}  {checked[name][1]}")
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
