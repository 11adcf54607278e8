"""`pt2e-int8 export MODEL -o DIR`: quantize (unless already converted), write .pte / .onnx + reports.

    check paths → load MODEL → quantize (--scheme, --calibration, --keep-float) → export each --format
    → parity of each artifact vs the quantized graph (and float) on the example inputs
    → report.json + report.md → move everything into DIR

Everything is built in a staging directory inside DIR and moved into place all together
(`staging.py`), so a failed run leaves the user's existing files as they were. When one format
fails and another works, the working ones and the reports are written, report.json records the
failure, the failed format's old file (if any) is left as it was and called stale, and the exit
status is 1 (EXIT_PARTIAL).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

import pt2e_int8 as q
from backends.registry import BACKENDS, load_artifact, parse_formats
from pt2e_int8.app import speed_check
from pt2e_int8.app.device import runtime_versions
from pt2e_int8.app.inputs import check_finite, load_batches
from pt2e_int8.app.modelspec import LoadedModel, load_model, model_file_of, run_model
from pt2e_int8.app.parity import (
    compare_outputs,
    format_parity,
    kernel_reference_outputs,
    output_steps,
)
from pt2e_int8.app.paths import check_not_inputs
from pt2e_int8.app.progress import Steps
from pt2e_int8.app.report import build_report, to_json, to_markdown
from pt2e_int8.app.staging import check_targets, staged_names, staged_output
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
BACKEND_SUFFIX = {name: b.suffix for name, b in BACKENDS.items()}
EXIT_PARTIAL = 1  # some formats written, some failed: not a full success (README, "Exit status")
# Below this SQNR of the int8 graph against float on the example inputs, the terminal says so.
LOW_SQNR_DB = 10.0
# The search ran but no plan meets the target: nothing is written (exit 1, like compare's bound).
EXIT_TARGET_MISSED = 1


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
                                      ("--keep-float", args.keep_float), ("--plan", args.plan), ("--smooth", args.smooth),
                                      ("--target-metric", args.target_metric is not None),
                                      ("--max-drop", args.max_drop is not None)) if value]
    if loaded.converted and given:
        raise ConfigError(
            f"MODEL {loaded.source} is already quantized (it has quantize/dequantize ops), so {', '.join(given)} "
            "cannot apply. Drop them to export it as is, or pass the float model to quantize it again."
        )


def _base_quantizer(args) -> q.Int8Quantizer:
    if args.plan:
        if args.scheme or args.keep_float or args.smooth:
            raise ConfigError("--plan already says every layer's scheme: drop --scheme / --keep-float / --smooth, "
                              "or drop --plan.")
        from pt2e_int8.debug.plan import QuantPlan

        return QuantPlan.load(args.plan).to_quantizer()
    scheme = args.scheme or DEFAULT_SCHEME
    if args.smooth and scheme != "static":
        raise ConfigError(f"--smooth applies to the static scheme only (got --scheme {scheme}): drop --smooth, "
                          "or use --scheme static.")
    quantizer = q.Int8Quantizer().set_global(SCHEMES[scheme](**({"smooth": True} if args.smooth else {})))
    for name in args.keep_float or []:
        quantizer.set_module_name(name, None)
    return quantizer


def _searching(args) -> bool:
    return args.target_metric is not None or args.max_drop is not None


def _quantize(args, loaded: LoadedModel, example: tuple, steps: Steps, formats):
    """(converted model, AutoResult or None)."""
    quantizer = _base_quantizer(args)
    scheme = "plan" if args.plan else args.scheme or DEFAULT_SCHEME
    if args.plan or _searching(args):  # a plan or search may mix schemes: calibrate if any is static
        scheme = "static" if any(c.needs_calibration for c in quantizer.configs) else "dynamic"
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
    if _searching(args):
        from pt2e_int8.app.autosearch import search

        with steps("searching the fewest layers to move off static int8"):
            auto = search(args, loaded.module, example, calibration or [example], quantizer, formats, steps.say)
        return auto.model, auto
    label = f"quantizing ({scheme}" + (f", {len(calibration)} calibration batches)" if calibration else ")")
    with steps(label):
        return q.quantize(loaded.module, example, calibration=calibration, quantizer=quantizer, progress=True), None


def export_options(fmt: str, args) -> dict:
    """--shapes / --max-batch / --target as the exporter's keywords (max_batch and "auto" shapes are
    .pte-only, the target is ONNX-only)."""
    shapes = getattr(args, "shapes", "auto")
    value = None if shapes == "static" else shapes if fmt == "pte" else "batch"
    options = {"dynamic_shapes": value}
    if fmt == "pte" and getattr(args, "max_batch", None):
        options["max_batch"] = args.max_batch
    if fmt == "onnx":
        options["target"] = getattr(args, "target", "auto")
    return options



def _kernel_reference(backend, qm, example: tuple, quantized_ref: list) -> tuple[list, str]:
    """The reference `backend`'s artifact is measured against, and what it is: the quantized graph
    computing as its runtime does, or the graph's own fp32 outputs when that cannot be built."""
    kernel_ref = kernel_reference_outputs(backend, qm, [example])
    if kernel_ref is None:
        return quantized_ref, "the quantized graph (fp32 sums)"
    return kernel_ref[0], f"the quantized graph with {backend.runtime}'s integer arithmetic"


