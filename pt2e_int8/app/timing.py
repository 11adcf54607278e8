"""Latency of exported artifacts on this device: warm-up, interleaved timed runs, median/p90/min.

Several artifacts are timed A B A B ... so that frequency scaling, thermal throttling and noisy
neighbours hit all of them alike, and each is reported as a ratio of the first one's median.
Imports only the runtime of each artifact's format (see `backends.registry`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from backends.registry import backend_of, load_artifact
from pt2e_int8.app.artifact_run import batch_of, run_artifact, stderr_silenced
from pt2e_int8.errors import InputFileError


def synthetic_inputs(program, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of a loaded artifact's own signature, batch dimension set to `batch`.

    A .pte stores the upper bound of a dynamic dimension, so its batch is always replaced.
    """
    try:
        specs = program.input_specs()
    except Exception as e:  # noqa: BLE001
        raise InputFileError(
            f"{program.path}: cannot read its input signature ({type(e).__name__}: {str(e)[:200]}); pass "
            "--inputs FILE with real inputs, or re-create the file with `pt2e-int8 export`."
        ) from e
    gen = torch.Generator().manual_seed(seed)
    out = []
    for spec in specs:
        shape = [batch if i == 0 else (d if d is not None else 1) for i, d in enumerate(spec.shape)]
        dtype = getattr(torch, spec.dtype.name)
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(dtype))
        else:
            out.append(torch.zeros(shape, dtype=dtype))  # index-safe for embeddings
    return tuple(out)


def default_batch(program, path: str | Path) -> int:
    """Batch 1, the on-device case, where the artifact takes it (ONNX, a dynamic-batch .pte); a .pte
    exported with static shapes (export_pte's default) takes only its own batch, so that one.

    A .pte's signature stores a dynamic batch at its bound, so only a trial run at batch 1 tells a
    static program from a dynamic one; the runtime's log of the refusal is silenced.
    """
    want = batch_of(program) if str(path).lower().endswith(".pte") else None
    if want in (None, 1):
        return 1
    try:
        with stderr_silenced():
            program.run(list(synthetic_inputs(program, 1)))
    except Exception:  # noqa: BLE001  (a static program refuses batch 1)
        return want
    return 1


@dataclass
class Timing:
    artifact: str
    format: str
    size_bytes: int
    iters: int
    warmup: int
    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    ratio_vs_first: float = 1.0  # median / first artifact's median: < 1 is faster
    batch: int | None = None  # batch of the random inputs (None: the --inputs file's)

    def to_dict(self) -> dict:
        return asdict(self)


def _percentile(sorted_ms: list[float], pct: float) -> float:
    k = (len(sorted_ms) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (k - lo)


def time_interleaved(runners: list[Callable[[], object]], iters: int, warmup: int) -> list[list[float]]:
    """Warm each runner up, then time them in turn (A B A B ...). Returns ms per runner per iteration."""
    for run in runners:
        for _ in range(warmup):
            run()
    samples: list[list[float]] = [[] for _ in runners]
    clock = time.perf_counter
    for _ in range(iters):
        for i, run in enumerate(runners):
            t0 = clock()
            run()
            samples[i].append((clock() - t0) * 1e3)
    return samples


def bench_artifacts(paths: list[str | Path], *, iters: int = 100, warmup: int = 10, threads: int | None = None,
                    inputs: tuple | None = None, batch: int | None = None) -> list[Timing]:
    """Load each artifact with its runtime and time it on `inputs` (or synthetic ones of `batch`;
    None: `default_batch`, 1 unless a static .pte takes only its own).

    Example:
        for t in bench_artifacts(["m.pte", "m.onnx"], iters=200): print(t.artifact, t.median_ms)
    """
    paths = [Path(p) for p in paths]
    runners, batches = [], []
    for path in paths:
        prog = load_artifact(path, threads=threads)
        size = None if inputs is not None else batch or default_batch(prog, path)
        args = list(inputs) if inputs is not None else list(synthetic_inputs(prog, size))
        run_artifact(prog, args, path, "--inputs" if inputs is not None else f"random inputs of batch {size}")
        runners.append(lambda prog=prog, args=args: prog.run(args))
        batches.append(size)
    samples = time_interleaved(runners, iters, warmup)
    timings = [Timing(str(path), backend_of(path).name, path.stat().st_size, iters, warmup, **latency_stats(ms),
                      batch=size)
               for path, ms, size in zip(paths, samples, batches, strict=True)]
    set_ratios(timings)
    return timings


def latency_stats(ms: list[float]) -> dict[str, float]:
    """median / p90 / min / mean of one runner's samples, in ms."""
    s = sorted(ms)
    return {"median_ms": statistics.median(s), "p90_ms": _percentile(s, 90), "min_ms": s[0],
            "mean_ms": statistics.fmean(s)}


def set_ratios(timings: list[Timing]) -> None:
    first = timings[0].median_ms if timings else 0.0
    for t in timings:
        t.ratio_vs_first = t.median_ms / first if first > 0 else float("nan")


