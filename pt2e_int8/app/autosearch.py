"""`export --target-metric X | --max-drop D`: the precision search, wired to the command line.

The metric compares the candidate's outputs with the float model's on --eval-inputs (default:
the calibration batches). When the only artifact is a .pte, candidates are measured as XNNPACK
computes them (per-row dynamic int8, `backends.executorch.reference`); with an .onnx too, as the
converted graph computes them, which is what ONNX Runtime runs and never flatters the .pte.
"""

from __future__ import annotations

from pt2e_int8.app.inputs import check_finite, load_batches
from pt2e_int8.errors import ConfigError


def search(args, module, example: tuple, calibration: list, quantizer, formats: list, say):
    """Run auto_quantize for the export command; returns its AutoResult."""
    from pt2e_int8.debug.auto import auto_quantize
    from pt2e_int8.debug.metrics import METRICS

    if any(c.mode != "static" for c in [quantizer.global_config] if c is not None):
        raise ConfigError("--target-metric / --max-drop start from static int8 and move layers off it: use "
                          "--scheme static (the default) or a --plan whose global scheme is static.")
    if args.metric == "sqnr" and args.max_drop is not None:
        raise ConfigError("--max-drop needs a metric the float model scores finitely; its SQNR against itself is "
                          "infinite. Use --target-metric with --metric sqnr (e.g. 30 dB), or --metric cosine.")
    inputs = load_batches(args.eval_inputs, arity=len(example)) if args.eval_inputs else calibration
    check_finite(inputs, args.eval_inputs or "the calibration batches")
    if not args.eval_inputs:
        say("the search measures on the calibration batches; pass --eval-inputs FILE with held-out data")
    metric = METRICS[args.metric](module, inputs)
    emulate = None
    if [f.name for f in formats] == ["pte"]:
        from backends.executorch.reference import xnnpack_reference as emulate
    return auto_quantize(module, example, calibration, metric, args.target_metric, max_drop=args.max_drop,
                         quantizer=quantizer, emulate=emulate, progress=say)
