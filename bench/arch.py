"""Real architectures: our default int8 .pte vs our float .pte vs the stock flow's int8 .pte.

    .venv/bin/python bench/arch.py [--models all|cnn|NAME,...] [--iters 50] [--threads 2] [--quick]

Models (bench/arch_models.py): torchvision CNNs, a 6-block ViT-Ti/16, LSTM and GRU keyword-spotting
classifiers, a 1-D audio CNN and a ConvTranspose U-Net; random init, BN statistics re-estimated on
random data. Per model, in its own process:
  build    ours float .pte   export_pte(float model)                          (defaults)
           ours int8 .pte    quantize(model) with QuantConfig.static() → export_pte  (defaults)
           ours int8 static  the same graph, export_pte(dynamic_shapes=None)   (what the default must match)
           ours int8 dyn     the same graph, export_pte(max_batch=64)          (the dynamic batch's cost)
           stock int8 .pte   XNNPACKQuantizer (static, per-channel) → to_edge_transform_and_lower
  measure  every .pte of the model timed interleaved (A B C D A B C D ...) at batch 1 in one process,
           SQNR of each int8 .pte's output against float eager on held-out random inputs.
Writes bench/arch.json and bench/arch.md (the target checklist on top).

Targets (issue 9): for every CNN our default int8 .pte ≤ 0.85× our float .pte and no slower than the
stock int8 .pte, coverage lists every layer, delegate calls ≤ the stock flow's; for every model our
default .pte no slower than its static-shape export.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

INT8_VS_FLOAT_MAX = 0.85
# Interleaved medians on a shared 2-core machine move by a few percent run to run: a ratio within
# this of 1.0 counts as "no slower". The lead re-runs the table on a quiet machine.
NOISE = 0.03
CALIBRATION_BATCHES, CALIBRATION_BATCH, EVAL_INPUTS = 4, 4, 8
ARTIFACTS = ("ours_float", "ours_int8", "ours_int8_static", "ours_int8_dynbatch", "stock_int8")
DYNAMIC_MAX_BATCH = 64


def _data(spec, quick: bool) -> dict:
    import torch

    gen = torch.Generator().manual_seed(1)
    shape = spec.input_shape
    batches = 1 if quick else CALIBRATION_BATCHES
    return {"example": (torch.randn(*shape, generator=gen),),
            "calibration": [(torch.randn(CALIBRATION_BATCH, *shape[1:], generator=gen),) for _ in range(batches)],
            "eval": [(torch.randn(*shape, generator=gen),) for _ in range(2 if quick else EVAL_INPUTS)]}


def _expected_layers(model) -> list[str]:
    from pt2e_int8.ops import PARAMETRIC_MODULES

    return [path for path, mod in model.named_modules()
            if f"{type(mod).__module__}.{type(mod).__qualname__}" in PARAMETRIC_MODULES]


def _listed(path: str, names: list[str]) -> bool:
    """A module is listed by a row named after it, one of its calls (`fc[linear_1]`) or one of its
    weights (`attn.in_proj`, `rnn.weight_ih_l0`)."""
    return any(n == path or n.startswith((path + "[", path + ".")) for n in names)


def cmd_build(name: str, workdir: Path, quick: bool) -> None:
    import torch

    import pt2e_int8 as q
    from backends.compat.executorch import pte_structure
    from backends.executorch import export_pte
    from bench import anchors
    from bench.arch_models import MODELS, build

    spec = MODELS[name]
    model = build(name)
    data = _data(spec, quick)
    with torch.no_grad():
        reference = [model(*x) for x in data["eval"]]
    torch.save({"eval": data["eval"], "reference": reference}, workdir / "data.pt")
    doc: dict = {"model": name, "kind": spec.kind, "input": list(spec.input_shape), "artifacts": {}}
    stages: dict[str, float] = {}

    class _Stage:
        def __init__(self, key: str) -> None:
            self.key = key

        def __enter__(self):
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            stages[self.key] = stages.get(self.key, 0.0) + time.perf_counter() - self.t0

    def record(key: str, path: Path, result=None, **extra) -> None:
        structure = pte_structure(path.read_bytes())
        art = {"path": str(path), "size_mb": round(path.stat().st_size / 2**20, 3),
               "delegate_calls": len(structure["delegates"]), "portable_ops": structure["operators"], **extra}
        if result is not None:
            art.update(shapes=result.shapes, notes=result.notes, outside_delegate=result.outside_delegate,
                       int8_placed=len(result.int8_layers), placed_rows=len(result.placement))
        doc["artifacts"][key] = art

    ex = data["example"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _Stage("ours_float"):
            res = export_pte(model, ex, workdir / "ours_float.pte")
        record("ours_float", res.path, res)
        with _Stage("ours_int8"):
            qm = q.quantize(model, ex, calibration=data["calibration"], progress=False)
            res = export_pte(qm, ex, workdir / "ours_int8.pte")
        record("ours_int8", res.path, res)
        cov = q.coverage(qm)
        names = [r.name for r in cov.layers]
        expected = _expected_layers(model)
        doc["coverage"] = {"rows": len(cov.layers), "quantized": len(cov.quantized),
                           "int8_placed": len(res.int8_layers), "expected_modules": len(expected),
                           "missing": [p for p in expected if not _listed(p, names)],
                           "float_rows": [{"name": r.name, "op": r.op, "reason": r.reason} for r in cov.float_layers],
                           "float_placed": {k: res.detail.get(k) for k, v in res.placement.items() if v != "int8"}}
        if res.shapes and res.shapes.startswith("static"):
            doc["artifacts"]["ours_int8_static"] = {**doc["artifacts"]["ours_int8"], "same_as": "ours_int8"}
        else:
            with _Stage("ours_int8_static"):
                res_s = export_pte(qm, ex, workdir / "ours_int8_static.pte", dynamic_shapes=None)
            record("ours_int8_static", res_s.path, res_s)
        with _Stage("ours_int8_dynbatch"):
            res_d = export_pte(qm, ex, workdir / "ours_int8_dynbatch.pte", max_batch=DYNAMIC_MAX_BATCH)
        if res_d.shapes == res.shapes:
            doc["artifacts"]["ours_int8_dynbatch"] = {**doc["artifacts"]["ours_int8"], "same_as": "ours_int8"}
        else:
            record("ours_int8_dynbatch", res_d.path, res_d)
        singles = [tuple(t[i:i + 1] for t in b) for b in data["calibration"] for i in range(len(b[0]))]
        try:
            with _Stage("stock_int8"):
                anchors.stock_int8_pte(model, ex, singles, workdir / "stock_int8.pte", lambda _: _NullStage(),
                                       dynamic=False)
            record("stock_int8", workdir / "stock_int8.pte")
        except Exception as e:  # noqa: BLE001  (a failing anchor is a row with its error)
            doc["artifacts"]["stock_int8"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    doc["build_s"] = {k: round(v, 1) for k, v in stages.items()}
    (workdir / "build.json").write_text(json.dumps(doc, indent=2, default=str))


class _NullStage:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def cmd_measure(workdir: Path, iters: int, warmup: int, threads: int) -> None:
    import torch

    from backends.executorch.runtime import load_pte
    from pt2e_int8.app.timing import latency_stats, time_interleaved
    from pt2e_int8.numerics import sqnr

    doc = json.loads((workdir / "build.json").read_text())
    data = torch.load(workdir / "data.pt", weights_only=False)
    names = [k for k in ARTIFACTS if "path" in doc["artifacts"].get(k, {}) and "same_as" not in doc["artifacts"][k]]
    progs = {k: load_pte(doc["artifacts"][k]["path"], threads=threads) for k in names}
    for k, prog in progs.items():
        out = torch.cat([prog.run(list(x))[0] for x in data["eval"]])
        doc["artifacts"][k]["sqnr_db"] = round(sqnr(torch.cat(data["reference"]), out), 2)
    x = list(data["eval"][0])
    samples = time_interleaved([lambda p=p: p.run(x) for p in progs.values()], iters, warmup)
    for k, ms in zip(names, samples, strict=True):
        doc["artifacts"][k].update({s: round(v, 4) for s, v in latency_stats(ms).items()})
    for k, art in doc["artifacts"].items():
        if "same_as" in art:
            doc["artifacts"][k] = {**doc["artifacts"][art["same_as"]], "same_as": art["same_as"]}
    doc["timing"] = {"iters": iters, "warmup": warmup, "threads": threads, "order": names}
    (workdir / "result.json").write_text(json.dumps(doc, indent=2, default=str))


# -- report ---------------------------------------------------------------------------------

def _ratio(doc: dict, a: str, b: str) -> float | None:
    x, y = doc["artifacts"].get(a, {}).get("median_ms"), doc["artifacts"].get(b, {}).get("median_ms")
    return round(x / y, 3) if x and y else None


def ratios(doc: dict) -> dict:
    return {"int8_vs_float": _ratio(doc, "ours_int8", "ours_float"),
            "int8_vs_stock": _ratio(doc, "ours_int8", "stock_int8"),
            "default_vs_static": _ratio(doc, "ours_int8", "ours_int8_static"),
            "dynbatch_vs_static": _ratio(doc, "ours_int8_dynbatch", "ours_int8_static"),
            "stock_vs_float": _ratio(doc, "stock_int8", "ours_float")}


def check(doc: dict) -> list[tuple[str, bool | None, str]]:
    """(target, met, detail) for one model's result."""
    r, arts, cov = ratios(doc), doc["artifacts"], doc.get("coverage", {})
    out = []
    ours_calls, stock_calls = arts["ours_int8"].get("delegate_calls"), arts.get("stock_int8", {}).get("delegate_calls")
    if doc["kind"] == "cnn":
        out.append((f"int8 ≤ {INT8_VS_FLOAT_MAX}× float", None if r["int8_vs_float"] is None
                    else r["int8_vs_float"] <= INT8_VS_FLOAT_MAX, f"×{r['int8_vs_float']}"))
        out.append(("int8 no slower than stock int8", None if r["int8_vs_stock"] is None
                    else r["int8_vs_stock"] <= 1 + NOISE, f"×{r['int8_vs_stock']}"))
        out.append(("delegate calls ≤ stock", None if stock_calls is None else ours_calls <= stock_calls,
                    f"{ours_calls} vs {stock_calls}"))
    out.append(("coverage lists every layer", not cov.get("missing"),
                f"{cov.get('rows')} rows for {cov.get('expected_modules')} modules"
                + (f"; missing {cov['missing']}" if cov.get("missing") else "")))
    out.append(("default .pte no slower than static shapes", None if r["default_vs_static"] is None
                else r["default_vs_static"] <= 1 + NOISE,
                f"×{r['default_vs_static']}" + (" (default chose static)" if "same_as" in arts["ours_int8_static"]
                                                else "")))
    return out


