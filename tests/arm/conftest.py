"""The `-m arm` tests run artifacts on emulated aarch64 CPUs (qemu-user) and compare them with x86.

They run only when asked (`pytest -m arm`, which `make arm-check` does) and when the kit that
`make arm-check` sets up is in its cache folder; otherwise each is skipped with the reason, at once,
so `make test` and CI never pay for emulation. Tests here without the marker (the bound logic
of tools/arm/check.py on synthetic outputs) run everywhere.
"""

from __future__ import annotations

import pytest

from tools.arm.cache import status


def pytest_collection_modifyitems(config, items):
    asked = "arm" in (config.option.markexpr or "")
    ready, why = status()
    for item in items:
        if item.get_closest_marker("arm") is None:  # not `"arm" in item.keywords`: the folder is named arm
            continue
        if not asked:
            item.add_marker(pytest.mark.skip(reason="aarch64 emulation: run with `pytest -m arm` (make arm-check)"))
        elif not ready:
            item.add_marker(pytest.mark.skip(reason=f"aarch64 emulation unavailable: {why}"))
