"""`pt2e-int8 compare ARTIFACT... --reference MODEL --inputs FILE [--max-steps K]`.

Per artifact and output: max abs error, error in the reference's output quantization steps
(a converted reference only; "n/a" against a float one) and SQNR. Exit 1 when a bound is broken.
"""

from __future__ import annotations

import json
import math
import sys

import torch

from backends.registry import backend_of, check_artifact, load_artifact
from pt2e_int8.app.artifact_run import run_in_chunks
from pt2e_int8.app.inputs import load_batches
from pt2e_int8.app.modelspec import load_model, model_file_of, run_model
from pt2e_int8.app.parity import (
    OutputParity,
    compare_outputs,
    kernel_reference_outputs,
    output_steps,
)
from pt2e_int8.app.paths import check_not_inputs, check_output_file, write_output_file
from pt2e_int8.app.probe import probe_artifacts
from pt2e_int8.errors import ConfigError, InputFileError
from pt2e_int8.text_table import text_table

EXIT_BOUND_BROKEN = 1


def _table(rows: list[tuple[str, OutputParity]]) -> str:
    header = ("artifact", "output", "shape", "max abs err", "step", "err steps", "SQNR dB")
    body = []
    for artifact, r in rows:
        db = "exact" if math.isinf(r.sqnr_db) and r.sqnr_db > 0 else f"{r.sqnr_db:.1f}"
        body.append((artifact, str(r.output), "x".join(map(str, r.shape)), f"{r.max_abs_error:.4g}",
                     f"{r.step:.4g}" if r.step else "n/a",
                     f"{r.max_error_steps:.2f}" if r.max_error_steps is not None else "n/a", db))
    return text_table(header, body)


def _run_artifact(path: str, batches: list[tuple]) -> list[list[torch.Tensor]]:
    prog = load_artifact(path)
    outs = []
    for i, batch in enumerate(batches):
        got = run_in_chunks(prog, list(batch), path, f"--inputs batch {i}")
        outs.append([t if isinstance(t, torch.Tensor) else torch.as_tensor(t) for t in got])
    return outs


def _reference_outputs(module, batches: list[tuple], name: str) -> list:
    return [run_model(module, b, what=f"--reference {name} on --inputs batch {i}",
                      fix="Pass --inputs the reference accepts: the dtypes, shapes and value ranges (indices "
                          "within their tables) the artifacts were exported for.")
            for i, b in enumerate(batches)]


def _check_paths(args) -> None:
    for path in args.artifacts:
        check_artifact(path)
    if args.json:
        check_output_file(args.json, "--json")
        check_not_inputs([("--json", args.json)],
                         [*(("ARTIFACT", a) for a in args.artifacts), ("--reference", model_file_of(args.reference)),
                          ("--inputs", args.inputs)])


def run(args) -> int:
    _check_paths(args)
    reference = load_model(args.reference, trust=getattr(args, "trust_model_file", False))
    arity = len(reference.example_inputs) if reference.example_inputs else None
    batches = load_batches(args.inputs, arity=arity)
    steps = output_steps(reference.module) if reference.converted else []
    module = reference.module.eval()
    ref_outs = _reference_outputs(module, batches, args.reference)
    # Before any artifact is loaded here: one whose runtime crashes on it is reported, not fatal.
    probe_artifacts(args.artifacts, inputs=args.inputs, arity=arity)
    n_out = len(ref_outs[0])
    steps = (steps + [None] * n_out)[:n_out]
    if args.max_steps is not None and any(s is None for s in steps):
        missing = [i for i, s in enumerate(steps) if s is None]
        why = "it is a float model" if not reference.converted else "they are not produced by a quantize op"
        raise ConfigError(
            f"--max-steps needs the quantization step of every output, but output(s) {missing} of "
            f"{args.reference} have none ({why}). Pass the converted .pt2 as --reference, or drop --max-steps."
        )
    rows: list[tuple[str, OutputParity]] = []
    kernel_refs = {}  # backend name -> outputs of the reference computing as its runtime does
    measured_against = {}  # artifact -> which reference its steps are measured against
    for path in args.artifacts:
        got = _run_artifact(path, batches)
        want, measured_against[path] = ref_outs, "the reference as given"
        if reference.converted:
            backend = backend_of(path)
            if backend.name not in kernel_refs:
                kernel_refs[backend.name] = kernel_reference_outputs(backend, module, batches)
            if kernel_refs[backend.name] is not None:
                want, measured_against[path] = kernel_refs[backend.name], f"the reference with {backend.runtime}'s integer arithmetic"
        try:
            rows += [(path, r) for r in compare_outputs(want, got, steps)]
        except ValueError as e:
            raise InputFileError(f"{path}: its outputs do not match the reference's: {e}. "
                                 "Compare artifacts exported from this reference model.") from e
    print(f"reference: {args.reference} ({'quantized' if reference.converted else 'float'}); "
          f"inputs: {args.inputs} ({len(batches)} batch{'es' if len(batches) != 1 else ''})")
    print(_table(rows))
    broken = [(a, r) for a, r in rows if args.max_steps is not None and r.max_error_steps > args.max_steps]
    if args.json:
        doc = {"reference": args.reference, "inputs": args.inputs, "max_steps": args.max_steps,
               "passed": not broken,
               "results": [{"artifact": a, "measured_against": measured_against[a], **r.to_dict()} for a, r in rows]}
        write_output_file(args.json, json.dumps(doc, indent=2) + "\n", "--json")
    for a, r in broken:
        print(f"pt2e-int8 compare: {a} output {r.output} is off by {r.max_error_steps:.2f} steps "
              f"(> --max-steps {args.max_steps:g})", file=sys.stderr)
    return EXIT_BOUND_BROKEN if broken else 0