def _parity(path: Path, example: tuple, quantized_ref, float_ref, steps_per_output,
            reference: str = "the quantized graph") -> tuple[dict, str]:
    """The artifact's outputs on the example inputs vs the quantized graph (in steps) and vs float."""
    try:
        prog = load_artifact(path)
        got = [t if isinstance(t, torch.Tensor) else torch.as_tensor(t) for t in prog.run(list(example))]
    except UserInputError as e:
        # A file we just wrote that its runtime rejects is a backend bug, not the user's input (exit 1).
        raise LoweringError(f"the freshly exported {path.name} does not run on the example inputs: {e}") from e
    vs_q = compare_outputs([quantized_ref], [got], steps_per_output)
    vs_f = compare_outputs([float_ref], [got], [None] * len(got)) if float_ref is not None else None
    doc = {"vs_quantized_graph": [r.to_dict() for r in vs_q], "reference": reference,
           "vs_float": [r.to_dict() for r in vs_f] if vs_f is not None else None}
    return doc, format_parity(vs_q)


def _speed_against_float(formats, results, float_model, example, args, steps) -> dict[str, float]:
    """int8 / float latency of each artifact on this machine; warns where int8 is slower."""
    ratios = {}
    with steps("timing each artifact against its float export on this machine"):
        for fmt in formats:
            ratio = speed_check.int8_vs_float(fmt.export, float_model, example, results[fmt.name].path,
                                              export_options(fmt.name, args))
            if ratio is None:
                continue
            ratios[fmt.name] = round(ratio, 3)
            if ratio > speed_check.SLOWER:
                warnings.warn(
                    f"model{fmt.suffix} takes {ratio:.2f}x the time of the same model exported in float, on this "
                    "machine at the example's batch: int8 buys no speed here. report.json lists the layers placed "
                    "in float and, for .pte, the ops outside XNNPACK with the reason.", stacklevel=2)
    return ratios


