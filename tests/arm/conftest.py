"""The `-m arm` tests run artifacts on emulated aarch64 CPUs (qemu-user) and compare them with x86.

They run only when asked (`pytest -m arm`, which `make arm-check` does) and when the kit that
`make arm-check` sets up is in its cache folder; otherwise each is skipped with the reason, at once,
so `make test` and CI never pay for emulation.
"""

from __future__ import annotations

import pytest

from tools.arm.cache import status


def pytest_collection_modifyitems(config, items):
    asked = "arm" in (config.option.markexpr or "")
    ready, why = status()
    for item in items:
        if "arm" not in item.keywords:
            continue
        if not asked:
            item.add_marker(pytest.mark.skip(reason="aarch64 emulation: run with `pytest -m arm` (make arm-check)"))
        elif not ready:
            item.add_marker(pytest.mark.skip(reason=f"aarch64 emulation unavailable: {why}"))
