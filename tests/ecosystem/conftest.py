"""ExecuTorch's quantized XNNPACK op tests, each run once per quantizer per session.

The terminal summary reports the counts: how many of the M quantized op tests pass with
the stock XNNPACKQuantizer and with Int8Quantizer. By default the stock quantizer runs only
where ours fails (to tell a regression from a case the stock flow fails too); set
PT2E_INT8_STOCK_BASELINE=1 to run it on every case for the full count.
"""

from __future__ import annotations

import pytest

from tests.ecosystem._executorch_ops import Outcome, discover_quantized, run_case, short_id

_OUTCOMES: dict[tuple[str, str], Outcome] = {}


def pytest_generate_tests(metafunc):
    if "op_test" in metafunc.fixturenames:
        cases = discover_quantized()
        metafunc.parametrize("op_test", cases, ids=[short_id(c) for c in cases])


@pytest.fixture(scope="session")
def outcome():
    """outcome(case_id, "stock" | "ours") -> Outcome, run at most once per session."""

    def get(case_id: str, quantizer: str) -> Outcome:
        key = (case_id, quantizer)
        if key not in _OUTCOMES:
            _OUTCOMES[key] = run_case(case_id, quantizer)
        return _OUTCOMES[key]

    return get


def pytest_terminal_summary(terminalreporter):
    cases = sorted({case for case, _ in _OUTCOMES})
    if not cases:
        return
    write = terminalreporter.write_line
    write(f"ExecuTorch XNNPACK quantized op tests ({len(cases)} cases):")
    for quantizer in ("stock", "ours"):
        ran = [_OUTCOMES[(c, quantizer)] for c in cases if (c, quantizer) in _OUTCOMES]
        passed = sum(o.status == "pass" for o in ran)
        seconds = sum(o.seconds for o in ran)
        write(f"  {quantizer:5s}: {passed} of {len(ran)} run pass ({seconds:.0f} s)")
    for case in cases:
        ours, stock = _OUTCOMES.get((case, "ours")), _OUTCOMES.get((case, "stock"))
        if ours and ours.status != "pass":
            verdict = "stock fails too" if stock and stock.status != "pass" else "stock passes"
            write(f"  ours {ours.status}: {short_id(case)} ({verdict}): {ours.message}")
        elif stock and stock.status != "pass":
            write(f"  stock {stock.status}: {short_id(case)}: {stock.message}")
