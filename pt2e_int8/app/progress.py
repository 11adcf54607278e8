"""Progress lines on stderr for long commands: '[2/5] quantizing (static) ... 1.4s'.

stderr, so stdout stays the result (tables, paths) that users pipe; one line per step,
so logs from CI read the same as a terminal.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


class Steps:
    """Numbered steps, each timed.

    Example:
        steps = Steps(4)
        with steps("quantizing (static)"): ...
    """

    def __init__(self, total: int, *, stream=None, quiet: bool = False) -> None:
        self.total, self.done, self.quiet = total, 0, quiet
        self.stream = stream or sys.stderr
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"pt2e-int8: {text}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {label} ...")
        t0 = time.monotonic()
        yield
        self.say(f"[{self.done}/{self.total}] {label}: done in {time.monotonic() - t0:.1f}s")