def _say_error(e: Exception, limit: int = 400) -> str:
    text = " ".join(str(e).split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _warn_far_from_float(float_ref, quantized_ref) -> None:
    """A calibration that ruins the model must not pass silently behind a parity of "exact"."""
    if float_ref is None:
        return
    rows = compare_outputs([float_ref], [quantized_ref], [None] * len(quantized_ref))
    low = [f"output {r.output}: {r.sqnr_db:.1f} dB" for r in rows if r.sqnr_db < LOW_SQNR_DB]
    if low:
        print(f"pt2e-int8: warning: on the example inputs the int8 model is far from float (SQNR {', '.join(low)}; "
              f"below {LOW_SQNR_DB:g} dB). If the example inputs are representative, the calibration data does not "
              "cover them: calibrate on representative samples (--calibration), or keep the worst layers float "
              "(--keep-float).", file=sys.stderr)


def _check_paths(args, formats, out_dir: Path) -> None:
    names = [f"model{f.suffix}" for f in formats] + REPORT_FILES + (["plan.json"] if _searching(args) else [])
    check_not_inputs([(f"-o {out_dir}: output", out_dir / n) for n in names],
                     [("MODEL", model_file_of(args.model)), ("--calibration", args.calibration),
                      ("--example-inputs", args.example_inputs)])
    check_targets(out_dir, names)


def run(args) -> int:
    formats = parse_formats(args.format)
    out_dir = Path(args.output)
    _check_paths(args, formats, out_dir)
    steps = Steps(0)
    # The staging folder is made first: a -o that cannot be written fails before minutes of work.
    with staged_output(out_dir) as staging:
        steps.say(f"loading {args.model}")
        loaded = load_model(args.model, trust=getattr(args, "trust_model_file", False))
        _check_converted_flags(args, loaded)
        example = _example_inputs(loaded, args.example_inputs)
        fix = ("Pass --example-inputs FILE with the inputs forward takes (batch first), or fix the model."
               if not loaded.converted else "Pass --example-inputs FILE with the shapes and dtypes it was exported with.")
        timed = not loaded.converted and speed_check.enabled()
        steps.total = len(formats) + (1 if loaded.converted else 2) + timed  # [quantize], formats, parity, [speed]
        float_ref, auto = None, None
        if loaded.converted:
            steps.say("MODEL is already quantized: exporting it as is")
            qm, scheme = loaded.module, "as converted"
        else:
            float_ref = run_model(loaded.module.eval(), example, what=f"MODEL {args.model} on the example inputs", fix=fix)
            qm, auto = _quantize(args, loaded, example, steps, formats)
            scheme = "auto" if auto is not None else "plan" if args.plan else (
                args.scheme or DEFAULT_SCHEME) + (" + smooth" if args.smooth else "")
            if auto is not None and not auto.met:  # leaves the staging folder empty: nothing changes in -o
                print(f"pt2e-int8 export: {auto.message}. Nothing was written: loosen --target-metric / --max-drop, "
                      "or pass more representative --calibration data.", file=sys.stderr)
                return EXIT_TARGET_MISSED
        quantized_ref = run_model(qm, example, what=f"the quantized {args.model} on the example inputs", fix=fix)
        _warn_far_from_float(float_ref, quantized_ref)
        coverage = q.coverage(qm)
        step_sizes = output_steps(qm)
        results, checked, failed = {}, {}, {}
        for fmt in formats:
            target = staging / f"model{fmt.suffix}"
            try:
                with steps(f"exporting model{fmt.suffix} ({fmt.describe})"):
                    results[fmt.name] = fmt.export(qm, example, str(target), **export_options(fmt.name, args))
            except Exception as e:  # noqa: BLE001  (one format failing must not lose the others)
                target.unlink(missing_ok=True)
                failed[fmt.name] = e
                steps.say(f"model{fmt.suffix} failed: {_say_error(e, 160)}")
        if results:
            with steps("checking parity on the example inputs"):
                for name, res in list(results.items()):
                    try:
                        kernel_ref, kind = _kernel_reference(BACKENDS[name], qm, example, quantized_ref)
                        checked[name] = _parity(res.path, example, kernel_ref, float_ref, step_sizes, kind)
                    except Exception as e:  # noqa: BLE001
                        res.path.unlink(missing_ok=True)
                        del results[name]
                        failed[name] = e
                        steps.say(f"{res.path.name} failed: {_say_error(e, 160)}")
        if not results:
            raise next(iter(failed.values()))
        written_formats = [f for f in formats if f.name in results]
        speed = _speed_against_float(written_formats, results, loaded.module, example, args, steps) if timed else {}
        stale = {name: (out_dir / f"model{BACKEND_SUFFIX[name]}").exists() for name in failed}
        report = build_report(
            model=args.model, scheme=scheme, example_inputs=[list(t.shape) for t in example],
            coverage=coverage, results=results, parity={name: doc for name, (doc, _) in checked.items()},
            versions=runtime_versions(), speed=speed,
            failed={name: {"error": type(e).__name__, "message": str(e),
                           "stale_file": f"model{BACKEND_SUFFIX[name]}" if stale[name] else None}
                    for name, e in failed.items()})
        if auto is not None:
            report["auto"] = auto.to_dict()
            auto.plan.save(staging / "plan.json")
        json_name, md_name = REPORT_FILES
        write_text_atomic(staging / json_name, to_json(report))
        write_text_atomic(staging / md_name, to_markdown(report))
        written = [out_dir / name for name in staged_names(staging)]
    print(coverage)
    if auto is not None:
        print(auto.message)
    for name, art in report["artifacts"].items():
        print(f"{name:5} {out_dir / art['path']}  {art['size_bytes'] / 1024:.1f} KiB  "
              f"int8 layers {art['int8_layers']}/{len(report['layers'])}  {checked[name][1]}")
    print(f"wrote {', '.join(str(p) for p in written)}")
    for name, e in failed.items():
        path = out_dir / f"model{BACKEND_SUFFIX[name]}"
        old = (f" {path} is from an earlier run and was left as it was: it is stale, it does not match this "
               "report." if stale[name] else "")
        print(f"pt2e-int8 export: error: model{BACKEND_SUFFIX[name]} was not written: {_say_error(e)}.{old} "
              f"The other outputs were written; report.json lists the failure under \"failed\".", file=sys.stderr)
    return EXIT_PARTIAL if failed else 0