def _fmt(x, spec=".2f") -> str:
    return "—" if x is None else format(x, spec)


def render(meta: dict, docs: list[dict]) -> str:
    lines = ["# Real architectures: int8 .pte vs float .pte vs the stock ExecuTorch flow", "",
             f"Command: `{meta['command']}`  ", f"Run: {meta['started']} → {meta['finished']} (UTC)  ",
             f"Device: {meta['device']}  ",
             f"Threads {meta['threads']}, batch 1, {meta['iters']} interleaved runs per model after {meta['warmup']} "
             "warm-up. Ratios are of medians timed in the same interleaving (the machine's noise hits every "
             "variant of a model alike)." + (f" {meta['note']}" if meta.get("note") else ""), "",
             "## Targets", "", "| model | target | status | detail |", "|---|---|---|---|"]
    for doc in docs:
        if "error" in doc:
            lines.append(f"| {doc['model']} | all | **failed** | {doc['error'][:200]} |")
            continue
        for target, met, detail in check(doc):
            status = "n/a" if met is None else "met" if met else "**missed**"
            lines.append(f"| {doc['model']} | {target} | {status} | {detail} |")
    lines += ["", "## Latency and structure", "",
              "| model | ours float ms | ours int8 ms | int8 static-shape ms | stock int8 ms | int8/float | "
              "int8/stock | default/static | max_batch=64 / static (its shapes) | delegate calls (float / int8 / stock) "
              "| SQNR dB (ours / stock) | shapes | layers int8 / rows |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|"]
    for doc in docs:
        if "error" in doc:
            continue
        a, r, cov = doc["artifacts"], ratios(doc), doc["coverage"]
        calls = " / ".join(str(a.get(k, {}).get("delegate_calls", "—")) for k in ("ours_float", "ours_int8", "stock_int8"))
        lines.append(
            f"| {doc['model']} | {_fmt(a['ours_float'].get('median_ms'), '.3f')} | {_fmt(a['ours_int8'].get('median_ms'), '.3f')} "
            f"| {_fmt(a['ours_int8_static'].get('median_ms'), '.3f')} | {_fmt(a.get('stock_int8', {}).get('median_ms'), '.3f')} "
            f"| {_fmt(r['int8_vs_float'])} | {_fmt(r['int8_vs_stock'])} | {_fmt(r['default_vs_static'])} "
            f"| {_fmt(r['dynbatch_vs_static'])} ({a.get('ours_int8_dynbatch', {}).get('shapes', '—')}) | {calls} "
            f"| {_fmt(a['ours_int8'].get('sqnr_db'), '.1f')} / {_fmt(a.get('stock_int8', {}).get('sqnr_db'), '.1f')} "
            f"| {a['ours_int8'].get('shapes')} | {cov['int8_placed']} / {cov['rows']} |")
    lines += ["", "## Where int8 stops", "",
              "Layers not placed in an int8 kernel of our int8 .pte, ops it runs outside XNNPACK (with the partitioner's "
              "reason), and the exporter's notes.", ""]
    for doc in docs:
        if "error" in doc:
            continue
        a, cov = doc["artifacts"]["ours_int8"], doc["coverage"]
        items = [f"`{k}`: {v}" for k, v in cov["float_placed"].items()]
        items += [f"outside XNNPACK: `{o['op']}` ({o['reason']})" for o in a.get("outside_delegate", [])]
        items += [f"note: {n}" for n in a.get("notes", [])]
        if a.get("portable_ops"):
            items.append(f"portable ops in the file: {', '.join(a['portable_ops'])}")
        stock = doc["artifacts"].get("stock_int8", {})
        if stock.get("error"):
            items.append(f"stock flow failed: {stock['error']}")
        lines.append(f"- **{doc['model']}**: " + ("; ".join(items) if items else "every layer int8, one delegate call"))
    return "\n".join(lines) + "\n"


