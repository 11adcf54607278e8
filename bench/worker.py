"""The benchmark's child processes (`python -m bench.worker ...`), started by bench/run.py.

    setup   MODEL DIR           train / tokenize / run the float reference → DIR/data.pt
    export  MODEL DIR P1,P2,..  run each pipeline, write its artifact and DIR/P.json (stages, notes, error)
    measure MODEL DIR RUNTIME P1,P2,..  evaluate each artifact on the held-out inputs, then time them
                                        interleaved (A B C A B C ...) → DIR/measure_RUNTIME.json

Each runs in its own process so that a pipeline's peak memory is its own, a crash is one row,
and one runtime's worker threads cannot steal cores from another's timing.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import traceback
from pathlib import Path

import torch

from bench.models import MODELS, ModelData
from bench.pipelines import (
    PIPELINES,
    RUNTIME_BASELINE,
    RUNTIMES,
    STOCK_FLOAT_PTE,
    Ctx,
    blocked,
    reference_path,
)


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _size(path: Path) -> int:
    """Bytes on disk, with the external-data file torch.onnx writes beside an .onnx (`model.onnx.data`)."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _error(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first[:400]}"


def cmd_setup(args) -> None:
    model = MODELS[args.model]
    data = model.setup(args.dir, args.quick)
    data.save(args.dir / "data.pt")
    _write_json(args.dir / "settings.json", data.settings)


def _metas(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")
            if p.stem in PIPELINES}


def cmd_export(args) -> None:
    model = MODELS[args.model]
    data = ModelData.load(args.dir / "data.pt")
    for name in args.pipelines.split(","):
        pipe = PIPELINES[name]
        ctx = Ctx(model, data, args.dir, args.quick, pipeline=name)
        doc: dict = {"pipeline": name, "ok": False, "rss_at_start_mb": round(_rss_mb(), 1)}
        block = blocked(pipe, _metas(args.dir))
        if block is not None:
            doc.update({"skipped" if block[0] == "skip" else "error": block[1]})
            _write_json(args.dir / f"{name}.json", doc)
            continue
        t0 = time.perf_counter()
        try:
            path = pipe.fn(ctx)
            doc.update(ok=True, path=str(path) if path else None, size_bytes=_size(path) if path else None)
        except Exception as e:  # noqa: BLE001  (one failing pipeline is one row, not a crash)
            doc.update(error=_error(e), traceback=traceback.format_exc()[-4000:])
            print(f"[{name}] failed: {doc['error']}", file=sys.stderr)
        doc.update(stages={k: round(v, 2) for k, v in ctx.stages.items()},
                   wall_s=round(sum(ctx.stages.values()), 2), process_s=round(time.perf_counter() - t0, 2),
                   peak_rss_mb=round(_rss_mb(), 1), notes=ctx.notes)
        _write_json(args.dir / f"{name}.json", doc)


def _runner(pipe_name: str, meta: dict, model, args):
    """A callable(inputs) -> first output tensor, for one artifact."""
    pipe = PIPELINES[pipe_name]
    if pipe.runtime == "eager":
        torch.set_num_threads(args.threads)
        net = model.build(args.dir, args.quick)

        def run(x):
            with torch.inference_mode():
                return net(*x)

        return run
    if pipe.runtime == "executorch":
        from backends.executorch.runtime import load_pte

        prog = load_pte(meta["path"], threads=args.threads)
        return lambda x: prog.run(list(x))[0]
    from backends.onnx.runtime import load_onnx  # sessions never spin (session_options)

    sess = load_onnx(meta["path"], threads=args.threads)
    return lambda x: sess.run(list(x))[0]


def _reference_steps(model, data: ModelData, meta: dict, outputs: list) -> dict:
    """How far an artifact's outputs are from its PyTorch reference (the converted graph), when the
    pipeline saved one: max |artifact - reference| in steps of an int8 grid over the reference's range,
    and the reference's own quality (the PyTorch number beside the artifact's)."""
    ref_file = reference_path(Path(meta["path"])) if meta.get("path") else None
    if ref_file is None or not ref_file.exists():
        return {}
    worst, worst_abs = 0.0, 0.0
    refs = torch.load(ref_file, weights_only=True)
    for out, ref in zip(outputs, refs, strict=True):
        out = torch.as_tensor(out).reshape(ref.shape).to(ref.dtype)
        err = float((out - ref).abs().max())
        step = float(ref.max() - ref.min()) / 255 or 1.0
        worst, worst_abs = max(worst, err / step), max(worst_abs, err)
    return {"reference_steps": round(worst, 3), "reference_max_abs": worst_abs,
            "reference_quality": model.quality(refs, data)}


def cmd_measure(args) -> None:
    """One interleaving per runtime in --runtime (comma list), each with the stock float .pte as anchor."""
    model = MODELS[args.model]
    data = ModelData.load(args.dir / "data.pt")
    given = args.pipelines.split(",")
    for runtime in [r for r in RUNTIMES if r in args.runtime.split(",")]:
        names = [n for n in given if PIPELINES[n].runtime == runtime]
        if runtime != "executorch" and STOCK_FLOAT_PTE in given:
            names.append(STOCK_FLOAT_PTE)  # the cross-runtime anchor, in the same interleaving
        if names:
            _measure(model, data, runtime, names, args)


def _measure(model, data: ModelData, runtime: str, pipelines: list[str], args) -> None:
    from pt2e_int8.app.timing import latency_stats, time_interleaved

    rows: dict[str, dict] = {}
    runners = {}
    for name in pipelines:
        meta = json.loads((args.dir / f"{name}.json").read_text())
        try:
            run = _runner(name, meta, model, args)
            outputs = [run(x) for x in data.eval_inputs]
            rows[name] = {"quality": model.quality(outputs, data), **_reference_steps(model, data, meta, outputs)}
            runners[name] = run
        except Exception as e:  # noqa: BLE001
            rows[name] = {"error": f"running it: {_error(e)}"}
            print(f"[{name}] failed to run: {rows[name]['error']}", file=sys.stderr)
    names = list(runners)
    x = data.example
    samples = time_interleaved([lambda r=runners[n]: r(x) for n in names], args.iters, args.warmup)
    for name, ms in zip(names, samples, strict=True):
        rows[name].update({k: round(v, 3) for k, v in latency_stats(ms).items()})
    # Ratios only against runners of this very interleaving.
    base = rows.get(RUNTIME_BASELINE[runtime], {}).get("median_ms")
    anchor = rows.get(STOCK_FLOAT_PTE, {}).get("median_ms")
    for row in rows.values():
        med = row.get("median_ms")
        row["ratio_vs_runtime_float"] = round(med / base, 3) if med and base else None
        row["ratio_vs_stock_float_pte"] = round(med / anchor, 3) if med and anchor else None
    _write_json(args.dir / f"measure_{runtime}{args.tag}.json",
                {"runtime": runtime, "iters": args.iters, "warmup": args.warmup, "threads": args.threads,
                 "order": names, "rows": rows})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.worker")
    p.add_argument("command", choices=["setup", "export", "measure"])
    p.add_argument("model", choices=sorted(MODELS))
    p.add_argument("dir", type=Path)
    p.add_argument("--pipelines", default="")
    p.add_argument("--runtime", default="")
    p.add_argument("--tag", default="", help="suffix of the measure_RUNTIME file (one-artifact retries)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"setup": cmd_setup, "export": cmd_export, "measure": cmd_measure}[args.command](args)


if __name__ == "__main__":
    main()
