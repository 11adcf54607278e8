"""The benchmark: every pipeline of every model, as rows of bench/RESULTS.md and bench/results.json.

    .venv/bin/python bench/run.py [--models minilm,digits,digits_cnn] [--iters 100] [--threads 2] [--quick]

Per model: setup (train / tokenize / float reference), then each pipeline exported in its own
process (its wall time is the sum of its stages; its peak memory is that process's max RSS),
then one process per runtime (PyTorch eager, ExecuTorch, ONNX Runtime) that checks quality on
held-out inputs and times its artifacts interleaved, with the stock float .pte timed alongside
as the cross-runtime anchor. A pipeline that fails becomes a row with its error.

`--quick` (CI smoke): few iterations, a 2-layer MiniLM at seq 32, all exports in one process
(peak memory is then shared), results under out/bench-quick/ unless --results says otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/run.py` puts bench/ first on the path, not the repo
    sys.path.insert(0, str(REPO))

from bench.models import MODELS  # noqa: E402
from bench.pipelines import (  # noqa: E402
    PIPELINES,
    RUNTIME_BASELINE,
    RUNTIMES,
    STOCK_FLOAT_PTE,
    blocked,
    pipelines_for,
)
from bench.report import write_results  # noqa: E402

MODEL_ALIASES = {"all": ["minilm", "digits", "digits_cnn"]}
EXPORT_TIMEOUT_S, MEASURE_TIMEOUT_S = 1800, 1800


def _device_module():
    """pt2e_int8.app.device: standard library only (the package __init__ is lazy, so no torch)."""
    from pt2e_int8.app import device

    return device


def run_child(argv: list[str], log: Path, timeout: float) -> dict:
    """Run `python -m bench.worker ARGV`; returns its exit code, wall time and own peak RSS (wait4)."""
    # OMP_WAIT_POLICY=PASSIVE: PyTorch's OpenMP threads sleep instead of spinning between parallel
    # regions. Spinning threads steal the cores other runtimes (and neighbours) need; with one core
    # busy elsewhere, MiniLM in eager PyTorch at 2 threads measured 2.1 s spinning vs 73 ms passive.
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.worker", *argv], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, unlike RUSAGE_CHILDREN
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "wall_s": time.perf_counter() - t0, "maxrss_mb": usage.ru_maxrss / 1024,
            "log": str(log)}


def _tail(log: str, n: int = 3) -> str:
    lines = [ln for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-400:]


def _common(args) -> list[str]:
    return (["--quick"] if args.quick else []) + ["--threads", str(args.threads)]


def _export_all(model_name: str, wd: Path, names: list[str], args) -> dict[str, dict]:
    metas: dict[str, dict] = {}

    def failed_without_meta(name: str, child: dict) -> dict:
        return {"pipeline": name, "ok": False, "error": f"worker exited with {child['rc']}: {_tail(child['log'])}"}

    todo = []
    for name in names:
        meta_path, pipe = wd / f"{name}.json", PIPELINES[name]
        if args.reuse and meta_path.exists():
            metas[name] = json.loads(meta_path.read_text())
            if metas[name].get("ok"):
                continue
        if pipe.runtime == "eager":  # the PyTorch model itself: nothing to export
            metas[name] = {"pipeline": name, "ok": True, "path": None, "stages": {}, "wall_s": 0.0, "notes": []}
            meta_path.write_text(json.dumps(metas[name]))
            continue
        if args.quick:
            todo.append(name)  # exported together below; the worker checks `blocked` itself
            continue
        block = blocked(pipe, metas)
        if block is not None:
            metas[name] = {"pipeline": name, "ok": False, "skipped" if block[0] == "skip" else "error": block[1]}
            continue
        print(f"  export {model_name}/{name} ...", flush=True)
        child = run_child(["export", model_name, str(wd), "--pipelines", name, *_common(args)],
                          wd / "logs" / f"export_{name}.log", EXPORT_TIMEOUT_S)
        meta = json.loads((wd / f"{name}.json").read_text()) if (wd / f"{name}.json").exists() and child["rc"] == 0 \
            else failed_without_meta(name, child)
        meta["peak_rss_mb"] = round(child["maxrss_mb"], 1)
        metas[name] = meta
        status = f"{meta['wall_s']:.1f} s" if meta.get("ok") else (meta.get("error") or meta.get("skipped", ""))[:160]
        print(f"    {status}", flush=True)
    if todo:
        print(f"  export {model_name}: {len(todo)} pipelines in one process (--quick) ...", flush=True)
        child = run_child(["export", model_name, str(wd), "--pipelines", ",".join(todo), *_common(args)],
                          wd / "logs" / "export_all.log", EXPORT_TIMEOUT_S)
        for name in todo:
            path = wd / f"{name}.json"
            metas[name] = json.loads(path.read_text()) if path.exists() else failed_without_meta(name, child)
            metas[name]["rss_shared"] = True
    return metas


def _measure(model_name: str, wd: Path, runtimes: list[str], names: list[str], tag: str, args) -> dict:
    """One measure process; returns {pipeline: row} for `runtimes`, or {} when the process died."""
    child = run_child(["measure", model_name, str(wd), "--runtime", ",".join(runtimes), "--pipelines",
                       ",".join(names), "--tag", tag, "--iters", str(args.iters), "--warmup", str(args.warmup),
                       *_common(args)], wd / "logs" / f"measure_{'_'.join(runtimes)}{tag}.log", MEASURE_TIMEOUT_S)
    rows: dict[str, dict] = {}
    for runtime in runtimes:
        path = wd / f"measure_{runtime}{tag}.json"
        if child["rc"] != 0 or not path.exists():
            return {"__error__": f"measure worker exited with {child['rc']}: {_tail(child['log'])}"}
        doc = json.loads(path.read_text())
        rows.update({n: r for n, r in doc["rows"].items() if PIPELINES[n].runtime == runtime})
    return rows


def _measure_all(model_name: str, wd: Path, metas: dict[str, dict], args) -> dict[str, dict]:
    """One process per runtime (--quick: one for all), each runtime's artifacts interleaved in it.

    If a runtime's process dies (an artifact that crashes its runtime), each artifact is retried in a
    process of its own with the runtime's float baseline and the anchor, so one crash costs one row.
    """
    for stale in wd.glob("measure_*.json"):
        stale.unlink()
    ok = [n for n, m in metas.items() if m.get("ok")]
    runtimes = [r for r in RUNTIMES if any(PIPELINES[n].runtime == r for n in ok)]
    batches = [runtimes] if args.quick else [[r] for r in runtimes]
    results: dict[str, dict] = {}
    for batch in batches:
        names = [n for n in ok if PIPELINES[n].runtime in batch or n == STOCK_FLOAT_PTE]
        print(f"  measure {model_name}/{'+'.join(batch)}: {len(names)} artifacts x {args.iters} iters ...",
              flush=True)
        rows = _measure(model_name, wd, batch, names, "", args)
        if "__error__" not in rows:
            results.update(rows)
            continue
        print(f"    {rows['__error__'][:200]}; retrying one artifact per process", flush=True)
        for name in [n for n in names if PIPELINES[n].runtime in batch]:
            runtime = PIPELINES[name].runtime
            fellow = [n for n in (RUNTIME_BASELINE[runtime], STOCK_FLOAT_PTE) if n in ok and n != name]
            one = _measure(model_name, wd, [runtime], [*fellow, name], f"_{name}", args)
            results[name] = one.get(name, {"error": one.get("__error__", "not measured")})
    return results


def _rows(model_name: str, metas: dict[str, dict], measured: dict[str, dict]) -> list[dict]:
    rows = []
    for name in [n for n in PIPELINES if n in metas and not metas[n].get("skipped")]:  # registry order
        meta, pipe = metas[name], PIPELINES[name]
        m = measured.get(name, {})
        error = meta.get("error") or m.get("error")
        rows.append({
            "model": model_name, "pipeline": name, "label": pipe.label, "runtime": pipe.runtime,
            "origin": pipe.origin, "anchor": pipe.is_anchor, "ok": error is None, "error": error,
            "size_mb": round(meta["size_bytes"] / 2**20, 3) if meta.get("size_bytes") else None,
            "metric": MODELS[model_name].metric, "quality": m.get("quality"),
            # the converted graph in PyTorch, and the artifact's max distance from it in output steps
            "reference_quality": m.get("reference_quality"), "reference_steps": m.get("reference_steps"),
            "median_ms": m.get("median_ms"), "p90_ms": m.get("p90_ms"), "min_ms": m.get("min_ms"),
            "ratio_vs_runtime_float": m.get("ratio_vs_runtime_float"),
            "ratio_vs_stock_float_pte": m.get("ratio_vs_stock_float_pte"),
            "export_wall_s": meta.get("wall_s") if pipe.runtime != "eager" else None,
            "stages": meta.get("stages", {}), "peak_rss_mb": meta.get("peak_rss_mb") if pipe.runtime != "eager" else None,
            "rss_shared": meta.get("rss_shared", False), "notes": meta.get("notes", []),
        })
    return rows


def bench_model(model_name: str, args) -> tuple[list[dict], dict]:
    model = MODELS[model_name]
    wd = args.workdir / model_name
    (wd / "logs").mkdir(parents=True, exist_ok=True)
    names = [p.name for p in pipelines_for(model) if not args.pipelines or p.name in args.pipelines
             or p.name in (STOCK_FLOAT_PTE, *RUNTIME_BASELINE.values())]
    print(f"[{model_name}] setup ...", flush=True)
    if not args.reuse:  # stale results of an earlier run must not count as this run's
        for stale in wd.glob("*.json"):
            stale.unlink()
    if not (args.reuse and (wd / "data.pt").exists()):
        child = run_child(["setup", model_name, str(wd), *_common(args)], wd / "logs" / "setup.log", EXPORT_TIMEOUT_S)
        if child["rc"] != 0:
            err = f"setup failed: {_tail(child['log'])}"
            return [{"model": model_name, "pipeline": n, "label": PIPELINES[n].label, "runtime": PIPELINES[n].runtime,
                     "origin": PIPELINES[n].origin, "anchor": PIPELINES[n].is_anchor, "ok": False, "error": err}
                    for n in names], {}
    settings = json.loads((wd / "settings.json").read_text())
    metas = _export_all(model_name, wd, names, args)
    measured = _measure_all(model_name, wd, metas, args)
    return _rows(model_name, metas, measured), settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="minilm,digits,digits_cnn",
                   help=f"comma-separated, from {sorted(MODELS)} (or 'all')")
    p.add_argument("--iters", type=int, default=None, help="timed runs per artifact (default 100; --quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 10; --quick 2)")
    p.add_argument("--threads", type=int, default=2, help="threads of every runtime")
    p.add_argument("--quick", action="store_true", help="CI smoke: few iters, 2-layer MiniLM at seq 32")
    p.add_argument("--pipelines", default="", help="only these pipelines (the float baselines always run)")
    p.add_argument("--workdir", type=Path, default=None, help="artifacts and logs (default out/bench[-quick])")
    p.add_argument("--results", type=Path, default=None,
                   help="folder for RESULTS.md and results.json (default bench/; --quick: the workdir)")
    p.add_argument("--reuse", action="store_true", help="keep artifacts that exported fine in an earlier run")
    args = p.parse_args(argv)
    names = [m for part in args.models.split(",") if part for m in MODEL_ALIASES.get(part, [part])]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    bad = [n for n in args.pipelines.split(",") if n and n not in PIPELINES]
    if bad:
        p.error(f"unknown pipeline(s) {bad}; choose from {list(PIPELINES)}")
    args.model_names = names
    args.pipelines = {n for n in args.pipelines.split(",") if n}
    args.iters = args.iters or (5 if args.quick else 100)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 10)
    args.workdir = (args.workdir or REPO / "out" / ("bench-quick" if args.quick else "bench")).resolve()
    args.results = (args.results or (args.workdir if args.quick else REPO / "bench")).resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shown = sys.argv[1:] if argv is None else argv
    command = "HF_HUB_OFFLINE=1 .venv/bin/python bench/run.py " + shlex.join(shown)
    device = _device_module()
    started = dt.datetime.now(dt.UTC)
    rows, settings = [], {}
    for name in args.model_names:
        model_rows, settings[name] = bench_model(name, args)
        rows += model_rows
    doc = {"command": command.strip(), "started_utc": started.isoformat(timespec="seconds"),
           "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "device": device.describe_device(), "quick": args.quick, "iters": args.iters, "warmup": args.warmup,
           "threads": args.threads, "models": settings, "rows": rows}
    doc["device_line"] = device.summary_line(doc["device"])
    md, js = write_results(doc, args.results)
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