# -- driver ---------------------------------------------------------------------------------

def _run_child(args: list[str], log: Path, timeout: float = 3600) -> int:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # keep the caller's (torchvision)
    env = {**os.environ, "PYTHONPATH": path, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
           "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        return subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], cwd=ROOT, env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False).returncode


def _select(text: str, quick: bool) -> list[str]:
    from bench.arch_models import MODELS

    if text == "all":
        return [m.name for m in MODELS.values() if m.quick or not quick]
    if text in {m.kind for m in MODELS.values()}:
        return [m.name for m in MODELS.values() if m.kind == text]
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    return names


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="all", help="all, a kind (cnn, recurrent, ...) or comma-separated names")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="smoke run: small models, few iterations")
    p.add_argument("--workdir", type=Path, default=ROOT / "out" / "bench-arch")
    p.add_argument("--out", type=Path, default=None, help="folder for arch.json / arch.md (default: bench/, "
                                                             "or the workdir with --quick)")
    p.add_argument("--reuse", action="store_true",
                   help="only re-time models already built in the workdir (their build.json): a quieter re-run")
    p.add_argument("_child", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:  # internal: build MODEL DIR [quick] | measure DIR
        import torch

        torch.set_num_threads(args.threads)
        if args._child[0] == "build":
            cmd_build(args._child[1], Path(args._child[2]), args.quick)
        else:
            cmd_measure(Path(args._child[1]), args.iters, args.warmup, args.threads)
        return

    from pt2e_int8.app.device import describe_device, summary_line

    iters = 5 if args.quick else args.iters
    out = args.out or (args.workdir if args.quick else ROOT / "bench")
    command = "python bench/arch.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    meta = {"command": command.strip(), "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "device": summary_line(describe_device()), "threads": args.threads, "iters": iters,
            "warmup": args.warmup}
    docs = []
    for name in _select(args.models, args.quick):
        wd = args.workdir / name
        wd.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        common = ["--threads", str(args.threads), "--iters", str(iters), "--warmup", str(args.warmup)]
        reused = args.reuse and (wd / "build.json").exists()
        rc = 0 if reused else _run_child([*common, *(["--quick"] if args.quick else []), "build", name, str(wd)],
                                         wd / "build.log")
        if rc == 0:
            rc = _run_child([*common, "measure", str(wd)], wd / "measure.log")
        if rc == 0:
            docs.append(json.loads((wd / "result.json").read_text()))
        else:
            log = (wd / "measure.log") if (wd / "build.json").exists() else (wd / "build.log")
            tail = " | ".join(ln for ln in log.read_text(errors="replace").splitlines()[-3:] if ln.strip())
            docs.append({"model": name, "error": f"exit {rc}: {tail[-300:]}"})
        print(f"{name}: {time.perf_counter() - t0:.0f} s" + (" (build reused)" if reused else ""), flush=True)
    meta["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out.mkdir(parents=True, exist_ok=True)
    (out / "arch.json").write_text(json.dumps({**meta, "models": docs}, indent=2, default=str) + "\n")
    (out / "arch.md").write_text(render(meta, docs))
    print(render(meta, docs))


if __name__ == "__main__":
    main()
