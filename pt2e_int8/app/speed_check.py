"""Is the int8 artifact faster than float on this machine? A short interleaved timing at export.

A default must never make int8 slower than float. When a model's int8 artifact is slower on the
building host (float islands between int8 kernels, extra delegate calls, a runtime without int8
kernels for its ops), `pt2e-int8 export` says so instead of shipping it silently. The float
counterpart goes through the same exporter into a temporary folder; both files are then timed
A B A B ... for about a second (`timing.time_interleaved`), so machine load hits both alike.

Skipped when `PT2E_INT8_NO_SPEED_CHECK=1` (the test suite sets it: it times nothing) and when
there is no float model to compare with (a .pt2 that is already quantized).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ENV = "PT2E_INT8_NO_SPEED_CHECK"
# A short run's medians move by a few percent: warn only past this ratio.
SLOWER = 1.05
_BUDGET_S, _MIN_ITERS, _MAX_ITERS = 1.0, 5, 50


def enabled() -> bool:
    return os.environ.get(ENV, "").strip() not in ("1", "true", "yes")


def int8_vs_float(export: Callable, float_model, example: tuple, int8_path: Path, options: dict) -> float | None:
    """Median latency of `int8_path` over that of the float model exported the same way, on this host.

    Args:
        export: the backend's exporter, `(model, example, path, **options) -> ExportResult`.
        float_model: the float nn.Module the int8 artifact was quantized from.
        example: the example inputs (timed as given).
        int8_path: the int8 artifact just written.
        options: the exporter keywords used for it (shapes, max_batch), so both files match.
    Returns:
        The ratio (> 1: int8 is slower), or None when the float artifact could not be made or run.
    """
    from backends.registry import load_artifact
    from pt2e_int8.app.timing import latency_stats, time_interleaved

    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / f"float{int8_path.suffix}"
        try:
            export(float_model, example, str(float_path), **options)
            programs = [load_artifact(int8_path), load_artifact(float_path)]
            args = list(example)
            t0 = time.perf_counter()
            for prog in programs:
                prog.run(args)
            once = max(time.perf_counter() - t0, 1e-6)
        except Exception:  # noqa: BLE001  (a check that cannot run must not fail the export)
            return None
        iters = int(min(_MAX_ITERS, max(_MIN_ITERS, _BUDGET_S / once)))
        samples = time_interleaved([lambda p=p: p.run(args) for p in programs], iters, warmup=2)
    int8_ms, float_ms = (latency_stats(s)["median_ms"] for s in samples)
    return int8_ms / float_ms if float_ms > 0 else None
