"""Start-up of `.pte` inference: `executorch.runtime` (before) vs the bare bindings `load_pte` uses now.

    .venv/bin/python -m bench.arm.startup [--reps 3] [--cpu neoverse-n1]   # writes bench/arm/STARTUP.md

Each sample is a fresh interpreter that imports the runtime, loads the digits static .pte, and runs
it once; variants alternate (A B A B ...). Timed from the interpreter's first line (after Python's own
start) to the first output, and "after torch" from the end of `import torch`. On x86, and on aarch64
under qemu-user when `make arm-check` has set up its kit (emulated times are not a board's, but the
ratio shows what importing `executorch.exir` costs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import time, sys
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
x = torch.zeros(1, 64)
if {before}:
    from executorch.runtime import Runtime
    method = Runtime.get().load_program({pte!r}).load_method("forward")
    out = method.execute([x])
else:
    sys.path.insert(0, {repo!r})
    from backends.executorch.runtime import load_pte
    out = load_pte({pte!r}).run([x])
t2 = time.perf_counter()
print("T", t2 - t0, t2 - t1, any(m.startswith("executorch.exir") for m in sys.modules))
"""


def _sample(cmd_prefix: list[str], env, pte: str, before: bool) -> dict:
    code = PROBE.format(before=before, pte=pte, repo=str(REPO))
    done = subprocess.run([*cmd_prefix, "-c", code], env=env, capture_output=True, text=True, timeout=1200, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("T ")), None)
    if done.returncode != 0 or line is None:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
    _, total, after_torch, exir = line.split()
    return {"total_s": float(total), "after_torch_s": float(after_torch), "exir_imported": exir == "True"}


def measure(where: str, cmd_prefix: list[str], env, pte: str, reps: int) -> dict:
    samples: dict[str, list] = {"executorch.runtime (before)": [], "bindings only (after)": []}
    for _ in range(reps):
        for name, before in (("executorch.runtime (before)", True), ("bindings only (after)", False)):
            samples[name].append(_sample(cmd_prefix, env, pte, before))
    out = {}
    for name, runs in samples.items():
        ok = [r for r in runs if "error" in r] == []
        out[name] = ({"median_total_s": statistics.median(r["total_s"] for r in runs),
                      "median_after_torch_s": statistics.median(r["after_torch_s"] for r in runs),
                      "exir_imported": runs[0]["exir_imported"], "reps": reps}
                     if ok else {"error": next(r["error"] for r in runs if "error" in r)})
    return {"where": where, "variants": out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cpu", default="neoverse-n1")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("STARTUP.md"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import copy

    import pt2e_int8 as q
    from backends.executorch import export_pte
    from pt2e_int8.app.device import describe_device, summary_line
    from pt2e_int8.app.digits import DigitsMLP, load_digits_split
    from tools.arm.cache import ArmCache, cache_root, guest_command, guest_env, status

    split = load_digits_split()
    tmp = Path(tempfile.mkdtemp())
    qm = q.quantize(copy.deepcopy(DigitsMLP().eval()), (split.x_train[:32],),
                    calibration=[(b,) for b in split.x_train.split(32)])
    pte = str(export_pte(qm, (split.x_test[:1],), tmp / "static.pte").path)
    results = [measure(f"x86: {summary_line(describe_device())}", [sys.executable], None, pte, args.reps)]
    ready, why = status()
    if ready:
        cache = ArmCache(cache_root())
        prefix = guest_command(cache, args.cpu, [])
        results.append(measure(f"aarch64 under {cache.manifest()['qemu']} -cpu {prefix[2]}", prefix,
                               guest_env(cache, [str(REPO)]), pte, args.reps))
    else:
        results.append({"where": "aarch64 (qemu)", "skipped": why})
    lines = ["# .pte start-up: `executorch.runtime` vs the bare runtime bindings", "",
             f"Made by `.venv/bin/python -m bench.arm.startup --reps {args.reps} --cpu {args.cpu}`: fresh interpreter "
             "per sample, variants interleaved, medians. Time from the interpreter's first line to the first "
             "output of the digits static .pte (and from the end of `import torch`).", "",
             "| where | loader | to first output, s | after `import torch`, s | imports executorch.exir |",
             "|---|---|---:|---:|---|"]
    for res in results:
        for name, v in res.get("variants", {}).items():
            if "error" in v:
                lines.append(f"| {res['where']} | {name} | failed: {v['error']} | | |")
            else:
                lines.append(f"| {res['where']} | {name} | {v['median_total_s']:.2f} | {v['median_after_torch_s']:.2f} "
                             f"| {'yes' if v['exir_imported'] else 'no'} |")
        if "skipped" in res:
            lines.append(f"| {res['where']} | skipped: {res['skipped']} | | | |")
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
