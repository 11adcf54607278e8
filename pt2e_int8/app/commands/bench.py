"""`pt2e-int8 bench ARTIFACT...`: latency on this device, with the device description.

Runs on a board that has only one runtime installed: it imports the runtime of each file's
format and the standard library, never torchao or the exporters.
"""

from __future__ import annotations

import json

from backends.registry import check_artifact, import_runtimes
from pt2e_int8.app.device import describe_device, summary_line
from pt2e_int8.app.paths import check_not_inputs, check_output_file, write_output_file
from pt2e_int8.app.probe import start_probe
from pt2e_int8.app.timing import Timing, bench_artifacts
from pt2e_int8.text_table import text_table


def format_table(timings: list[Timing]) -> str:
    header = ("artifact", "format", "batch", "size KiB", "median ms", "p90 ms", "min ms", "vs first")
    rows = [(t.artifact, t.format, "inputs" if t.batch is None else str(t.batch), f"{t.size_bytes / 1024:.1f}",
             f"{t.median_ms:.4f}", f"{t.p90_ms:.4f}", f"{t.min_ms:.4f}", f"{t.ratio_vs_first:.2f}x")
            for t in timings]
    return text_table(header, rows, right=range(2, len(header)))


def run(args) -> int:
    for path in args.artifacts:
        check_artifact(path)
    if args.json:
        check_output_file(args.json, "--json")
        check_not_inputs([("--json", args.json)],
                         [*(("ARTIFACT", a) for a in args.artifacts), ("--inputs", args.inputs)])
    # The child loads and runs each file before this process does: one whose runtime crashes on it is
    # reported, not fatal. It starts before this process imports its runtime (little else is left).
    probe = start_probe(args.artifacts, inputs=args.inputs, batch=args.batch, first_batch_only=True)
    try:
        inputs = None
        if args.inputs:
            from pt2e_int8.app.inputs import load_batches

            inputs = load_batches(args.inputs)[0]
        device = describe_device()
        import_runtimes(args.artifacts)
    except BaseException:
        probe.cancel()
        raise
    probe.wait()
    timings = bench_artifacts(args.artifacts, iters=args.iters, warmup=args.warmup, threads=args.threads,
                              inputs=inputs, batch=args.batch)
    print(f"device: {summary_line(device)}")
    threads = args.threads if args.threads is not None else "runtime default"
    source = args.inputs or (f"random, batch {args.batch}" if args.batch else
                             "random, batch 1 (a static-shape .pte: its own batch)")
    print(f"{args.iters} timed iterations after {args.warmup} warm-up, interleaved; threads: {threads}; inputs: {source}")
    print(format_table(timings))
    if args.json:
        doc = {"device": device,
               "settings": {"iters": args.iters, "warmup": args.warmup, "threads": args.threads,
                            "inputs": args.inputs, "batch": None if args.inputs else args.batch,
                            "order": "interleaved"},
               "results": [t.to_dict() for t in timings]}
        write_output_file(args.json, json.dumps(doc, indent=2) + "\n", "--json")
        print(f"wrote {args.json}")
    return 0
