"""What the artifact probe costs `pt2e-int8 bench`: no probe vs the probe before the imports vs overlapped.

    .venv/bin/python bench/bench_startup.py [--reps 5] [--pte FILE ...]   # writes bench/BENCH_STARTUP.md

`bench` and `compare` load every artifact once in a child process before touching it, so a file
that aborts the runtime is an error, not a crash (README, "Model files are untrusted"). Each sample
is a fresh `pt2e-int8 bench FILE --iters 1 --warmup 0` process, timed from start to exit, with the
probe replaced (in that process only) by:
  none         no probe (the floor: what the command costs without the safety)
  sequential   start the child and wait for it before importing anything (the order before)
  overlapped   the command as shipped: start the child, import the runtime meanwhile, then wait
Variants interleaved (A B C A B C ...); medians. Default files: the digits static .pte (built here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

RUNNER = """
import sys
import pt2e_int8.app.commands.bench as bench
import pt2e_int8.app.probe as probe

class _Nothing:
    def wait(self): pass
    def cancel(self): pass

def _sequential(*args, **kwargs):
    started = probe.start_probe(*args, **kwargs)
    started.wait()
    return _Nothing()

variant = sys.argv[1]
if variant == "none":
    bench.start_probe = lambda *a, **k: _Nothing()
elif variant == "sequential":
    bench.start_probe = _sequential
from pt2e_int8.app.cli import main
sys.exit(main(["bench", *sys.argv[2:], "--iters", "1", "--warmup", "0"]))
"""
VARIANTS = ("none", "sequential", "overlapped")


def _sample(variant: str, pte: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, variant, pte], cwd=REPO, capture_output=True,
                          text=True, timeout=1200, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{variant} on {pte} failed: {done.stderr.strip()[-500:]}")
    return elapsed


def _digits_pte(tmp: Path) -> str:
    import copy

    import pt2e_int8 as q
    from backends.executorch import export_pte
    from pt2e_int8.app.digits import DigitsMLP, load_digits_split

    split = load_digits_split()
    qm = q.quantize(copy.deepcopy(DigitsMLP().eval()), (split.x_train[:32],),
                    calibration=[(b,) for b in split.x_train.split(32)])
    return str(export_pte(qm, (split.x_test[:1],), tmp / "digits-static.pte").path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--pte", nargs="*", default=[], help=".pte files to bench (default: the digits static .pte)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "BENCH_STARTUP.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from pt2e_int8.app.device import describe_device, summary_line

    files = args.pte or [_digits_pte(Path(tempfile.mkdtemp()))]
    rows = []
    for pte in files:
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        _sample("overlapped", pte)  # page cache and .pyc files warm for every variant alike
        for _ in range(args.reps):
            for variant in VARIANTS:
                samples[variant].append(_sample(variant, pte))
        med = {v: statistics.median(s) for v, s in samples.items()}
        rows.append({"file": Path(pte).name, "size_kib": Path(pte).stat().st_size / 1024,
                     "median_s": med, "samples_s": samples})
        print(Path(pte).name, {v: round(m, 2) for v, m in med.items()}, flush=True)
    device = summary_line(describe_device())
    lines = ["# `pt2e-int8 bench` start-up and the artifact probe", "",
             f"Made by `.venv/bin/python bench/bench_startup.py --reps {args.reps}"
             + (" --pte " + " ".join(Path(p).name for p in args.pte) if args.pte else "")
             + f"` on {device}. Fresh `pt2e-int8 bench FILE --iters 1 --warmup 0` process per sample, "
             "start to exit, variants interleaved, medians (see the module docstring for the variants).", "",
             "| file | size KiB | no probe, s | probe first (before), s | probe overlapped (now), s | before / none | now / none |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        m = r["median_s"]
        lines.append(f"| {r['file']} | {r['size_kib']:.0f} | {m['none']:.2f} | {m['sequential']:.2f} | "
                     f"{m['overlapped']:.2f} | {m['sequential'] / m['none']:.2f}x | {m['overlapped'] / m['none']:.2f}x |")
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"device": device, "reps": args.reps, "rows": rows},
                                                        indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
